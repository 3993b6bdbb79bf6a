"""I303 position-use: does the model's output depend on token order at all?"""
from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from degrade.check import Check, CheckSkipped
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.components import PositionModule, find_components, find_positions
from degrade.run.data import IGNORE_INDEX
from degrade.run.tasks import CAUSAL_LM
from degrade.stats import num

_LAMBDAS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _tv(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return 0.5 * (p - q).abs().sum(-1)


# ---- order structure of the data (model-free) ------------------------------------------------
def lm_order_structure(seqs: list[list[int]], labels: list[list[int]], max_targets: int = 50_000) -> dict[str, Any]:
    """How much better order-aware count predictors do than order-blind ones on held-out targets.

    Order-blind family (what a model that sees the current token and the bag of its prefix can
    know): unigram; bigram on the current token mixed with the unigram; that mixed with the prefix's
    token counts. Order-aware family: the best order-blind predictor mixed with a skip-gram on the
    token 2 or 3 back, or with the induction guess (the token that followed the previous
    occurrence of the current token). Every predictor's counts come from one half of the examples
    and it is scored on the other (2-fold cross-validation, nats/target); each family's best member
    (and mixture weight) is the one with the lowest cross-validated loss.
    """
    inst = []  # (example, t, target)
    for e, (s, lab) in enumerate(zip(seqs, labels)):
        for t in range(len(s) - 1):
            if lab[t + 1] != IGNORE_INDEX:
                inst.append((e, t, lab[t + 1]))
    if len(inst) > max_targets:
        keep = np.random.default_rng(0).choice(len(inst), size=max_targets, replace=False)
        inst = [inst[i] for i in sorted(keep)]
    folds = [[x for x in inst if x[0] % 2 == f] for f in (0, 1)]
    if min(len(f) for f in folds) < 20:
        return {"targets": len(inst), "gain": None, "reason": "too few targets"}
    V = len({t for s in seqs for t in s} | {x[2] for x in inst}) + 1

    def ctx(e, t, d):
        return seqs[e][t - d + 1] if t - d + 1 >= 0 else None

    def tables(rows):
        uni_c = Counter(y for _, _, y in rows)
        skip_c = {d: (Counter(), Counter()) for d in (1, 2, 3)}
        for e, t, y in rows:
            for d in (1, 2, 3):
                a = ctx(e, t, d)
                if a is not None:
                    skip_c[d][0][(a, y)] += 1
                    skip_c[d][1][a] += 1
        return uni_c, len(rows), skip_c

    def induction(e, t):
        s = seqs[e]
        for j in range(t - 1, -1, -1):
            if s[j] == s[t]:
                return s[j + 1]
        return None

    # Per held-out target: the component probabilities, from the other fold's counts.
    comps = []  # per fold: list of dicts
    for f in (0, 1):
        uni_c, N, skip_c = tables(folds[1 - f])
        rows = []
        for e, t, y in folds[f]:
            u = (uni_c[y] + 0.5) / (N + 0.5 * V)
            r = {"uni": u}
            for d in (1, 2, 3):
                a = ctx(e, t, d)
                pair, single = skip_c[d]
                r[f"skip{d}"] = u if a is None else (pair[(a, y)] + u) / (single[a] + 1.0)
            r["bag"] = seqs[e][:t + 1].count(y) / (t + 1)
            g = induction(e, t)
            r["induction"] = None if g is None else float(g == y)
            rows.append(r)
        comps.append(rows)
    all_rows = comps[0] + comps[1]

    def ce(fn) -> float:
        return float(-np.mean([math.log(max(fn(r), 1e-12)) for r in all_rows]))

    def mix(base, key, lam):
        def fn(r):
            b = base(r)
            v = r[key]
            return b if v is None else (1 - lam) * b + lam * v
        return fn

    def best_of(cands):
        return min(((ce(fn), name, fn) for name, fn in cands), key=lambda x: x[0])

    uni = lambda r: r["uni"]  # noqa: E731
    c_uni = best_of([("unigram", uni)])
    c_bi = best_of([(f"bigram({lam})", mix(uni, "skip1", lam)) for lam in _LAMBDAS + (1.0,)])
    bi_fn = c_bi[2]
    c_bag = best_of([(f"{c_bi[1]}+bag({lam})", mix(bi_fn, "bag", lam)) for lam in _LAMBDAS])
    blind = min((c_uni, c_bi, c_bag), key=lambda x: x[0])
    order = best_of([(f"{blind[1]}+{key}({lam})", mix(blind[2], key, lam))
                     for key in ("skip2", "skip3", "induction") for lam in _LAMBDAS])
    return {"targets": len(inst), "blind_best": blind[1], "blind_cv_nats": num(blind[0]),
            "order_best": order[1], "order_cv_nats": num(order[0]),
            "gain": num(blind[0] - order[0])}


def cls_order_structure(seqs: list[list[int]], labels: list[int], top_k: int = 24) -> dict[str, Any]:
    """How much the order of two tokens tells about the label beyond their presence.

    For the top_k most frequent tokens, each ordered pair (a, b) gives a feature "the first a comes
    before the first b", defined on examples holding both. The pair is chosen on even examples
    (largest information gain about the label over the label prior of those examples) and its gain
    is measured on odd ones, in nats per example (gain within the pair's examples x their share).
    """
    n = len(seqs)
    if n < 40:
        return {"examples": n, "gain": None, "reason": "too few examples"}
    df = Counter(t for s in seqs for t in set(s))
    toks = [t for t, _ in df.most_common(top_k)]
    K = len(toks)
    classes = sorted(set(labels))
    C = len(classes)
    first = np.full((n, K), np.inf)
    for i, s in enumerate(seqs):
        pos = {}
        for p, t in enumerate(s):
            pos.setdefault(t, p)
        for k, t in enumerate(toks):
            if t in pos:
                first[i, k] = pos[t]
    y = np.asarray([classes.index(v) for v in labels])
    both = np.isfinite(first)[:, :, None] & np.isfinite(first)[:, None, :]  # [n, K, K]
    before = (first[:, :, None] < first[:, None, :]) & both
    Y = np.eye(C)[y]  # [n, C]
    fit = np.arange(n) % 2 == 0
    held = ~fit

    def counts(mask_rows, feat):
        # [K, K, 2, C]: counts of label per feature value among examples holding both tokens
        b = both[mask_rows].astype(float)
        f1 = (feat[mask_rows]).astype(float)
        f0 = b - f1
        Ym = Y[mask_rows]
        return np.stack([np.einsum("nab,nc->abc", f0, Ym), np.einsum("nab,nc->abc", f1, Ym)], axis=2)

    def gain(cnt, alpha=0.5, probs=None):
        # information gain in nats per example of the whole set, for each pair
        tot_c = cnt.sum(axis=2)  # [K, K, C]
        n_pair = tot_c.sum(-1)  # [K, K]
        p_y = (tot_c + alpha) / (n_pair[..., None] + alpha * C)
        p_y_f = (cnt + alpha) / (cnt.sum(-1, keepdims=True) + alpha * C)
        if probs is not None:
            p_y, p_y_f = probs
        ll_prior = (tot_c * np.log(p_y)).sum(-1)
        ll_feat = (cnt * np.log(p_y_f)).sum(axis=(-1, -2))
        return (ll_feat - ll_prior), (p_y, p_y_f)

    cf = counts(fit, before)
    g_fit, probs = gain(cf)
    np.fill_diagonal(g_fit, -np.inf)
    a, b = np.unravel_index(int(np.argmax(g_fit)), g_fit.shape)
    ch = counts(held, before)
    g_held, _ = gain(ch, probs=probs)
    n_held = int(held.sum())
    return {"examples": n, "pair": [int(toks[a]), int(toks[b])],
            "pair_coverage": num(both[held, a, b].mean(), 3),
            "gain": num(g_held[a, b] / max(n_held, 1))}


# ---- the model side ------------------------------------------------------------------------
@contextmanager
def _position_probe(module: torch.nn.Module, pos: PositionModule, ablate: bool) -> Iterator[dict]:
    """Watch (and optionally remove) one position module's output."""
    seen: dict[str, Any] = {"calls": 0, "varies": False, "length": 0}

    def tensors(out):
        return [t for t in (out if isinstance(out, tuple) else (out,)) if isinstance(t, torch.Tensor)]

    def hook(mod, args, out):
        seen["calls"] += 1
        for t in tensors(out):
            if t.ndim >= 2 and t.shape[-2] > 1:
                seen["length"] = max(seen["length"], int(t.shape[-2]))
                if float((t - t[..., :1, :]).abs().max()) > 0:
                    seen["varies"] = True
        if not ablate:
            return None
        if pos.kind == "rotary" and isinstance(out, tuple) and len(out) == 2:
            return (torch.ones_like(out[0]), torch.zeros_like(out[1]))
        if isinstance(out, torch.Tensor):
            return torch.zeros_like(out)
        return None

    h = module.get_submodule(pos.module_name).register_forward_hook(hook)
    try:
        yield seen
    finally:
        h.remove()


_POSITION_CONFIG_KEYS = ("n_positions", "max_position_embeddings", "position_embedding_type",
                         "rope_theta", "rope_parameters", "rope_scaling", "rotary_dim", "rotary_pct",
                         "alibi", "relative_attention_num_buckets", "max_relative_positions")


def declared_positions(module: torch.nn.Module) -> list[str]:
    """Config keys by which an HF model declares a position mechanism (none for plain modules)."""
    cfg = getattr(module, "config", None)
    if cfg is None or isinstance(cfg, dict):
        return []
    found = []
    for k in _POSITION_CONFIG_KEYS:
        v = getattr(cfg, k, None)
        if v not in (None, False, 0, "", "none"):
            found.append(k)
    return found


class PositionUse(Check):
    """Token order does not reach the model (positions not wired), or the model does not use it.

    What it detects: for sampled eval sequences, the context is reordered and, separately, refilled
    with other tokens (drawn from the sample's tokens), and two things are compared with the
    original input:
      1. the input of the first attention layer's output projection (the heads' outputs) at the
         position read. For a causal LM the prefix before position t is shuffled and row t is read
         (x_t, the token being predicted from, stays); for a classifier every token except a constant
         first ([CLS]) and last ([SEP]) token is shuffled and the mean over positions is read. If no
         position information enters the model before its first attention, attention is
         permutation-invariant and these are *exactly* equal (float noise ~1e-7 relative); any
         position mechanism (learned or sinusoidal table, rotary, ALiBi, relative bias) breaks the
         equality. r0 = mean |change when reordered| / mean |change when refilled|.
      2. the model's predictive distribution at the same position (total variation distance, TV):
         r = mean TV(original, reordered) / mean TV(original, refilled). r near 0 means the model
         reads its context as a bag (the ratio controls for how much the model uses its context).
    Alongside, the position modules (nn.Embedding tables named wpe/pos/position_embeddings/...,
    rotary modules) are checked: called in the forward pass, different vectors at different
    positions, and the predictions' change when the module's output is zeroed (rotary: cos=1,
    sin=0). And the data's own order structure is measured without the model: for LMs, whether
    order-aware count predictors (skip-grams, the induction guess) beat order-blind ones (unigram,
    bigram on the current token, bag of the prefix) on held-out targets; for classifiers, whether
    the order of some pair of frequent tokens tells the label beyond their presence.
    Readings:
      - error: the first attention layer is permutation-invariant (r0 < `invariance_tol`) although
        the model has a position module or its config declares positions; or a learned position
        table is never called; or a position module gives the same vector at every position
        (constant position ids): positions are not wired (confidence 0.85-0.9);
      - warning, order axis published: first layer invariant and no position mechanism at all,
        while the data has order structure: an order-blind architecture (a causal mask alone gives
        deeper layers a weak, indirect order signal). That is the hypothesis, not a code bug: the
        perception layer owns it (info when the data shows no order structure);
      - warning, order axis published: positions reach the model but its predictions are
        order-blind (r < `blind_ratio`) while the data has order structure: not learned (settle
        reachability first) or a position scheme that does not suit the task;
      - nothing otherwise.

    Why it matters: attention by itself is permutation-invariant; only the position mechanism (and,
    weakly, a causal mask) lets a transformer use order. A table that is not wired in costs
    everything on any order-dependent task while the loss curve looks merely "hard to train".

    Evidence used: the model and the eval data (input ids, labels); attention mask all ones, no
    padding. Evidence: r0, r, the mean changes, the position modules' calls/variation/ablation
    effect, the config keys declaring positions, and the data's order gain (nats).

    Fix: add the position embedding to the token embedding in the forward pass with position ids
    0..T-1 (not all zeros, not reset per token); for rotary, rotate queries and keys in every layer
    with the position ids. For an architecture without positions on an order-dependent task, add a
    position mechanism (learned, sinusoidal, rotary or ALiBi): that is a change of hypothesis.
    """

    code, name, layer = "I303", "position-use", Layer.INSTANTIATION
    needs = frozenset({"model", "eval_data"})
    requires_learning = True  # degrade/learned.py: skipped while the model has not learned
    probes = 1
    publishes_axes = True  # {"axis": "order", "code": "I303", ...} for P403 and R checks
    options = (
        Option("n_sequences", 64,
               source="design choice: bounds the cost (as many as the budget's probe share pays for); "
                      "the number is chosen by hand",
               help="At most this many eval sequences (each is forwarded 1 + 2 n_cuts + one per "
                    "position module times)."),
        Option("n_cuts", 4,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (2) and doubled (8) give the same verdicts "
                      "and error codes",
               help="Reordered positions per LM sequence."),
        Option("invariance_tol", 1e-4,
               source="design choice: float32 noise is ~1e-7 relative; the margin is chosen by hand",
               help="r0 (the first attention layer's change under reordering relative to refilling) "
                    "below this is exact permutation invariance."),
        Option("half_precision_factor", 100,
               source="design choice: float16/bfloat16 round far more coarsely than float32 (bfloat16 "
                      "keeps 8 significant bits, float32 24); the factor is chosen by hand",
               help="Half-precision models (float16, bfloat16) use this multiple of invariance_tol."),
        Option("blind_ratio", 0.05,
               source="design choice: a model using order moves its predictions under reordering by a "
                      "sizeable share of what refilling moves them (r ~ 0.3-1); 0.05 is far below that",
               help="r (the predictions' change under reordering relative to refilling) below this is "
                    "order-blind."),
        Option("min_order_gain", 0.02,
               source="measured on synthetic data (the check's calibration): i.i.d. tokens and "
                      "first-order Markov data give |gain| < 0.003 (the blind family includes the "
                      "bigram); second-order Markov data 0.03; the copy task 0.78; the order "
                      "classification task 0.69 (ln 2: the order of two tokens decides the label)",
               help="Nats per target (LM) or per example (classification) by which the data's "
                    "order-aware count predictors must beat order-blind ones for \"the data has order "
                    "structure\"."),
        Option("min_reference_tv", 1e-3,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.0005) and doubled (0.002) give the same "
                      "verdicts and error codes",
               help="Below this mean TV between original and refilled inputs the model's outputs do "
                    "not depend on their context, and order use cannot be measured (skipped)."),
        Option("max_length", 512,
               source="design choice: bounds the cost; the number is chosen by hand",
               help="Sequences are truncated to this many tokens."),
    )

    @torch.no_grad()
    def run(self, run):
        o = self.opts
        model, data = run.model(), run.eval_data
        lm = model.task == CAUSAL_LM
        if not lm and data.label is None:
            raise CheckSkipped("classification model but the eval data has no labels")
        limit = min(int(o["max_length"]), model.positions or 10**9)
        rng = np.random.default_rng(run.options.seed)
        usable = [i for i, x in enumerate(data.input_ids) if len(x) >= 4]
        if len(usable) < 2:
            raise CheckSkipped("fewer than 2 eval sequences have 4 or more tokens")
        # Each sequence is forwarded once, then reordered and refilled at each cut, then once per
        # position module ablated: the probe budget is shared among those forwards.
        forwards = 1 + 2 * int(o["n_cuts"]) + len(find_positions(model.module))
        pick = run.engine.probe_indices(data, forwards=forwards, eligible=usable,
                                        cap=int(o["n_sequences"])).tolist()
        seqs = [list(data.input_ids[i][:limit]) for i in pick]
        labs = [list(data.token_labels(i)[:limit]) for i in pick] if lm else None
        lo = 1 if self._constant(s[0] for s in seqs) else 0
        hi_cut = 1 if (not lm and self._constant(s[-1] for s in seqs)) else 0
        module = model.module
        positions = find_positions(module)
        declared = declared_positions(module)
        comps = find_components(module)
        first_attn = comps.attention[0].module_name if comps.attention else None
        param = next(module.parameters(), None)
        half = param is not None and param.dtype in (torch.float16, torch.bfloat16)
        tol = o["invariance_tol"] * (o["half_precision_factor"] if half else 1)

        was_training = module.training
        module.eval()
        try:
            sens = self._sensitivity(model, seqs, labs, lo, hi_cut, int(o["n_cuts"]), rng,
                                     positions, first_attn)
        finally:
            module.train(was_training)
        if sens["pairs"] == 0:
            raise CheckSkipped("no sampled sequence could be reordered (too short or one repeated token)")
        r0 = sens["r0"]
        invariant = r0 is not None and r0 < tol
        r = sens["perm_tv"] / sens["ref_tv"] if sens["ref_tv"] > 0 else float("nan")
        ev: dict[str, Any] = {
            "first_layer_order_sensitivity": num(r0, 3) if r0 is not None else None,
            "first_attention_layer": first_attn, "invariance_tol": tol,
            "order_sensitivity": num(r, 3), "mean_tv_reordered": num(sens["perm_tv"], 3),
            "mean_tv_refilled": num(sens["ref_tv"], 3), "blind_ratio": o["blind_ratio"],
            "reorderings": sens["pairs"], "sequences": len(seqs), "kept_first_token_fixed": bool(lo),
            "position_modules": sens["modules"], "config_declares_positions": declared}
        has_mechanism = bool(positions or declared)

        # 1. Wiring: positions that exist but do not reach the model.
        unwired = []
        if invariant and has_mechanism:
            what = ", ".join([p.module_name for p in positions] + [f"config {k}" for k in declared][:3])
            unwired.append(f"the first attention layer is exactly permutation-invariant (reordering "
                           f"changes its heads' output {num(r0, 3)} as much as refilling) although "
                           f"the model has a position mechanism ({what})")
        for m in sens["modules"]:
            if m["calls"] == 0 and m["kind"] == "learned":
                unwired.append(f"{m['module']} is never called in the forward pass")
            elif m["calls"] and m["length_seen"] > 1 and not m["varies"]:
                unwired.append(f"{m['module']} gives the same vector at every position (constant position ids?)")
        if unwired:
            return [self.finding(
                "error", f"Positions are not wired: {'; '.join(unwired)}.",
                confidence=0.9 if invariant else 0.85, evidence=ev,
                fix="Add the position embedding to the token embedding with position ids 0..T-1 "
                    "(for rotary: rotate queries and keys in every layer with the position ids), "
                    "then retrain.",
                next_experiment="Feed one sequence and its reversal and print the first layer's "
                                "input: identical rows for identical tokens confirm the positions "
                                "never reach the model.")]

        if sens["ref_tv"] < o["min_reference_tv"] and not invariant:
            raise CheckSkipped(f"the model's predictions barely depend on their context (mean TV "
                               f"{sens['ref_tv']:.2g} when the context is refilled with other "
                               f"tokens): whether it uses order cannot be measured")
        blind = bool(np.isfinite(r)) and r < o["blind_ratio"]
        if not invariant and not blind:
            return []
        struct = self._structure(data, lm)
        ev["data_order_structure"] = struct
        has_struct = struct.get("gain") is not None and struct["gain"] >= o["min_order_gain"]
        gain_txt = (f"the data has order structure (order-aware count predictors beat order-blind "
                    f"ones by {struct['gain']} nats on held-out data)" if has_struct else
                    "count statistics found no order structure in the data")
        if invariant:  # and no mechanism
            self._publish(run, ev, struct, has_struct, mechanism=False)
            return [self.finding(
                "warning" if has_struct else "info",
                f"No position information reaches the model: it has no position module and its "
                f"first attention layer is exactly permutation-invariant (r0 {num(r0, 3)}); its "
                f"predictions change {ev['order_sensitivity']} as much under reordering as under "
                f"refilling (what order it sees comes only from the causal mask, if any); {gain_txt}. "
                f"That is the architecture's hypothesis, not a code bug: the perception layer owns it.",
                confidence=0.6 if has_struct else 0.4, evidence=ev,
                fix="If order matters for the task, give the model positions (learned, sinusoidal, "
                    "rotary or ALiBi).",
                next_experiment="Train the same model with a position mechanism for the same steps "
                                "and compare the eval loss.")]
        if not has_struct:
            return []
        self._publish(run, ev, struct, has_struct, mechanism=True)
        return [self.finding(
            "warning",
            f"The model's predictions are order-blind (reordering the context changes them "
            f"{ev['order_sensitivity']} as much as refilling it) although positions reach it, and "
            f"{gain_txt}: it has not learned to use positions.",
            confidence=0.5, evidence=ev,
            fix="Settle reachability first (longer training, LR); if the model still ignores order, "
                "the position scheme may not suit the task (perception).",
            next_experiment="Train longer and rerun I303; compare with a model using a different "
                            "position scheme.")]

    # ---- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _publish(run, ev, struct, has_struct: bool, mechanism: bool) -> None:
        run.context.setdefault("axes", []).append({
            "axis": "order", "code": "I303", "position_mechanism": mechanism,
            "first_layer_order_sensitivity": ev["first_layer_order_sensitivity"],
            "order_sensitivity": ev["order_sensitivity"], "data_order_gain": struct.get("gain"),
            "data_has_order_structure": has_struct})

    @staticmethod
    def _constant(tokens) -> bool:
        c = Counter(tokens)
        total = sum(c.values())
        return bool(total) and c.most_common(1)[0][1] >= 0.9 * total

    def _sensitivity(self, model, seqs, labs, lo, hi_cut, n_cuts, rng, positions, first_attn) -> dict[str, Any]:
        lm = labs is not None
        pool = np.asarray([t for s in seqs for t in s[lo:]])
        origs, perm_tvs, ref_tvs = [], [], []
        d0_perm, d0_ref = [], []
        reads_of: dict[int, list[int]] = {}  # sequence -> positions read, for the ablation pass
        captured: list[torch.Tensor] = []
        hook = None
        if first_attn is not None:
            def pre(mod, args, kwargs):
                x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
                captured.append(x.detach().float().cpu())
            hook = model.module.get_submodule(first_attn).register_forward_pre_hook(pre, with_kwargs=True)
        try:
            for k, s in enumerate(seqs):
                L = len(s)
                if lm:
                    cand = [t for t in range(lo + 2, L) if t + 1 < L and labs[k][t + 1] != IGNORE_INDEX]
                    if not cand:
                        cand = list(range(lo + 2, L - 1))
                    if not cand:
                        continue
                    cuts = sorted({cand[int(i)] for i in np.linspace(0, len(cand) - 1, min(n_cuts, len(cand)))})
                else:
                    cuts = [L - hi_cut]
                batch, reads = [s], []
                for t in cuts:
                    v = self._shuffled(s, lo, t, rng)
                    if v is not None:
                        w = list(s)
                        w[lo:t] = rng.choice(pool, size=t - lo).tolist()  # same length, other content
                        batch += [v, w]
                        reads.append(t)
                if not reads:
                    continue
                captured.clear()
                keep = sorted(set(reads)) if lm else None
                col = {t: i for i, t in enumerate(keep)} if lm else {}
                probs = self._probs(model, batch, lm, keep)
                x0 = captured[0] if captured else None
                if x0 is not None and (x0.ndim != 3 or x0.shape[0] != len(batch)):
                    x0 = None
                for j, t in enumerate(reads):
                    at = col[t] if lm else 0
                    perm_tvs.append(float(_tv(probs[0][at], probs[2 * j + 1][at])))
                    ref_tvs.append(float(_tv(probs[0][at], probs[2 * j + 2][at])))
                    origs.append(probs[0][at].clone())
                    reads_of.setdefault(k, []).append(t if lm else 0)
                    if x0 is not None:
                        row = (lambda b: x0[b, t]) if lm else (lambda b: x0[b].mean(0))
                        d0_perm.append(float((row(2 * j + 1) - row(0)).norm()))
                        d0_ref.append(float((row(2 * j + 2) - row(0)).norm()))
        finally:
            if hook is not None:
                hook.remove()
        ref = float(np.mean(ref_tvs)) if ref_tvs else 0.0
        r0 = float(np.sum(d0_perm) / np.sum(d0_ref)) if d0_ref and np.sum(d0_ref) > 0 else None
        modules = []
        for pos in positions:
            info: dict[str, Any] = {"module": pos.module_name, "kind": pos.kind}
            with _position_probe(model.module, pos, ablate=True) as seen:
                tvs = []
                for k, ats in reads_of.items():
                    keep = sorted(set(ats)) if lm else None
                    p = self._probs(model, [seqs[k]], lm, keep)[0]
                    for at in ats:
                        tvs.append(float(_tv(p[keep.index(at) if lm else 0], origs[len(tvs)])))
            info.update({"calls": seen["calls"], "varies": seen["varies"], "length_seen": seen["length"],
                         "ablation_tv": num(np.mean(tvs), 3) if tvs else None,
                         "ablation_ratio": num(np.mean(tvs) / ref, 3) if tvs and ref > 0 else None})
            modules.append(info)
        return {"pairs": len(perm_tvs), "perm_tv": float(np.mean(perm_tvs)) if perm_tvs else 0.0,
                "ref_tv": ref, "r0": r0, "modules": modules}

    @staticmethod
    def _shuffled(s: list[int], lo: int, hi: int, rng) -> list[int] | None:
        seg = s[lo:hi]
        if len(seg) < 2 or len(set(seg)) < 2:
            return None
        for _ in range(10):
            p = rng.permutation(len(seg))
            new = [seg[i] for i in p]
            if new != seg:
                return s[:lo] + new + s[hi:]
        return None

    @staticmethod
    def _probs(model, batch: list[list[int]], lm: bool, keep: list[int] | None = None) -> torch.Tensor:
        """Next-token probabilities at the `keep` positions (LM), or the class probabilities."""
        ids = torch.tensor(batch, dtype=torch.long)
        logits = model.logits(ids, torch.ones_like(ids), positions=keep).cpu()
        p = torch.softmax(logits, dim=-1)
        return p if lm else p[:, None, :]  # classification: one "position"

    @staticmethod
    def _structure(data, lm: bool) -> dict[str, Any]:
        # The whole eval set, up to 4000 examples: counts are cheap and need data.
        n = len(data)
        idx = list(range(n)) if n <= 4000 else sorted(np.random.default_rng(0).choice(n, 4000, replace=False).tolist())
        if lm:
            return lm_order_structure([data.input_ids[i] for i in idx], [data.token_labels(i) for i in idx])
        return cls_order_structure([data.input_ids[i] for i in idx], [data.label[i] for i in idx])
