"""Building blocks for the hostile-input tests and the fuzzer: a tiny real model dir, a real
Trainer log, and writers for corrupted copies of each."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from conftest import REAL_RUNS

VOCAB, POSITIONS = 50, 32
REAL_LOG = REAL_RUNS / "whisper-small-hindi" / "trainer_state.json"  # eval + train + summary


def tiny_model_dir(folder: Path) -> Path:
    """config.json + model.safetensors of an untrained 2-layer GPT-2 (vocab 50, 32 positions)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=VOCAB, n_positions=POSITIONS,
                     bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    return folder


def eval_rows(n: int = 24) -> list[dict]:
    return [{"input_ids": [(i * 7 + j) % VOCAB for j in range(8 + i % 8)]} for i in range(n)]


def write_jsonl(rows, path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def log_run(folder: Path, state: dict | None = None, raw: bytes | None = None) -> Path:
    """A Trainer output dir holding only trainer_state.json (a real one unless given)."""
    folder.mkdir(parents=True, exist_ok=True)
    if raw is None:
        raw = json.dumps(state if state is not None else real_state()).encode()
    (folder / "trainer_state.json").write_bytes(raw)
    return folder


def real_state() -> dict:
    return json.loads(REAL_LOG.read_text(encoding="utf-8"))


def model_run(folder: Path, template: Path) -> Path:
    shutil.copytree(template, folder)
    return folder


def safetensors_bytes(header, data: bytes = b"") -> bytes:
    """A safetensors file with `header` (any JSON value) and `data` after it."""
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth
