"""The backward walk (DESIGN.md §1): layer statuses, the verdict, its confidence, provisional marks.

- A layer is `degraded` when it holds an error finding of confidence >= 0.5; `inconclusive` when
  it holds only weaker errors or every check that tried failed; `skipped` when every check was
  skipped; `clean` otherwise.
- The verdict is the outermost degraded layer in walk order O, R, I, P. Findings inside it are
  provisional: fixing the outer layer may change them.
- Nothing degraded: `none`, unless two or more layers could not be checked (`inconclusive`).
- Confidence: the verdict finding's (calibrated) confidence, discounted by 0.8 for each outer
  layer that could not be cleared (skipped or inconclusive), since degradation there could explain
  the evidence; that raw value is then mapped to the probability that the verdict is right
  (degrade/calibration.py, fitted on DegradeBench v2's calibration split).
- Cross-layer evidence has one rule, `reattribute` (degrade/axes.py): an outer-layer error stands
  unless a failure axis shows the model at its reference off the axis.
"""
from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Any

from degrade.axes import explains
from degrade.calibration import calibrate, verdict_probability
from degrade.check import CheckResult
from degrade.finding import Finding, Severity
from degrade.layers import WALK, Layer

DEGRADED_CONFIDENCE = 0.5
UNCLEARED_DISCOUNT = 0.8
MAX_UNCHECKED_FOR_NONE = 1


@dataclass
class LayerReport:
    layer: Layer
    status: str  # degraded | clean | inconclusive | skipped
    findings: list[Finding]
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {"status": self.status, "findings": [f.code for f in self.findings]}
        if self.reason:
            d["reason"] = self.reason
        return d


def layer_status(layer: Layer, results: list[CheckResult]) -> LayerReport:
    mine = [r for r in results if r.layer == layer]
    findings = [f for r in mine for f in r.findings]
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if any(f.confidence >= DEGRADED_CONFIDENCE for f in errors):
        return LayerReport(layer, "degraded", findings)
    ran = [r for r in mine if r.status == "ran"]
    if not mine or all(r.status == "skipped" for r in mine):
        return LayerReport(layer, "skipped", findings, _merged_reasons(mine) or "no check selected")
    if errors or not ran:
        why = "weak error evidence" if errors else "every check that tried failed"
        return LayerReport(layer, "inconclusive", findings, why)
    return LayerReport(layer, "clean", findings)


def _merged_reasons(results: list[CheckResult]) -> str:
    """One line per distinct reason, naming the checks it stopped: 'no eval data (O101, O103)'."""
    by_reason: dict[str, list[str]] = {}
    for r in results:
        by_reason.setdefault(r.reason, []).append(r.code)
    return "; ".join(f"{reason} ({', '.join(codes)})" for reason, codes in sorted(by_reason.items()))


def reattribute(results: list[CheckResult]) -> None:
    """The one cross-layer rule (degrade/axes.py): an outer-layer error stands unless a failure
    axis found further in shows the model at its reference off the axis; then it becomes info,
    re-attributed to the axis's finding with both numbers in its evidence."""
    axes = [f for r in results for f in r.findings
            if f.is_error and isinstance(f.evidence.get("axis"), dict) and explains(f.evidence["axis"])]
    for a in axes:
        ax = a.evidence["axis"]
        for r in results:
            for f in r.findings:
                if not f.is_error or f.layer is Layer.OBSERVATION or WALK.index(f.layer) >= WALK.index(a.layer):
                    continue
                f.severity = Severity.INFO
                f.evidence = {**f.evidence, "reattributed_to": {
                    "code": a.code, "axis": ax.get("name"), "within_accuracy": ax.get("within_accuracy"),
                    "within_se": ax.get("within_se"), "reference_accuracy": ax.get("reference_accuracy")}}
                f.message += (f" Re-attributed to {a.code} ({ax.get('name')}): off that axis the model "
                              f"scores {ax.get('within_accuracy')} +- {ax.get('within_se')} against "
                              f"{ax.get('reference_accuracy')} on its training sample, so this cost is "
                              f"not seen there.")


