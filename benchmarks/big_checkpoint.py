"""A checkpoint larger than the memory a diagnosis may use (docs/benchmarks.md, issue 14 item 5).

    python benchmarks/big_checkpoint.py [--gb 3.0] [--limit-gb 1.5] [--width 768]

Writes a GPT-2-shaped Trainer run (two checkpoints of about `--gb` GB of float32 weights each,
streamed to disk without building the model, and a 40-step log), then runs `degrade diagnose` in
a fresh process under `ulimit -v` of `--limit-gb` GB of address space (torch's import included).
The history and weight checks must run within it (R204 compares the two checkpoints tensor by
tensor, R207 fits spectra matrix by matrix) and the model checks must be skipped with the memory
they need, not crash. Reports exit code, statuses and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import math
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]
from _child import measure  # noqa: E402

GB = 2 ** 30


def gpt2_shapes(width: int, layers: int, vocab: int = 50257, positions: int = 1024) -> dict[str, tuple]:
    shapes = {"transformer.wte.weight": (vocab, width), "transformer.wpe.weight": (positions, width)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        shapes.update({p + "ln_1.weight": (width,), p + "ln_1.bias": (width,),
                       p + "attn.c_attn.weight": (width, 3 * width), p + "attn.c_attn.bias": (3 * width,),
                       p + "attn.c_proj.weight": (width, width), p + "attn.c_proj.bias": (width,),
                       p + "ln_2.weight": (width,), p + "ln_2.bias": (width,),
                       p + "mlp.c_fc.weight": (width, 4 * width), p + "mlp.c_fc.bias": (4 * width,),
                       p + "mlp.c_proj.weight": (4 * width, width), p + "mlp.c_proj.bias": (width,)})
    shapes.update({"transformer.ln_f.weight": (width,), "transformer.ln_f.bias": (width,)})
    return shapes


def write_safetensors(path: Path, shapes: dict[str, tuple], seed: int) -> None:
    """Header, then each tensor's float32 bytes drawn tensor by tensor (never the whole model)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in shapes.items():
            scale = 1.0 if name.endswith((".weight",)) and len(shape) == 1 else 0.02
            f.write((rng.standard_normal(shape, dtype=np.float32) * scale).tobytes())


def build(root: Path, gb: float, width: int) -> Path:
    per_layer = 12 * width * width + 13 * width
    fixed = (50257 + 1024) * width
    layers = max(1, int((gb * GB / 4 - fixed) / per_layer))
    shapes = gpt2_shapes(width, layers)
    run = root / "run"
    for step in (20, 40):
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text(json.dumps({
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": width, "n_layer": layers,
            "n_head": 12, "vocab_size": 50257, "n_positions": 1024}))
        write_safetensors(ckpt / "model.safetensors", shapes, seed=step)
    log = [{"step": s, "loss": 4.0 * math.exp(-s / 15) + 2.0, "learning_rate": 1e-4, "grad_norm": 1.0}
           for s in range(1, 41)]
    log += [{"step": s, "eval_loss": 4.1 * math.exp(-s / 15) + 2.1} for s in (10, 20, 30, 40)]
    (run / "trainer_state.json").write_text(json.dumps({"log_history": log, "global_step": 40, "max_steps": 40}))
    return run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=3.0)
    ap.add_argument("--limit-gb", type=float, default=1.5)
    ap.add_argument("--width", type=int, default=768)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="degrade-big-"))
    run = build(root, a.gb, a.width)
    ckpt_bytes = (run / "checkpoint-40" / "model.safetensors").stat().st_size
    limit_kb = int(a.limit_gb * GB / 1024)
    cmd = f"ulimit -v {limit_kb} && exec {sys.executable} -m degrade diagnose {run} --budget fast --format json"
    out = measure(["bash", "-c", cmd])
    doc = json.loads(out["stdout"]) if out["rc"] in (0, 1, 3) else None
    result = {"checkpoint_gb": round(ckpt_bytes / GB, 2), "checkpoints": 2, "ulimit_v_gb": a.limit_gb,
              "checkpoint_over_limit": round(ckpt_bytes / (a.limit_gb * GB), 2), "exit": out["rc"],
              "peak_rss_mb": round(out["peak_rss_mb"]),
              "stderr": out["stderr"].strip().splitlines()[-1][:300] if out["rc"] not in (0, 1, 3) else ""}
    if doc is not None:
        result["checks"] = {c["code"]: (c["status"], c.get("reason", "")[:140]) for c in doc["checks"]
                            if c["code"] in ("R201", "R202", "R203", "R204", "R207", "O101", "I302")}
        result["failed"] = [c["code"] for c in doc["checks"] if c["status"] == "failed"]
    print(json.dumps(result, indent=2))
    subprocess.run(["rm", "-rf", str(root)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
