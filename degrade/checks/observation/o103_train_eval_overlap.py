"""O103 train-eval-overlap: eval examples that are (near-)copies of training examples."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from degrade.check import Check
from degrade.checks.observation._stats import Z95, num, ratio_se, wilson, z_test
from degrade.errors import InputError
from degrade.layers import Layer
from degrade.probing.batches import sample_indices
from degrade.probing.minhash import MinHasher

if TYPE_CHECKING:
    from degrade.run.data import Examples
    from degrade.run.run import Run


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
    Evidence used: exact hashes over ALL training examples; n-gram and MinHash tests against a
    sample of max_train_examples training examples (--budget; near matches are then a lower
    bound); the eval sample the other model-based checks score (max_eval_examples). When the model
    is available: the eval metric on clean vs contaminated items (run.eval_scores()). N-grams that
    occur in more than 1% of the training sample are treated as template/boilerplate and ignored.
    Fix: remove the contaminated items from the eval set (or from training) and re-evaluate; split
    data by a deduplicated key before training.
    Options:
      ngram_tokens (8), ngram_words (13): the n-gram length (GPT-3 used 8-13-grams; lm-evaluation-
        harness decontaminates with 13-grams of words).
      ngram_min_fraction (0.5): an eval item counts as an n-gram near-duplicate when at least half
        of its n-grams occur in training. The GPT-3 rule (any one n-gram) is reported too but not
        used for severity: on synthetic data with a small vocabulary one shared 8-gram happens by
        chance, and a shared sentence is not a copied item.
      jaccard (0.8): MinHash near-duplicate threshold (Lee et al. 2022, "Deduplicating Training
        Data Makes Language Models Better").
      shingle (5): MinHash shingles are 5-grams (of words with text, else of tokens; Lee et al.
        2022), counted as a multiset. Not smaller for short sequences: with 2- or 3-grams,
        "11 11 11 2 4 16 11 11 11 2 4" and "11 11 2 4 16 11 11 2 4" (two different copy-task
        problems) reach Jaccard 0.8; with 5-grams a one-token change in a short sequence drops it
        well below, which is right: there it makes a different problem.
      min_near_length (5): sequences shorter than this get only the exact test (see above).
      error_fraction (0.05): contamination of 5% or more is an error: with a memorisation
        advantage g the metric moves by 0.05*g, e.g. 2.5 points at g=0.5, above the SE of any eval
        set of more than ~400 items (SE <= 0.5/sqrt(n)). Below 5% it is an error only when the
        model is available and the measured shift (metric on all items minus on clean items)
        exceeds shift_se SEs of the metric with the contaminated items significantly better.
      shift_se (1.0): see error_fraction.
      min_k (0.2), membership_examples (256): Min-K%++ membership scores (Zhang et al. 2024; k=20%
        is the paper's default) on up to 256 eval, training and shuffled-eval ("fresh") items,
        when the model is a causal LM. Evidence only: the paper finds the signal weak on small
        models, so it never sets the severity.
      boilerplate_fraction (0.01): n-grams in more than this fraction of the training sample (and
        at least 3 examples) are ignored as templates.
    """

    code, name, layer = "O103", "train-eval-overlap", Layer.OBSERVATION
    needs = frozenset({"eval_data", "train_data"})
    options = {"ngram_tokens": 8, "ngram_words": 13, "ngram_min_fraction": 0.5, "jaccard": 0.8, "shingle": 5,
               "min_near_length": 5, "error_fraction": 0.05, "shift_se": 1.0,
               "boilerplate_fraction": 0.01, "min_k": 0.2, "membership_examples": 256}

    def run(self, run: "Run") -> list:
        ev, tr = run.eval_data, run.train_data
        seed = run.options.seed
        eval_idx = sample_indices(len(ev), run.budget.max_eval_examples, seed)
        train_idx = sample_indices(len(tr), run.budget.max_train_examples, seed)
        n_ev = len(eval_idx)

        # ---- exact: every training example ----
        exact_input, exact_pair, train_of = self._exact(ev, tr, eval_idx)
        label_conflict = exact_input & ~exact_pair

        # ---- near: n-grams and MinHash against the training sample ----
        use_words = ev.text is not None and tr.text is not None
        units_ev, units_tr = self._units(ev, tr, eval_idx, train_idx, use_words)
        n = self.opts["ngram_words"] if use_words else self.opts["ngram_tokens"]
        lengths = np.array([u.size for u in units_ev])
        eligible = lengths >= self.opts["min_near_length"]
        shingle = int(self.opts["shingle"])
        frac, any_hit, n_boiler, jac, jac_train = self._near(units_ev, units_tr, n, shingle, eligible, seed)

        ngram_major = eligible & (frac >= self.opts["ngram_min_fraction"])
        near_dup = eligible & (jac >= self.opts["jaccard"])
        contaminated = exact_input | ngram_major | near_dup
        k = int(contaminated.sum())
        fraction = k / max(n_ev, 1)
        lo, hi = wilson(fraction, n_ev)

        evidence: dict[str, Any] = {
            "n_eval": len(ev), "n_eval_checked": n_ev, "n_train": len(tr),
            "n_train_exact": len(tr), "n_train_near": len(train_idx),
            "sampled": {"eval": n_ev < len(ev), "train_near": len(train_idx) < len(tr)},
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
            evidence["examples"] = self._examples(ev, tr, eval_idx, train_idx, contaminated,
                                                  exact_input, exact_pair, ngram_major, frac,
                                                  near_dup, jac, jac_train, train_of)
        split = self._metric_split(run, eval_idx, contaminated) if k else None
        if split is not None:
            evidence["metric_split"] = split
        membership = self._membership(run, eval_idx, contaminated)
        if membership is not None:
            evidence["membership_min_k_pp"] = membership

        sampled_note = ""
        if len(train_idx) < len(tr):
            sampled_note = (f" Near-duplicates were searched in a sample of {len(train_idx)} of "
                            f"{len(tr)} training examples (exact matches in all): a lower bound.")
        if n_ev < len(ev):
            sampled_note += f" {n_ev} of {len(ev)} eval examples were checked."
        if k == 0:
            return [self.finding(
                "info",
                f"No train-eval overlap: none of {n_ev} eval examples is in the training data exactly, "
                f"by {n}-gram overlap or by MinHash Jaccard >= {self.opts['jaccard']}." + sampled_note,
                confidence=0.8, evidence=evidence, fix="Nothing to fix.",
                next_experiment="None needed for contamination; see O101/O102 for the eval's other risks.")]

        shift_error = False
        if split is not None and split.get("shift_in_se") is not None:
            shift_error = (abs(split["shift_in_se"]) > self.opts["shift_se"]
                           and (split.get("z_contaminated_vs_clean") or 0) >= Z95)
        error = fraction >= self.opts["error_fraction"] or shift_error
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
    @staticmethod
    def _label_key(ex: "Examples", i: int):
        if ex.label is not None:
            return ex.label[i]
        if ex.labels is not None:
            return tuple(ex.labels[i])
        return None

    def _exact(self, ev: "Examples", tr: "Examples", eval_idx: np.ndarray):
        """Exact matches against every training example. Only 64-bit hashes of the training side
        are kept (a million long sequences as tuples would not fit in memory); a hash hit is then
        confirmed on the sequences themselves, so a collision cannot create a match."""
        inputs: dict[int, int] = {}
        pairs: dict[int, int] = {}
        texts: dict[int, int] = {}
        use_text = tr.text is not None and ev.text is not None
        for j in range(len(tr)):
            key = tuple(tr.input_ids[j])
            inputs.setdefault(hash(key), j)
            pairs.setdefault(hash((key, self._label_key(tr, j))), j)
            if use_text:
                texts.setdefault(hash(_norm_text(tr.text[j])), j)
        exact_input = np.zeros(len(eval_idx), dtype=bool)
        exact_pair = np.zeros(len(eval_idx), dtype=bool)
        train_of = np.full(len(eval_idx), -1)
        for r, i in enumerate(eval_idx):
            key = tuple(ev.input_ids[i])
            j = inputs.get(hash(key))
            if j is not None and list(key) != tr.input_ids[j]:
                j = None
            if j is None and use_text:
                j = texts.get(hash(_norm_text(ev.text[i])))
                if j is not None and _norm_text(ev.text[i]) != _norm_text(tr.text[j]):
                    j = None
            if j is None:
                continue
            exact_input[r], train_of[r] = True, j
            label = self._label_key(ev, i)
            jp = pairs.get(hash((key, label)))
            exact_pair[r] = ((jp is not None and tr.input_ids[jp] == list(key)
                              and self._label_key(tr, jp) == label)
                             or self._label_key(tr, j) == label)
        return exact_input, exact_pair, train_of

    # ---- near ----------------------------------------------------------------------------------
    @staticmethod
    def _units(ev, tr, eval_idx, train_idx, use_words):
        if not use_words:
            return ([np.asarray(ev.input_ids[i], dtype=np.int64) for i in eval_idx],
                    [np.asarray(tr.input_ids[j], dtype=np.int64) for j in train_idx])
        vocab: dict[str, int] = {}

        def ids(text: str) -> np.ndarray:
            return np.asarray([vocab.setdefault(w, len(vocab)) for w in _norm_text(text).split()],
                              dtype=np.int64)
        return [ids(ev.text[i]) for i in eval_idx], [ids(tr.text[j]) for j in train_idx]

    def _near(self, units_ev, units_tr, n, shingle, eligible, seed, batch: int = 10_000):
        """n-gram and MinHash near-duplicates in one streaming pass over the training units
        (probing/stream_overlap.py: the eval side is indexed, training streams in batches)."""
        from degrade.probing.stream_overlap import StreamingOverlap
        so = StreamingOverlap(units_ev, ngram=n, shingle=shingle,
                              min_near_length=int(self.opts["min_near_length"]),
                              hasher=MinHasher(num_perm=100, bands=20, seed=seed))
        for start in range(0, len(units_tr), batch):
            part = units_tr[start:start + batch]
            offsets = np.r_[0, np.cumsum([u.size for u in part])].astype(np.int64)
            flat = np.concatenate(part) if part else np.zeros(0, np.int64)
            so.add(flat, offsets)
        frac = np.where(eligible, so.ngram_fraction(self.opts["boilerplate_fraction"]), 0.0)
        limit = max(3, self.opts["boilerplate_fraction"] * max(len(units_tr), 1))
        jac = np.where(eligible, so.best_jaccard, 0.0)
        best = np.where(eligible, so.best_train_row, -1)
        return frac, eligible & (frac > 0), int((so.ngram_df > limit).sum()), jac, best

    # ---- reporting -----------------------------------------------------------------------------
    def _examples(self, ev, tr, eval_idx, train_idx, contaminated, exact_input, exact_pair,
                  ngram_major, frac, near_dup, jac, jac_train, train_of) -> list[dict[str, Any]]:
        out = []
        for r in np.flatnonzero(contaminated)[:5]:
            i = int(eval_idx[r])
            if exact_input[r]:
                kind = "exact input+label" if exact_pair[r] else "exact input, other label"
                j = int(train_of[r])
            elif near_dup[r]:
                kind, j = "minhash", int(train_idx[jac_train[r]])
            else:
                kind, j = "ngram", int(train_idx[jac_train[r]]) if jac_train[r] >= 0 else None
            row: dict[str, Any] = {"eval_index": i, "kind": kind, "train_index": j,
                                   "ngram_overlap": num(frac[r], 3), "jaccard": num(jac[r], 3),
                                   "eval_preview": _preview(ev, i)}
            if j is not None:
                row["train_preview"] = _preview(tr, j)
            out.append(row)
        return out

    def _membership(self, run: "Run", eval_idx: np.ndarray, contaminated: np.ndarray) -> dict[str, Any] | None:
        """Min-K%++ scores (probing/membership.py) of eval items (contaminated and clean), training
        items and shuffled eval items, with the AUCs that say how well the signal separates them."""
        if run.model_unavailable() is not None:
            return None
        from degrade.probing.membership import min_k_pp, shuffled
        from degrade.probing.shift import auc
        from degrade.probing.targets import vocab_problem
        try:
            if run.task != "causal-lm":
                return {"note": "Min-K%++ needs a causal LM's token probabilities; this is a "
                                f"{run.task} model"}
            if vocab_problem(run, run.eval_data) or vocab_problem(run, run.train_data):
                return {"note": "token ids outside the model's vocabulary: not scored"}
            n = min(self.opts["membership_examples"], len(eval_idx))
            rng = np.random.default_rng(run.options.seed)
            pick = np.sort(rng.choice(len(eval_idx), size=n, replace=False))
            model, k = run.model(), self.opts["min_k"]
            ev_scores = min_k_pp(model, run.eval_data, eval_idx[pick], k)
            tr_idx = np.sort(rng.choice(len(run.train_data), size=min(n, len(run.train_data)), replace=False))
            tr_scores = min_k_pp(model, run.train_data, tr_idx, k)
            fresh = shuffled(run.eval_data, eval_idx[pick], run.options.seed)
            fr_scores = min_k_pp(model, fresh, np.arange(len(fresh)), k)
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

        return {"k": k, "n_per_group": n, "mean_eval_contaminated": mean(ev_scores[cont]),
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
        top = max((max(x) for x in run.eval_data.input_ids if x), default=0)
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
        loss_c, _ = ratio_se((s.loss * s.n_targets)[c], s.n_targets[c])
        loss_k, _ = ratio_se((s.loss * s.n_targets)[~c], s.n_targets[~c])
        se_diff = math.sqrt((se_c if math.isfinite(se_c) else 0.0) ** 2 + (se_k if math.isfinite(se_k) else 0.0) ** 2)
        z, _ = z_test(acc_c - acc_k, se_diff)
        shift = acc_all - acc_k
        out.update({"metric": "accuracy", "contaminated": num(acc_c, 4), "clean": num(acc_k, 4),
                    "all": num(acc_all, 4), "shift": num(shift, 3), "se_of_metric": num(se_all, 3),
                    "shift_in_se": num(shift / se_all, 3) if se_all and math.isfinite(se_all) and se_all > 0 else None,
                    "z_contaminated_vs_clean": num(z, 3),
                    "loss_contaminated": num(loss_c, 4), "loss_clean": num(loss_k, 4)})
        return out


def _norm_text(text: str) -> str:
    return " ".join(str(text).lower().split())


def _preview(ex: "Examples", i: int) -> str:
    if ex.text is not None:
        t = " ".join(str(ex.text[i]).split())
        return t[:80] + ("..." if len(t) > 80 else "")
    ids = ex.input_ids[i]
    return " ".join(map(str, ids[:16])) + (" ..." if len(ids) > 16 else "")
