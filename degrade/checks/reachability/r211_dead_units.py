"""R211 dead-units: MLP units that never activate (dying ReLU and its GELU/SiLU cousins)."""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability import curves as C
from degrade.layers import Layer
from degrade.learned import require_finite
from degrade.option import Option
from degrade.probing.activations import find_activations
from degrade.run.layer_stats import read_layer_stats


class DeadUnits(Check):
    """MLP units that never activate on real inputs (dead units, the "dying ReLU" problem).

    What it detects: the MLP activation modules (class name containing GELU, ReLU, SiLU or
    Activation, outside attention; else the input of each MLP block's down-projection) are hooked
    during forward passes on a sample of sequences. Per unit (last axis), over non-padding tokens:
    the fraction of tokens with output > 0, and the 95th percentile of |output|. A unit is dead
    when its output is never positive on the sample: for ReLU it is then exactly 0 and passes no
    gradient; for GELU/SiLU it sits on the flat negative tail (gradient ~0 once the pre-activation
    is a few units below 0). Per layer: the fraction of dead units.
      - warning: some MLP layer has more than `layer_dead` (50%) dead units (TheDeepChecker flags
        a layer when > 50% of its units have p95 activation < 1e-5; ANCHORS.md);
      - error: more than `model_dead` (50%) of all MLP units in the model are dead: the MLPs have
        lost most of their capacity, whatever the layer-by-layer picture, AND that capacity is
        missed: the model fits less than `fit_accuracy` of its training targets (scored on a
        sample of the training data, else the eval data). A model that fits its data with half its
        units dead works: the dead units are waste, a cost not shown, so that is a warning
        (DESIGN.md: "a dead head in a model that works is a warning"). A TinyGPT trained at lr
        3e-2 reaches 99.9% held-out accuracy with 52% of its MLP units dead (96% in layer 0). A trained network does
        not choose this: a unit stops firing when one large update (an LR too high) or a bad init
        (large negative biases, badly scaled weights) pushes its pre-activation below 0 for every
        input, after which ReLU passes it no gradient to recover.
    The evidence also gives, per layer, DeepDiagnosis's layer-level symptom (the share of all
    outputs <= 0; >= 70% is its dying-ReLU sign), the units with p95 |output| < 1e-5
    (TheDeepChecker's count), and, when the run was recorded with degrade.Recorder with
    activations=True, each activation module's frac_zero (share of exact zeros; for ReLU the
    share of outputs <= 0) at the first and last recorded step: units that died during training
    show as a rising frac_zero.

    Why it matters: a dead unit is capacity the model paid for and cannot use; a model whose MLPs
    are mostly dead is a much smaller model than the one designed, so its results say little
    about the architecture.

    Evidence used: the model's MLP activations during the engine's shared eval pass (the training
    pass when no eval data is given: unit activity needs inputs, not held-out labels), layers.jsonl
    activation stats when present.

    Fix: lower the peak LR and add warmup; check the initialisation (biases near 0, weights
    scaled ~1/sqrt(fan_in)); prefer GELU/SiLU to ReLU (no hard zero-gradient region); LeakyReLU
    if ReLU must stay.
    """

    code, name, layer = "R211", "dead-units", Layer.REACHABILITY
    needs = frozenset({"model"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})
    options = (
        Option("layer_dead", 0.5,
               source="TheDeepChecker (ANCHORS.md): a layer is flagged when > 50% of its units have "
                      "p95 activation < 1e-5",
               help="The dead fraction of one MLP layer above which it is a warning."),
        Option("model_dead", 0.5,
               source='design choice: "most" of all MLP units',
               help="The dead fraction of all MLP units above which it is an error (when the model "
                    "also fits less than fit_accuracy of its training targets)."),
        Option("p95_floor", 1e-5,
               source="TheDeepChecker (ANCHORS.md): p95 activation < 1e-5",
               help="p95 |output| below which a unit counts in TheDeepChecker's number (evidence)."),
        Option("fit_accuracy", 0.9,
               source="DegradeBench v1 (the hand-built cases used in development): a TinyGPT trained "
                      "at lr 3e-2 (healthy-copy-tinygpt-high-lr) reaches 99.9% held-out accuracy with "
                      "52% of its MLP units dead, a false alarm as an error; the reach-lr-too-high-modadd "
                      "model fits little",
               help="A model that predicts at least this share of its training targets is not starved "
                    "of capacity, whatever died; below it, dead capacity is a plausible cause."),
    )

    def run(self, run):
        o = self.opts
        if not find_activations(run.model().module)[0]:
            raise CheckSkipped("no MLP activation module (GELU/ReLU/SiLU/Activation) and no MLP block "
                               "found to hook")
        if run.eval_data is None and run.train_data is None:
            raise CheckSkipped("no eval or train data to run the model on (pass --eval-data PATH)")
        split = "eval" if run.eval_data is not None else "train"
        seen = run.engine.eval_pass() if split == "eval" else run.engine.train_pass()
        require_finite(seen.scores, "which units fire")  # NaN activations read as never firing
        stats, how = seen.captures["units"]
        if not stats:
            raise CheckSkipped(f"the hooked modules ({how}) produced no floating-point output")
        layers = []
        for s in stats:
            dead = s.frac_positive <= 0
            layers.append({"module": s.name, "units": s.units, "tokens": s.tokens,
                           "dead": int(dead.sum()), "dead_fraction": C.num(dead.mean(), 3),
                           "outputs_nonpositive": C.num(s.frac_nonpositive, 3),
                           "p95_below_floor": int((s.p95_abs < o["p95_floor"]).sum()),
                           "median_frac_positive": C.num(float(np.median(s.frac_positive)), 3)})
        total = sum(s.units for s in stats)
        n_dead = sum(int(L["dead"]) for L in layers)
        frac = n_dead / max(total, 1)
        bad = [L for L in layers if L["dead"] / max(L["units"], 1) > o["layer_dead"]]
        ev: dict[str, Any] = {"data": split, "sequences": int(seen.scores.n),
                              "hooked": how, "layers": layers, "units": total, "dead_units": n_dead,
                              "dead_fraction": C.num(frac, 3), "layer_dead_threshold": o["layer_dead"],
                              "model_dead_threshold": o["model_dead"]}
        rec = self._recorder(run, [s.name for s in stats])
        if rec:
            ev["recorder_frac_zero"] = rec
        if not bad and frac <= o["model_dead"]:
            return []
        rose = [f"{n} {r['first']:.0%} -> {r['last']:.0%}" for n, r in rec.items()
                if r["last"] is not None and r["first"] is not None and r["last"] - r["first"] >= 0.2]
        rec_txt = (" The recorder saw the share of zero outputs rise during training "
                   f"({'; '.join(rose[:3])}).") if rose else ""
        worst = max(layers, key=lambda L: L["dead"] / max(L["units"], 1))
        fix = ("Lower the peak LR and add warmup; check the init (biases near 0, weights ~1/sqrt(fan_in)); "
               "prefer GELU/SiLU to ReLU (or LeakyReLU).")
        nxt = ("Rerun with the peak LR divided by 3-10 (and warmup) from the same init and count dead "
               "units at the same step (`degrade diagnose --select R211`): far fewer dead units points "
               "at the LR; the same count right after init points at the init.")
        fit = self._fit(run) if frac > o["model_dead"] else None
        if fit is not None:
            ev["fit"] = fit
        if fit is not None and fit["accuracy"] < o["fit_accuracy"]:
            return [self.finding(
                "error", f"{n_dead} of {total} MLP units ({frac:.0%}) never activate on {ev['sequences']} "
                f"{split} sequences: the MLPs have lost most of their capacity ({len(bad)} of "
                f"{len(layers)} layers are more than {o['layer_dead']:.0%} dead; worst {worst['module']}, "
                f"{worst['dead_fraction']:.0%}), and the model fits only {fit['accuracy']:.0%} of its "
                f"{fit['data']} targets.{rec_txt}", confidence=0.75, evidence=ev, fix=fix,
                next_experiment=nxt)]
        names = ", ".join(f"{L['module']} ({L['dead_fraction']:.0%})" for L in bad[:4])
        works = (f" The model still fits {fit['accuracy']:.0%} of its {fit['data']} targets: the dead "
                 "units are waste, not a shown cost." if fit is not None else "")
        return [self.finding(
            "warning", f"{len(bad)} MLP layer(s) have more than {o['layer_dead']:.0%} dead units (never "
            f"positive on {ev['sequences']} {split} sequences): {names}; {frac:.0%} of all MLP units are "
            f"dead.{works}{rec_txt}", confidence=0.5, evidence=ev, fix=fix, next_experiment=nxt)]

    @staticmethod
    def _fit(run) -> dict[str, Any]:
        """How much of its training data (else its eval data) the model predicts right."""
        s, name = (run.train_scores(), "training") if run.train_data is not None else (run.eval_scores(), "eval")
        return {"data": name, "accuracy": C.num(s.accuracy, 4), "examples_scored": int(s.n)}

    @staticmethod
    def _recorder(run, names: list[str]) -> dict[str, dict[str, Any]]:
        if run.native_dir is None:
            return {}
        stats = read_layer_stats(run.native_dir)
        if not stats or not stats.activations:
            return {}
        out = {}
        for name in names:
            base = name.split("#")[0]
            col = stats.activations.get(base)
            if col is None:
                continue
            fz = col["frac_zero"]
            ok = np.isfinite(fz)
            if not ok.any():
                continue
            st, v = stats.steps[ok], fz[ok]
            out[base] = {"first_step": int(st[0]), "first": C.num(v[0], 3),
                         "last_step": int(st[-1]), "last": C.num(v[-1], 3), "records": int(ok.sum())}
        return out
