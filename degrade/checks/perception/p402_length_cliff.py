"""P402 position-length-cliff: accuracy that collapses past a length (trained length, window)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from degrade.axes import slice_without
from degrade.check import Check, CheckSkipped
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.components import find_positions
from degrade.run.load import CAUSAL_LM, TOKEN_TASKS, ModelHandle
from degrade.stats import num


@dataclass
class Split:
    """Per-example accuracy of examples up to a length vs longer ones."""

    at: int  # examples with length <= at are "within"
    n_within: int
    n_beyond: int
    acc_within: float
    acc_beyond: float
    se: float  # standard error of the difference (Welch: the two groups are independent)
    sse_step: float  # residual sum of squares of the two-level (step) fit
    sse_line: float  # ... of a straight line in length (the same number of parameters)

    @property
    def drop(self) -> float:
        return self.acc_within - self.acc_beyond

    @property
    def z(self) -> float:
        if self.se > 0:
            return self.drop / self.se
        return math.inf if self.drop > 0 else 0.0

    @property
    def sharp(self) -> bool:
        """A step explains accuracy-vs-length better than a steady slope does: a cliff."""
        return self.sse_step < self.sse_line

    def evidence(self) -> dict[str, Any]:
        return {"split_at_length": int(self.at), "examples_within": self.n_within,
                "examples_beyond": self.n_beyond, "acc_within": num(self.acc_within),
                "acc_beyond": num(self.acc_beyond), "drop": num(self.drop), "drop_se": num(self.se),
                "drop_z": num(self.z), "step_fits_better_than_line": bool(self.sharp),
                "sse_step": num(self.sse_step), "sse_line": num(self.sse_line)}


def split_at(lengths: np.ndarray, correct: np.ndarray, at: int) -> Split:
    a, b = correct[lengths <= at], correct[lengths > at]
    va = a.var(ddof=1) if a.size > 1 else 0.0
    vb = b.var(ddof=1) if b.size > 1 else 0.0
    se = math.sqrt(va / max(a.size, 1) + vb / max(b.size, 1))
    se = se if se > 1e-12 else 0.0  # both groups constant: rounding noise, not variance
    sse_step = float(((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum())
    x = lengths.astype(float)
    if np.ptp(x) > 0:
        coef = np.polyfit(x, correct, 1)
        sse_line = float(((correct - np.polyval(coef, x)) ** 2).sum())
    else:
        sse_line = float(((correct - correct.mean()) ** 2).sum())
    return Split(int(at), int(a.size), int(b.size), float(a.mean()), float(b.mean()), se, sse_step, sse_line)


def best_split(lengths: np.ndarray, correct: np.ndarray, min_group: int) -> Split | None:
    """The change point in length: the split with the smallest step-fit residual (least squares
    change-point estimate), among splits leaving at least min_group examples on each side."""
    best = None
    for at in np.unique(lengths)[:-1]:
        n_in = int((lengths <= at).sum())
        if n_in < min_group or lengths.size - n_in < min_group:
            continue
        s = split_at(lengths, correct, int(at))
        if best is None or s.sse_step < best.sse_step:
            best = s
    return best


def by_length(lengths: np.ndarray, correct: np.ndarray, max_rows: int = 30) -> list[dict[str, Any]]:
    """Accuracy per length (equal-count bins of lengths when there are more than max_rows)."""
    uniq = np.unique(lengths)
    if uniq.size <= max_rows:
        groups = [(int(u), int(u)) for u in uniq]
    else:
        qs = np.unique(np.quantile(lengths, np.linspace(0, 1, max_rows + 1)).astype(int))
        groups = [(int(lo) + (k > 0), int(hi)) for k, (lo, hi) in enumerate(zip(qs[:-1], qs[1:]))]
    rows = []
    for lo, hi in groups:
        m = (lengths >= lo) & (lengths <= hi)
        if m.any():
            rows.append({"length": lo if lo == hi else f"{lo}-{hi}", "examples": int(m.sum()),
                         "accuracy": num(correct[m].mean(), 3)})
    return rows


def by_position(pos_correct: np.ndarray, pos_count: np.ndarray, max_rows: int = 32) -> list[dict[str, Any]]:
    """Token accuracy by the target's position (LM), pooled into at most max_rows bins."""
    idx = np.nonzero(pos_count > 0)[0]
    if not idx.size:
        return []
    edges = np.unique(np.linspace(idx[0], idx[-1] + 1, min(max_rows, idx.size) + 1).astype(int))
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        n = float(pos_count[lo:hi].sum())
        if n:
            rows.append({"position": int(lo) if hi - lo == 1 else f"{lo}-{hi - 1}", "targets": int(n),
                         "accuracy": num(pos_correct[lo:hi].sum() / n, 3)})
    return rows


