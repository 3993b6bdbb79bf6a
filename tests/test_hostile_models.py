"""Hostile configs, weight headers, index files, data rows and options end in one line and exit 2,
or in a documented accepted outcome: nothing is allocated from a config before its sizes are
checked against the weights, and the run dir is never changed."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import run_cli, snapshot
from helpers import assert_rejected
from hostile import POSITIONS, VOCAB, eval_rows, log_run, nested, safetensors_bytes, write_jsonl


# ---- config.json, safetensors headers, index files --------------------------------------------
def _model(tiny_model, tmp_path):
    return shutil.copytree(tiny_model, tmp_path / "model")


def _set_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("raw,words", [
    ("[1, 2]", ["must be a JSON object", "a list"]),
    ('{"x": ' + nested(5000) + "}", ["nests deeper"]),
], ids=["list", "deep"])
def test_config_shapes(tiny_model, tmp_path, raw, words):
    model = _model(tiny_model, tmp_path)
    (model / "config.json").write_text(raw)
    assert_rejected([model], "config.json", *words)


@pytest.mark.parametrize("changes,words", [
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, ["model.safetensors", "does not match"]),
    ({"n_layer": 10 ** 12}, ["/n_layer", "below 2^31"]),
    ({"n_layer": 100_000}, ["/n_layer", "100,000 layers", "tensors"]),
    ({"n_embd": "wide"}, ["/n_embd", "a string"]),
], ids=["llama-defaults", "n_layer-1e12", "n_layer-100k", "n_embd-string"])
def test_config_that_does_not_describe_the_weights(tiny_model, tmp_path, changes, words):
    """Refused from shapes and counts before any model is allocated (meta device)."""
    model = _model(tiny_model, tmp_path)
    cfg = json.loads((model / "config.json").read_text())
    if "model_type" in changes:  # a llama config at its defaults: 6.7 billion parameters
        cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    else:
        cfg.update(changes)
    (model / "config.json").write_text(json.dumps(cfg))
    ev = write_jsonl(eval_rows(), tmp_path / "eval.jsonl")
    assert_rejected([model, "--eval-data", ev, "--select", "I301"], "", *words)


@pytest.mark.parametrize("header,words", [
    ([1, 2], ["safetensors header", "a list"]),
    ({"w": {"dtype": "F32", "shape": [2]}}, ["/w/data_offsets"]),
    ({"w": {"dtype": "F32", "shape": [10 ** 12], "data_offsets": [0, 4 * 10 ** 12]}}, ["truncated"]),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, ["needs 16 bytes"]),
    ({"w": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}, ["unknown dtype"]),
], ids=["list", "no-offsets", "terabytes", "span-mismatch", "dtype"])
def test_safetensors_headers(tiny_model, tmp_path, header, words):
    model = _model(tiny_model, tmp_path)
    (model / "model.safetensors").write_bytes(safetensors_bytes(header, b"\0" * 16))
    assert_rejected([model], "model.safetensors", *words)


@pytest.mark.parametrize("wmap,words", [
    ({"w": "model.safetensors.index.json"}, ["not a .safetensors or .bin file name"]),
    ([1, 2], ["/weight_map", "a list"]),
    ({"w": 3}, ["/weight_map/w", "an integer"]),
    ({"w": "/dev/null"}, ["/weight_map/w", "'/dev/null'"]),
    ({"w": "missing.safetensors"}, ["names shard 'missing.safetensors'", "does not exist"]),
    (None, ["/weight_map", "null"]),
], ids=["self", "list", "int", "absolute", "missing", "null"])
def test_index_files(tiny_model, tmp_path, wmap, words):
    model = _model(tiny_model, tmp_path)
    (model / "model.safetensors").unlink()
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    assert_rejected([model], "model.safetensors.index.json", *words)


# ---- data rows --------------------------------------------------------------------------------
@pytest.mark.parametrize("row,words", [
    ({"input_ids": [1, 1.5, 2]}, ["line 3", "integer token ids", "1.5"]),
    ({"input_ids": [1, True]}, ["line 3", "a boolean"]),
    ({"input_ids": ["5", 2]}, ["line 3", "a string"]),
    ({"input_ids": [1, -4]}, ["line 3", "-4"]),
    ({"text": 5}, ["line 3"]),
    ([1, 2, 3], ["line 3", "expected a row"]),
    ({"labels": [1, 2]}, ["line 3", "no input_ids"]),
], ids=["float", "bool", "digit-string", "negative", "no-ids", "list-row", "missing-column"])
def test_data_rows_are_typed(tmp_path, row, words):
    rows = eval_rows(4)
    rows.insert(2, row)
    ev = tmp_path / "eval.jsonl"
    ev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert_rejected([log_run(tmp_path / "run"), "--eval-data", ev], "eval.jsonl", *words)


def test_json_columns_of_unequal_length(tmp_path):
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"input_ids": [[1, 2], [3, 4]], "labels": [[1, 2]]}))
    assert_rejected([log_run(tmp_path / "run"), "--eval-data", ev], "eval.json", "different lengths")


@pytest.mark.parametrize("ids,words", [
    ([VOCAB + 3, 1], ["row 2", "vocabulary of 50"]),
    (list(range(POSITIONS + 5)), ["row 2", "37 tokens", "position table holds 32"]),
], ids=["out-of-vocabulary", "too-long"])
def test_data_that_does_not_fit_the_model(tiny_model, tmp_path, ids, words):
    model = _model(tiny_model, tmp_path)
    rows = eval_rows(4)
    rows[1] = {"input_ids": [i % VOCAB for i in ids] if len(ids) > POSITIONS else ids}
    ev = write_jsonl(rows, tmp_path / "eval.jsonl")
    assert_rejected([model, "--eval-data", ev, "--select", "O101,I301"], "eval.jsonl", *words)


def test_bom_in_jsonl_and_csv_is_accepted(tmp_path):
    from degrade.run.data import load_examples
    a = tmp_path / "a.jsonl"
    a.write_bytes(b"\xef\xbb\xbf" + b'{"input_ids": [1, 2]}\n')
    b = tmp_path / "b.csv"
    b.write_bytes(b"\xef\xbb\xbfinput_ids\n\"[1, 2]\"\n")
    assert load_examples(a).input_ids == load_examples(b).input_ids == [[1, 2]]


def test_unreadable_parquet_is_one_line(tmp_path):
    ev = tmp_path / "eval.parquet"
    ev.write_bytes(b"PAR1" + b"\0" * 100 + b"PAR1")
    assert_rejected([log_run(tmp_path / "run"), "--eval-data", ev], "eval.parquet", "parquet")


# ---- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text,words", [
    ("R201.min_gain_fraction=abc", ["R201.min_gain_fraction", "expects a number"]),
    ("R201.min_gain_fraction=nan", ["expects a finite number"]),
    ("R201.nope=1", ["has no option nope"]),
    ("Z999.x=1", ["no such check"]),
], ids=["string", "nan", "unknown-option", "unknown-check"])
def test_set_values_are_type_checked(tmp_path, text, words):
    assert_rejected([log_run(tmp_path / "run"), "--set", text], text.split("=")[0].split(".")[0], *words)


def test_the_run_dir_is_never_changed(tiny_model, tmp_path):
    model = _model(tiny_model, tmp_path)
    log_run(model)
    ev = write_jsonl(eval_rows(), tmp_path / "eval.jsonl")
    before = snapshot(model)
    r = run_cli(["diagnose", model, "--eval-data", ev, "--budget", "fast", "--format", "json"])
    assert r.code in (0, 1, 3), r.stderr
    assert snapshot(model) == before


def test_header_length_beyond_the_format_limit(tiny_model, tmp_path):
    model = _model(tiny_model, tmp_path)
    with open(model / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", 200_000_000))
        f.truncate(200_000_100)
    assert_rejected([model], "model.safetensors", "header")


# ---- links, permissions -----------------------------------------------------------------------
def test_weight_links_out_of_the_run_dir_are_followed_and_named(tiny_model, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    model = _model(tiny_model, tmp_path)
    shutil.move(model / "model.safetensors", store / "w.safetensors")
    os.symlink(store / "w.safetensors", model / "model.safetensors")
    ev = write_jsonl(eval_rows(), tmp_path / "eval.jsonl")
    r = run_cli(["diagnose", model, "--eval-data", ev, "--select", "I301", "--format", "json"])
    assert r.code in (0, 1, 3), r.stderr
    doc = json.loads(r.stdout)
    assert doc["run"]["linked_weights"] == {"model.safetensors": str(store / "w.safetensors")}
    assert {c["code"]: c["status"] for c in doc["checks"]}["I301"] == "ran"


def test_read_only_run_dir_as_an_unprivileged_user(tiny_model):
    """Run as `nobody` (when the tests run as root) on a run dir nobody may write: it works, and
    nothing in it changes."""
    base = Path(tempfile.mkdtemp(prefix="degrade-ro-"))
    os.chmod(base, 0o755)
    run = shutil.copytree(tiny_model, base / "run")
    log_run(run)
    ev = write_jsonl(eval_rows(), base / "eval.jsonl")
    home = base / "home"
    home.mkdir(mode=0o777)
    os.chmod(home, 0o777)
    for p in [run, *run.rglob("*")]:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    before = snapshot(run)
    as_nobody = (lambda: (os.setgid(65534), os.setuid(65534))) if os.geteuid() == 0 else None
    try:
        probe = subprocess.run([sys.executable, "-c", "import degrade"], preexec_fn=as_nobody,
                               capture_output=True, cwd=home)
        why = probe.stderr.decode()[-200:] if probe.returncode else None
    except PermissionError as e:
        why = str(e)
    if why:  # .ci/run lets others traverse /root, where the interpreter lives
        pytest.skip(f"the unprivileged user cannot run this interpreter ({why})")
    p = subprocess.run([sys.executable, "-m", "degrade", "diagnose", str(run), "--eval-data", str(ev),
                        "--budget", "fast", "--format", "json"], preexec_fn=as_nobody, capture_output=True,
                       text=True, timeout=900, cwd=home,
                       env={**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf")})
    assert p.returncode in (0, 1, 3), p.stderr[-2000:]
    assert json.loads(p.stdout)["run"]["format"] == "hf-trainer"
    assert snapshot(run) == before
    for q in [run, *run.rglob("*")]:
        os.chmod(q, 0o755 if q.is_dir() else 0o644)
    shutil.rmtree(base)
