"""What a diagnosis costs in model compute, counted in eval passes (docs/benchmarks.md).

    python benchmarks/diagnose_cost.py [--budgets fast,standard,thorough] [--train-rows 20000]
                                       [--layers 12 --heads 12 --width 96 --vocab 50257]
                                       [--arch gpt2|bert] [--eval-rows 256] [--logs match,mismatch]
                                       [--per-check]

`--arch bert` builds a BERT sequence classifier (two classes) of the same shape instead (BERT-base:
--width 768 --vocab 30522); `--width 768 --vocab 50257` with gpt2 is GPT-2 small (124M).

Builds a GPT-2-small-shaped Trainer run (12 layers x 12 heads, 1024 positions, a tiny width; two
checkpoints of random weights; a synthetic trainer_state.json whose logged eval loss at the last
step either is the checkpoint's real loss ("match": a run whose logs come back) or is not
("mismatch": O101 then explains it with passes of its own), eval data of 256 x 128 tokens and
training data of 20k x 128, and runs degrade.diagnose once per budget in a fresh process. A forward
hook on the token embedding of every model degrade loads counts the tokens each forward reads;
one eval pass is 256 x 128 tokens, and a forward with autograd recording counts 3 (forward +
backward). Reported per budget: passes in all and per check, wall time, one plain eval pass's wall
time measured in the same process, and peak RSS; with `--per-check`, each check's own peak RSS
in the same diagnosis (the process's high-water mark is reset before each check through
/proc/self/clear_refs, so each number is that check's peak on top of what earlier checks left).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

SEQ = 128


def _model(a, seed: int):
    import torch
    torch.manual_seed(seed)
    if a.arch == "bert":
        from transformers import BertConfig, BertForSequenceClassification
        return BertForSequenceClassification(BertConfig(
            num_hidden_layers=a.layers, num_attention_heads=a.heads, hidden_size=a.width,
            intermediate_size=4 * a.width, vocab_size=a.vocab, num_labels=2))
    from transformers import GPT2Config, GPT2LMHeadModel
    return GPT2LMHeadModel(GPT2Config(n_layer=a.layers, n_head=a.heads, n_embd=a.width, vocab_size=a.vocab,
                                      n_positions=1024, bos_token_id=0, eos_token_id=0))


def build(root: Path, a, logs: str) -> tuple[Path, Path, Path]:
    import numpy as np
    run = root / logs / "run"
    for step, seed in ((100, 0), (200, 1)):
        _model(a, seed).save_pretrained(run / f"checkpoint-{step}")
    log = []
    for s in range(10, 210, 10):
        log.append({"loss": 4.0 * math.exp(-s / 80) + 1.0, "learning_rate": 1e-4, "grad_norm": 1.0,
                    "epoch": s / 200, "step": s})
        if s % 50 == 0:
            log.append({"eval_loss": 4.0 * math.exp(-s / 80) + 1.1, "eval_runtime": 1.0,
                        "eval_samples_per_second": float(a.eval_rows), "epoch": s / 200, "step": s})
    rng = np.random.default_rng(0)

    def write(path: Path, n: int) -> Path:
        with open(path, "w") as f:
            for _ in range(n):
                ids = rng.integers(0, a.vocab, SEQ).tolist()
                row = {"input_ids": ids, "label": int(ids[0] % 2)} if a.arch == "bert" else {"input_ids": ids}
                f.write(json.dumps(row) + "\n")
        return path
    ev, tr = write(root / logs / "eval.jsonl", a.eval_rows), write(root / logs / "train.jsonl", a.train_rows)
    if logs == "match":  # the checkpoint's own eval loss, as the Trainer would have logged it
        from degrade.probing.scoring import score
        from degrade.run.data import load_examples
        from degrade.run.load import load_model
        s = score(load_model(run / "checkpoint-200"), load_examples(ev))
        log[-1]["eval_loss"] = s.token_mean_loss
    (run / "trainer_state.json").write_text(json.dumps({"log_history": log, "global_step": 200, "max_steps": 200}))
    return run, ev, tr


def _peak_rss_mb() -> int:
    """VmHWM of this process. Not getrusage's ru_maxrss: Linux carries that across exec from the
    parent at fork (exec_mmap), so a child of the process that built the models would report the
    builder's peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmHWM:"))


