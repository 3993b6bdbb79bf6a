"""What a check prints never reaches the document on stdout: while checks run, sys.stdout and
sys.stderr route each thread's writes, and a check's thread writes into its own buffer (kept, cut
short, in the check's entry). Other threads (the progress bar, the main thread) write through.

Thread routing rather than contextlib.redirect_stdout, because a check that timed out keeps
running in its abandoned thread: its later prints still land in its own buffer, never on stdout.
"""
from __future__ import annotations

import io
import sys
import threading
from contextlib import contextmanager

MAX_CAPTURED = 4000  # characters of a check's output kept for its entry


class _Router(io.TextIOBase):
    def __init__(self, target, buffers: dict[int, io.StringIO]):
        self.target, self.buffers = target, buffers

    def _stream(self):
        return self.buffers.get(threading.get_ident(), self.target)

    def write(self, s: str) -> int:
        stream = self._stream()
        if isinstance(stream, io.StringIO) and stream.tell() > MAX_CAPTURED:
            return len(s)  # enough kept; a check printing in a loop must not fill memory
        return stream.write(s)

    def flush(self) -> None:
        self._stream().flush()

    def isatty(self) -> bool:
        return self._stream().isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self):
        return getattr(self.target, "encoding", "utf-8")


class OutputCapture:
    """Installed for a whole run of checks; `capture()` inside a check's thread."""

    def __init__(self):
        self.buffers: dict[int, io.StringIO] = {}

    @contextmanager
    def installed(self):
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Router(saved[0], self.buffers), _Router(saved[1], self.buffers)
        try:
            yield self
        finally:
            sys.stdout, sys.stderr = saved

    def start(self) -> io.StringIO:
        """Route the calling thread's output into a new buffer."""
        buf = io.StringIO()
        self.buffers[threading.get_ident()] = buf
        return buf

    def stop(self) -> None:
        """The calling thread writes through again (thread ids are reused once a thread ends)."""
        self.buffers.pop(threading.get_ident(), None)

    @staticmethod
    def text(buf: io.StringIO) -> str:
        out = buf.getvalue()
        return out if len(out) <= MAX_CAPTURED else out[:MAX_CAPTURED] + "…"
