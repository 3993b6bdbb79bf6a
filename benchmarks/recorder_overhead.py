"""Overhead of degrade.Recorder at its defaults on a tiny GPT-2 training loop (CPU).

    python benchmarks/recorder_overhead.py [--steps 300] [--repeats 7] [--threads 1]

Runs the same loop (same seed, same batches) without and with a Recorder (model, optimizer,
every=50, rec.log(step, loss=..., lr=..., grad_norm=...) every step), alternating the two so that
machine load hits both alike, and prints:
  - loop ratio: min over repeats of the timed 300-step loop with / without (steady state);
  - total ratio: the same including the Recorder's setup and close (manifest, git, digest, snapshot);
  - direct: the time spent inside the Recorder's own calls (hooks and log), over the loop time —
    the least noisy number on a busy machine.
The baseline loop calls nothing per step beyond backward/clip/step/zero_grad (it does not even read
the loss), so the comparison charges the Recorder for the loss .item() it does.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time

import torch


EMBD = 64


def build(seed: int, n_layer: int):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=EMBD, n_head=4, vocab_size=256, n_positions=64,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, opt


def batches(steps: int, batch: int, seq: int):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (batch, seq), generator=g) for _ in range(steps)]


class Timer:
    def __init__(self):
        self.total = 0.0

    def wrap(self, fn):
        @functools.wraps(fn)
        def inner(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.total += time.perf_counter() - t
        return inner


def run(with_recorder: bool, data, n_layer: int) -> dict:
    model, opt = build(0, n_layer)
    model.train()
    t_total = time.perf_counter()
    rec = timer = None
    if with_recorder:
        import degrade
        rec = degrade.Recorder(tempfile.mkdtemp(prefix="degrade-bench-"), params={"lr": 1e-3},
                               seed=0, model=model, optimizer=opt)
        timer = Timer()
        rec._before = timer.wrap(rec._before)  # what the optimizer hooks call
        rec._after = timer.wrap(rec._after)
        rec.log = timer.wrap(rec.log)
    t_loop = time.perf_counter()
    for step, ids in enumerate(data, 1):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if rec is not None:
            rec.log(step, loss=loss, lr=1e-3, grad_norm=gn)
    loop = time.perf_counter() - t_loop
    if rec is not None:
        rec.close()
    total = time.perf_counter() - t_total
    return {"loop": loop, "total": total, "inside": timer.total if timer else 0.0}


def isolated(data, n_layer: int, every: int = 50) -> dict:
    """Each cost alone, min over repeats (robust on a busy machine): one training step, one
    log() call, the two hooks on an unrecorded step, and a recorded step's statistics."""
    import degrade
    model, opt = build(0, n_layer)
    rec = degrade.Recorder(tempfile.mkdtemp(prefix="degrade-bench-"), model=model, every=every)
    ids = data[0]

    def best(fn, n, reps=9):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            for i in range(n):
                fn(i)
            times.append((time.perf_counter() - t) / n)
        return min(times)

    def train_step(_):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    step = best(train_step, 10)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    log = best(lambda i: rec.log(i, loss=loss, lr=1e-3, grad_norm=gn), 200)
    plain = best(lambda i: (rec.before_optimizer_step(every + 1), rec.after_optimizer_step(every + 1)), 200)
    recorded = best(lambda i: (rec.before_optimizer_step(every), rec.after_optimizer_step(every)), 5)
    rec.close()
    per_step = log + plain + (recorded - plain) / every
    return {"step": step, "log": log, "plain": plain, "recorded": recorded, "ratio": 1 + per_step / step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=32)
    a = ap.parse_args()
    global EMBD
    EMBD = a.embd
    torch.set_num_threads(a.threads)
    data = batches(a.steps, a.batch, a.seq)
    run(False, data[:20], a.layers)  # warm-up: imports, allocator, kernels
    run(True, data[:20], a.layers)
    base, rec = [], []
    for i in range(a.repeats):  # ABBA order: a drift in machine load hits both alike
        for with_rec in ((False, True) if i % 2 == 0 else (True, False)):
            (rec if with_rec else base).append(run(with_rec, data, a.layers))
    b_loop, r_loop = min(x["loop"] for x in base), min(x["loop"] for x in rec)
    b_tot, r_tot = min(x["total"] for x in base), min(x["total"] for x in rec)
    pair = statistics.median(r["loop"] / b["loop"] for b, r in zip(base, rec))
    direct = statistics.median(r["inside"] / r["loop"] for r in rec)
    iso = isolated(data, a.layers)
    print(f"tiny GPT-2 ({a.layers} layers, d={a.embd}, vocab 256), {a.steps} steps, batch {a.batch}x{a.seq}, "
          f"{a.threads} thread(s), {a.repeats} repeats, Recorder defaults (every=50, log every step)")
    print(f"step time without recorder (best run): {1e3 * b_loop / a.steps:.2f} ms")
    print(f"A/B loop ratio, min/min:            {r_loop / b_loop:.4f}")
    print(f"A/B loop ratio, median of pairs:    {pair:.4f}")
    pairs = sorted(r["loop"] / b["loop"] for b, r in zip(base, rec))
    q1, q3 = statistics.quantiles(pairs, n=4)[0], statistics.quantiles(pairs, n=4)[2]
    print(f"  pair ratios: min {pairs[0]:.4f}, q1 {q1:.4f}, q3 {q3:.4f}, max {pairs[-1]:.4f} "
          f"({len(pairs)} pairs)")
    print(f"A/B total ratio incl. setup/close:  {r_tot / b_tot:.4f}")
    print(f"direct: inside Recorder calls / loop: {100 * direct:.2f}%")
    print(f"isolated costs (min of repeats): step {1e3 * iso['step']:.2f} ms, log {1e6 * iso['log']:.1f} us, "
          f"hooks on an unrecorded step {1e6 * iso['plain']:.1f} us, recorded step {1e3 * iso['recorded']:.2f} ms")
    print(f"isolated overhead ratio: {iso['ratio']:.4f}")


if __name__ == "__main__":
    main()
