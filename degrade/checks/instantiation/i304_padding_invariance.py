"""I304 padding-invariance: real tokens' outputs that change when padding is added or altered."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from degrade.check import Check, CheckSkipped
from degrade.engine.batching import probe_length
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.components import find_positions
from degrade.run.tasks import CAUSAL_LM
from degrade.stats import num

_HALF = (torch.float16, torch.bfloat16)


def _position_table(model) -> int:
    """The longest sequence the model can take: its config's position table, else the size of a
    learned position embedding (plain modules), else unbounded."""
    if model.positions:
        return model.positions
    sizes = [model.module.get_submodule(p.module_name).num_embeddings
             for p in find_positions(model.module) if p.kind == "learned"]
    return min(sizes) if sizes else 10**9


class PaddingInvariance(Check):
    """Real tokens' outputs that depend on padding: the attention mask is ignored or misapplied.

    What it detects: for a sample of eval sequences, each sequence's logits alone (no padding, mask
    all ones) are compared with the logits of its real tokens when the same sequence is padded and
    the padding is masked (attention_mask 0), in three variants:
      - right padding with the pad id: real positions keep their positions, so their logits must be
        identical to the unpadded ones (for a causal LM the causal mask already hides later pads,
        so this variant mainly tests encoders and classifiers);
      - right padding with `pad_tokens` pads vs four times as many: a model that attends to its
        pads sees a different mix of them;
      - causal LMs only: left padding with the pad id vs left padding with other token ids (both
        masked): left padding shifts absolute positions, so only the two left-padded versions are
        compared. Classifiers are not tested this way: they may pool the first token (BERT's
        [CLS], a pad under left padding) or find their last token by the pad id (GPT-2's), so
        changing pad ids or padding on the left legitimately changes them.
    A correct model gives identical real-token outputs (up to float noise) in every variant; a model
    whose attention ignores the mask (or builds it wrongly) lets the pads' contents reach real
    tokens. Reported as an error when the largest change exceeds `atol + rtol * logit_scale`.
    A model that takes no attention_mask at all (a --model-factory module whose forward has no such
    argument) cannot be told which tokens are padding: the check then compares right-padded batch
    outputs (the padded batch a data loader would build) with each sequence run alone, and says so.
    That is an error when the eval sequences differ in length (padding happens in training and
    evaluation), a warning when they all have one length (padding never happened here).

    Why it matters: a model that sees its padding gives different answers for the same input
    depending on what else is in the batch and how it was padded: its eval numbers depend on the
    batch size and ordering, training learned from noise tokens, and batched inference disagrees
    with single-example inference.

    Evidence used: the model and the eval data (input_ids). The pad id is the model config's
    pad_token_id, else 0 (the id degrade's own batches pad with). Evidence: per variant the largest
    absolute and relative logit change over real tokens, the fraction of sequences affected and of
    predictions (argmax) that flip, the pad id, and whether the model accepts an attention mask.

    Fix: pass the attention mask to every attention layer and combine it with the causal mask
    (masked keys get -inf before the softmax, or use the framework's mask builder); for a model
    without a mask argument, add one. Then retrain: the weights learned with the pads visible.
    """

    code, name, layer = "I304", "padding-invariance", Layer.INSTANTIATION
    compares_forwards = True  # skipped when eval mode is not deterministic (engine/determinism.py)
    needs = frozenset({"model", "eval_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})  # seq2seq: the encoder
    probes = 1
    options = (
        Option("n_sequences", 16,
               source="arithmetic: 16 sequences see a bug that touches a fraction f of them with "
                      "probability 1 - (1 - f)^16, 95% for f >= 17%",
               help="This many eval sequences (at least 2 tokens each), whatever the budget's probe "
                    "share: unlike a causal-mask leak, which moves every sequence, ignored padding moves "
                    "only the sequences whose outputs are sensitive to the extra keys, and the test must "
                    "see one of them. Sequences are cut as for max_length."),
        Option("pad_tokens", 8,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (4) and doubled (16) give the same "
                      "verdicts and error codes",
               help="Pad tokens added in each padded variant."),
        Option("atol", 1e-5,
               source="design choice: a padded sequence runs through kernels of another shape, whose "
                      "float32 reductions differ by ~1e-6 relative; the margin is chosen by hand",
               help="Absolute tolerance on the logit change (the tolerance is atol + rtol * logit "
                    "scale)."),
        Option("rtol", 1e-3,
               source="design choice: float32 reductions of another shape differ by ~1e-6 relative; "
                      "1e-3 leaves a wide margin",
               help="Tolerance on the logit change relative to the logit scale (the std of the logits "
                    "over classes/vocabulary)."),
        Option("half_precision_factor", 100,
               source="design choice: float16/bfloat16 round far more coarsely than float32 (bfloat16 "
                      "keeps 8 significant bits, float32 24); the factor is chosen by hand",
               help="Half-precision models (float16, bfloat16) use this multiple of atol and rtol."),
        Option("min_fraction", 0.1,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.05) and doubled (0.2) give the same "
                      "verdicts and error codes",
               help="Fraction of sequences that must be affected for confidence 0.95 (fewer: 0.8)."),
        Option("max_length", 64,
               source="design choice: a padding test needs no long context, and a short real part makes "
                      "the pads a larger share of the keys, so the test is no weaker for it and costs a "
                      "fraction",
               help="Sequences are truncated to this many tokens (and to the position table minus "
                    "pad_tokens, and to as many as keep six [T, vocab] float32 logits within the "
                    "engine's logits budget)."),
    )

    @torch.no_grad()
    def run(self, run):
        o = self.opts
        model, data = run.model(), run.eval_data
        table = _position_table(model)
        k = min(int(o["pad_tokens"]), table // 2)
        # a sequence's logits are held six times at most (alone, two paddings, their differences)
        limit = min(int(o["max_length"]), table - k, probe_length(model.out_size, 6))
        seq2seq = data.source is not None  # the source is padded; the decoder's logits are compared
        inputs = data.source if seq2seq else data.input_ids
        usable = [i for i, x in enumerate(inputs) if len(x) >= 2]
        if not usable or limit < 2:
            raise CheckSkipped("no eval sequence has 2 or more tokens" if not usable else
                               "the position table is too short to add padding")
        rng = np.random.default_rng(run.options.seed)
        # alone, left- and right-padded, and batched with others: four forwards per sequence
        n = int(o["n_sequences"])
        pick = run.engine.probe_indices(data, forwards=4, eligible=usable, minimum=n, cap=n).tolist()
        seqs = [list(inputs[i][:limit]) for i in pick]
        if seq2seq:
            model = _EncoderSide(model, {tuple(x): data.input_ids[i] for x, i in zip(seqs, pick)})
        pad = self._pad_id(model, run)
        pool = np.unique(np.concatenate([np.asarray(s) for s in seqs]))
        others = pool[pool != pad] if np.any(pool != pad) else np.asarray([pad + 1])
        param = next(model.module.parameters(), None)
        scale_tol = o["half_precision_factor"] if param is not None and param.dtype in _HALF else 1
        atol, rtol = o["atol"] * scale_tol, o["rtol"] * scale_tol
        lm = model.task == CAUSAL_LM
        varying = len({len(x) for x in inputs}) > 1

        module = model.module
        was_training = module.training
        module.eval()
        try:
            if model.accepts_mask:
                tests = self._masked(model, seqs, pad, others, k, table, lm, rng)
            else:
                tests = self._unmasked(model, seqs, pad, lm)
        finally:
            module.train(was_training)

        ev: dict[str, Any] = {"sequences": len(seqs), "pad_id": pad, "pad_tokens": k,
                              "model_accepts_attention_mask": model.accepts_mask,
                              "eval_lengths_vary": varying, "tolerance_abs": atol, "tolerance_rel": rtol}
        broken = {}
        for name, t in tests.items():
            affected = sum(1 for d, s in zip(t["max_abs"], t["scale"]) if d > atol + rtol * s)
            row = {"max_abs_logit_change": num(max(t["max_abs"])),
                   "max_relative_change": num(max(d / max(s, 1e-12) for d, s in zip(t["max_abs"], t["scale"]))),
                   "sequences_affected": affected, "prediction_flips": num(t["flips"] / max(t["preds"], 1), 3)}
            ev[name] = row
            if affected:
                broken[name] = row
        if not broken:
            return []
        worst = max(broken.values(), key=lambda r: r["sequences_affected"])
        frac = worst["sequences_affected"] / len(seqs)
        if not model.accepts_mask:
            severity = "error" if varying else "warning"
            return [self.finding(
                severity,
                f"The model takes no attention_mask, so padding reaches its real tokens: running "
                f"sequences in a right-padded batch changed their logits by up to "
                f"{worst['max_abs_logit_change']} ({worst['max_relative_change']:.3g} of the logit "
                f"scale) in {worst['sequences_affected']} of {len(seqs)} sequences, flipping "
                f"{worst['prediction_flips']:.1%} of predictions"
                + ("; the eval sequences differ in length, so training and evaluation saw padding."
                   if varying else "; all eval sequences have one length, so padding never happened here."),
                confidence=0.85 if varying else 0.6, evidence=ev,
                fix="Give the model an attention_mask argument and apply it in every attention layer "
                    "(masked keys get -inf before the softmax), then retrain.",
                next_experiment="Evaluate with batch size 1 and with the training batch size and "
                                "compare the two eval losses.")]
        which = ", ".join(broken)
        return [self.finding(
            "error",
            f"Masked padding changes the real tokens' outputs ({which}): up to "
            f"{worst['max_abs_logit_change']} ({worst['max_relative_change']:.3g} of the logit scale) "
            f"in {worst['sequences_affected']} of {len(seqs)} sequences, flipping "
            f"{worst['prediction_flips']:.1%} of predictions. The attention mask is ignored or "
            f"misapplied.",
            confidence=0.95 if frac >= o["min_fraction"] else 0.8, evidence=ev,
            fix="Pass the attention mask to every attention layer and combine it with the causal mask "
                "(masked keys get -inf before the softmax), then retrain: the weights learned with "
                "the pads visible.",
            next_experiment="Evaluate the same examples with batch size 1 and with a large padded "
                            "batch and compare; after fixing the mask, rerun `degrade diagnose "
                            "--select I304`.")]

    # ---- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _pad_id(model, run) -> int:
        cfg = getattr(model.module, "config", None)
        pad = getattr(cfg, "pad_token_id", None) if cfg is not None else None
        if pad is None and isinstance(run.run_config, dict):
            pad = run.run_config.get("pad_token_id")
        return int(pad) if isinstance(pad, int) and pad >= 0 else 0

    @staticmethod
    def _compare(ref: torch.Tensor, out: torch.Tensor, t: dict, lm: bool) -> None:
        """ref/out: the real tokens' logits [T, V] (LM) or [C] (classification)."""
        d = float((out - ref).abs().max())
        t["max_abs"].append(d)
        t["scale"].append(float(ref.std(dim=-1).mean()))
        t["flips"] += int((out.argmax(-1) != ref.argmax(-1)).sum())
        t["preds"] += int(ref.argmax(-1).numel())

    def _masked(self, model, seqs, pad, others, k, table, lm, rng) -> dict[str, dict]:
        names = ["right_padding", "right_padding_longer"] + (["left_pad_ids_changed"] if lm else [])
        tests = {n: {"max_abs": [], "scale": [], "flips": 0, "preds": 0} for n in names}
        for s in seqs:
            L = len(s)
            more = max(k, min(4 * k, table - L))
            rows = [s + [pad] * k, s + [pad] * more]
            mask = [[1] * L + [0] * k, [1] * L + [0] * more]
            ref = self._logits(model, [s], [[1] * L])[0]
            real = (lambda x: x[:L]) if lm else (lambda x: x)
            out = [self._logits(model, [r], [m])[0] for r, m in zip(rows, mask)]
            self._compare(real(ref), real(out[0]), tests["right_padding"], lm)
            self._compare(real(out[0]), real(out[1]), tests["right_padding_longer"], lm)
            if lm:  # left padding shifts positions: compare two left paddings that differ in ids only
                junk = rng.choice(others, size=k).tolist()
                left = self._logits(model, [[pad] * k + s, junk + s], [[0] * k + [1] * L] * 2)
                self._compare(left[0][k:], left[1][k:], tests["left_pad_ids_changed"], lm)
        return tests

    def _unmasked(self, model, seqs, pad, lm) -> dict[str, dict]:
        t = {"max_abs": [], "scale": [], "flips": 0, "preds": 0}
        width = max(len(s) for s in seqs)
        batch = [s + [pad] * (width - len(s)) for s in seqs]
        out = self._logits(model, batch, None)
        for i, s in enumerate(seqs):
            ref = self._logits(model, [s], None)[0]
            o = out[i][:len(s)] if lm else out[i]
            self._compare(ref[:len(s)] if lm else ref, o, t, lm)
        if all(len(s) == width for s in seqs):
            # Equal lengths: pad every sequence so that the batch test still measures something.
            for s in seqs:
                ref = self._logits(model, [s], None)[0]
                o = self._logits(model, [s + [pad] * 4], None)[0]
                self._compare(ref[:len(s)] if lm else ref, o[:len(s)] if lm else o, t, lm)
        return {"padded_batch_vs_alone": t}

    @staticmethod
    def _logits(model, rows, mask) -> torch.Tensor:
        ids = torch.tensor(rows, dtype=torch.long)
        m = torch.tensor(mask, dtype=torch.long) if mask is not None else None
        return model.logits(ids, m).cpu()


class _EncoderSide:
    """A seq2seq model seen from its encoder: logits(source rows, mask) are the decoder's logits on
    each source's own decoder sequence (found from the source's real tokens), so the padding tests
    pad the encoder and compare whole decoder outputs (compared like a classifier's: every
    position)."""

    def __init__(self, model, decoders: dict[tuple, list[int]]):
        self.model, self.decoders = model, decoders
        self.module, self.accepts_mask, self.task = model.module, True, model.task

    def logits(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = torch.ones_like(ids) if mask is None else mask
        dec = [self.decoders[tuple(int(t) for t, m in zip(row, keep) if m)] for row, keep in zip(ids, mask)]
        width = max(len(d) for d in dec)
        if any(len(d) != width for d in dec):
            raise ValueError("one call compares rows of one decoder sequence")
        dec_ids = torch.tensor(dec, dtype=torch.long)
        return self.model.logits(dec_ids, torch.ones_like(dec_ids), source=(ids, mask))
