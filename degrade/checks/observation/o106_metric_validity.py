"""O106 metric-validity: can the eval metric, as computed on this eval data, mean what it claims?"""
from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.checks.observation._stats import metric_kind, num, ratio_se, z_test
from degrade.errors import InputError
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.batches import sample_indices
from degrade.run.data import IGNORE_INDEX

if TYPE_CHECKING:
    from degrade.run.data import Examples
    from degrade.run.run import Run


class MetricValidity(Check):
    """The eval metric cannot mean what it claims: truncated targets, foreign tokenisation, a
    metric that a constant predictor matches, a metric moving against the loss.

    What it detects: (1) eval inputs truncated so that targets are cut off: eval examples that
    pile up at one maximal length L while training shows examples longer than L, or while L is
    the model's position limit / the tokenizer's model_max_length and training does not pile up
    there; for causal LMs, eval examples left with no target at all; (2) tokenisation of the eval
    data differing from training: token ids outside the model's vocabulary, an unknown-token rate
    far above training's, text that the run's tokenizer does not turn into the given input_ids,
    eval tokens that never occur in training inputs; (3) the metric against a constant and a
    majority baseline (the most frequent training label / target token); (4) eval loss and the
    logged accuracy moving in opposite directions across evaluations.
    Why it matters: a target cut off by truncation cannot be predicted, so the metric counts a
    preprocessing bug as a model error; eval ids from another tokenizer are noise to the model;
    a metric a constant predictor matches says nothing; loss and accuracy disagreeing on the
    direction of progress means one of them is computed on something else.
    Evidence used (each part runs when its input is there and says so when it is not): the eval
    data (a --budget sample), the training data read once (lengths,
    targets, token counts), the model config (n_positions / max_position_embeddings, vocab_size)
    and tokenizer (model_max_length, unk token), the history's eval records; with the model,
    per-example eval scores (accuracy on truncated vs untruncated items).
    Severity: error for truncation when at least trunc_fraction of eval examples are truncated
    AND the cut measurably removes targets (causal LM: at least trunc_fraction of examples have
    no target left; or, with the model, accuracy on truncated items is lower than on the rest by
    at least trunc_drop and 3 SE); error for tokenisation when at least oov_fraction of eval
    tokens are outside the model's vocabulary. Baselines and loss/metric direction: warning or info.
    Fix: evaluate with the training preprocessing (same tokenizer, max_length at least the
    longest example, truncation from the side that keeps the answer); use a metric a constant
    predictor cannot match (balanced accuracy, macro-F1) on imbalanced eval sets.
    """

    code, name, layer = "O106", "metric-validity", Layer.OBSERVATION
    needs: frozenset[str] = frozenset()  # each part says what it needs; see run()
    options = (
        Option("trunc_fraction", 0.05,
               source="arithmetic, as O103's error_fraction: items whose target was cut move the metric "
                      "by up to this fraction, above the SE of any eval set of more than ~400 items",
               help="Share of eval items that must be truncated (piled up at one maximal length), or of "
                    "causal-LM examples left with no target, for an error."),
        Option("pileup_ratio", 3.0,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (1.5) and doubled (6.0) give the same "
                      "verdicts and error codes",
               help="The eval share at the maximal length L must be this multiple of training's share "
                    "at L to count as a pile-up."),
        Option("trunc_drop", 0.1,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.05) and doubled (0.2) give the same "
                      "verdicts and error codes",
               help="Accuracy gap between truncated and untruncated items for an error (with trunc_z)."),
        Option("trunc_z", 3.0,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (1.5) and doubled (6.0) give the same "
                      "verdicts and error codes",
               help="Standard errors the accuracy gap of truncated items must also reach."),
        Option("oov_fraction", 0.01,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.005) and doubled (0.02) give the same "
                      "verdicts and error codes",
               help="Share of eval tokens outside the model's vocabulary for an error."),
        Option("unk_warning", 0.05,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.025) and doubled (0.1) give the same "
                      "verdicts and error codes",
               help="Unknown-token rate of the eval data for a warning (when also unk_ratio times "
                    "training's)."),
        Option("unk_ratio", 3.0,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (1.5) and doubled (6.0) give the same "
                      "verdicts and error codes",
               help="The eval unknown-token rate must also be this multiple of training's."),
        Option("unseen_token_warning", 0.05,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.025) and doubled (0.1) give the same "
                      "verdicts and error codes",
               help="Share of eval input tokens never seen in training inputs for a warning."),
        Option("majority_warning", 0.8,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.4) and doubled (capped at 1.0) give the "
                      "same verdicts and error codes",
               help="Majority-class share at which accuracy is a weak metric: the model is then "
                    "checked against the best constant predictor."),
        Option("baseline_se", 2.0,
               source="statistical convention: about a two-sided 95% interval (1.96 SE)",
               help="On such an imbalanced eval set, accuracy not above the best constant predictor's "
                    "plus this many binomial standard errors is a warning."),
        Option("opposite_acc", 0.05,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.025) and doubled (0.1) give the same "
                      "verdicts and error codes",
               help="First-to-last change of the accuracy (absolute; evals after step 0) that counts "
                    "as moving against the loss."),
        Option("opposite_loss", 0.1,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.05) and doubled (0.2) give the same "
                      "verdicts and error codes",
               help="First-to-last change of the eval loss (relative) that counts as moving against "
                    "the accuracy."),
        Option("opposite_rho", 0.5,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.25) and doubled (capped at 1.0) give "
                      "the same verdicts and error codes",
               help="Spearman correlation of loss and accuracy at or above which they move in the "
                    "same direction (they should correlate negatively)."),
        Option("min_evals", 5,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (2) and doubled (10) give the same "
                      "verdicts and error codes",
               help="Evaluations after step 0 needed to compare the directions of loss and accuracy."),
    )

    def run(self, run: "Run") -> list:
        ev, tr = run.eval_data, run.train_data
        directions = self._directions(run)
        if ev is None:
            if directions is None:
                raise CheckSkipped("no eval data (pass --eval-data PATH) and no history with an eval "
                                   "loss and an accuracy to compare")
            parts = [directions]
            evidence: dict[str, Any] = {"not_checked": "truncation, tokenisation and baselines: no eval "
                                                       "data (pass --eval-data PATH)"}
        else:
            idx = sample_indices(len(ev), run.budget.max_eval_examples, run.options.seed)
            evidence = {"n_eval": len(ev), "n_eval_checked": len(idx), "sampled": len(idx) < len(ev),
                        "n_train": run.train_pass.n if tr is not None else None}
            parts = [self._truncation(run, ev, tr, idx), self._tokenisation(run, ev, tr, idx),
                     self._baselines(run, ev, tr, idx), directions]
            if directions is None:
                evidence["not_checked"] = "loss vs metric: no history with eval loss and an accuracy"
        problems: list[tuple[str, str, dict]] = []  # (severity, message, evidence)
        for part in parts:
            if part is None:
                continue
            name, sev, msg, ev_part = part
            evidence[name] = ev_part
            if sev != "info":
                problems.append((sev, msg, ev_part))
        if not problems:
            what = ("The eval metric looks valid: no truncated targets, the eval tokens are the "
                    "training tokens, the metric beats its constant baselines or is not judged here."
                    if ev is not None else
                    "The logged eval loss and metric move the same way. Truncation, tokenisation and "
                    "baselines were not checked: no eval data (pass --eval-data PATH).")
            return [self.finding(
                "info", what,
                confidence=0.7, evidence=evidence, fix="Nothing to fix.", next_experiment="None needed.")]
        out = []
        for sev, msg, _ in sorted(problems, key=lambda p: p[0] != "error"):
            out.append(self.finding(
                sev, msg, confidence=0.8 if sev == "error" else 0.5, evidence=evidence,
                fix="Evaluate with the training preprocessing (same tokenizer, max_length covering the "
                    "longest example, truncation that keeps the target); pick a metric a constant "
                    "predictor cannot match on imbalanced eval sets.",
                next_experiment="Re-tokenise the eval set exactly as the training set (no truncation "
                                "below the longest example) and re-evaluate: the gap is the preprocessing's cost."))
        return out

    # ---- truncation ------------------------------------------------------------------------
    def _limits(self, run: "Run") -> dict[str, int]:
        cfg = run.config or {}
        out = {}
        for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_len"):
            if isinstance(cfg.get(key), int):
                out[f"model {key}"] = int(cfg[key])
        tok = _tokenizer(run)
        mml = getattr(tok, "model_max_length", None) if tok is not None else None
        if isinstance(mml, int) and mml < 1_000_000:
            out["tokenizer model_max_length"] = mml
        return out

    def _truncation(self, run, ev: "Examples", tr, idx):
        lengths = np.asarray([len(ev.input_ids[i]) for i in idx])
        L = int(lengths.max())
        at_L = lengths == L
        share = float(at_L.mean())
        limits = self._limits(run)
        ev_part: dict[str, Any] = {"eval_max_length": L, "eval_share_at_max_length": num(share, 4),
                                   "limits": limits}
        train_longer = train_share_at_L = None
        if tr is not None:
            tl = np.asarray(tr.lengths)
            train_longer = float((tl > L).mean())
            train_share_at_L = float((tl == L).mean())
            ev_part.update({"train_max_length": int(tl.max()), "train_share_longer_than_L": num(train_longer, 4),
                            "train_share_at_L": num(train_share_at_L, 4)})
        pileup = share >= self.opts["trunc_fraction"] and (
            train_share_at_L is None or share >= self.opts["pileup_ratio"] * train_share_at_L)
        cut_by_training = train_longer is not None and train_longer >= self.opts["trunc_fraction"]
        cut_by_limit = [k for k, v in limits.items() if v == L]
        truncated = pileup and (cut_by_training or bool(cut_by_limit))
        no_target = None
        if ev.labels is not None or run.task_hint == "causal-lm":
            nt = np.asarray([sum(t != IGNORE_INDEX for t in ev.token_labels(int(i))[1:]) for i in idx])
            no_target = float((nt == 0).mean())
            ev_part["eval_share_without_targets"] = num(no_target, 4)
        if not truncated and not (no_target and no_target >= self.opts["trunc_fraction"]):
            return "truncation", "info", "", ev_part
        ev_part["truncated_share"] = num(share if truncated else 0.0, 4)
        ev_part["cut_at"] = L
        ev_part["why_truncated"] = ([f"training has {100 * train_longer:.0f}% of examples longer than {L}"]
                                    if cut_by_training else []) + [f"{L} is the {k}" for k in cut_by_limit]
        drop = self._accuracy_gap(run, idx, at_L) if truncated else None
        if drop:
            ev_part["accuracy_truncated_vs_rest"] = drop
        cut_targets = (no_target is not None and no_target >= self.opts["trunc_fraction"])
        hurts = drop is not None and drop.get("gap") is not None and drop["gap"] >= self.opts["trunc_drop"] \
            and (drop.get("z") or 0) >= self.opts["trunc_z"]
        msg = (f"{100 * share:.0f}% of eval examples pile up at length {L}"
               + (f" ({'; '.join(ev_part['why_truncated'])})" if ev_part["why_truncated"] else "")
               + ": the eval inputs were truncated.") if truncated else ""
        if cut_targets:
            msg += f" {100 * no_target:.0f}% of eval examples have no target left."
        if hurts:
            msg += (f" Accuracy on truncated items {drop['truncated']} vs {drop['rest']} on the rest "
                    f"(z={drop['z']}): the cut removes what the label depends on.")
        return "truncation", "error" if (cut_targets or hurts) else "warning", msg.strip(), ev_part

    def _accuracy_gap(self, run, idx, at_L) -> dict[str, Any] | None:
        if run.model_unavailable() is not None:
            return None
        try:
            s = run.eval_scores()
        except InputError as e:
            return {"note": f"the model could not be scored: {e}"}
        flag = dict(zip(idx.tolist(), at_L.tolist()))
        c = np.array([flag.get(int(i), False) for i in s.indices])
        if c.sum() < 10 or (~c).sum() < 10:
            return {"note": "too few truncated or untruncated items scored to compare"}
        corr, cnt = s.correct * s.n_targets, s.n_targets
        a_t, se_t = ratio_se(corr[c], cnt[c])
        a_r, se_r = ratio_se(corr[~c], cnt[~c])
        z, _ = z_test(a_r - a_t, math.sqrt(se_t ** 2 + se_r ** 2))
        return {"truncated": num(a_t, 3), "rest": num(a_r, 3), "gap": num(a_r - a_t, 3),
                "z": num(z, 3) if math.isfinite(z) else None}

    # ---- tokenisation ----------------------------------------------------------------------
    def _tokenisation(self, run, ev, tr, idx):
        toks = np.concatenate([np.asarray(ev.input_ids[i], dtype=np.int64) for i in idx])
        part: dict[str, Any] = {"eval_tokens_checked": int(toks.size)}
        sev, msgs = "info", []
        vocab = (run.config or {}).get("vocab_size")
        if isinstance(vocab, int):
            oov = float((toks >= vocab).mean())
            part["eval_share_outside_vocab"] = num(oov, 4)
            if oov >= self.opts["oov_fraction"]:
                sev = "error"
                msgs.append(f"{100 * oov:.1f}% of eval tokens are outside the model's vocabulary of {vocab}: "
                            "the eval data was tokenised with another tokenizer.")
        tok = _tokenizer(run)
        unk = getattr(tok, "unk_token_id", None) if tok is not None else None
        if unk is not None:
            r_ev = float((toks == unk).mean())
            part["eval_unk_rate"] = num(r_ev, 4)
            if tr is not None:
                tr_toks = np.concatenate([np.asarray(tr.input_ids[j], dtype=np.int64)
                                          for j in sample_indices(len(tr), len(idx), run.options.seed)])
                r_tr = float((tr_toks == unk).mean())
                part["train_unk_rate"] = num(r_tr, 4)
            else:
                r_tr = 0.0
            if r_ev >= self.opts["unk_warning"] and r_ev >= self.opts["unk_ratio"] * r_tr:
                sev = "warning" if sev == "info" else sev
                msgs.append(f"{100 * r_ev:.1f}% of eval tokens are the unknown token (training: {100 * r_tr:.1f}%).")
        if tok is not None and ev.text is not None:
            same = [list(tok(ev.text[i])["input_ids"]) == ev.input_ids[i] for i in idx[:200]]
            part["text_retokenises_to_given_ids"] = num(float(np.mean(same)), 3)
        if tr is not None:
            seen = np.zeros(int(max(toks.max(), max(max(x) for x in tr.input_ids if x))) + 1, dtype=bool)
            for x in tr.input_ids:
                seen[np.asarray(x, dtype=np.int64)] = True
            unseen = float((~seen[toks]).mean())
            part["eval_tokens_unseen_in_training"] = num(unseen, 4)
            if unseen >= self.opts["unseen_token_warning"]:
                sev = "warning" if sev == "info" else sev
                msgs.append(f"{100 * unseen:.1f}% of eval input tokens never occur in the training inputs.")
        return "tokenisation", sev, " ".join(msgs), part

    # ---- baselines ---------------------------------------------------------------------------
    def _baselines(self, run, ev, tr, idx):
        if ev.label is not None:
            y = np.asarray([ev.label[i] for i in idx])
            ref = Counter(tr.label if tr is not None and tr.label is not None else y.tolist())
        else:
            y = np.asarray([t for i in idx for t in ev.token_labels(int(i))[1:] if t != IGNORE_INDEX])
            src = tr if tr is not None else ev
            ref = Counter(t for j in range(min(len(src), 20_000)) for t in src.token_labels(j)[1:]
                          if t != IGNORE_INDEX)
        if y.size == 0 or not ref:
            return None
        majority = ref.most_common(1)[0][0]
        best_const = Counter(y.tolist()).most_common(1)[0]
        part = {"majority_label": int(majority), "majority_baseline": num(float((y == majority).mean()), 4),
                "best_constant_baseline": num(best_const[1] / y.size, 4)}
        model_acc = None
        if run.model_unavailable() is None:
            try:
                model_acc = run.eval_scores().accuracy
            except InputError:
                model_acc = None
        part["model_accuracy"] = num(model_acc, 4)
        base = part["best_constant_baseline"]
        if model_acc is not None and base >= self.opts["majority_warning"]:
            se = math.sqrt(base * (1 - base) / y.size) if y.size else 0.0
            if model_acc <= base + self.opts["baseline_se"] * se:
                return ("baselines", "warning",
                        f"Accuracy {model_acc:.3f} does not beat predicting the constant label "
                        f"{best_const[0]} ({base:.3f}): on this imbalanced eval set accuracy says little.", part)
        return "baselines", "info", "", part

    # ---- loss vs metric direction ----------------------------------------------------------
    def _directions(self, run):
        h = run.history
        if not h or (es := h.main_eval_set()) is None:
            return None
        acc_keys = [k for k in h.eval_metrics(es) if metric_kind(k) == "proportion"]
        if not acc_keys:
            return None
        steps, loss = h.series("loss", es)
        steps_a, acc = h.series(acc_keys[0], es)
        by_step = dict(zip(steps_a.tolist(), acc.tolist()))
        # An evaluation at step 0 measures the untrained model (often the majority class): it
        # says nothing about how the metric follows the loss during training.
        pts = [(s_, l_, by_step[s_]) for s_, l_ in zip(steps.tolist(), loss.tolist())
               if s_ > 0 and s_ in by_step and np.isfinite(l_) and np.isfinite(by_step[s_])]
        if len(pts) < self.opts["min_evals"]:
            return None
        from scipy.stats import spearmanr
        _, lo, ac = (np.asarray(v) for v in zip(*pts))
        rho = float(spearmanr(lo, ac)[0]) if np.ptp(lo) > 0 and np.ptp(ac) > 0 else 0.0
        dl = (lo[-1] - lo[0]) / max(abs(lo[0]), 1e-12)
        da = ac[-1] - ac[0]
        part = {"metric": acc_keys[0], "n_evals": len(pts), "loss_first": num(lo[0], 4),
                "loss_last": num(lo[-1], 4), "metric_first": num(ac[0], 4), "metric_last": num(ac[-1], 4),
                "spearman_loss_vs_metric": num(rho, 3)}
        if (dl <= -self.opts["opposite_loss"] and da <= -self.opts["opposite_acc"]
                and rho >= self.opts["opposite_rho"]):
            return ("loss_vs_metric", "warning",
                    f"The eval loss fell by {100 * -dl:.0f}% while {acc_keys[0]} fell by {-da:.3f} "
                    f"(Spearman {rho:.2f} over {len(pts)} evaluations): the metric is computed on "
                    "something other than what the loss measures (label alignment, label mapping, "
                    "post-processing).", part)
        if dl >= self.opts["opposite_loss"] and da >= self.opts["opposite_acc"]:
            part["note"] = ("loss rose while accuracy rose: usually over-confidence on the errors "
                            "(see R202), not an invalid metric")
        return "loss_vs_metric", "info", "", part


def _tokenizer(run):
    try:
        return run._tokenizer_for_text()
    except Exception:  # noqa: BLE001 - no tokenizer is a normal case
        return None

