"""P403 order-blind: an architecture with no position mechanism, on data where order matters."""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from degrade.check import Check, CheckSkipped
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.baselines import cls_order_rungs, lm_ladder, split_examples
from degrade.probing.components import find_positions
from degrade.run.load import CAUSAL_LM, ModelHandle
from degrade.stats import num, paired_difference

# config keys that say a model gets positions without a module find_positions can see
POSITION_HINTS = ("rope_theta", "rope_scaling", "rope_parameters", "rotary_dim", "rotary_pct", "alibi",
                  "use_alibi", "position_embedding_type", "max_relative_positions", "relative_attention_num_buckets")


def position_hints(module: torch.nn.Module) -> dict[str, Any]:
    cfg = getattr(module, "config", None)
    out = {}
    for key in POSITION_HINTS:
        v = getattr(cfg, key, None) if cfg is not None and not isinstance(cfg, dict) else None
        if v not in (None, False):
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    plain = getattr(module, "cfg", None)  # plain modules (TinyGPT) keep a dict
    if isinstance(plain, dict) and plain.get("positions") not in (None, "none"):
        out["positions"] = plain["positions"]
    return out


def _tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return float(0.5 * (p - q).abs().sum())


@torch.no_grad()
def order_sensitivity(model: ModelHandle, seqs: list[list[int]], rng: np.random.Generator) -> dict[str, Any]:
    """How much reordering the input moves the prediction, relative to changing the input.

    Causal LM: the prediction at the last position, with the tokens before it shuffled (the last
    token, the one the model predicts from, stays). Classifier: the class distribution with all
    tokens shuffled except a constant first token ([CLS]) and a constant last one ([SEP]).
    r = mean TV(original, reordered) / mean TV(two different inputs).
    """
    lm = model.task == CAUSAL_LM

    def constant(tokens) -> bool:
        c = Counter(tokens)
        return bool(c) and c.most_common(1)[0][1] >= 0.9 * sum(c.values())

    lo = 1 if constant(s[0] for s in seqs) else 0
    hi = 1 if lm or constant(s[-1] for s in seqs) else 0
    outs, perm_tvs = [], []
    for s in seqs:
        seg = s[lo:len(s) - hi]
        if len(seg) < 2 or len(set(seg)) < 2:
            continue
        for _ in range(10):
            new = [seg[i] for i in rng.permutation(len(seg))]
            if new != seg:
                break
        v = s[:lo] + new + s[len(s) - hi:]
        ids = torch.tensor([s, v], dtype=torch.long)
        logits = model.logits(ids, torch.ones_like(ids)).cpu()
        p = torch.softmax(logits[:, -1] if lm else logits, dim=-1)
        perm_tvs.append(_tv(p[0], p[1]))
        outs.append(p[0])
    n = len(outs)
    if n < 2:
        return {"pairs": n, "ratio": None}
    ref = float(np.mean([_tv(outs[i], outs[(i + 1) % n]) for i in range(n)]))
    perm = float(np.mean(perm_tvs))
    return {"pairs": n, "mean_tv_reordered": num(perm, 3), "mean_tv_different_inputs": num(ref, 3),
            "ratio": perm / ref if ref > 0 else None, "kept_first_token_fixed": bool(lo)}


