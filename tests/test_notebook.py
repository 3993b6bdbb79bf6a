"""The quickstart notebook's code runs as written (cells executed in order, in a temp directory)."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import one_thread

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, monkeypatch, capsys):
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with one_thread():
        for source in code:
            exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    assert namespace["d"].verdict["layer"] == "reachability"
    inline = namespace["d"]._repr_html_()  # what `d` shows in a notebook cell
    assert inline.startswith("<iframe srcdoc=") and "R201" in inline and "<script" not in inline
    html = (tmp_path / "degrade-notebook" / "report.html").read_text(encoding="utf-8")
    assert "R201" in html
