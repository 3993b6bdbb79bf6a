"""I310 eos-never-a-target: the end-of-sequence token is in the data but never a training target."""
from __future__ import annotations

from typing import Any

from degrade.check import Check, CheckSkipped
from degrade.inputs.model_config import eos_token_ids
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.data import IGNORE_INDEX
from degrade.stats import num


class EosNeverATarget(Check):
    """The model is never asked to predict EOS, so it never learns to stop.

    What it detects: in the training data (the in-memory sample), every position holding the
    checkpoint's `eos_token_id` (config.json) whose label is masked (-100). The classic cause is
    `tokenizer.pad_token = tokenizer.eos_token` with a collator that masks the pad id in the labels:
    it masks every EOS too (transformers #23530, trl #976). An error when EOS occurs in at least
    `min_rows` training rows and is a target in none of them; info when it is a target in some
    (partial masking) or never occurs. A causal LM's position 0 and a seq2seq decoder's start token
    are never targets in any pipeline and are not counted.

    Why it matters: the loss looks normal (EOS is a few tokens among many), but generation never
    ends and runs to the length limit.

    Evidence used: the training data's input_ids and labels, config.json's eos_token_id.

    Fix: give padding its own token (or mask by the attention mask, not by the pad id), keep the
    real EOS as a target, and retrain.
    """

    code, name, layer = "I310", "eos-never-a-target", Layer.INSTANTIATION
    needs = frozenset({"train_data", "decoder"})
    tasks = frozenset({"causal-lm", "seq2seq"})
    options = (
        Option("min_rows", 20,
               source="design choice: a pattern over at least 20 rows, not a stray token; the number "
                      "is chosen by hand",
               help="Training rows holding EOS below which no error is raised."),
    )

    def run(self, run):
        ids = eos_token_ids(run.config)
        if not ids:
            raise CheckSkipped("config.json names no eos_token_id")
        data = run.train_data
        if data.labels is None:
            raise CheckSkipped("the training data has no labels column: every token, EOS included, is a target")
        rows_with = rows_target = occurrences = targets = 0
        for x, y in zip(data.input_ids, data.labels):
            here = [t for t in range(1, len(x)) if x[t] in ids]  # position 0 is never a target
            if not here:
                continue
            hit = sum(1 for t in here if t < len(y) and y[t] != IGNORE_INDEX)
            rows_with += 1
            rows_target += hit > 0
            occurrences += len(here)
            targets += hit
        ev: dict[str, Any] = {"eos_token_ids": sorted(ids), "rows": len(data), "rows_with_eos": rows_with,
                              "rows_with_eos_as_target": rows_target, "eos_positions": occurrences,
                              "eos_targets": targets, "target_share": num(targets / max(occurrences, 1), 3)}
        if rows_with == 0:
            return [self.finding("info", f"No training row holds EOS (token {sorted(ids)}): the model "
                                 "cannot learn to stop; generation ends only at a length limit.",
                                 confidence=0.5, evidence=ev)]
        if rows_target == 0 and rows_with >= self.opts["min_rows"]:
            return [self.finding(
                "error", f"EOS is never a training target: it occurs {occurrences} times in {rows_with} "
                f"training rows and its label is masked (-100) every time, so the model never learns to "
                "stop (pad_token = eos_token with the pad id masked in the labels?).",
                confidence=0.9, evidence=ev,
                fix="Give padding its own token (or mask labels by the attention mask, not by the pad id) "
                    "so that the real EOS stays a target; then retrain.",
                next_experiment="Generate from 10 eval prompts with max_new_tokens at twice the longest "
                                "target: a model that never emits EOS confirms it.")]
        return [self.finding("info", f"EOS is a target in {rows_target} of the {rows_with} training rows that "
                             f"hold it ({targets} of {occurrences} positions).", confidence=0.5, evidence=ev)]
