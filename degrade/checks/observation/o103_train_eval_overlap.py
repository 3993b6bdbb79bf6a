"""O103 train-eval-overlap: eval examples that are (near-)copies of training examples."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from degrade.check import Check
from degrade.checks.observation._stats import Z95, num, ratio_se, wilson, z_test
from degrade.engine import MIN_TRAIN_ROWS
from degrade.errors import InputError
from degrade.layers import Layer
from degrade.run.tasks import TOKEN_TASKS
from degrade.option import Option
from degrade.probing.batches import sample_indices
from degrade.probing.minhash import MinHasher
from degrade.run.train_pass import first_row, norm_text, row_hashes

if TYPE_CHECKING:
    from degrade.run.data import Examples
    from degrade.run.run import Run
    from degrade.run.train_pass import TrainPass


class TrainEvalOverlap(Check):
    """Eval examples that also occur (exactly or nearly) in the training data.

    What it detects: eval examples whose input token sequence (or input and label) is in the
    training data, and near-duplicates: eval examples most of whose n-grams occur in training
    (8-grams of tokens; 13-grams of words when the data has text, the lm-evaluation-harness /
    GPT-3 decontamination unit) or whose shingle set has a Jaccard similarity >= 0.8 with a
    training example (MinHash with LSH banding over multiset shingles, verified exactly; Lee et
    al. 2022 deduplicate at the same threshold). Sequences shorter than n are matched whole (as a contiguous run inside a
    training sequence). Sequences of 4 units or fewer get the exact test only: in a tiny input space
    (modular addition with p=23 has p^2 = 529 inputs of 4 tokens) two different problems share 3
    of 4 tokens by necessity, so partial overlap is not leakage; only the eval pair itself being in
    train is.
    Why it matters: a contaminated eval item measures memorisation, not generalisation, so the eval
    metric overstates the model; the overstatement is the contaminated fraction times the
    memorisation advantage.
    Evidence used: exact hashes over ALL training rows (run.train_pass: one streaming pass, 24
    bytes per row, however large the file); n-gram and MinHash tests against every training row
    when the file has at most max_train_examples rows or the budget is thorough (streamed: memory
    does not grow with the file), else against a uniform sample of max_train_examples rows (near
    matches are then a lower bound); the eval sample the other model-based checks score
    (max_eval_examples). When the model
    is available: the eval metric on clean vs contaminated items (run.eval_scores()), which decides
    the severity: an error when the contaminated items move the reported accuracy or loss
    materially and beyond noise; when no item is an exact match (shared n-grams only, which can be
    chance in a small token space) and the run logs an accuracy, it is the accuracy that must
    move. N-grams that
    occur in more than 1% of the training sample are treated as template/boilerplate and ignored.
    Fix: remove the contaminated items from the eval set (or from training) and re-evaluate; split
    data by a deduplicated key before training.
    """

    code, name, layer = "O103", "train-eval-overlap", Layer.OBSERVATION
    needs = frozenset({"eval_data", "train_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})
    probes = 1
    options = (
        Option("ngram_tokens", 8,
               source="GPT-3 (Brown et al. 2020) decontaminated with 8- to 13-grams",
               help="The n-gram length in tokens (when the data has no text)."),
        Option("ngram_words", 13,
               source="lm-evaluation-harness decontamination: 13-grams of words (GPT-3 used 8- to "
                      "13-grams)",
               help="The n-gram length in words (when both datasets have text)."),
        Option("ngram_min_fraction", 0.5,
               source="design choice: the GPT-3 rule (any one shared n-gram) fires by chance on "
                      "synthetic data with a small vocabulary, and a shared sentence is not a copied "
                      "item; half of the n-grams is a majority",
               help="An eval item counts as an n-gram near-duplicate when at least this fraction of its "
                    "n-grams occur in training. The GPT-3 rule (any one n-gram) is reported too but not "
                    "used for severity."),
        Option("jaccard", 0.8,
               source='Lee et al. 2022 ("Deduplicating Training Data Makes Language Models Better") '
                      "deduplicate at Jaccard 0.8",
               help="MinHash near-duplicate threshold on the shingle sets (verified exactly)."),
        Option("shingle", 5,
               source="Lee et al. 2022 (Deduplicating Training Data Makes Language Models Better) use "
                      "5-gram shingles",
               help="MinHash shingles are n-grams of this length (of words with text, else of tokens), "
                    "counted as a multiset. Not smaller for short sequences: with 2- or 3-grams, "
                    '"11 11 11 2 4 16 11 11 11 2 4" and "11 11 2 4 16 11 11 2 4" (two different '
                    "copy-task problems) reach Jaccard 0.8; with 5-grams a one-token change in a short "
                    "sequence drops it well below, which is right: there it makes a different problem."),
        Option("min_near_length", 5,
               source="design choice: in a tiny input space (modular addition with p=23 has 529 inputs "
                      "of 4 tokens) two different problems share 3 of 4 tokens by necessity",
               help="Sequences shorter than this get only the exact test."),
        Option("error_fraction", 0.05,
               source="arithmetic: with a memorisation advantage g the metric moves by 0.05*g, e.g. "
                      "2.5 points at g=0.5, above the SE of any eval set of more than ~400 items "
                      "(SE <= 0.5/sqrt(n))",
               help="Without a model to measure the cost, contamination of this fraction or more is "
                    "an error; with one, the measured shift decides (min_acc_shift, min_loss_shift)."),
        Option("min_acc_shift", 0.01,
               source="P401's practical accuracy margin (one point)",
               help="With the model there: the contaminated items must raise the reported accuracy by "
                    "at least this much (absolute) for an error."),
        Option("min_loss_shift", 0.05,
               source="ANCHORS.md: a < 5% change is 'not decreasing'; the same relative size is the "
                      "least material shift of a loss",
               help="... or lower the reported loss by at least this fraction of the clean items' loss."),
        Option("boilerplate_fraction", 0.01,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.005) and doubled (0.02) give the same "
                      "verdicts and error codes",
               help="N-grams in more than this fraction of the training sample (and at least 3 "
                    "examples) are ignored as templates."),
        Option("min_k", 0.2,
               source="Zhang et al. 2024 (Min-K%++): k=20% is the paper's default",
               help="The share of lowest-scoring tokens Min-K%++ averages. Its membership scores of the "
                    "eval and training items (read from the engine's shared passes) and of a probe's "
                    'worth of shuffled eval items ("fresh") are evidence only, when the model is a '
                    "causal LM: the paper finds the signal weak on small models, so it never sets the "
                    "severity."),
    )

    def run(self, run: "Run") -> list:
        ev, tr, tp = run.eval_data, run.train_data, run.train_pass
        seed = run.options.seed
        eval_idx = sample_indices(len(ev), run.budget.max_eval_examples, seed)
        n_ev = len(eval_idx)

        # ---- exact: every training row (hashes from the streaming pass) ----
        exact_input, exact_pair, train_of = self._exact(ev, tp, eval_idx)
        label_conflict = exact_input & ~exact_pair

        # ---- near: n-grams and MinHash against every row, or a sample within the budget ----
        use_words = ev.text is not None and tp.has_text
        n = self.opts["ngram_words"] if use_words else self.opts["ngram_tokens"]
        units_ev = [_units(ev, int(i), use_words) for i in eval_idx]
        lengths = np.array([u.size for u in units_ev])
        eligible = lengths >= self.opts["min_near_length"]
        shingle = int(self.opts["shingle"])
        near_batches, n_near = self._near_rows(run)
        frac, any_hit, n_boiler, jac, jac_train, previews = self._near(
            units_ev, near_batches, use_words, n, shingle, eligible, seed)
        ngram_major = eligible & (frac >= self.opts["ngram_min_fraction"])
        near_dup = eligible & (jac >= self.opts["jaccard"])
        contaminated = exact_input | ngram_major | near_dup
        k = int(contaminated.sum())
        fraction = k / max(n_ev, 1)
        lo, hi = wilson(fraction, n_ev)

        evidence: dict[str, Any] = {
            "n_eval": len(ev), "n_eval_checked": n_ev, "n_train": tp.n,
            "n_train_exact": tp.n, "n_train_near": n_near,
            "sampled": {"eval": n_ev < len(ev), "train_near": n_near < tp.n},
            "unit": "words" if use_words else "tokens", "ngram_n": n, "minhash_shingle": shingle,
            "exact_input": int(exact_input.sum()), "exact_input_and_label": int(exact_pair.sum()),
            "same_input_other_label": int(label_conflict.sum()),
            "ngram_any_overlap_gpt3_rule": int((eligible & any_hit).sum()),
            "ngram_majority_overlap": int(ngram_major.sum()),
            f"minhash_jaccard_ge_{self.opts['jaccard']}": int(near_dup.sum()),
            "too_short_for_near_tests": int((~eligible).sum()),
            "boilerplate_ngrams_ignored": n_boiler,
            "contaminated": k, "contaminated_fraction": num(fraction, 4),
            "contaminated_fraction_ci95": [round(lo, 4), round(hi, 4)],
        }
        if k:
            evidence["examples"] = self._examples(ev, tr, eval_idx, contaminated, exact_input,
                                                  exact_pair, near_dup, frac, jac, jac_train,
                                                  train_of, previews)
        split = self._metric_split(run, eval_idx, contaminated) if k else None
        if split is not None:
            evidence["metric_split"] = split
        membership = self._membership(run, eval_idx, contaminated)
        if membership is not None:
            evidence["membership_min_k_pp"] = membership

        sampled_note = ""
        if n_near < tp.n:
            sampled_note = (f" Near-duplicates were searched in a sample of {n_near} of "
                            f"{tp.n} training examples (exact matches in all): a lower bound.")
        if n_ev < len(ev):
            sampled_note += f" {n_ev} of {len(ev)} eval examples were checked."
        if k == 0:
            return [self.finding(
                "info",
                f"No train-eval overlap: none of {n_ev} eval examples is in the training data exactly, "
                f"by {n}-gram overlap or by MinHash Jaccard >= {self.opts['jaccard']}." + sampled_note,
                confidence=0.8, evidence=evidence, fix="Nothing to fix.",
                next_experiment="None needed for contamination; see O101/O102 for the eval's other risks.")]

        # The cost decides when it was measured (DESIGN.md §1: an error's cost is beyond noise and
        # material): the contaminated items move the reported accuracy by min_acc_shift or the
        # reported loss by min_loss_shift of the clean loss, the model doing measurably better on
        # them than on the clean items (z >= 1.96: a memorisation advantage, not chance). Overlap
        # that moves nothing (a model that generalises, a metric at its ceiling) is a warning;
        # without a model the fraction rule stands in for the cost. An exact input match is
        # leakage by definition; shared n-grams alone can be chance in a small token space (bench
        # seed 12: 17% of a healthy reverse-llama eval set, no exact match), so they must move the
        # accuracy when the run logs one: a loss 5% lower on those items, a few 1e-4 nats for a
        # near-perfect model, is not an inflated result.
        measured = split is not None and (split.get("z_contaminated_vs_clean") is not None
                                          or split.get("z_loss_clean_vs_contaminated") is not None)
        if measured:
            split["cost_read_in"] = "accuracy" if _logs_accuracy(run) and not exact_input.any() else "loss"
            error = costs(split, self.opts)
        else:
            error = fraction >= self.opts["error_fraction"]
        kinds = []
        if exact_input.any():
            kinds.append(f"{int(exact_input.sum())} exact input match(es)"
                         + (f" ({int(label_conflict.sum())} with a different label)" if label_conflict.any() else ""))
        if (ngram_major & ~exact_input).any():
            kinds.append(f"{int((ngram_major & ~exact_input).sum())} more by {n}-gram overlap")
        if (near_dup & ~exact_input & ~ngram_major).any():
            kinds.append(f"{int((near_dup & ~exact_input & ~ngram_major).sum())} more by MinHash")
        msg = (f"{k} of {n_ev} eval examples ({100 * fraction:.1f}%, 95% CI {100 * lo:.1f}-{100 * hi:.1f}%) "
               f"also occur in the training data: {', '.join(kinds)}.")
        if split is not None and split.get("metric"):
            msg += (f" {split['metric']}: {split['contaminated']} on contaminated vs {split['clean']} on "
                    f"clean items; the reported value moves by {split['shift']} because of them.")
        msg += sampled_note
        only_exact = not (ngram_major | near_dup)[~exact_input].any()
        conf = (0.9 if only_exact else 0.75) if error else (0.8 if only_exact else 0.6)
        return [self.finding(
            "error" if error else "warning", msg, confidence=conf, evidence=evidence,
            fix="Remove the contaminated items from the eval set (or from training) and report the "
                "metric on the clean items; split future data by a deduplicated key (hash of the "
                "normalised input) before training.",
            next_experiment=f"Re-evaluate on the {n_ev - k} clean eval items only: if the metric drops "
                            "by more than its SE, the reported number was inflated by memorisation.")]

    # ---- exact ---------------------------------------------------------------------------------
    def _exact(self, ev: "Examples", tp: "TrainPass", eval_idx: np.ndarray):
        """Exact matches of eval inputs (and input+label pairs, and normalised text) against the
        hashes of every training row."""
        hashes = [row_hashes(ev, int(i)) for i in eval_idx]
        h_in = np.array([h[0] for h in hashes], dtype=np.int64)
        h_pair = np.array([h[1] for h in hashes], dtype=np.int64)
        train_of = tp.first_row_of(h_in)
        if ev.text is not None and tp.text_hash is not None:
            h_text = np.array([h[2] for h in hashes], dtype=np.int64)
            by_text = first_row(tp.text_hash, h_text)
            train_of = np.where(train_of >= 0, train_of, by_text)
        exact_input = train_of >= 0
        exact_pair = exact_input & (tp.first_row_of(h_pair, "pair") >= 0)
        return exact_input, exact_pair, train_of

    # ---- near ----------------------------------------------------------------------------------
    @staticmethod
    def _near_rows(run: "Run"):
        """(batches of (examples, their positions, their file rows), how many rows): every
        training row when the budget allows it (streamed from the file if it is not all in
        memory), else a uniform sample."""
        tr, cap = run.train_data, run.budget.max_train_examples
        total = run.train_pass.n
        if cap is None or total <= cap:
            batches = ((ex, np.arange(len(ex)), np.arange(off, off + len(ex)))
                       for off, ex in run.train_batches())
            return batches, total
        idx = sample_indices(len(tr), cap, run.options.seed)
        return [(tr, idx, np.asarray(tr.rows)[idx] if tr.rows is not None else idx)], len(idx)

    def _near(self, units_ev, batches, use_words, n, shingle, eligible, seed):
        """n-gram and MinHash near-duplicates in one streaming pass over the training units
        (probing/stream_overlap.py: the eval side is indexed, training streams in batches).
        Returns the best match's file row per eval item and its preview, kept as matches appear
        (the row itself may not be in memory later)."""
        from degrade.probing.stream_overlap import StreamingOverlap
        so = StreamingOverlap(units_ev, ngram=n, shingle=shingle,
                              min_near_length=int(self.opts["min_near_length"]),
                              hasher=MinHasher(num_perm=100, bands=20, seed=seed))
        best_row = np.full(len(units_ev), -1, dtype=np.int64)
        previews: dict[int, str] = {}
        for ex, idx, rows in batches:
            base = so.n_train
            units = [_units(ex, int(i), use_words) for i in idx]
            offsets = np.r_[0, np.cumsum([u.size for u in units])].astype(np.int64)
            so.add(np.concatenate(units) if units else np.zeros(0, np.int64), offsets)
            for e in np.flatnonzero(so.best_train_row >= base):
                k = int(so.best_train_row[e]) - base
                best_row[e] = rows[k]
                previews[int(rows[k])] = _preview(ex, int(idx[k]))
        frac = np.where(eligible, so.ngram_fraction(self.opts["boilerplate_fraction"]), 0.0)
        limit = max(3, self.opts["boilerplate_fraction"] * max(so.n_train, 1))
        jac = np.where(eligible, so.best_jaccard, 0.0)
        best = np.where(eligible, best_row, -1)
        return frac, eligible & (frac > 0), int((so.ngram_df > limit).sum()), jac, best, previews

    # ---- reporting -----------------------------------------------------------------------------
    def _examples(self, ev, tr, eval_idx, contaminated, exact_input, exact_pair, near_dup, frac,
                  jac, jac_train, train_of, previews) -> list[dict[str, Any]]:
        in_memory = {} if tr.rows is None else {r: k for k, r in enumerate(tr.rows)}
        out = []
        for r in np.flatnonzero(contaminated)[:5]:
            i = int(eval_idx[r])
            if exact_input[r]:
                kind = "exact input+label" if exact_pair[r] else "exact input, other label"
                j = int(train_of[r])
            else:
                kind = "minhash" if near_dup[r] else "ngram"
                j = int(jac_train[r]) if jac_train[r] >= 0 else None
            row: dict[str, Any] = {"eval_index": i, "kind": kind, "train_row": j,
                                   "ngram_overlap": num(frac[r], 3), "jaccard": num(jac[r], 3),
                                   "eval_preview": _preview(ev, i)}
            k = j if tr.rows is None else in_memory.get(j)
            if k is not None:
                row["train_preview"] = _preview(tr, k)
            elif j in previews:
                row["train_preview"] = previews[j]
            out.append(row)
        return out

    def _membership(self, run: "Run", eval_idx: np.ndarray, contaminated: np.ndarray) -> dict[str, Any] | None:
        """Min-K%++ scores (probing/membership.py) of eval items (contaminated and clean), training
        items and shuffled eval items, with the AUCs that say how well the signal separates them."""
        if run.model_unavailable() is not None:
            return None
        from degrade.probing.membership import min_k, shuffled
        from degrade.probing.shift import auc
        from degrade.probing.targets import vocab_problem
        try:
            if run.task not in TOKEN_TASKS:
                return {"note": "Min-K%++ needs a language model's token probabilities; this is a "
                                f"{run.task} model"}
            if vocab_problem(run, run.eval_data) or vocab_problem(run, run.train_data):
                return {"note": "token ids outside the model's vocabulary: not scored"}
            k = self.opts["min_k"]
            # The token scores come from the engine's shared eval and training passes; only the
            # shuffled eval items (surely never seen) need a pass of their own, a probe's worth.
            seen = run.engine.eval_pass()
            flag = dict(zip(eval_idx.tolist(), contaminated.tolist()))
            rows = np.asarray([i for i in seen.scores.indices if int(i) in flag], dtype=int)
            ev_scores = np.asarray([min_k(seen.membership[int(i)], k) for i in rows])
            train = run.engine.train_pass()
            tr_scores = np.asarray([min_k(train.membership[int(i)], k) for i in train.scores.indices])
            # the shuffled reference is compared as a distribution: at least as many rows as the
            # engine's smallest training sample (fewer make its AUC noise)
            probe = run.engine.subsample(rows, run.budget.probe_passes, minimum=MIN_TRAIN_ROWS) if rows.size else rows
            fresh = shuffled(run.eval_data, probe, run.options.seed)
            fr_pass = run.engine.run_pass(run.model(), fresh, np.arange(len(fresh)), label="O103 shuffled")
            fr_scores = np.asarray([min_k(fr_pass.membership[i], k) for i in range(len(fresh))])
            n = int(rows.size)
            where = {int(e): j for j, e in enumerate(eval_idx)}
            pick = np.asarray([where[int(i)] for i in rows], dtype=int)
        except InputError as e:
            return {"note": f"the model could not be scored: {e}"}
        cont = contaminated[pick]
        clean_scores = ev_scores[~cont]

        def mean(x):
            x = x[np.isfinite(x)]
            return num(float(x.mean()), 4) if x.size else None

        def auc_of(a, b):
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            if a.size < 5 or b.size < 5:
                return None
            return num(auc(np.r_[a, b], np.r_[np.ones(a.size, bool), np.zeros(b.size, bool)]), 3)

        return {"k": k, "n_eval": n, "n_train": int(tr_scores.size), "n_shuffled": int(fr_scores.size),
                "mean_eval_contaminated": mean(ev_scores[cont]),
                "mean_eval_clean": mean(clean_scores), "mean_train": mean(tr_scores),
                "mean_fresh_shuffled": mean(fr_scores),
                "auc_train_vs_eval_clean": auc_of(tr_scores, clean_scores),
                "auc_eval_contaminated_vs_clean": auc_of(ev_scores[cont], clean_scores),
                "auc_eval_vs_fresh": auc_of(ev_scores, fr_scores),
                "reading": "AUC 0.5 = no separation; train vs eval-clean near 0.5 means the model treats "
                           "held-out items like training items (it generalises, or the signal is weak "
                           "at this size); contaminated vs clean above it backs the overlap finding."}

    def _metric_split(self, run: "Run", eval_idx: np.ndarray, contaminated: np.ndarray) -> dict[str, Any] | None:
        if run.model_unavailable() is not None:
            return {"note": f"no model to score: {run.model_unavailable()}"}
        vocab = (run.config or {}).get("vocab_size")
        top = max((max(x) for x in run.eval_data.input_ids + (run.eval_data.source or []) if x), default=0)
        if isinstance(vocab, int) and top >= vocab:
            return {"note": f"the eval data holds token id {top}, outside the model's vocabulary "
                            f"of {vocab}: not scored"}
        try:
            s = run.eval_scores()
        except InputError as e:
            return {"note": f"the model could not be scored: {e}"}
        flag = dict(zip(eval_idx.tolist(), contaminated.tolist()))
        c = np.array([flag.get(int(i), False) for i in s.indices])
        if c.all() or not c.any():
            return {"note": "the scored sample holds only one group"}
        out: dict[str, Any] = {"n_contaminated_scored": int(c.sum()), "n_clean_scored": int((~c).sum())}
        acc_all, se_all = ratio_se(s.correct * s.n_targets, s.n_targets)
        acc_c, se_c = ratio_se((s.correct * s.n_targets)[c], s.n_targets[c])
        acc_k, se_k = ratio_se((s.correct * s.n_targets)[~c], s.n_targets[~c])
        loss_all, se_loss = ratio_se(s.loss * s.n_targets, s.n_targets)
        loss_c, se_lc = ratio_se((s.loss * s.n_targets)[c], s.n_targets[c])
        loss_k, se_lk = ratio_se((s.loss * s.n_targets)[~c], s.n_targets[~c])
        z_loss, _ = z_test(loss_k - loss_c, math.hypot(se_lc if math.isfinite(se_lc) else 0.0,
                                                      se_lk if math.isfinite(se_lk) else 0.0))
        se_diff = math.sqrt((se_c if math.isfinite(se_c) else 0.0) ** 2 + (se_k if math.isfinite(se_k) else 0.0) ** 2)
        z, _ = z_test(acc_c - acc_k, se_diff)
        shift = acc_all - acc_k
        out.update({"metric": "accuracy", "contaminated": num(acc_c, 4), "clean": num(acc_k, 4),
                    "all": num(acc_all, 4), "shift": num(shift, 3), "se_of_metric": num(se_all, 3),
                    "shift_in_se": num(shift / se_all, 3) if se_all and math.isfinite(se_all) and se_all > 0 else None,
                    "z_contaminated_vs_clean": num(z, 3),
                    "loss_contaminated": num(loss_c, 4), "loss_clean": num(loss_k, 4),
                    "loss_shift": num(loss_k - loss_all, 4), "se_of_loss": num(se_loss, 4),
                    "loss_shift_in_se": num((loss_k - loss_all) / se_loss, 3)
                    if se_loss and math.isfinite(se_loss) and se_loss > 0 else None,
                    "z_loss_clean_vs_contaminated": num(z_loss, 3)})
        return out


def costs(split: dict[str, Any], opts) -> bool:
    """Whether the contaminated items cost the reported number beyond noise and materially, read
    in split["cost_read_in"]: the accuracy, or the loss (where the accuracy moving counts too)."""
    acc_cost = ((split.get("z_contaminated_vs_clean") or 0) >= Z95
                and (split.get("shift") or 0) >= opts["min_acc_shift"])
    if split.get("cost_read_in") == "accuracy":
        return acc_cost
    return acc_cost or ((split.get("z_loss_clean_vs_contaminated") or 0) >= Z95
                        and (split.get("loss_shift") or 0) >= opts["min_loss_shift"] * (split.get("loss_clean") or 0))


def _logs_accuracy(run: "Run") -> bool:
    """The run's history logs an eval accuracy (the metric O103's split re-measures)."""
    h = run.history
    main = h.main_eval_set() if h is not None else None
    return main is not None and any("accuracy" in m for m in h.eval_metrics(main))


def _units(ex: "Examples", i: int, use_words: bool) -> np.ndarray:
    """The units n-grams are taken over: tokens, or words (hashed, so no vocabulary is kept)."""
    if use_words:
        return np.array([hash(w) for w in norm_text(ex.text[i]).split()], dtype=np.int64)
    return np.asarray(ex.model_input(i), dtype=np.int64)




def _preview(ex: "Examples", i: int) -> str:
    if ex.text is not None:
        t = " ".join(str(ex.text[i]).split())
        return t[:80] + ("..." if len(t) > 80 else "")
    ids = ex.model_input(i)
    return " ".join(map(str, ids[:16])) + (" ..." if len(ids) > 16 else "")
