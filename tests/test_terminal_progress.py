"""The progress bar on a terminal and a check that prints (issue 15's "nothing prints for minutes").

On a terminal, rich's Live display redirected sys.stdout/stderr through itself, and its console
looked sys.stderr up at every write; the sandbox then routed a check's prints to "the original
stream", which was rich's proxy, which wrote to sys.stderr, which was the sandbox's router: the
first print of a check looped forever. Here a plugin check prints on a fake terminal, and the
diagnosis must finish and show its verdict."""
from __future__ import annotations

import io
import sys
import threading

import pytest

import degrade.registry
from degrade.check import Check
from degrade.layers import Layer


@pytest.fixture
def early_stop_run(scenarios):
    return scenarios["early_stop"]


class ChattyCheck(Check):
    """Prints while it runs, as third-party code and libraries' warnings do.

    What it detects: nothing. Why it matters: -. Evidence used: the history. Fix: -.
    """
    code, name, layer = "R291", "chatty", Layer.REACHABILITY
    needs = frozenset({"history"})

    def run(self, run):
        print("a check talking on stdout")
        print("and on stderr", file=sys.stderr)
        return []


class _Entry:
    name, group = "chatty", "degrade.checks"

    def load(self):
        return ChattyCheck


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_printing_check_under_the_progress_bar_finishes(early_stop_run, monkeypatch):
    monkeypatch.setattr(degrade.registry, "entry_points",
                        lambda *a, **k: [_Entry()] if k.get("group", a[0] if a else None)
                        == degrade.registry.ENTRY_POINT_GROUP else [])
    monkeypatch.delenv("CI", raising=False)
    err, out = _Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    from degrade.cli import main
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(
        main(["diagnose", *early_stop_run.cli_args(), "--select", "R2"])), daemon=True)
    worker.start()
    worker.join(120)  # seconds; the diagnosis itself takes a few
    assert not worker.is_alive(), "the diagnosis did not finish: output routing loops"
    assert result == [1] and "degrade verdict" in out.getvalue(), (result, out.getvalue()[-500:])
