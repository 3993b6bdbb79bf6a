"""I308 label-alignment: the model predicts the token `k` places ahead for a k other than 1."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from degrade.check import Check, CheckSkipped
from degrade.engine.batching import positions_per_chunk
from degrade.engine.forward import forward
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.data import IGNORE_INDEX
from degrade.stats import num, paired_difference

# 1 is Hugging Face's convention (the logits at t predict token t + 1); 2 and 3: a collator that
# shifted once or twice before the model shifts again; 0: labels never shifted
SHIFTS = (0, 1, 2, 3)


class LabelAlignment(Check):
    """Labels shifted twice, or not at all: the model learned to predict the wrong position.

    What it detects: on a probe sample of eval sequences (a causal LM's, or a seq2seq model's
    decoder sequences), the model's loss on the sequence's own tokens read at shifts 0, 1, 2 and 3:
    the logits at position t scored against token t + k, at the positions whose label is a target.
    Hugging Face models shift the labels themselves (k = 1). A model that fits another shift better,
    by at least `min_gain` nats per target and `z` standard errors of the paired per-example
    difference, was trained on labels that were shifted before the model shifted them again (k = 2:
    a collator that pre-shifts; k = 3: one that shifts by two; transformers JetMoe PR #37830,
    GitForCausalLM #47394, MBartForCausalLM #27517) or never shifted (k = 0: the model copies its input). Also reported, as evidence: how the
    data's `labels` relate to `input_ids` (identical as Hugging Face expects, already shifted by one,
    or masked). An untrained model fits every shift alike and raises nothing; this check does not
    wait for the model to have learned, since a misaligned run is one that cannot learn its task.
    The "fits it well" condition is what tells a learned shift from an echo: a barely trained model
    with tied input and output embeddings scores its own input token highest (on DegradeBench v2's
    dev split, untrained BART runs fit shift 0 at 2.0-2.3 nats against 2.4-2.7 at shift 1, which is
    only 5-14% below the constant predictor; a model trained on twice-shifted labels is 69% below).

    Why it matters: the loss plateaus high and the logged metric says the model learned little,
    while it learned exactly what its labels asked for: the token after the next one.

    Evidence used: the model and the eval data (one probe pass); the labels column.

    Fix: let either the collator or the model shift, not both (with Hugging Face causal LMs, pass
    labels = input_ids and let the model shift them); check the data's labels against input_ids.
    """

    code, name, layer = "I308", "label-alignment", Layer.INSTANTIATION
    needs = frozenset({"model", "eval_data", "decoder"})
    tasks = frozenset({"causal-lm", "seq2seq"})
    probes = 1
    options = (
        Option("min_gain", 0.1,
               source="design choice: a tenth of a nat per target, far above the float noise of a "
                      "re-read; a misaligned model's gap is nats (measured: tests/test_label_alignment.py)",
               help="Nats per target by which another shift must beat shift 1 for an error."),
        Option("z", 3.0, source="statistical convention: 3 standard errors",
               help="Standard errors of the paired per-example difference another shift must beat shift 1 by."),
        Option("min_explained", 0.5,
               source="bench dev split: echoing models (tied embeddings, barely trained) remove 5-14% of "
                      "the constant predictor's loss at shift 0, a twice-shifted model (tests) 69% at shift 2; "
                      "half is between them",
               help="Share of the best constant predictor's loss the other shift's fit must remove."),
    )

    def run(self, run):
        data, model = run.eval_data, run.model()
        eligible = [i for i, x in enumerate(data.input_ids) if len(x) >= 4]
        if len(eligible) < 8:
            raise CheckSkipped(f"{len(eligible)} eval sequence(s) of 4 or more tokens; at least 8 are needed")
        idx = run.engine.probe_indices(data, eligible=eligible, minimum=8)
        red = _ShiftLosses(len(idx))
        forward(model, data, idx, reducers=[red], torch_seed=run.options.seed, label="I308 shifts",
                meter=run.engine.meter)
        keep = red.count.min(axis=1) > 0
        if keep.sum() < 8:
            raise CheckSkipped("fewer than 8 probe sequences have targets at every shift")
        mean = red.nll[keep] / red.count[keep]
        if not np.isfinite(mean).all():  # NaN compares false both ways: no shift can be told apart
            raise CheckSkipped("the model gives non-finite losses (inf/NaN logits) on the probe: its label "
                               "alignment cannot be read (I313 and R203 say why)")
        per_shift = {k: float(mean[:, j].mean()) for j, k in enumerate(SHIFTS)}
        constant = {k: _entropy(red.tokens[j]) for j, k in enumerate(SHIFTS)}
        ev: dict[str, Any] = {"probe_sequences": int(keep.sum()),
                              "loss_by_shift": {str(k): num(v, 4) for k, v in per_shift.items()},
                              "constant_predictor_loss_by_shift": {str(k): num(v, 4) for k, v in constant.items()},
                              "labels_vs_input_ids": _label_relation(data, idx)}
        best = min((k for k in SHIFTS if k != 1), key=lambda k: per_shift[k])
        gain, se = paired_difference(mean[:, SHIFTS.index(1)], mean[:, SHIFTS.index(best)])
        explained = 1 - per_shift[best] / constant[best] if constant[best] > 0 else 0.0
        ev.update({"best_other_shift": best, "gain_over_shift_1": num(gain, 4), "gain_se": num(se, 4),
                   "explained_at_best_other_shift": num(explained, 3)})
        if gain < self.opts["min_gain"] or gain <= self.opts["z"] * se or explained < self.opts["min_explained"]:
            return []
        what = (f"the token {best} places ahead (labels shifted {best} times)" if best >= 2
                else "its own input token (labels never shifted)")
        return [self.finding(
            "error", f"The model predicts {what}: its loss on the sequence's tokens is "
            f"{per_shift[best]:.3g} nats at shift {best} against {per_shift[1]:.3g} at the intended shift 1 "
            f"(gain {gain:.3g} +- {se:.2g} over {int(keep.sum())} sequences).",
            confidence=0.95, evidence=ev,
            fix="Shift the labels once: pass labels = input_ids to a Hugging Face causal LM (it shifts "
                "them) and drop the shift from the collator, or keep the collator's and tell the model "
                "not to; then retrain.",
            next_experiment="Print one batch's input_ids and labels side by side as the model receives them, "
                            "then the model's loss on labels = input_ids for the same batch.")]


class _ShiftLosses:
    """Per example: summed NLL of the logits at t against token t + k, for k in SHIFTS, at the
    positions whose label (t + 1) is a target."""

    def __init__(self, n: int):
        self.nll, self.count = np.zeros((n, len(SHIFTS))), np.zeros((n, len(SHIFTS)))
        self.tokens: list[dict[int, int]] = [{} for _ in SHIFTS]  # target counts per shift
        self.row: dict[int, int] = {}

    @torch.no_grad()
    def add(self, idx, ids, mask, labels, logits) -> None:
        B, T, V = logits.shape
        for i in idx:
            self.row.setdefault(int(i), len(self.row))
        rows = [self.row[int(i)] for i in idx]
        step = positions_per_chunk(B, V)
        for t0 in range(0, T, step):
            t1 = min(t0 + step, T)
            lp = F.log_softmax(logits[:, t0:t1].float(), dim=-1).cpu()
            for j, k in enumerate(SHIFTS):
                hi = min(t1, T - k)  # the logits at t read token t + k
                if hi <= t0:
                    continue
                pos = torch.arange(t0, hi)
                target = ids[:, pos + k].cpu()
                trained = torch.zeros_like(target, dtype=torch.bool)
                ok = pos + 1 < T
                trained[:, ok] = labels[:, pos[ok] + 1].cpu() != IGNORE_INDEX
                valid = trained & mask[:, pos + k].bool().cpu()
                got = lp[:, :hi - t0].gather(-1, target.clamp(0, V - 1)[..., None])[..., 0]
                for tok in target[valid].tolist():
                    self.tokens[j][tok] = self.tokens[j].get(tok, 0) + 1
                nll = torch.where(valid, -got, torch.zeros_like(got)).sum(1).double().numpy()
                for r, row in enumerate(rows):
                    self.nll[row, j] += nll[r]
                    self.count[row, j] += int(valid[r].sum())


def _entropy(counts: dict[int, int]) -> float:
    """The best constant predictor's loss on these targets: their entropy, in nats."""
    n = sum(counts.values())
    p = np.asarray([c / n for c in counts.values()]) if n else np.zeros(0)
    return float(-(p * np.log(p)).sum()) if n else 0.0


def _label_relation(data, idx) -> dict[str, Any]:
    """How `labels` relate to `input_ids` over the probe rows: the share of target positions where
    they are equal (Hugging Face's convention) and where the label is already the next token."""
    if data.labels is None or data.source is not None:
        return {"labels_column": data.labels is not None, "reading": "labels = input_ids (none given)"
                if data.labels is None else "seq2seq targets"}
    same = ahead = total = 0
    for i in idx:
        x, y = data.input_ids[int(i)], data.labels[int(i)]
        for t, lab in enumerate(y):
            if lab == IGNORE_INDEX:
                continue
            total += 1
            same += lab == x[t]
            ahead += t + 1 < len(x) and lab == x[t + 1]
    return {"target_positions": total, "equal_to_input": num(same / max(total, 1), 3),
            "equal_to_next_input": num(ahead / max(total, 1), 3)}