def input_embedding(module: nn.Module) -> nn.Module | None:
    """The token embedding: get_input_embeddings() (Hugging Face), else the first nn.Embedding
    that is not a position table."""
    get = getattr(module, "get_input_embeddings", None)
    if callable(get):
        try:
            emb = get()
        except (NotImplementedError, AttributeError):
            emb = None
        if isinstance(emb, nn.Module):
            return emb
    pos = {p.module_name for p in find_positions(module)}
    for name, mod in module.named_modules():
        if isinstance(mod, nn.Embedding) and name not in pos:
            return mod
    return None


def receptive_span(handle: ModelHandle, ids: list[int], seed: int = 0) -> int | None:
    """How many of the last tokens the prediction at the last position depends on.

    The gradient of a random projection of the last position's logits with respect to the token
    embeddings' output: masked-out positions get exactly zero gradient (their attention weight is
    exactly 0), so a sliding window shows as a run of zero rows at the start. One forward and one
    backward pass on one sequence. None when no token embedding can be found.
    """
    emb = input_embedding(handle.module)
    if emb is None or len(ids) < 2:
        return None
    captured: dict[str, torch.Tensor] = {}

    def hook(mod, args, out):
        if not isinstance(out, torch.Tensor) or "x" in captured:
            return None
        leaf = out.detach().requires_grad_(True)
        captured["x"] = leaf
        return leaf

    h = emb.register_forward_hook(hook)
    was_training = handle.module.training
    handle.module.eval()
    try:
        with torch.enable_grad():
            x = torch.tensor([ids], dtype=torch.long)
            logits = handle.logits(x, torch.ones_like(x))
            if "x" not in captured or logits.ndim != 3:
                return None
            r = torch.randn(logits.shape[-1], generator=torch.Generator().manual_seed(seed))
            (grad,) = torch.autograd.grad((logits[0, -1] * r.to(logits.device)).sum(), captured["x"],
                                          allow_unused=True)
    finally:
        h.remove()
        handle.module.train(was_training)
    if grad is None:
        return None
    norms = grad[0].float().norm(dim=-1).cpu()
    if float(norms.max()) <= 0:
        return None
    visible = torch.nonzero(norms > 1e-9 * norms.max()).flatten()
    return int(len(ids) - int(visible[0]))


