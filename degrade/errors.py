"""Errors that end a diagnosis with a defined exit code instead of a traceback.

Exit codes (ruff's model, DESIGN.md §3): 0 nothing degraded and enough was checked, 1 degradation
found, 2 bad input or usage, 3 inconclusive (too little could be checked), 4 degrade's own bug,
130 interrupted.
"""
from __future__ import annotations

import re

EXIT_CLEAN, EXIT_DEGRADED, EXIT_BAD_INPUT, EXIT_INCONCLUSIVE, EXIT_INTERNAL = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130

MAX_LINE = 400
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """`text` as one printable line: newlines and other control characters escaped, lone
    surrogates (from undecodable file names or JSON escapes) shown as \\uXXXX, cut at `limit`."""
    s = _CONTROL.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii")
                     if ord(m.group()) < 0xd800 else f"\\u{ord(m.group()):04x}", str(text))
    return s if len(s) <= limit else s[:limit - 1] + "…"


class InputError(Exception):
    """Bad input or usage. The message is one line that names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        where = one_line(self.path, 200) if self.path else ""
        super().__init__(f"{where}: {one_line(problem)}" if where else one_line(problem))