def _per_check_peaks() -> dict:
    """Wrap the suite's check runner so each check's peak RSS (MB) is recorded."""
    import degrade.suite as suite
    peaks: dict = {}
    original = suite.run_check

    def wrapped(run, spec, *args, **kwargs):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        out = original(run, spec, *args, **kwargs)
        peaks[spec.code] = _peak_rss_mb()
        return out
    suite.run_check = wrapped
    return peaks


def one(run: Path, ev: Path, tr: Path, budget: str, per_check: bool = False) -> dict:
    """Diagnose once with the counting hook; runs in its own process (see main)."""
    import numpy as np
    import torch

    import degrade
    import degrade.run.load as load
    tokens: Counter = Counter()
    original = load.load_model

    def counted(*args, **kwargs):
        handle = original(*args, **kwargs)

        def hook(module, inputs, output):
            ids = inputs[0]
            weight = 3 if torch.is_grad_enabled() else 1
            tokens[threading.current_thread().name.removeprefix("degrade-")] += weight * ids.numel()
        handle.module.get_input_embeddings().register_forward_hook(hook)
        return handle
    load.load_model = counted
    torch.set_num_threads(1)
    from degrade.sandbox.limits import tune_malloc
    tune_malloc()  # as `degrade diagnose` does
    peaks = _per_check_peaks() if per_check else None
    start = time.perf_counter()
    d = degrade.diagnose(run, eval_data=ev, train_data=tr, budget=budget)
    wall = time.perf_counter() - start
    # the diagnosis's own peak, before the timing pass below (the largest check's with --per-check,
    # whose resets hide what came before the first check)
    peak = max(peaks.values()) if peaks else _peak_rss_mb()
    per_pass = sum(1 for _ in open(ev)) * SEQ
    # one plain eval pass on the same machine, in the same process, in the engine's memory-sized
    # batches (a fixed batch of full-vocabulary logits would set the peak RSS itself): the unit
    from degrade.engine.passes import run_pass
    from degrade.run.data import load_examples
    model, examples = original(run / "checkpoint-200"), load_examples(ev)
    t = time.perf_counter()
    run_pass(model, examples, np.arange(len(examples)))
    one_pass = time.perf_counter() - t
    return {"budget": budget, "logs": run.parent.name, "passes": round(sum(tokens.values()) / per_pass, 2),
            "per_check": {k: round(v / per_pass, 2) for k, v in tokens.most_common()},
            "wall_s": round(wall, 1), "eval_pass_s": round(one_pass, 2),
            "wall_in_eval_passes": round(wall / one_pass, 1),
            "peak_rss_mb": peak,
            "checkpoint_mb": round((run / "checkpoint-200" / "model.safetensors").stat().st_size / 2 ** 20),
            "verdict": d.verdict["layer"],
            "failed": [c.code for c in d.checks if c.status == "failed"],
            **({"per_check_peak_rss_mb": dict(sorted(peaks.items(), key=lambda kv: -kv[1])[:8])}
               if peaks else {})}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="fast,standard,thorough")
    ap.add_argument("--train-rows", type=int, default=20_000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--logs", default="match,mismatch")
    ap.add_argument("--arch", default="gpt2", choices=("gpt2", "bert"))
    ap.add_argument("--eval-rows", type=int, default=256)
    ap.add_argument("--per-check", action="store_true", help="also each check's own peak RSS")
    ap.add_argument("--one", nargs=4, metavar=("RUN", "EVAL", "TRAIN", "BUDGET"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(Path(a.one[0]), Path(a.one[1]), Path(a.one[2]), a.one[3], a.per_check)))
        return 0
    import subprocess
    root = Path(tempfile.mkdtemp(prefix="degrade-cost-"))
    for logs in a.logs.split(","):
        run, ev, tr = build(root, a, logs)
        for budget in a.budgets.split(","):
            p = subprocess.run([sys.executable, __file__, "--one", str(run), str(ev), str(tr), budget]
                               + (["--per-check"] if a.per_check else []),
                               capture_output=True, text=True)
            print(p.stdout.strip() or p.stderr[-2000:], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