def untrained_position_rows(module: nn.Module, min_separation: float = 6.0,
                            at: int | None = None) -> dict[str, Any] | None:
    """Where a learned position table stops having been trained, read from its weights alone.

    Rows that never received a gradient keep their random initialisation (shrunk alike by weight
    decay): their norms are nearly equal and adjacent rows are uncorrelated (cosine ~ 0), while
    trained rows moved away from that norm and are smooth in position. The split of the row norms
    into two levels with the least squared error (a change point) is accepted when the levels are
    >= min_separation (6) robust SDs of the tail apart and the tail looks random (|mean adjacent
    cosine| within 4/sqrt(d * tail rows) + 0.05 of 0). Returns {"table", "rows_trained", ...} or
    None (no learned table, a fully trained table, or a sinusoidal one).
    For a causal LM the last position of a training sequence gets no gradient (its output
    predicts nothing), so a model trained on sequences of up to L tokens has L - 1 trained rows.
    With `at`, the split is not searched: the same tests say whether the rows from `at` on look
    untrained and apart from those before (a trained length read elsewhere, confirmed or not).
    """
    tables = [p for p in find_positions(module) if p.kind == "learned"]
    if not tables:
        return None
    name = tables[0].module_name
    W = module.get_submodule(name).weight.detach().float().cpu()
    P, d = W.shape
    if P < 8:
        return None
    n = W.norm(dim=1).numpy()
    cos = torch.nn.functional.cosine_similarity(W[:-1], W[1:], dim=1).numpy()
    if at is not None and not 2 <= at <= P - 4:
        return None
    L = at if at is not None else min(range(2, P - 3), key=lambda k: _two_level_sse(n, k))
    h, t = n[:L], n[L:]
    sigma = max(1.4826 * float(np.median(np.abs(t - np.median(t)))), 1e-6 * float(np.median(t)) + 1e-12)
    sep = abs(float(np.median(h)) - float(np.median(t))) / sigma
    tail_cos = float(np.mean(cos[L:]))
    random_tail = abs(tail_cos) <= 4 / math.sqrt(d * (P - L)) + 0.05
    if sep < min_separation or not random_tail:
        return None
    return {"table": name, "rows": P, "rows_trained": L, "norm_trained": num(np.median(h), 3),
            "norm_untrained": num(np.median(t), 3), "separation_sd": num(sep, 3),
            "untrained_adjacent_cosine": num(tail_cos, 3)}


def _two_level_sse(values: np.ndarray, k: int) -> float:
    h, t = values[:k], values[k:]
    return float(((h - h.mean()) ** 2).sum() + ((t - t.mean()) ** 2).sum())


