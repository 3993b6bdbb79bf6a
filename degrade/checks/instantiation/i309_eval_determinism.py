"""I309 eval-determinism: two eval-mode forwards of the same batch give different outputs."""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.engine.determinism import Fingerprint
from degrade.engine.forward import forward
from degrade.layers import Layer
from degrade.option import Option
from degrade.stats import num


class EvalDeterminism(Check):
    """Randomness left on at evaluation: the same batch, twice in eval mode, gives two answers.

    What it detects: the model is put in eval mode (`model.eval()`) and run twice over the same
    probe batches, with the torch random seed changed in between. A model whose eval-mode outputs
    depend on the random state still draws random numbers at evaluation: dropout inside an attention
    kernel that ignores `.training` (transformers PR #33844, torchtune PR #1049), a module that calls
    `F.dropout(..., training=True)`, sampling in the forward. Compared per example: the float64 sum
    and sum of squares of its logits (relative difference beyond `rtol`) and the argmax at every
    position (predictions that flip). Deterministic CPU kernels give bit-identical results on the
    same batches; float non-associativity across kernels stays far below `rtol`.

    Why it matters: every logged evaluation is a noisy draw; checkpoint selection and comparisons
    between runs chase that noise, and the reported metric is pessimistic.

    Evidence used: the model and the eval data (two probe passes).

    Fix: find the module that draws random numbers in eval mode (a dropout with training=True, an
    attention kernel given dropout_p without checking self.training) and gate it on self.training.
    """

    code, name, layer = "I309", "eval-determinism", Layer.INSTANTIATION
    needs = frozenset({"model", "eval_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})
    probes = 2
    options = (
        Option("rtol", 1e-4,
               source="design choice: float32 kernels re-run on the same batch differ by 0 on CPU and "
                      "~1e-6 relative on GPU; 1e-4 leaves a wide margin (I301 uses the same)",
               help="Relative difference of an example's logit sums above which the two passes differ."),
    )

    def run(self, run):
        data, model = run.eval_data, run.model()
        idx = run.engine.probe_indices(data, forwards=2, minimum=4, cap=64)
        if idx.size == 0:
            raise CheckSkipped("no eval rows to probe")
        passes = []
        for seed in (run.options.seed, run.options.seed + 1):
            fp = Fingerprint(idx)
            forward(model, data, idx, reducers=[fp], torch_seed=seed, label="I309 eval-mode repeat",
                    meter=run.engine.meter)
            passes.append(fp)
        a, b = passes
        scale = np.maximum(np.abs(a.sums), 1e-12)
        rel = np.max(np.abs(a.sums - b.sums) / scale, axis=1)
        flips = sum(int((a.argmax[i] != b.argmax[i]).sum()) for i in a.argmax)
        preds = sum(int(a.argmax[i].size) for i in a.argmax)
        ev: dict[str, Any] = {"probe_examples": int(idx.size), "max_relative_difference": num(float(rel.max()), 4),
                              "examples_differing": int((rel > self.opts["rtol"]).sum()),
                              "prediction_flips": flips, "predictions": preds,
                              "model_training_flag": bool(model.module.training)}
        if ev["examples_differing"] == 0:
            return []
        return [self.finding(
            "error", f"Eval mode is not deterministic: the same {idx.size} examples run twice in eval mode "
            f"give outputs up to {rel.max():.3g} apart (relative) on {ev['examples_differing']} of them, "
            f"flipping {flips} of {preds} predictions: something draws random numbers at evaluation "
            "(dropout that ignores model.eval()).",
            confidence=0.95, evidence=ev,
            fix="Gate every dropout and random op on self.training (attention kernels take dropout_p: "
                "pass self.dropout if self.training else 0.0), then re-evaluate; the weights are fine.",
            next_experiment="Run one batch twice under model.eval() with torch.manual_seed changed, hooking "
                            "each module's output: the first module whose output differs draws the noise.")]
