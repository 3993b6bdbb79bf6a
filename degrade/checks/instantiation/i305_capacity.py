"""I305 capacity: a model too small to fit its own training set."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability import curves as C
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.target_stats import target_statistics
from degrade.run.tasks import CAUSAL_LM

LN2 = math.log(2)


class Capacity(Check):
    """The model cannot fit its own training set: its sizes are too small for the data.

    What it detects: a run whose training loss has converged (flat) far above what the training
    data allows, while the optimisation looks healthy, with a parameter count too small to hold
    what the data asks. All of these must hold:
      - converged: the train-loss tail (after the LR warmup and the first 10% of steps) is fitted
        with the saturating curves of the reachability layer (R201's machinery: power-law and
        exponential fits on four tail windows, extrapolated to 2x the steps); the median projected
        gain is below `max_projected_fraction` of the remaining gap to the floor. A run that is
        still falling is reachability's (R201), never capacity;
      - healthy optimisation: finite losses, the loss fell from its first logged value, its end
        level is within 10% (or 3 noise sigmas) of its lowest level (no divergence), and the final
        model beats the trivial predictor on its training data by `min_fitted_fraction` of the gap
        (a model stuck at the unigram/prior looks the same as an optimiser that never ran: that is
        reachability's reading, and a miss is cheaper than a false alarm);
      - not fitted: the final model's loss on the training data (--train-data, scored by degrade)
        closes less than `max_fitted_fraction` of the gap between the trivial loss (unigram of the
        targets / class prior) and the data's floor (the conditional entropy of a target given its
        whole input, ~0 for deterministic targets), and is at least `min_gap` nats above the floor;
      - small: capacity bits (`bits_per_parameter` x parameters) below `max_capacity_ratio` x the
        information in the training targets (targets x (trivial loss - floor) / ln 2 bits).
    A failure concentrated along an axis (position, length, order) is the ladder's to weigh
    (degrade/axes.py), not this check's.
    A model that cannot fit but has ample parameters is reported as info: something else (a code
    fault: I302, I307; or the optimiser) keeps it from fitting.

    Caveat: the floor is a memoriser's floor: with every input unique (natural text, or noisy
    labels on distinct inputs) it reads 0 even where the true floor is higher; the capacity test
    (parameters vs information) is what keeps such runs from an error.

    Why it matters: a model that cannot fit its training set cannot generalise beyond it: more
    steps, data or tuning will not help, only a larger model will (scaling laws: the loss floor
    falls with the parameter count; ANCHORS.md, Chinchilla).

    Evidence used: the training loss curve, the LR log, the model (its parameter count and its
    loss and accuracy on the training data, a sample under --budget) and the training data.

    Fix: make the model larger: double the width (d_model, heads) or the depth and retrain.
    """

    code, name, layer = "I305", "capacity", Layer.INSTANTIATION
    needs = frozenset({"train_curve", "model", "train_data"})
    requires_learning = True  # degrade/learned.py: skipped while the model has not learned
    options = (
        Option("max_projected_fraction", 0.1,
               source="R201's 10% rule (its min_gain_fraction), measured against the remaining gap to "
                      "the floor instead of the loss",
               help="Projected gain from doubling the steps, as a fraction of the remaining gap to the "
                    "floor, below which the curve counts as converged."),
        Option("max_fitted_fraction", 0.5,
               source="DegradeBench v1 (the hand-built cases used in development): the too-small model "
                      "(i3-too-small-copy) closes 18% of the gap; healthy runs fit; 0.5 is chosen by "
                      "hand",
               help="The share of the trivial-to-floor gap the model must close to count as fitting "
                    "its training set."),
        Option("min_fitted_fraction", 0.05,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.025) and doubled (0.1) give the same "
                      "verdicts and error codes",
               help="The share it must close for the optimisation to count as having worked at all "
                    "(a model stuck at the unigram/prior is reachability's reading)."),
        Option("min_gap", 0.1,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.05) and doubled (0.2) give the same "
                      "verdicts and error codes",
               help="Nats above the floor the final train loss must be."),
        Option("max_end_ratio", 1.1,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.55) and doubled (2.2) give the same "
                      "verdicts and error codes",
               help="Healthy optimisation (no divergence): the end level of the train loss is at most "
                    "this multiple of its lowest rolling-median level (or within max_end_sigmas noise "
                    "sigmas of it)."),
        Option("max_end_sigmas", 3.0,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (1.5) and doubled (6.0) give the same "
                      "verdicts and error codes",
               help="Healthy optimisation also allows an end level up to this many noise sigmas above "
                    "the lowest level (see max_end_ratio)."),
        Option("bits_per_parameter", 2.0,
               source='Allen-Zhu & Li 2024 ("Physics of Language Models 3.3: knowledge capacity '
                      'scaling laws"): language models store about 2 bits of knowledge per parameter',
               help="What a parameter can store."),
        Option("max_capacity_ratio", 1.0,
               source="design choice: below 1 the model could not even memorise the training set",
               help="Capacity bits below this multiple of the targets' information is \"too small\"."),
        Option("skip_fraction", 0.1,
               source="as R201's skip_fraction (the fast early fall and the warmup say nothing about "
                      "the end of the curve)",
               help="The first fraction of steps left out of the fits (the LR warmup too)."),
        Option("min_points", 5,
               source="as R201's min_points",
               help="Training-loss points needed in the fitted region."),
    )

    @torch.no_grad()
    def run(self, run):
        o = self.opts
        h = run.history
        steps, loss = C.finite(*h.series("loss"))
        if steps.size < int(o["min_points"]):
            raise CheckSkipped(f"{steps.size} finite training-loss points; at least {o['min_points']} are needed")
        proj = C.project_gain(steps, loss, C.fit_region_start(h, o["skip_fraction"]), int(o["min_points"]))
        if proj is None:
            raise CheckSkipped("too few training-loss points after the warmup to fit the curve")
        model, data = run.model(), run.train_data
        lm = model.task == CAUSAL_LM
        if not lm and data.label is None:
            raise CheckSkipped("classification model but the training data has no labels")
        s = run.train_scores()
        stats = target_statistics(data, s.indices, lm)
        if stats["targets"] == 0:
            raise CheckSkipped("the training data has no target tokens")
        train_loss = s.token_mean_loss
        triv, floor = stats["trivial_loss"], stats["floor"]
        params = sum(p.numel() for p in model.module.parameters())
        info_bits = stats["targets"] * max(triv - floor, 0.0) / LN2
        scale = len(data) / max(s.n, 1)  # targets counted on a sample: scale to the whole set
        info_bits *= scale
        cap_bits = o["bits_per_parameter"] * params
        gap = train_loss - floor
        fitted = (triv - train_loss) / (triv - floor) if triv > floor else float("nan")
        level = proj.level
        lowest = float(np.min(C.rolling_median(loss, 3)))
        ev: dict[str, Any] = {
            "train_loss_measured": C.num(train_loss), "train_accuracy": C.num(s.accuracy, 3),
            "train_examples_scored": int(s.n), "trivial_loss": C.num(triv), "floor": C.num(floor),
            "fitted_fraction": C.num(fitted, 3), "parameters": int(params),
            "capacity_bits": C.num(cap_bits), "target_information_bits": C.num(info_bits),
            "capacity_ratio": C.num(cap_bits / info_bits, 3) if info_bits > 0 else None,
            "first_logged_loss": C.num(loss[0]), "lowest_loss": C.num(lowest), **proj.evidence()}

        if not (np.isfinite(fitted) and fitted < o["max_fitted_fraction"] and gap >= o["min_gap"]):
            return []
        if proj.gain > o["max_projected_fraction"] * max(level - floor, 1e-12):
            return []  # still falling: reachability (R201) owns it
        if not (level < float(loss[0])
                and level <= max(o["max_end_ratio"] * lowest,
                                 lowest + o["max_end_sigmas"] * C.noise_sigma(loss))
                and fitted >= o["min_fitted_fraction"]):
            return []  # optimisation not healthy (no progress, divergence): reachability's reading
        if info_bits <= 0 or cap_bits >= o["max_capacity_ratio"] * info_bits:
            return [self.finding(
                "info",
                f"Training converged with the train loss at {ev['train_loss_measured']}, closing only "
                f"{fitted:.0%} of the gap from the trivial loss {ev['trivial_loss']} to the data's "
                f"floor {ev['floor']}, although the model's {params:,} parameters could hold the "
                f"targets' information: something other than size keeps it from fitting.",
                confidence=0.4, evidence=ev,
                next_experiment="Check the components (I302) and norms (I307); try another learning rate.")]
        return [self.finding(
            "error",
            f"The model cannot fit its own training set: training converged (doubling the steps "
            f"would gain {ev['projected_gain_2x']} nats) with the train loss at "
            f"{ev['train_loss_measured']} (accuracy {s.accuracy:.1%}), closing only {fitted:.0%} "
            f"of the gap from the trivial loss {ev['trivial_loss']} to the data's floor "
            f"{ev['floor']}; its {params:,} parameters hold about {cap_bits:,.0f} bits, "
            f"{ev['capacity_ratio']} of the {info_bits:,.0f} bits its training targets carry.",
            confidence=0.8, evidence=ev,
            fix="Make the model larger (width, heads or depth) and retrain.",
            next_experiment="Retrain with double the width (d_model) or double the depth for the "
                            "same steps and compare the final train loss.")]
