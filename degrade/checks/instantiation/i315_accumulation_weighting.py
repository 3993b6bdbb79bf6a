"""I315 accumulation-weighting: gradient accumulation that sums the loss, or weights tokens unevenly."""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability.curves import finite
from degrade.layers import Layer
from degrade.option import Option
from degrade.stats import num

_FIXED_TRANSFORMERS = (4, 46)  # transformers PR #34191 (v4.46.0): the Trainer divides by the step's token count


class AccumulationWeighting(Check):
    """Gradient accumulation that sums the loss over micro-batches, or averages their means.

    What it detects: with gradient accumulation (m micro-batches per optimizer step), the correct
    loss of a step is the mean over all its target tokens. Two bugs are common (transformers PR
    #34191, Oct 2024; #35438):
      - the loss is *summed* over the m micro-batches (a Trainer subclass whose compute_loss ignores
        `num_items_in_batch`, while the Trainer counts the loss as already scaled): every logged
        training loss, and every gradient, is m times too large. Measured: the last logged training
        loss against the checkpoint's own loss on training rows in train mode (dropout on, as the
        logged loss was computed); the ratio is compared with the two hypotheses 1 and m on a log
        scale, and the nearer wins beyond the estimate's noise (log ratio above log sqrt(m) by `z`
        standard errors of the log of the model's loss, and ratio below m^1.5, reads "summed").
      - the loss is the *mean of the micro-batches' means* (the Trainer before v4.46, and any loop
        that divides each micro-batch's mean by m): a token in a micro-batch with few targets
        weighs more than one in a full micro-batch. Its size is computed from the training rows'
        target counts, drawing random steps of m micro-batches of the logged batch size: the
        effective share of tokens (Kish's effective sample size over the token weights, divided by
        the tokens).
    m comes from the recorded `gradient_accumulation_steps`, else from trainer_state.json: the
    Trainer's epoch counts micro-batches (n per epoch, n = ceil(training rows / batch)), its
    global_step optimizer steps. Two step accountings are tried, and every m that one of them
    reproduces is kept: transformers >= 4.46 ends each epoch with a short step, ceil(n / m) steps per
    epoch (trainer.py, `num_update_steps_per_epoch`; e.g. n = 127, m = 8 gives 16 steps, 7.94
    micro-batches a step), and older loops carry the remainder over, so micro-batches / steps is m
    within `integer_tolerance`. When several m fit (n = 7: m = 4, 5 and 6 all give two steps an
    epoch) the summed reading must hold for all of them: above sqrt of the largest, below the
    smallest^1.5. Error when the loss is summed; a warning when the run names a Trainer older than
    v4.46 and the token weights' effective share is below `min_effective_share`; the size as
    information otherwise.

    Why it matters: a summed loss inflates the logged training loss m times (train and eval curves
    no longer compare) and multiplies the gradient norm, so clipping bites m times harder; averaged
    means optimise another objective than the token-mean loss that evaluation reports, the more
    so the more the sequence lengths vary.

    Evidence used: the training history (logged loss), the training rows (target counts), the
    run's recorded training arguments or trainer_state.json, and the model on a training sample.

    Fix: normalise by the number of target tokens in the whole optimizer step (the Trainer's
    `num_items_in_batch`: pass it to the model or divide the summed loss by it), and never divide
    again by the accumulation steps; upgrade transformers to >= 4.46.
    """

    code, name, layer = "I315", "accumulation-weighting", Layer.INSTANTIATION
    needs = frozenset({"history", "train_data"})
    tasks = frozenset({"causal-lm", "seq2seq"})
    probes = 1
    options = (
        Option("integer_tolerance", 0.05,
               source="design choice: an accumulation count inferred from step counts is trusted only "
                      "when the ratio is this close to an integer (partial last batches move it by "
                      "less than 1/batches-per-epoch)",
               help="Largest distance from an integer of the inferred micro-batches per step."),
        Option("min_effective_share", 0.9,
               source="design choice: weights whose effective sample size is 90% of the tokens move the "
                      "objective by a tenth of the data's weight; the number is chosen by hand",
               help="Effective share of tokens under mean-of-means weighting below which an old "
                    "Trainer's accumulation is a warning."),
        Option("z", 2.0,
               source="statistical convention, as learned.py and P401: about a two-sided 95% interval",
               help="Standard errors (of the log of the model's training loss) by which the logged/own "
                    "ratio must clear sqrt(m), the midpoint of the two hypotheses, for 'summed'."),
        Option("steps", 200,
               source="arithmetic: 200 random steps estimate a mean share to about 1/sqrt(200) of its "
                      "spread",
               help="Random optimizer steps drawn to size the mis-weighting."),
    )

    def run(self, run):
        fits, how = _micro_batches(run, self.opts["integer_tolerance"])
        if not fits:
            raise CheckSkipped(f"the micro-batches per optimizer step are unknown: {how}")
        m, m_hi = fits
        ev: dict[str, Any] = {"micro_batches_per_step": m if m == m_hi else [m, m_hi], "micro_batches_from": how}
        if m_hi < 2:
            return []
        m_text = str(m) if m == m_hi else f"{m}-{m_hi}"
        batch = int(run.recorded_arg("per_device_train_batch_size") or run.history.meta.get("train_batch_size") or 0)
        counts = np.asarray([_targets(run.train_data, i) for i in range(len(run.train_data))], dtype=float)
        if batch >= 1 and counts.sum() > 0:
            ev.update(_mis_weighting(counts, m, batch, int(self.opts["steps"]), run.options.seed))
        ratio, se_log = self._logged_ratio(run, ev)
        if ratio is not None and np.log(ratio) - self.opts["z"] * se_log > 0.5 * np.log(m_hi) and ratio < m ** 1.5:
            return [self.finding(
                "error", f"The logged training loss is {ratio:.2f}x the checkpoint's own loss on its training "
                f"rows, near the {m_text} micro-batches per step: the loss is summed over gradient accumulation, "
                f"not averaged (transformers #35438). Logged training losses are {m_text}x too large and the "
                "gradients too, so clipping bites harder.",
                confidence=0.85, evidence=ev,
                fix="Normalise the loss by the step's target-token count (pass num_items_in_batch to the "
                    "model, or divide the summed loss by it) and do not also divide by the accumulation "
                    "steps; or set Trainer.loss_is_scaled_for_ga to match what compute_loss returns.",
                next_experiment="Train 20 steps with gradient_accumulation_steps=1 and batch x m, then "
                                f"with batch and m={m_text}: the logged losses must agree.")]
        version = _transformers_version(run)
        share = ev.get("effective_token_share")
        trainer = run.format == "hf-trainer" or (run.manifest or {}).get("writer") == "degrade.DegradeCallback"
        old = trainer and version is not None and version < _FIXED_TRANSFORMERS
        if old and share is not None and share < self.opts["min_effective_share"]:
            return [self.finding(
                "warning", f"transformers {'.'.join(map(str, version))} averages the means of the {m_text} "
                f"micro-batches of a step: tokens are weighted unevenly (effective share "
                f"{share:.0%} of the tokens), so training optimises another objective than the token-mean "
                "loss that evaluation reports.", confidence=0.6, evidence=ev,
                fix="Upgrade transformers to >= 4.46 (PR #34191), or normalise by the step's token count.")]
        if share is None:
            return []
        return [self.finding("info", f"{m_text} micro-batches per step: averaging their means instead of the "
                             f"tokens would weigh tokens with an effective share of {share:.0%}"
                             + (f" (logged/own training loss {ratio:.2f})." if ratio is not None else "."),
                             confidence=0.5, evidence=ev)]

    def _logged_ratio(self, run, ev: dict[str, Any]) -> tuple[float | None, float]:
        """Last logged training loss / the model's token-mean loss on training rows in train mode,
        and the standard error of the log of that loss (the noise of the probe's estimate)."""
        steps, loss = finite(*run.history.series("loss"))
        if loss.size == 0:
            ev["logged_ratio"] = "not tested: no finite training loss was logged"
            return None, 0.0
        if run.model_unavailable() is not None:
            ev["logged_ratio"] = f"not tested: {run.model_unavailable()}"
            return None, 0.0
        idx = run.engine.probe_indices(run.train_data, minimum=64)
        s = run.engine.run_pass(run.model(), run.train_data, idx, train_mode=True,
                                label="I315 training rows (train mode)").scores
        own, w = s.token_mean_loss, s.n_targets
        # the token mean is a ratio estimator: its variance is sum(n_i^2 (l_i - mean)^2) / (sum n_i)^2
        se = float(np.sqrt(((w * (s.loss - own)) ** 2).sum()) / max(w.sum(), 1.0))
        ev.update(last_logged_loss=num(float(loss[-1])), logged_at_step=int(steps[-1]),
                  own_training_loss_train_mode=num(own), own_loss_se=num(se), training_rows=int(idx.size))
        if not np.isfinite(own) or own <= 0:
            ev["logged_ratio"] = f"not tested: the model's training loss is {own:.3g}"
            return None, 0.0
        ratio = float(loss[-1]) / own
        ev["logged_ratio"] = num(ratio, 3)
        return ratio, se / own


