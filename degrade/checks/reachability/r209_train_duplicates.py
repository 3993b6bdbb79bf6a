"""R209 train-duplicates: repeated (and near-repeated) examples inside the training set."""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check
from degrade.checks.reachability import curves as C
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.minhash import MinHasher, jaccard, multiset_shingles
from degrade.run.train_pass import row_hashes


class TrainDuplicates(Check):
    """Duplicates inside the training set: exact repeats, near repeats, and the same input with
    conflicting labels.

    What it detects: exact duplicates (same input_ids and targets), inputs repeated with different
    labels (conflicts: a label-noise signal), and near duplicates: MinHash with LSH banding on
    multiset token 5-grams (degrade/probing/minhash.py; Broder 1997; ANCHORS.md names datasketch's
    MinHash LSH) verified by exact Jaccard >= `near_jaccard`, among up to `max_near_examples`
    examples of length >= 8 tokens.
      - warning: duplicated examples (exact + near, beyond their first copy) are >= `max_fraction`
        of the set, or conflicting labels affect >= `max_conflict_fraction` of the examples;
      - info: the fractions, when any duplicates exist.
    Never an error on its own: small-vocabulary tasks repeat inputs by nature (a copy task over 8
    symbols repeats short strings), and duplication costs only when it skews what is learned.

    Why it matters: duplicated examples are seen more often than the data distribution says, which
    wastes the data budget and pushes the model to memorise them (Lee et al. 2022, "Deduplicating
    training data makes language models better"); conflicting labels are label noise.

    Evidence used: exact duplicates and conflicts from hashes of every training row
    (run.train_pass, streamed when the file is larger than the budget keeps in memory); near
    duplicates among the training rows in memory (a uniform sample of a large file).

    Fix: deduplicate the training set (exact, then near with MinHash), resolve conflicting labels.
    """

    code, name, layer = "R209", "train-duplicates", Layer.REACHABILITY
    needs = frozenset({"train_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})
    options = (
        Option("max_fraction", 0.3,
               source="DegradeBench v1 (the hand-built cases used in development): the healthy "
                      "healthy-copy-gpt2-small has 17.6% exact repeats (small-vocabulary tasks repeat "
                      "inputs by nature); 0.3 is chosen by hand above it",
               help="Duplicated fraction (exact and near, beyond their first copy) for a warning."),
        Option("max_conflict_fraction", 0.05,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.025) and doubled (0.1) give the same "
                      "verdicts and error codes",
               help="Fraction of examples whose input appears with another label for a warning."),
        Option("near_jaccard", 0.8,
               source='Lee et al. 2022 ("Deduplicating training data makes language models better") '
                      "deduplicate at Jaccard 0.8; the LSH defaults find pairs at 0.8 with probability "
                      "0.9996",
               help="Jaccard similarity of 5-gram multisets for a near duplicate."),
        Option("min_near_length", 8,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (4) and doubled (16) give the same "
                      "verdicts and error codes",
               help="Only examples of at least this many tokens are searched for near duplicates."),
        Option("max_near_examples", 20000,
               source="design choice: bounds the cost of the near-duplicate search; the number is "
                      "chosen by hand",
               help="Examples searched for near duplicates (a fixed sample beyond)."),
    )

    def run(self, run):
        o = self.opts
        data, tp = run.train_data, run.train_pass  # data may be a sample; tp saw every row
        n = tp.n
        if n == 0:
            return []
        pair, inp = tp.pair_hash, tp.input_hash
        distinct, first, counts = np.unique(pair, return_index=True, return_counts=True)
        exact = int(n - distinct.size)
        inputs, per_input = np.unique(inp[first], return_counts=True)  # distinct targets per input
        conflicted = int(np.isin(inp, inputs[per_input > 1]).sum())
        near, searched = self._near(data)
        frac = (exact + near) / n
        ev: dict[str, Any] = {"n_train_examples": n, "exact_duplicates": exact,
                              "exact_fraction": C.num(exact / n, 3),
                              "near_duplicates": near, "near_searched": searched,
                              "duplicate_fraction": C.num(frac, 3),
                              "conflicting_label_examples": conflicted,
                              "conflict_fraction": C.num(conflicted / n, 3),
                              "most_repeated": self._most_repeated(data, first, counts)}
        if exact + near + conflicted == 0:
            return []
        msg = (f"{frac:.1%} of the training examples repeat an earlier one ({exact} exact, {near} near "
               f"duplicates)" + (f"; {conflicted} examples share their input with a differently "
                                 "labelled copy" if conflicted else "") + ".")
        fix = "Deduplicate the training set (exact, then MinHash near duplicates); resolve conflicting labels."
        nxt = "Retrain on the deduplicated set with the same steps: an eval metric within the seed noise says they did not matter."
        if frac >= o["max_fraction"] or conflicted / n >= o["max_conflict_fraction"]:
            return [self.finding("warning", msg, confidence=0.5, evidence=ev, fix=fix, next_experiment=nxt)]
        return [self.finding("info", msg, confidence=0.5, evidence=ev, fix=fix, next_experiment=nxt)]

    @staticmethod
    def _most_repeated(data, first: np.ndarray, counts: np.ndarray) -> list[dict[str, Any]]:
        """The three most repeated examples: their first row, count and input (when in memory)."""
        at = {r: k for k, r in enumerate(data.rows)} if data.rows is not None else None
        out = []
        for j in np.argsort(-counts, kind="stable")[:3]:
            if counts[j] < 2:
                break
            row = int(first[j])
            k = row if at is None else at.get(row)
            out.append({"train_row": row, "count": int(counts[j]),
                        "input_ids": list(data.model_input(k))[:20] if k is not None else None})
        return out

    def _near(self, data) -> tuple[int, int]:
        """Near duplicates among the distinct, long-enough examples in memory (each counted once)."""
        first: dict[int, int] = {}
        for i in range(len(data)):
            first.setdefault(row_hashes(data, i)[1], i)
        idx = [i for i in first.values() if len(data.model_input(i)) >= self.opts["min_near_length"]]
        if len(idx) < 2:
            return 0, len(idx)
        if len(idx) > self.opts["max_near_examples"]:
            rng = np.random.default_rng(0)
            idx = sorted(rng.choice(idx, self.opts["max_near_examples"], replace=False).tolist())
        sh = [multiset_shingles(np.asarray(data.model_input(i)), 5) for i in idx]
        mh = MinHasher()
        sig = mh.signatures(sh)
        tables = mh.index(sig)
        dup = set()
        for row in range(len(idx)):
            for other in mh.candidates(tables, sig[row]):
                if other < row and other not in dup and jaccard(sh[row], sh[other]) >= self.opts["near_jaccard"]:
                    dup.add(row)
                    break
        return len(dup), len(idx)
