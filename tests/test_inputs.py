"""Reading what users give: every data format, and remote code only when asked for."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from conftest import run_cli
from degrade.run.data import load_examples

ROWS = [{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]},
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}]
CLS_ROWS = [{"input_ids": [0, 4, 5], "label": 1}, {"input_ids": [0, 6], "label": 0}]


def _write(rows, path):
    fmt = path.suffix or "dir"
    if fmt == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == ".json":
        path.write_text(json.dumps(rows))
    elif fmt == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({k: json.dumps(v) for k, v in r.items()} for r in rows)
    elif fmt == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        from datasets import Dataset
        Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv", "d.parquet", "saved"])
@pytest.mark.parametrize("rows", [ROWS, CLS_ROWS], ids=["causal-lm", "classification"])
def test_every_format_reads_the_same(name, rows, tmp_path):
    reference = load_examples(_write(rows, tmp_path / "ref.jsonl"))
    got = load_examples(_write(rows, tmp_path / name))
    assert got.input_ids == reference.input_ids
    assert got.labels == reference.labels and got.label == reference.label
    assert got.fingerprint == reference.fingerprint


def test_json_as_columns(tmp_path):
    path = tmp_path / "cols.json"
    path.write_text(json.dumps({"input_ids": [r["input_ids"] for r in ROWS],
                                "labels": [r["labels"] for r in ROWS]}))
    assert load_examples(path).labels == [r["labels"] for r in ROWS]


def test_text_is_tokenised_with_the_runs_tokenizer(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "a b", "label": 1}) + "\n")
    ex = load_examples(path, tokenizer=lambda: (lambda t: {"input_ids": [len(w) for w in t.split()]}))
    assert ex.input_ids == [[1, 1]] and ex.label == [1] and ex.text == ["a b"]


def test_text_without_a_tokenizer_is_bad_input(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "a b"}) + "\n")
    r = run_cli(["diagnose", str(tmp_path), "--eval-data", str(path)])
    assert r.code == 2 and r.stderr.count("\n") == 1


def test_custom_code_needs_the_flag(scenarios, tmp_path):
    """A checkpoint whose config asks for its own modeling code is refused without
    --trust-remote-code, with a one-line reason, and the code is never imported."""
    model_dir = tmp_path / "remote"
    shutil.copytree(scenarios["healthy"].run_dir, model_dir,
                    ignore=shutil.ignore_patterns("checkpoint-*", "trainer_state.json"))
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "imported"
    (model_dir / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    r = run_cli(["diagnose", str(model_dir), "--eval-data", str(scenarios["healthy"].eval_data),
                 "--select", "I303"])
    assert r.code == 2, r.stderr
    assert "config.json" in r.stderr and "--trust-remote-code" in r.stderr
    assert r.stderr.count("\n") == 1 and not marker.exists()