class OrderBlind(Check):
    """An architecture without positions (order-blind output) on data where order matters.

    What it detects: three things together.
      1. No position mechanism: no learned position table or rotary module (by module names and
         shapes, degrade.probing.components), and no config key that implies one (rope_theta,
         alibi, position_embedding_type, relative attention buckets, ...).
      2. The model is order-blind: I303 (position-use) publishes {"axis": "order"} with its
         measured order sensitivity when it ran; otherwise it is measured here: for sampled eval
         sequences the tokens are shuffled (causal LM: the prefix before the last position;
         classifier: all but a constant first/last token) and r = mean TV(original, shuffled) /
         mean TV(two different inputs). Blind when r < `blind_ratio`. (A causal model without
         positions can still learn order from its mask when it has 2+ layers: then r is not
         small and this check stays quiet.)
      3. The data is order-dependent: order-aware count baselines beat order-blind ones on
         held-out examples. Causal LM: the trigram (the two previous tokens in their places)
         beats the bigram (the current token only) by more than `z` SE and `min_rel_gain` of the
         bigram's loss. Classifier: logistic regression on the bag of words plus the precedence
         of frequent token pairs and adjacent pairs beats the bag of words alone in accuracy by
         more than `z` SE and `min_acc_gain`. Fitted on the train data (or on half the eval
         data without it). I303's own reading of the data ("data_has_order_structure", which also
         covers copy/induction structure that n-grams miss) counts too.
    Readings: all three: error (confidence 0.75; 0.65 when only I303's data reading says the
    data is ordered), axis "order" published to run.context["axes"]. 1 and 2 on data without order structure: info (no harm done). A model
    with a position mechanism: nothing (whether it is used is I303's question, at the
    instantiation layer).

    Why it matters: attention is permutation-invariant; without positions a transformer sees a
    bag of tokens (plus, for a causal model, which token is the current one). On data whose
    meaning depends on order no amount of training gets past the order-blind ceiling: the
    hypothesis ("order does not matter") is wrong, not the training.

    Evidence used: the model (its modules and config, a few forward passes), the eval data, the
    train data when given, run.context["axes"] from I303. Evidence: the position modules and
    hints found, r and its TVs (or I303's), the order-blind and order-aware baselines' scores and
    the paired gain.

    Fix: give the model a position mechanism (learned absolute, sinusoidal, rotary or ALiBi) and
    retrain.
    """

    code, name, layer = "P403", "order-blind", Layer.PERCEPTION
    needs = frozenset({"model", "eval_data"})
    probes = 1
    # On an error it publishes {"axis": "order", "code": "P403"}: R checks defer to it and P401's
    # generic "worse than baselines" lets this specific reading lead. Publishers run after the
    # outer layers' publishers, so I303's reading is still there to use.
    publishes_axes = True
    options = (
        Option("blind_ratio", 0.05,
               source="I303's blind_ratio: a trained order-using model moves r ~ 0.3-1; a "
                      "bag-of-tokens model only by float noise",
               help="r (reordering's effect on the prediction relative to changing the input) below "
                    "this is order-blind."),
        Option("n_sequences", 64,
               source="design choice: bounds the cost (as many as the budget's probe share pays for); "
                      "the number is chosen by hand",
               help="At most this many eval sequences reordered."),
        Option("z", 2.0,
               source="statistical convention: about a two-sided 95% interval (1.96 SE)",
               help="Standard errors the order-aware baseline's paired gain must exceed."),
        Option("min_rel_gain", 0.02,
               source="design choice: P401's practical margin (its min_rel_gain)",
               help="LM: the trigram must beat the bigram by this fraction of its loss."),
        Option("min_acc_gain", 0.02,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.01) and doubled (0.04) give the same "
                      "verdicts and error codes",
               help="Classifier: the order-aware baseline's accuracy gain (absolute) over the bag of "
                    "words."),
        Option("max_length", 512,
               source="design choice: bounds the cost; the number is chosen by hand",
               help="Sequences are truncated to this many tokens for the probe."),
    )

    def run(self, run):
        o = self.opts
        model = run.model()
        lm = model.task == CAUSAL_LM
        eval_ = run.eval_data
        if not lm and eval_.label is None:
            raise CheckSkipped("classification model but the eval data has no labels")
        modules = find_positions(model.module)
        hints = position_hints(model.module)
        if modules or hints:
            return []
        ev: dict[str, Any] = {"task": model.task, "position_modules": [], "position_config_hints": {}}

        i303 = next((a for a in run.context.get("axes") or [] if isinstance(a, dict)
                     and a.get("axis") == "order" and a.get("code") == "I303"), None)
        if i303 is not None and i303.get("order_sensitivity") is not None:
            ratio = float(i303["order_sensitivity"])
            ev["order_sensitivity"] = {"ratio": num(ratio, 3), "source": "I303"}
        else:
            rng = np.random.default_rng(run.options.seed)
            usable = [i for i, x in enumerate(eval_.input_ids) if len(x) >= 4]
            if len(usable) < 2:
                raise CheckSkipped("fewer than 2 eval sequences have 4 or more tokens")
            # each sequence, reordered and refilled: three forwards, paid by the probe share
            pick = run.engine.probe_indices(eval_, forwards=3, eligible=usable, cap=int(o["n_sequences"])).tolist()
            seqs = [list(eval_.input_ids[i][: int(o["max_length"])]) for i in pick]
            sens = order_sensitivity(model, seqs, rng)
            if sens["ratio"] is None:
                raise CheckSkipped("the model's outputs do not depend on its input (or no sequence "
                                   "could be reordered): order use cannot be measured")
            ratio = sens["ratio"]
            ev["order_sensitivity"] = {**sens, "ratio": num(ratio, 3), "source": "measured"}
        if ratio >= o["blind_ratio"]:
            return []

        data = self._data_order(run, lm)
        ev["data_order"] = data
        i303_ordered = bool(i303 and i303.get("data_has_order_structure"))
        ev["i303_data_has_order_structure"] = i303.get("data_has_order_structure") if i303 else None
        if not (data.get("dependent") or i303_ordered):
            return [self.finding(
                "info", f"The model has no position mechanism and is order-blind (r = {num(ratio, 3)}), "
                        f"but no order structure was found in the data, so this costs nothing measurable.",
                confidence=0.5, evidence=ev)]
        run.context.setdefault("axes", []).append(
            {"axis": "order", "code": self.code, "order_sensitivity": num(ratio, 3)})
        why = data["summary"] if data.get("dependent") else (
            f"I303 found order structure in the data (order-aware count predictors beat order-blind "
            f"ones by {i303.get('data_order_gain')})")
        return [self.finding(
            "error",
            f"The model has no position mechanism and its output ignores token order (reordering "
            f"the input moves its prediction {num(ratio, 3)} as much as changing the input does), "
            f"while order matters in this data: {why}. The hypothesis that order does not matter "
            f"is wrong for this task.",
            confidence=0.75 if data.get("dependent") else 0.65, evidence=ev,
            fix="Give the model a position mechanism (learned absolute positions, sinusoidal, RoPE "
                "or ALiBi) and retrain.",
            next_experiment="Train the same model with positions added for the same steps and "
                            "compare the eval loss and accuracy; the order-aware baseline's score "
                            "is the least it should reach.")]

    def _data_order(self, run, lm: bool) -> dict[str, Any]:
        o = self.opts
        eval_ = run.eval_data
        n_eval = min(len(eval_), run.budget.max_eval_examples or len(eval_))
        idx = np.sort(np.random.default_rng(run.options.seed).choice(len(eval_), n_eval, replace=False))
        train = run.train_data
        fitted_on = "train data"
        if train is None:
            fit, score = idx[::2], idx[1::2]
            train, idx, fitted_on = split_examples(eval_, fit), score, "half of the eval data"
        if len(idx) < 20:
            return {"dependent": False, "reason": f"{len(idx)} held-out examples; at least 20 needed"}
        if lm:
            rungs = {r.name: r for r in lm_ladder(train, eval_, idx, max_order=3,
                                                 max_train_examples=run.budget.max_train_examples,
                                                 seed=run.options.seed)}
            if "trigram" not in rungs:
                return {"dependent": False, "reason": "no targets to fit baselines on"}
            blind, aware = rungs["bigram"], rungs["trigram"]
            keep = np.isfinite(blind.loss) & (blind.loss > 0)
            gain, se = paired_difference(blind.loss[keep], aware.loss[keep])
            base = float(blind.loss[keep].mean())
            dep = gain > o["z"] * se and gain > o["min_rel_gain"] * base
            return {"dependent": bool(dep), "fitted_on": fitted_on, "metric": "loss (nats per target)",
                    "order_blind": {"rung": "bigram (current token)", "loss": num(base)},
                    "order_aware": {"rung": "trigram (two previous tokens in place)",
                                    "loss": num(aware.loss[keep].mean())},
                    "gain": num(gain), "gain_se": num(se),
                    "summary": f"a trigram beats a bigram by {num(gain, 3)} +- {num(se, 2)} nats "
                               f"per target ({num(base, 3)} -> {num(aware.loss[keep].mean(), 3)})"}
        if train.label is None:
            return {"dependent": False, "reason": "the train data has no labels"}
        blind, aware = cls_order_rungs(train, eval_, idx, max_train_examples=run.budget.max_train_examples,
                                       seed=run.options.seed)
        gain, se = paired_difference(aware.correct, blind.correct)
        dep = gain > o["z"] * se and gain > o["min_acc_gain"]
        return {"dependent": bool(dep), "fitted_on": fitted_on, "metric": "accuracy",
                "order_blind": {"rung": blind.details["model"], "accuracy": num(blind.correct.mean())},
                "order_aware": {"rung": aware.details["model"], "accuracy": num(aware.correct.mean())},
                "gain": num(gain), "gain_se": num(se),
                "summary": f"an order-aware count baseline is {num(gain, 3)} +- {num(se, 2)} more "
                           f"accurate than a bag of words ({num(blind.correct.mean(), 3)} -> "
                           f"{num(aware.correct.mean(), 3)})"}