def _micro_batches(run, tolerance: float) -> tuple[tuple[int, int] | None, str]:
    """(smallest, largest) micro-batches per optimizer step that the run's counters allow."""
    recorded = run.recorded_arg("gradient_accumulation_steps")
    if isinstance(recorded, int) and recorded >= 1:
        return (recorded, recorded), "training_args gradient_accumulation_steps"
    meta = run.history.meta
    steps, batch, epoch = (meta.get(k) for k in ("global_step", "train_batch_size", "epoch"))
    if not all(isinstance(v, (int, float)) and v > 0 for v in (steps, batch, epoch)):
        return None, "no recorded gradient_accumulation_steps and no global_step/train_batch_size/epoch"
    rows = run.train_pass.n if run.train_pass is not None else len(run.train_data)  # every row, not the sample
    n = int(np.ceil(rows / batch))  # micro-batches per epoch
    full = int(np.floor(epoch + 1e-9))
    part = int(round((epoch - full) * n))
    fits = {m for m in range(1, n + 1) if full * -(-n // m) + -(-part // m) == steps}  # short last step
    ratio = epoch * n / steps
    if round(ratio) >= 1 and abs(ratio - round(ratio)) <= tolerance:  # remainders carried over
        fits.add(int(round(ratio)))
    how = f"trainer_state.json: {steps} steps over {epoch:g} epochs of {n} micro-batches ({ratio:.2f} a step)"
    if not fits:
        return None, how + ", which no whole number of micro-batches per step gives"
    lo, hi = min(fits), max(fits)
    if hi == n and n > 1:  # one step an epoch: any larger accumulation gives the same counts
        return None, how + f": one step an epoch, so any accumulation of {lo} or more fits"
    if len(fits) != hi - lo + 1:
        return None, how + f", which {sorted(fits)} all give"
    return (lo, hi), "inferred: " + how


def _targets(data, i: int) -> int:
    return sum(1 for t in data.token_labels(i)[1:] if t != -100)


def _mis_weighting(counts: np.ndarray, m: int, batch: int, steps: int, seed: int) -> dict[str, Any]:
    """Kish's effective share of the tokens when each of m micro-batches' mean counts 1/m."""
    rng = np.random.default_rng(seed)
    shares, spread = [], []
    for _ in range(steps):
        rows = rng.choice(counts.size, size=min(m * batch, counts.size), replace=counts.size < m * batch)
        micro = np.array_split(counts[rows], m)
        n = np.array([mb.sum() for mb in micro])
        w = np.concatenate([np.full(int(c), 1.0 / (m * k)) for mb, k in zip(micro, n) if k > 0 for c in mb])
        shares.append(w.sum() ** 2 / (w.size * (w ** 2).sum()))
        spread.append(n.max() / max(n.min(), 1))
    return {"effective_token_share": num(float(np.mean(shares)), 3),
            "micro_batch_token_ratio_median": num(float(np.median(spread)), 3),
            "targets_per_row": [int(counts.min()), int(np.median(counts)), int(counts.max())]}


def _transformers_version(run) -> tuple[int, int] | None:
    text = (((run.manifest or {}).get("packages") or {}).get("transformers")
            or (run.config or {}).get("transformers_version"))
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None
