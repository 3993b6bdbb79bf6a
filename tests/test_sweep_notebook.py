"""notebooks/sweep.ipynb runs top to bottom (issue 17): its code cells, in order, in one namespace,
in a fresh folder, as a kernel would run them, and its decision cell names a best run, its verdict
and the learning curve's reading.

    python tests/test_sweep_notebook.py --write   # run it and store each cell's output in the notebook
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "sweep.ipynb"


def run_notebook(folder: Path) -> list[str]:
    """Each code cell's printed output (and the value of its last line, as a kernel shows it)."""
    import ast
    nb = json.loads(NOTEBOOK.read_text())
    namespace: dict = {"__name__": "__main__"}
    outputs = []
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for cell in (c for c in nb["cells"] if c["cell_type"] == "code"):
            tree = ast.parse("".join(cell["source"]))
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(tree, "<cell>", "exec"), namespace)
                if last is not None:
                    value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
                    if value is not None:
                        print(repr(value))
            outputs.append(out.getvalue())
    finally:
        os.chdir(cwd)
    return outputs


def test_the_sweep_notebook_runs_and_decides(tmp_path):
    outputs = run_notebook(tmp_path)
    assert "9 runs:" in outputs[1] and "0 failed" in outputs[1]
    assert "params.learning_rate" in outputs[2].splitlines()[0]
    decision = outputs[3]
    assert "best run: lr=" in decision and "its verdict:" in decision and "learning curve at lr=" in decision


if __name__ == "__main__" and "--write" in sys.argv:
    import shutil
    folder = Path("/tmp/notebook")  # a fixed place: the stored outputs show its paths
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    outs = iter(run_notebook(folder))
    nb = json.loads(NOTEBOOK.read_text())
    for n, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        text = next(outs)
        cell["execution_count"] = n + 1
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": text.splitlines(keepends=True)}] if text else []
    NOTEBOOK.write_text(json.dumps(nb, indent=1) + "\n")
