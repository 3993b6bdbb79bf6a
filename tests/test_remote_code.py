"""No code from a run dir runs without --trust-remote-code: not the config's, the model's, the
tokenizer's or a processor's, and nothing prompts on stdin (transformers asks when
trust_remote_code is left as None; `echo y | degrade ...` used to answer it)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from helpers import assert_rejected
from hostile import eval_rows, write_jsonl

DEGRADE = Path(__file__).resolve().parents[1] / "degrade"


def _plant(folder: Path, module: str, marker: Path) -> None:
    (folder / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")


def _text_data(tmp_path) -> Path:
    return write_jsonl([{"text": f"hello world {i}"} for i in range(8)], tmp_path / "text.jsonl")


@pytest.fixture
def evil_tokenizer(tiny_model, tmp_path):
    """A model dir whose model_type transformers does not know and whose tokenizer_config.json maps
    AutoTokenizer to a tokenization_evil.py in the folder (the reported reproduction)."""
    run = shutil.copytree(tiny_model, tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "model_type": "evilmodel"}))
    (run / "tokenizer_config.json").write_text(json.dumps(
        {"auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]},
         "tokenizer_class": "EvilTokenizer"}))
    marker = tmp_path / "tokenizer-code-ran"
    _plant(run, "tokenization_evil", marker)
    return run, marker


def test_tokenizer_code_never_runs_and_nothing_prompts(evil_tokenizer, tmp_path, monkeypatch):
    import io
    run, marker = evil_tokenizer
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 10))  # `echo y | degrade diagnose ...`
    line = assert_rejected([run, "--eval-data", _text_data(tmp_path)], "tokenizer_config.json",
                           "custom tokenizer code", "--trust-remote-code")
    assert "Do you wish" not in line and not marker.exists()
    assert sys.stdin.read() == "y\n" * 10  # nothing was read from stdin


def test_tokenizer_code_never_runs_through_the_real_command(evil_tokenizer, tmp_path):
    run, marker = evil_tokenizer
    p = subprocess.run([sys.executable, "-m", "degrade", "diagnose", str(run), "--eval-data",
                        str(_text_data(tmp_path))], input="y\n" * 10, capture_output=True, text=True,
                       timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2, p.stderr
    assert p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, (p.stdout, p.stderr)
    assert not marker.exists()


def test_the_flag_does_run_it(evil_tokenizer, tmp_path):
    """The positive control: the same folder with --trust-remote-code imports the module, so the
    tests above would see a marker if degrade ran it."""
    run, marker = evil_tokenizer
    run_cli(["diagnose", run, "--eval-data", _text_data(tmp_path), "--trust-remote-code"])
    assert marker.exists()


@pytest.mark.parametrize("auto_map,module", [
    ({"AutoConfig": "configuration_evil.EvilConfig"}, "configuration_evil"),
    ({"AutoModelForCausalLM": "modeling_evil.EvilModel"}, "modeling_evil"),
], ids=["config", "model"])
def test_config_and_model_code_never_run(tiny_model, tmp_path, auto_map, module):
    run = shutil.copytree(tiny_model, tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "auto_map": auto_map}))
    marker = tmp_path / f"{module}-ran"
    _plant(run, module, marker)
    ev = write_jsonl(eval_rows(), tmp_path / "eval.jsonl")
    assert_rejected([run, "--eval-data", ev, "--select", "O101,I301"], "config.json",
                    "custom modeling code", "--trust-remote-code")
    assert not marker.exists()


def test_processor_code_never_runs(tiny_model, tmp_path):
    """degrade never loads a processor or feature extractor: their auto_map stays inert."""
    run = shutil.copytree(tiny_model, tmp_path / "run")
    marker = tmp_path / "processor-ran"
    for name in ("processor_config.json", "preprocessor_config.json"):
        (run / name).write_text(json.dumps({"auto_map": {"AutoProcessor": "processing_evil.EvilProcessor",
                                                         "AutoFeatureExtractor": "processing_evil.X"}}))
    _plant(run, "processing_evil", marker)
    ev = write_jsonl(eval_rows(), tmp_path / "eval.jsonl")
    r = run_cli(["diagnose", run, "--eval-data", ev, "--budget", "fast", "--format", "json"])
    assert r.code in (0, 1, 3), r.stderr
    assert not marker.exists()


def test_every_transformers_loader_call_passes_the_flag():
    """Structural: Auto*.from_pretrained / from_config are called in degrade/run/hf_auto.py only,
    each with trust_remote_code passed explicitly (never left to transformers' prompt)."""
    import ast
    calls = []
    for path in DEGRADE.rglob("*.py"):
        if "bench" in path.parts:  # DegradeBench builds its own models from code, never from a run dir
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("from_pretrained", "from_config"):
                calls.append((path.relative_to(DEGRADE).as_posix(), {k.arg for k in node.keywords}))
    assert calls, "no loader call found: the test is stale"
    assert {p for p, _ in calls} == {"run/hf_auto.py"}, calls
    assert all("trust_remote_code" in kws for _, kws in calls), calls
