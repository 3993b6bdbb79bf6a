"""The hardening fuzzer: real inputs, mutated the way a corrupt or hostile file would be, run through
the CLI's entry point. Each case must end in a defined outcome:

- exit code 0, 1 or 3 with a valid JSON document on stdout, or exit 2 with nothing on stdout and
  exactly one line on stderr; never a traceback, never exit 4 (degrade's own bug);
- no check `timed out` (a hang) and no check `failed` on what was bad input;
- the run dir byte-for-byte unchanged.

Inputs: the real trainer_state.json files of shared/real-runs/, and a tiny real GPT-2 model dir
(config.json, model.safetensors, a sharded copy with its index) with eval data. Mutations: a
hostile value at a random place of the parsed document, deleted or added keys, reordered or
duplicated log records, and byte-level damage (truncation, a flipped byte, a BOM, invalid UTF-8).
tests/test_fuzz.py runs a quick profile in CI; `make fuzz` runs >= 10,000 cases (fixed seed).
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import signal
import struct
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from conftest import REAL_RUNS, run_cli, snapshot
from hostile import eval_rows, write_jsonl

LOGS = sorted(p / "trainer_state.json" for p in REAL_RUNS.iterdir()
              if (p / "trainer_state.json").is_file()
              and not (p / "trainer_state.json").read_bytes().startswith(b"version https://git-lfs"))
NESTED = json.loads("[" * 70 + "]" * 70)
HOSTILE_VALUES = [
    "", "abc", "\ud800", "<script>document.title='x'</script>", "NaN", "../../etc/passwd", "/dev/zero",
    "x" * 5000, -1, 0, 1, 2, 4, 7, 16, 32, 50, 2 ** 31, 2 ** 53 + 1, 2 ** 63, 10 ** 30, -10 ** 30, 1.5, -0.0, 1e308,
    math.nan, math.inf, -math.inf, True, False, None, [], [1, 2], [[1]], {}, {"a": 1}, NESTED,
]
SIZE_KEYS = ["n_layer", "n_head", "n_embd", "vocab_size", "n_positions", "n_inner", "model_type",
             "architectures", "auto_map", "tie_word_embeddings", "num_labels", "bos_token_id"]
CASE_SECONDS = 120  # a case slower than this is a hang


class Hang(BaseException):
    pass


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)  # exit code -> count
    kinds: Counter = field(default_factory=Counter)
    problems: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"cases": sum(self.outcomes.values()), "exit_codes": dict(sorted(self.outcomes.items())),
                "kinds": dict(sorted(self.kinds.items())), "problems": len(self.problems),
                "first_problems": self.problems[:10]}


# ---- mutations ---------------------------------------------------------------------------------
def _places(doc, path=()):
    """(container, key) of every value in a JSON document, parents before children."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out.append((doc, k))
        if len(out) < 5000:
            out += _places(v, (*path, k))
    return out


def mutate_doc(draw, doc):
    """1-3 structural edits of a parsed JSON document, in place; returns it."""
    for _ in range(draw(st.integers(1, 3))):
        places = _places(doc)
        op = draw(st.sampled_from(["set", "set", "delete", "add", "records"]))
        if op == "records" and isinstance(doc, dict) and isinstance(doc.get("log_history"), list) and doc["log_history"]:
            lh = doc["log_history"]
            how = draw(st.sampled_from(["shuffle", "reverse", "duplicate", "truncate", "zero-steps", "drop-steps"]))
            if how == "shuffle":
                doc["log_history"] = lh[1::2] + lh[::2]
            elif how == "reverse":
                lh.reverse()
            elif how == "duplicate":
                i = draw(st.integers(0, len(lh) - 1))
                lh.insert(i, dict(lh[i]) if isinstance(lh[i], dict) else lh[i])
            elif how == "truncate":
                del lh[draw(st.integers(0, len(lh))):]
            else:
                for r in lh:
                    if isinstance(r, dict):
                        r.pop("step", None) if how == "drop-steps" else r.update(step=0)
        elif places and op in ("set", "delete"):
            parent, key = places[draw(st.integers(0, len(places) - 1))]
            if op == "delete" and isinstance(parent, dict):
                del parent[key]
            else:
                parent[key] = hostile(draw)
        elif isinstance(doc, dict):
            key = draw(st.sampled_from(["eval_<b>x</b>", "eval_loss", "step", "loss", "weight_map", *SIZE_KEYS]))
            doc[key] = hostile(draw)
    return doc


def hostile(draw):
    return copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))  # a fresh copy: later edits stay local


def mutate_bytes(draw, raw: bytes) -> bytes:
    how = draw(st.sampled_from(["truncate", "flip", "insert", "bom", "empty", "big-int"]))
    at = draw(st.integers(0, max(len(raw) - 1, 0)))
    if how == "truncate":
        return raw[:at]
    if how == "flip":
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    if how == "insert":
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\x00", b"\n", b"{", b"]", b'"', b"\\u"])) + raw[at:]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "big-int":
        return raw.replace(b": 1", b": 1" + b"7" * 4400, 1)
    return b""


