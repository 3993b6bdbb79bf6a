"""Bounded work on huge and hostile inputs: each case is `degrade diagnose` in a fresh process;
reports its exit code, wall time and peak RSS (docs/benchmarks.md, "Hostile inputs").

    python benchmarks/hostile_inputs.py [--records 1000000] [--tokens 1000000]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]
from _child import measure  # noqa: E402


def diagnose(*args: str) -> dict:
    out = measure([sys.executable, "-m", "degrade", "diagnose", *args, "--format", "json"])
    failed = [c["code"] for c in json.loads(out["stdout"])["checks"] if c["status"] == "failed"] \
        if out["rc"] in (0, 1, 3) else None
    return {"exit": out["rc"], "wall_s": round(out["wall_s"], 1), "peak_rss_mb": round(out["peak_rss_mb"]),
            "failed_checks": failed, "message": out["stderr"].strip().splitlines()[-1][:160] if out["rc"] == 2 else ""}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    a = ap.parse_args()
    from hostile import eval_rows, tiny_model_dir, write_jsonl
    tmp = Path(tempfile.mkdtemp(prefix="degrade-hostile-bench-"))
    out = {}

    run = tmp / "long-history"
    run.mkdir()
    recs = [{"loss": 2.0 / (1 + i / 1000), "learning_rate": 1e-4, "grad_norm": 1.0, "epoch": i / a.records,
             "step": i + 1} for i in range(a.records)]
    recs += [{"eval_loss": 1 + 1 / (k + 1), "eval_runtime": 1e6, "eval_samples_per_second": 1e6,
              "step": (k + 1) * (a.records // 500)} for k in range(500)]
    recs.sort(key=lambda r: r["step"])
    (run / "trainer_state.json").write_text(json.dumps({"log_history": recs, "global_step": a.records}))
    size = (run / "trainer_state.json").stat().st_size
    out[f"history of {a.records:,} records ({size / 2**20:.0f} MB)"] = diagnose(str(run))

    model = tiny_model_dir(tmp / "model")
    rows = eval_rows(200)
    rows[3] = {"input_ids": [i % 50 for i in range(a.tokens)]}
    write_jsonl(rows, tmp / "eval.jsonl")
    write_jsonl(rows[::-1], tmp / "train.jsonl")
    (tmp / "log").mkdir()
    (tmp / "log" / "trainer_state.json").write_text(json.dumps({"log_history": recs[:2000]}))
    out[f"a data row of {a.tokens:,} tokens, no model"] = diagnose(
        str(tmp / "log"), "--eval-data", str(tmp / "eval.jsonl"), "--train-data", str(tmp / "train.jsonl"))
    out[f"a data row of {a.tokens:,} tokens, a 32-position model"] = diagnose(
        str(model), "--eval-data", str(tmp / "eval.jsonl"))

    sparse = tmp / "sparse"
    sparse.mkdir()
    with open(sparse / "trainer_state.json", "wb") as f:
        f.truncate(1 << 30)
    out["a 1 GB (sparse) trainer_state.json"] = diagnose(str(sparse))

    cfg = json.loads((model / "config.json").read_text())
    for name, bad in (("model_type llama at its defaults (6.7e9 parameters)", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}),
                      ("n_layer 100,000 in a 2-layer model's config", {**cfg, "n_layer": 100_000})):
        (model / "config.json").write_text(json.dumps(bad))
        write_jsonl(eval_rows(), tmp / "ok.jsonl")
        out[name] = diagnose(str(model), "--eval-data", str(tmp / "ok.jsonl"), "--select", "I301")
    (model / "config.json").write_text(json.dumps(cfg))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
