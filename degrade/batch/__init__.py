"""Diagnosing many runs at once (issue 17, item 4): `degrade diagnose RUN [RUN ...]` (or a glob)
and `degrade sweep DIR`.

Each run is one independent diagnosis (worker.py), run sequentially, in a local process pool (the
default), or as one Ray task each (executors.py). Outcomes come back as they finish; the parent
process alone writes them into the store, so a sweep never races itself for the store's lock and
a remote Ray worker needs no access to it. A run whose diagnosis crashes is kept as failed, with
why, and the sweep goes on.
"""
