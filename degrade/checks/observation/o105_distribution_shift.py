"""O105 distribution-shift: what the evaluation measures, compared with what training asked for."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from degrade.check import Check
from degrade.checks.observation._stats import num, ratio_se, z_test
from degrade.errors import InputError
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.batches import sample_indices
from degrade.probing.shift import (DIRECT_TOKENS, FeatureSpec, domain_test, embedding_features, features,
                                   input_embeddings)
from degrade.probing.targets import vocab_problem
from degrade.run.data import IGNORE_INDEX

if TYPE_CHECKING:
    from degrade.run.run import Run


class DistributionShift(Check):
    """The eval data differ from the training data; an error only when the eval asks for targets
    training never asked for.

    What it detects: (1) a domain-classifier two-sample test on cheap features (input length,
    targets per example, token histogram, label mix): the cross-fitted AUC of a logistic
    regression telling eval rows from training rows, its p-value and the features that drive it;
    (2) eval targets (class labels, or an LM's target tokens) that never occur as a training
    target; (3) when the model is there: the same classifier on the mean of the model's own input
    embeddings over each example's tokens (a learned bag of words: tokens the model treats alike
    count alike; not contextual states, which would detect memorised training rows rather than
    shift), and whether performance falls along the most shifted feature.
    Why it matters: shift is not a fault in itself: it says WHAT the evaluation measures (in-
    distribution or transfer). But an eval set whose targets training never asked for measures
    something the run was not trained to do: that observation is wrong for the question "did
    training work". A failure concentrated along a shifted input property is evidence about the
    hypothesis, so it is handed to the perception layer (run.context["axes"]).
    Evidence used: the training data read once in batches (targets, labels, lengths, a uniform
    reservoir sample of rows; --budget max_train_examples caps the sample, never the pass); a
    --budget sample of the eval data; per-example eval scores when the model is available.
    Severity: error when at least unseen_error_fraction of eval targets are unseen in training,
    more than an eval drawn like the training data would show (Good-Turing's missing mass of the
    training targets, n1/N over the distinct training rows, by `unseen_z` standard errors: a tiny
    training set leaves targets unseen without any shift, and so does one made of a few rows
    repeated many times) and, for causal LMs (a pretrained LM may know tokens its fine-tuning never targeted), the model
    is available and its accuracy on those targets is below unseen_accuracy_ratio of its accuracy on
    the others; warning when the drift score of either classifier reaches drift_warning with
    p < p_value; else info.
    Fix: evaluate on data drawn like the training data for "did training work", and keep the
    shifted set as a separate, named transfer evaluation; add the missing targets to training.
    """

    code, name, layer = "O105", "distribution-shift", Layer.OBSERVATION
    needs = frozenset({"eval_data", "train_data"})
    publishes_axes = True
    options = (
        Option("drift_warning", 0.25,
               source="deepchecks' default condition on its domain-classifier multivariate drift",
               help="Drift score max(2 AUC - 1, 0) of either domain classifier for a warning."),
        Option("p_value", 1e-3,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.0005) and doubled (0.002) give the same "
                      "verdicts and error codes",
               help='The drift must also be this unlikely under "no shift".'),
        Option("unseen_error_fraction", 0.05,
               source="arithmetic, as O103's error_fraction: targets the model was never trained to "
                      "produce move the metric by up to this fraction, above the SE of any eval set of "
                      "more than ~400 items",
               help="Share of eval targets unseen as training targets for an error (for causal LMs "
                    "only when the model also fails them, see unseen_accuracy_ratio)."),
        Option("unseen_z", 2.0,
               source="Good 1953 / Esty 1983: the Good-Turing missing mass n1/N and its standard error; "
                      "two standard errors, the convention of degrade's comparisons",
               help="Standard errors by which the unseen-target share must exceed what an eval drawn "
                    "like the training data would show (the training targets' missing mass)."),
        Option("unseen_accuracy_ratio", 0.5,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.25) and doubled (capped at 1.0) give "
                      "the same verdicts and error codes",
               help="Causal LMs (a pretrained LM may know tokens its fine-tuning never targeted): the "
                    "unseen targets are an error only when the model's accuracy on them is below this "
                    "fraction of its accuracy on the others."),
        Option("axis_drop", 0.1,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.05) and doubled (0.2) give the same "
                      "verdicts and error codes",
               help="Performance falls along a shifted feature (published as an axis) when accuracy "
                    "beyond the training range (or above the eval median) is lower by at least this "
                    "(absolute) and by axis_z standard errors."),
        Option("axis_z", 3.0,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (1.5) and doubled (6.0) give the same "
                      "verdicts and error codes",
               help="Standard errors the accuracy drop along a shifted feature must exceed (see "
                    "axis_drop)."),
        Option("axis_feature_auc", 0.1,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.05) and doubled (0.2) give the same "
                      "verdicts and error codes",
               help="Only the classifier's top drivers whose own AUC is at least this far from 0.5 are "
                    "read as candidate axes."),
    )

    def run(self, run: "Run") -> list:
        ev, tr = run.eval_data, run.train_data
        seed = run.options.seed
        eval_idx = sample_indices(len(ev), run.budget.max_eval_examples, seed)
        prof = run.train_pass.profile  # every training row: targets, lengths, a reservoir sample
        classification = ev.label is not None and tr.label is not None
        ev_ids = [ev.input_ids[i] for i in eval_idx]
        ev_tg = [ev.token_labels(int(i)) for i in eval_idx] if not classification else None
        ev_lb = [ev.label[int(i)] for i in eval_idx] if classification else None
        tr_ids, tr_tg, tr_lb = _subsample(prof.sample(), len(eval_idx), seed)
        if not classification:
            tr_tg = tr_tg or [x for x in tr_ids]
        top_token = max(prof.max_token, max((max(x) for x in ev_ids if x), default=-1))
        n_labels = max(max(ev_lb), max(prof.label_counts)) + 1 if classification else None
        spec = FeatureSpec(vocab_direct=top_token < DIRECT_TOKENS,
                           n_labels=n_labels if classification and n_labels <= 64 else (None if not classification else 64))
        X_tr = features(tr_ids, None if classification else tr_tg, tr_lb, spec)
        X_ev = features(ev_ids, None if classification else ev_tg, ev_lb, spec)
        test = domain_test(X_tr, X_ev, spec.names(), seed)
        emb_test = self._embedding_test(run, tr_ids, ev_ids, seed)

        unseen = self._unseen_targets(ev_tg, ev_lb, prof.targets)
        evidence: dict[str, Any] = {
            "n_train": prof.n, "n_train_sampled": len(tr_ids),
            "n_eval": len(ev), "n_eval_sampled": len(eval_idx),
            "sampled": {"eval": len(eval_idx) < len(ev), "train_rows_in_classifier": len(tr_ids) < prof.n},
            "domain_classifier": test, "train_max_length": prof.max_length,
            "eval_max_length": int(max(len(x) for x in ev_ids)),
            "unseen_targets": unseen,
            "embedding_classifier": emb_test,
        }
        if classification:
            evidence["label_mix"] = {"train": _mix(prof.label_counts), "eval": _mix(_counts(ev_lb))}
        perf = self._performance(run, eval_idx, X_ev, spec, test, prof, unseen)
        if perf:
            evidence["performance"] = perf

        drift, p = test["drift_score"], test["p_value"]
        top = ", ".join(f"{d['feature']} (AUC {d['auc']})" for d in test["drivers"][:3])
        msg = (f"Train vs eval domain classifier: AUC {test['auc']} (drift score {drift}, p={p:.2g}); "
               f"driven by {top}.")
        if "auc" in emb_test:
            msg += (f" On the model's input embeddings: AUC {emb_test['auc']} (drift score "
                    f"{emb_test['drift_score']}, p={emb_test['p_value']:.2g}).")
            if emb_test["drift_score"] > drift:  # the stronger of the two tests sets the severity
                drift, p = emb_test["drift_score"], emb_test["p_value"]
        frac = unseen["fraction"] or 0.0
        # Targets a small training set never saw are expected even without any shift: Good-Turing's
        # missing mass is what an eval drawn like the training data would show. Only a share beyond
        # it (and its noise) says the eval asks for something else.
        p0, p0_se = prof.missing_mass()
        se = float(np.hypot(p0_se, np.sqrt(max(p0 * (1 - p0), 1e-12) / max(unseen["of"], 1))))
        unseen.update(expected_if_drawn_like_training=num(p0, 4), expected_se=num(se, 4))
        beyond_chance = frac - p0 > self.opts["unseen_z"] * se
        unseen_error = (frac >= self.opts["unseen_error_fraction"] and beyond_chance
                        and self._unseen_hurts(classification, perf))
        if unseen["n"]:
            msg = (f"{unseen['n']} of {unseen['of']} eval targets ({100 * frac:.1f}%) are "
                   f"{'labels' if classification else 'tokens'} training never asked for "
                   f"(e.g. {unseen['examples'][:5]}). " + msg)
            if perf and perf.get("accuracy_on_unseen_targets") is not None:
                msg += (f" Accuracy on them {perf['accuracy_on_unseen_targets']} vs "
                        f"{perf['accuracy_on_seen_targets']} on the rest.")
        if perf and perf.get("axis"):
            msg += (f" Performance falls along {perf['axis']['feature']}: accuracy "
                    f"{perf['axis']['acc_within']} within vs {perf['axis']['acc_beyond']} beyond "
                    f"{perf['axis']['split']} (handed to the perception layer).")
        if unseen_error:
            return [self.finding(
                "error", msg + " The evaluation measures something the run was never trained to do.",
                confidence=0.85, evidence=evidence,
                fix="Evaluate on targets that training covers (or add the missing targets to the "
                    "training data); report the unseen-target items as a separate transfer set.",
                next_experiment="Re-score the eval set without the unseen-target items: the metric on "
                                "the rest is the one that says whether training worked.")]
        if drift >= self.opts["drift_warning"] and p < self.opts["p_value"]:
            return [self.finding(
                "warning", msg + " The eval set measures transfer to shifted data, not in-distribution "
                "performance.", confidence=0.6, evidence=evidence,
                fix="Name the eval set for what it measures; add an in-distribution eval split if the "
                    "question is whether training worked.",
                next_experiment="Evaluate on a held-out split of the training distribution and compare: "
                                "the gap is the cost of the shift.")]
        return [self.finding(
            "info", msg + (" No material shift." if drift < self.opts["drift_warning"] else ""),
            confidence=0.7, evidence=evidence, fix="Nothing to fix.",
            next_experiment="None needed for shift.")]

    # ---------------------------------------------------------------------------------------
    @staticmethod
    def _embedding_test(run: "Run", tr_ids, ev_ids, seed: int) -> dict[str, Any]:
        """The same domain classifier on mean-pooled input embeddings (probing/shift.py)."""
        if run.model_unavailable() is not None:
            return {"note": f"no model: {run.model_unavailable()}"}
        try:
            table = input_embeddings(run.model().module)
        except InputError as e:
            return {"note": f"the model could not be loaded: {e}"}
        if table is None:
            return {"note": "the model has no nn.Embedding to read token vectors from"}
        X_tr, X_ev = embedding_features(tr_ids, table), embedding_features(ev_ids, table)
        t = domain_test(X_tr, X_ev, [f"emb[{j}]" for j in range(table.shape[1])], seed, top=0)
        return {k: t[k] for k in ("auc", "drift_score", "p_value", "z", "n_train", "n_eval")} | {
            "features": f"mean of the model's {table.shape[1]}-d input embeddings over each example's tokens"}

    @staticmethod
    def _unseen_targets(ev_tg, ev_lb, seen: set[int]) -> dict[str, Any]:
        if ev_lb is not None:
            vals = np.asarray(ev_lb)
        else:
            vals = np.concatenate([np.asarray(t[1:], dtype=np.int64) for t in ev_tg]) if ev_tg else np.zeros(0, int)
            vals = vals[vals != IGNORE_INDEX]
        miss = np.array([int(v) not in seen for v in vals], dtype=bool)
        return {"n": int(miss.sum()), "of": int(vals.size),
                "fraction": num(miss.mean(), 4) if vals.size else None,
                "examples": sorted({int(v) for v in vals[miss]})[:10]}

    def _unseen_hurts(self, classification: bool, perf: dict | None) -> bool:
        if classification:
            return True  # a class the head was never trained on: no model can be expected to output it
        if not perf or perf.get("accuracy_on_unseen_targets") is None:
            return False
        return perf["accuracy_on_unseen_targets"] < self.opts["unseen_accuracy_ratio"] * perf["accuracy_on_seen_targets"]

    def _performance(self, run, eval_idx, X_ev, spec, test, prof, unseen) -> dict[str, Any] | None:
        if run.model_unavailable() is not None:
            return {"note": f"no model: {run.model_unavailable()}"}
        if (why := vocab_problem(run, run.eval_data)) is not None:
            return {"note": why}
        try:
            s = run.eval_scores()
        except InputError as e:
            return {"note": f"the model could not be scored: {e}"}
        out: dict[str, Any] = {}
        if unseen["n"]:
            from degrade.probing.targets import eval_targets
            t = eval_targets(run)
            miss = np.array([int(g) not in prof.targets for g in t.given], dtype=bool)
            if miss.any() and (~miss).any():
                out["accuracy_on_unseen_targets"] = num(t.correct[miss].mean(), 3)
                out["accuracy_on_seen_targets"] = num(t.correct[~miss].mean(), 3)
        row = {int(i): r for r, i in enumerate(eval_idx)}
        pick = np.array([row.get(int(i), -1) for i in s.indices])
        ok = pick >= 0
        if ok.sum() < 20:
            return out or None
        names = spec.names()
        for d in test["drivers"][:3]:
            if abs(d["auc"] - 0.5) < self.opts["axis_feature_auc"]:
                continue
            j = names.index(d["feature"])
            x = X_ev[pick[ok], j]
            corr, cnt = s.correct[ok] * s.n_targets[ok], s.n_targets[ok]
            cut = prof.max_length if d["feature"] == "length" and x.max() > prof.max_length else float(np.median(x))
            beyond = x > cut if d["auc"] > 0.5 else x < cut
            if beyond.sum() < 10 or (~beyond).sum() < 10:
                continue
            a_in, se_in = ratio_se(corr[~beyond], cnt[~beyond])
            a_out, se_out = ratio_se(corr[beyond], cnt[beyond])
            z, _ = z_test(a_in - a_out, math.sqrt(se_in ** 2 + se_out ** 2))
            if a_in - a_out >= self.opts["axis_drop"] and z >= self.opts["axis_z"]:
                axis = {"feature": d["feature"], "split": f"{'>' if d['auc'] > 0.5 else '<'} {num(cut, 4)}",
                        "acc_within": num(a_in, 3), "acc_beyond": num(a_out, 3), "z": num(z, 3)}
                out["axis"] = axis
                run.context.setdefault("axes", []).append(
                    {"axis": d["feature"], "code": self.code, "beyond": int(beyond.sum()),
                     "acc_within": axis["acc_within"], "acc_beyond": axis["acc_beyond"]})
                break
        return out or None


def _subsample(sample: tuple, k: int, seed: int) -> tuple:
    """At most k of the reservoir's rows (as many training rows as eval rows in the classifier)."""
    ids, tg, lb = sample
    if len(ids) <= k:
        return ids, tg, lb
    keep = np.sort(np.random.default_rng(seed).choice(len(ids), size=k, replace=False))
    pick = (lambda xs: None if xs is None else [xs[i] for i in keep])
    return pick(ids), pick(tg), pick(lb)


def _counts(vals) -> dict[int, int]:
    u, c = np.unique(np.asarray(vals), return_counts=True)
    return dict(zip(u.tolist(), c.tolist()))


def _mix(counts: dict[int, int]) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {str(k): round(v / total, 4) for k, v in sorted(counts.items())}
