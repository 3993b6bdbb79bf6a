"""One run's diagnosis, in whatever process runs it (a pool worker, a Ray task, or this one).

It takes and returns plain data, so that it pickles: the run dir and diagnose()'s keyword
arguments in, the store row (with the diagnosis JSON), the exit code and the error out. Nothing
escapes it: bad input and crashes come back as a failed row.
"""
from __future__ import annotations

import os
import socket
from typing import Any


def diagnose_one(path: str, kwargs: dict[str, Any], fail_on: str = "error") -> dict[str, Any]:
    from degrade.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, InputError, one_line
    from degrade.store.row import diagnosis_row, failed_row
    worker = f"{socket.gethostname()}:{os.getpid()}"  # which machine and process: for a cluster's logs
    try:
        from degrade.api import diagnose
        d = diagnose(path, **kwargs)
        return {"path": path, "row": diagnosis_row(d, d.source), "exit_code": d.exit_code_for(fail_on),
                "worker": worker}
    except InputError as e:
        return {"path": path, "row": failed_row(path, one_line(e)), "exit_code": EXIT_BAD_INPUT, "worker": worker}
    except Exception as e:  # noqa: BLE001 - one run's crash must not end the sweep
        return {"path": path, "row": failed_row(path, f"internal error: {type(e).__name__}: {one_line(e, 200)}"),
                "exit_code": EXIT_INTERNAL, "worker": worker}