def dumps(doc) -> bytes:
    return json.dumps(doc).encode()  # ensure_ascii: lone surrogates survive as \\ud800 escapes


# ---- building a case ---------------------------------------------------------------------------
def _shard(model_dir: Path) -> None:
    """Replace model.safetensors by one shard and its index (a sharded checkpoint)."""
    raw = (model_dir / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    names = [k for k in json.loads(raw[8:8 + n]) if k != "__metadata__"]
    (model_dir / "model.safetensors").rename(model_dir / "model-00001-of-00001.safetensors")
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: "model-00001-of-00001.safetensors" for k in names}}))


def build_case(draw, root: Path, tiny_model: Path) -> tuple[str, list[str]]:
    """Write one mutated run under root; (kind, the CLI arguments after `diagnose`)."""
    kind = draw(st.sampled_from(["state"] * 5 + ["state-bytes", "config", "config", "header",
                                                  "header-bytes", "index", "data", "data-shape", "data-bytes"]))
    run = root / "run"
    if kind.startswith("state"):
        run.mkdir()
        raw = draw(st.sampled_from(LOGS)).read_bytes()
        raw = mutate_bytes(draw, raw) if kind == "state-bytes" else dumps(mutate_doc(draw, json.loads(raw)))
        (run / "trainer_state.json").write_bytes(raw)
        return kind, [str(run), "--format", "json"]
    shutil.copytree(tiny_model, run)
    if kind == "index":
        _shard(run)
    target = {"config": "config.json", "index": "model.safetensors.index.json"}.get(kind)
    if target:
        (run / target).write_bytes(dumps(mutate_doc(draw, json.loads((run / target).read_text()))))
    elif kind.startswith("header"):
        path = run / "model.safetensors"
        raw = path.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        if kind == "header-bytes":
            path.write_bytes(mutate_bytes(draw, raw))
        else:
            header = dumps(mutate_doc(draw, json.loads(raw[8:8 + n])))
            path.write_bytes(struct.pack("<Q", len(header)) + header + raw[8 + n:])
    rows = eval_rows()
    ev = root / "eval.jsonl"
    if kind == "data":
        write_jsonl(mutate_doc(draw, rows), ev)
    elif kind == "data-shape":  # valid rows of odd shapes: empty, constant, one token, full length
        shapes = [[], [0], [49] * 32, [3] * 5, list(range(32)), [1, 2]]
        write_jsonl([{"input_ids": draw(st.sampled_from(shapes))} for _ in rows], ev)
    elif kind == "data-bytes":
        ev.write_bytes(mutate_bytes(draw, write_jsonl(rows, ev).read_bytes()))
    else:
        write_jsonl(rows, ev)
    checks = draw(st.sampled_from(["I301,I304,R204,R207"] * 3 + ["O1,R2,I3,P4"]))
    return kind, [str(run), "--eval-data", str(ev), "--budget", "fast", "--format", "json",
                  "--select", checks]


# ---- judging a case ----------------------------------------------------------------------------
def problem_of(r, before: dict, after: dict) -> str | None:
    if "Traceback" in r.stderr or r.code not in (0, 1, 2, 3):
        return f"exit {r.code}: {r.stderr.strip()[-300:]}"
    if before != after:
        return "the run dir changed"
    if r.code == 2:
        lines = r.stderr.strip().splitlines()
        if r.stdout or len(lines) != 1:
            return f"exit 2 with {len(lines)} stderr lines / stdout {r.stdout[:80]!r}"
        return None
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        return f"exit {r.code} but stdout is not JSON: {r.stdout[:120]!r}"
    bad = [f"{c['code']}: {c['reason']}" for c in doc["checks"] if c["status"] == "failed"]
    return f"failed checks: {bad[:3]}" if bad else None


def run_case(draw, tiny_model: Path, tally: Tally) -> str | None:
    root = Path(tempfile.mkdtemp(prefix="degrade-fuzz-"))
    try:
        kind, argv = build_case(draw, root, tiny_model)
        tally.kinds[kind] += 1
        before = snapshot(root / "run")
        signal.signal(signal.SIGALRM, _hang)
        signal.alarm(CASE_SECONDS)
        try:
            r = run_cli(["diagnose", *argv, "--check-timeout", str(CASE_SECONDS // 2)])
        finally:
            signal.alarm(0)
        tally.outcomes[r.code] += 1
        problem = problem_of(r, before, snapshot(root / "run"))
        if problem:
            tally.problems.append({"kind": kind, "problem": problem})
        return problem
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _hang(signum, frame):
    raise Hang(f"a case ran past {CASE_SECONDS} s")