def walk(results: list[CheckResult]) -> tuple[dict[str, Any], dict[Layer, LayerReport]]:
    calibrate(results)
    reattribute(results)
    layers = {layer: layer_status(layer, results) for layer in WALK}
    verdict_layer = next((layer for layer in WALK if layers[layer].status == "degraded"), None)
    if verdict_layer is None:
        return _no_degradation(layers, results), layers
    inside = WALK[WALK.index(verdict_layer) + 1:]
    for layer in inside:
        for f in layers[layer].findings:
            f.provisional = True
    outer = WALK[:WALK.index(verdict_layer)]
    uncleared = [layer for layer in outer if layers[layer].status != "clean"]
    top = _top_finding(layers[verdict_layer].findings)
    confidence = top.confidence * UNCLEARED_DISCOUNT ** len(uncleared)
    prefix = f"{verdict_layer.value.capitalize()} is degraded: "
    suffix = f" (not cleared: {', '.join(l.value for l in uncleared)})" if uncleared else ""
    headline = prefix + shortened(top.message, HEADLINE_CHARS - len(prefix) - len(suffix)) + suffix
    return {"layer": verdict_layer.value, **_confidence(confidence), "headline": headline,
            "next_experiment": top.next_experiment, "finding": top.code}, layers


HEADLINE_CHARS = 160  # a headline reads at a glance; the finding below it holds the details


def shortened(text: str, limit: int) -> str:
    """The text's first sentence, cut at a word boundary within `limit` characters ("..." marks a cut)."""
    first = re.split(r"\.\s+(?=[A-Z])", text, maxsplit=1)[0].rstrip(".")
    if len(first) <= limit:
        return first
    cut = first[:max(1, limit - 3)].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "..."


def _confidence(raw: float) -> dict[str, float]:
    """The verdict's calibrated probability of being right, and the raw value it was mapped from."""
    return {"confidence": round(verdict_probability(raw), 3), "raw_confidence": round(raw, 3)}


def _top_finding(findings: list[Finding]) -> Finding:
    errors = [f for f in findings if f.severity is Severity.ERROR and f.confidence >= DEGRADED_CONFIDENCE]
    return max(errors, key=lambda f: (f.confidence, -int(f.code[1:])))


def _no_degradation(layers: dict[Layer, LayerReport], results: list[CheckResult]) -> dict[str, Any]:
    unchecked = [l for l in WALK if layers[l].status in ("skipped", "inconclusive")]
    checked = [l for l in WALK if layers[l].status == "clean"]
    ran = sum(r.status == "ran" for r in results)
    coverage = ran / max(len(results), 1)
    if len(unchecked) > MAX_UNCHECKED_FOR_NONE:
        return {"layer": "inconclusive", **_confidence(coverage),
                "headline": f"No degradation found, but {len(unchecked)} of {len(WALK)} layers could "
                            f"not be checked ({', '.join(l.value for l in unchecked)})",
                "next_experiment": _unlock_hint(layers, unchecked)}
    return {"layer": "none", **_confidence(coverage * UNCLEARED_DISCOUNT ** len(unchecked)),
            "headline": f"No degradation found on {', '.join(l.value for l in checked)}",
            "next_experiment": _unlock_hint(layers, unchecked) if unchecked else
            "None needed; to go further, evaluate on a held-out set from a different source."}


def _unlock_hint(layers: dict[Layer, LayerReport], unchecked: list[Layer]) -> str:
    reasons = " ".join(layers[l].reason for l in unchecked)
    wants = [flag for flag, key in (("--eval-data", "eval data"), ("--train-data", "train data"),
                                    ("model weights", "model weights"), ("--model-factory", "--model-factory"))
             if key in reasons]
    what = ", ".join(wants) if wants else "the missing inputs listed per layer"
    return f"Give degrade {what} so the {', '.join(l.value for l in unchecked)} checks can run."