def position_scheme(module: nn.Module) -> dict[str, Any]:
    """What gives the model positions: learned tables, rotary modules, config hints."""
    found = find_positions(module)
    cfg = getattr(module, "config", None)
    hints = {}
    for key in ("position_embedding_type", "rope_theta", "alibi", "sliding_window", "attention_window"):
        v = getattr(cfg, key, None) if cfg is not None and not isinstance(cfg, dict) else None
        if v is None and isinstance(getattr(module, "cfg", None), dict):
            v = module.cfg.get(key)
        if v is not None:
            hints[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    learned = [p.module_name for p in found if p.kind == "learned"]
    absolute = bool(learned) and hints.get("position_embedding_type", "absolute") == "absolute"
    return {"learned_absolute": absolute, "learned_tables": learned,
            "rotary": [p.module_name for p in found if p.kind == "rotary"], "config": hints}


class LengthCliff(Check):
    """Accuracy collapses past a length: the trained length (positions) or the attention window.

    What it detects: per-example accuracy against sequence length, and (LMs) token accuracy
    against the target's position, on the eval data.
      1. Beyond the trained length L. L is the longest sequence in the train data. Without train
         data, or when the table shows fewer trained rows than the train data implies (it was
         truncated in training) and its rows up to the train data's length do not look trained,
         L is read from a learned position table's weights: rows that
         never got a gradient are still at their random initialisation (equal norms, adjacent
         rows uncorrelated), so the first such row marks the trained length (a causal LM's last position gets no gradient:
         L = trained rows + 1). The model's position table size (n_positions,
         max_position_embeddings) is what it *could* hold, not what it was trained on, and is
         never used as L. Eval examples longer than L are compared with those up to L. A cliff:
         the drop is >= `min_drop` absolute, beyond `z` standard errors, and a step at L fits
         accuracy-vs-length better than a straight line (a cliff, not the steady decline of
         longer-is-harder), unless the model has learned absolute positions: then the rows past L
         never received a gradient, the mechanism is in the weights, and a gradual fall past L
         counts too. With learned absolute positions (GPT-2 wpe, BERT
         position_embeddings, a `pos` table) the rows past L never received a gradient: the
         positional hypothesis "position = absolute index" fails.
      2. A cliff inside the trained range (or anywhere when L is unknown). The change point in
         length is found by least squares (the two-level step with the smallest residual); it
         counts when it passes the same drop and sharpness tests at `z_scan` standard errors
         (stricter: the split was searched for). The model's receptive field is then measured
         with one gradient: the number of last tokens the final position's prediction depends on
         (masked positions get exactly zero gradient). When the model sees fewer tokens than the
         sequences it fails on, and the failure starts past that window, dependency distance is
         the axis: "attention over a window is enough" is wrong for this data (a copy task
         `x SEP x` needs to look k+1 tokens back).
    Readings: 1 is an error, axis "position" (confidence 0.8 with learned absolute positions and
    L from the train data, 0.7 with L from the position table, 0.65 without learned absolute
    positions); 2 with a window that explains it is an error, axis "distance" (0.7); any other
    cliff is a warning (0.4) and is not published: a length-dependent failure inside the trained
    range can also be under-training. The error carries the slice without the axis
    (evidence["axis"]: accuracy off the axis against the training sample's), which the ladder
    weighs against the reachability findings (degrade/axes.py); nothing is published for a healthy
    run.

    Why it matters: a failure concentrated along one axis is not overfitting and not a lack of
    capacity: more data of the same lengths, regularisation or a bigger model do not fix it
    (DESIGN.md section 1). The fix is in the hypothesis: positions that extrapolate, training
    lengths that cover the eval, a window that covers the dependencies.

    Evidence used: the model, the eval data (Scores: per-example accuracy and lengths, per-position
    accuracy), the train data's lengths when given, the position modules, config and the learned
    table's weights, and one gradient for the receptive field. Evidence: accuracy by length and by
    position, the split, its drop, SE and z, the step-vs-line residuals, the position scheme, the
    untrained-row reading of the table, the receptive field.

    Fix: train on the lengths you evaluate (or longer); use relative positions that extrapolate
    (ALiBi, RoPE with scaling) instead of a learned absolute table; widen the attention window (or
    add layers, or global tokens) to cover the longest dependency.
    """

    code, name, layer = "P402", "position-length-cliff", Layer.PERCEPTION
    needs = frozenset({"model", "eval_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})
    requires_learning = True  # degrade/learned.py: skipped while the model has not learned
    options = (
        Option("min_drop", 0.2,
               source="design choice: smaller drops past a length are common (longer is harder) and "
                      "say little about the hypothesis; a fifth of the accuracy is a collapse no one "
                      "mistakes for noise",
               help="Absolute accuracy drop for a cliff."),
        Option("z", 3.0,
               source="statistical convention: p ~ 0.003 two-sided for a pre-specified split (Welch SE "
                      "of per-example accuracies, examples being the units)",
               help="Standard errors the drop must exceed at the trained length."),
        Option("z_scan", 4.0,
               source="Bonferroni: up to tens of splits are tried; 4 SE keeps the family-wise "
                      "false-alarm rate near 0.2% for 30 splits",
               help="Standard errors the drop must exceed at a change point found by searching all "
                    "lengths (stricter than z: the split was searched for)."),
        Option("min_group", 20,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (10): the same verdicts; doubled (40): -2 "
                      "right verdicts, -2 error-code hits",
               help="Examples needed on each side of a split."),
        Option("max_probe_length", 1024,
               source="design choice: bounds the cost of the receptive-field probe; the number is "
                      "chosen by hand",
               help="The receptive-field probe uses at most this many tokens."),
        Option("table_separation_sd", 6.0,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (3.0) and doubled (12.0) give the same "
                      "verdicts and error codes",
               help="A learned position table's rows split into trained and untrained ones only when "
                    "the two levels of row norms are at least this many robust SDs of the tail apart "
                    "(and the tail looks random)."),
    )
    publishes_axes = True

    def run(self, run):
        o = self.opts
        model = run.model()
        lm = model.task in TOKEN_TASKS  # a seq2seq example's length is its decoder sequence's
        scores = run.eval_scores()
        keep = scores.n_targets > 0
        lengths, correct = scores.lengths[keep].astype(int), scores.correct[keep].astype(float)
        if lengths.size < 2 * o["min_group"]:
            raise CheckSkipped(f"{lengths.size} scored eval example(s); at least {2 * o['min_group']} "
                               f"are needed to compare lengths")
        train = run.train_data
        train_len = max(train.lengths) if train is not None and len(train) else None
        scheme = position_scheme(model.module)
        table = untrained_position_rows(model.module, o["table_separation_sd"])
        table_len = (table["rows_trained"] + (1 if lm else 0)) if table else None
        limit, source = (train_len, "train data") if train_len else (table_len, "position table") \
            if table_len else (None, None)
        if train_len and table_len and table_len < train_len and untrained_position_rows(
                model.module, o["table_separation_sd"], at=train_len - (1 if lm else 0)) is None:
            # the table's rows past table_len never trained and the table does not bear out the
            # train data's length: the train data was truncated in training, or is not what the
            # model was trained on. (When it does, the searched split fell inside the trained
            # rows, whose norms need not be level: a table trained on 8 positions read as 4.)
            limit, source = table_len, "position table (shorter than the train data's longest example)"
        ev: dict[str, Any] = {
            "task": model.task, "examples": int(keep.sum()),
            "eval_lengths": [int(lengths.min()), int(lengths.max())] if lengths.size else None,
            "trained_length": limit, "trained_length_source": source,
            "position_table_size": model.positions, "position_scheme": scheme,
            "position_table_untrained_rows": table,
            "accuracy_by_length": by_length(lengths, correct),
        }
        if lm and scores.position_count.size:
            ev["accuracy_by_position"] = by_position(scores.position_correct, scores.position_count)
        findings = []

        # 1. beyond the trained length (from the train data, else from the position table)
        if limit is not None and (lengths > limit).sum() >= o["min_group"] \
                and (lengths <= limit).sum() >= o["min_group"]:
            s = split_at(lengths, correct, limit)
            ev1 = {**ev, "split": s.evidence()}
            if lm:
                ev1.update(self._positions_split(scores, limit))
            # The step-vs-line test tells a cliff from "longer is harder"; it is not needed where
            # the mechanism is in the weights: with learned absolute positions, the rows past L
            # never received a gradient (and with one eval length within L it has no power).
            untrained_rows = scheme["learned_absolute"]
            if s.drop >= o["min_drop"] and s.z >= o["z"] and (s.sharp or untrained_rows):
                findings.append(self._beyond_trained(run, s, ev1, scheme, limit, source))

        # 2. a cliff inside the trained range (all examples when the trained length is unknown)
        inside = lengths <= limit if limit is not None else np.ones(lengths.size, bool)
        s2 = best_split(lengths[inside], correct[inside], int(o["min_group"]))
        if s2 is not None and s2.drop >= o["min_drop"] and s2.z >= o["z_scan"] and s2.sharp:
            ev2 = {**ev, "split": s2.evidence(), "examples_considered": int(inside.sum()),
                   "considered": "examples within the trained length" if limit else "all examples"}
            span = None
            if model.task == CAUSAL_LM:  # the window probe reads one decoder-only sequence
                longest = int(np.argmax(scores.lengths))
                ids = run.eval_data.input_ids[int(scores.indices[longest])][: int(o["max_probe_length"])]
                span = receptive_span(model, list(ids), seed=run.options.seed)
                ev2["receptive_field"] = span
                ev2["receptive_field_probe_length"] = len(ids)
            findings.append(self._inside(run, s2, ev2, span, limit))
        return findings

    # ---- readings --------------------------------------------------------------------------------
    def _beyond_trained(self, run, s: Split, ev, scheme, limit: int, source: str):
        learned = scheme["learned_absolute"]
        tables = ", ".join(scheme["learned_tables"])
        why = (f"The model uses learned absolute positions ({tables}), whose rows past the trained "
               f"length never received a gradient." if learned else
               "No learned absolute position table was found, so the length itself (not untrained "
               "position rows) is what the model does not generalise to.")
        where = ("the longest in the train data" if source == "train data" else
                 "read from the position table: the rows past it are still at their random "
                 "initialisation")
        self._publish(run, "position", beyond=limit, s=s)
        ev = {**ev, "axis": slice_without(run, "position", s.acc_within, s.n_within)}
        return self.finding(
            "error",
            f"Accuracy falls past the trained length: {num(s.acc_within, 3)} on sequences "
            f"up to {limit} tokens ({where}), {num(s.acc_beyond, 3)} on longer ones (drop "
            f"{num(s.drop, 3)}, {num(s.z, 3)} SE; {s.n_beyond} examples). {why}",
            confidence=(0.8 if source == "train data" else 0.7) if learned else 0.65, evidence=ev,
            fix="Train on sequences as long as those you evaluate, or use positions that extrapolate "
                "(ALiBi, or RoPE with scaling) instead of a learned absolute table.",
            next_experiment=f"Retrain with some examples longer than {limit} tokens (or with "
                            f"RoPE/ALiBi) and plot accuracy per length: if the cliff moves with the "
                            f"trained length, the positional hypothesis is confirmed.")

    def _inside(self, run, s: Split, ev, span: int | None, limit: int | None):
        where = (f"inside the trained length ({limit})" if limit else
                 "(the trained length is unknown: no train data, no untrained position rows)")
        head = (f"Accuracy drops from {num(s.acc_within, 3)} on sequences up to {s.at} tokens to "
                f"{num(s.acc_beyond, 3)} on longer ones (drop {num(s.drop, 3)}, {num(s.z, 3)} SE) {where}.")
        if span is not None and span < int(np.max(ev["eval_lengths"])) and s.at >= span:
            self._publish(run, "distance", beyond=s.at, s=s, window=span)
            ev = {**ev, "axis": slice_without(run, "distance", s.acc_within, s.n_within)}
            return self.finding(
                "error",
                f"{head} The model's prediction at a position depends only on the last {span} tokens "
                f"(its receptive field), and it fails on sequences longer than that: the failure "
                f"concentrates on long-distance dependencies. The hypothesis that a window of {span} "
                f"is enough is wrong for this data.",
                confidence=0.7, evidence=ev,
                fix="Widen the attention window (or add layers or global tokens) so that the "
                    "receptive field covers the longest dependency the task needs.",
                next_experiment=f"Retrain with a window of at least {s.at + 1} tokens (or full "
                                f"attention) and compare accuracy per length: recovery past {s.at} "
                                f"confirms the window as the cause.")
        return self.finding(
            "warning",
            f"{head} No attention window or untrained position range explains it; if training is "
            f"clean, the model's hypothesis does not carry to longer inputs (longer dependencies, "
            f"more steps).",
            confidence=0.4, evidence=ev,
            fix="Settle reachability first (longer training on the long examples); then consider "
                "depth, context and position scheme.",
            next_experiment=f"Continue training on examples longer than {s.at} tokens only: if they "
                            f"stay near {num(s.acc_beyond, 3)}, the model cannot represent them "
                            f"(perception/instantiation); if they rise, it was under-trained on them.")

    @staticmethod
    def _positions_split(scores, train_len: int) -> dict[str, Any]:
        pc, pn = scores.position_correct, scores.position_count
        w, b = pn[:train_len].sum(), pn[train_len:].sum()
        return {"token_acc_positions_within": num(pc[:train_len].sum() / w, 3) if w else None,
                "token_acc_positions_beyond": num(pc[train_len:].sum() / b, 3) if b else None,
                "targets_beyond": int(b)}

    def _publish(self, run, axis: str, *, beyond: int, s: Split, **extra) -> None:
        run.context.setdefault("axes", []).append(
            {"axis": axis, "code": self.code, "beyond": int(beyond), "acc_within": num(s.acc_within, 3),
             "acc_beyond": num(s.acc_beyond, 3), **extra})
