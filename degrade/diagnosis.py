"""The Diagnosis: what `degrade diagnose` concluded, and its exports (JSON, markdown, HTML)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from degrade.check import CheckResult
from degrade.errors import EXIT_CLEAN, EXIT_DEGRADED, EXIT_INCONCLUSIVE
from degrade.finding import Finding
from degrade.layers import WALK, Layer
from degrade.ladder import LayerReport

SCHEMA = "degrade/diagnosis-v1"


@dataclass
class Diagnosis:
    run: dict[str, Any]
    verdict: dict[str, Any]
    layers: dict[Layer, LayerReport]
    checks: list[CheckResult]
    total_seconds: float = 0.0
    curves: dict[str, Any] = field(default_factory=dict)  # for the HTML report's loss curves
    model_passes: float = 0.0  # model compute spent, in eval passes (engine/meter.py)
    planned_passes: dict[str, float] = field(default_factory=dict)
    # The Run that was read, without its model and data (a diagnosis kept in a notebook or a
    # training script must not hold a model): for the store's row; never serialised.
    source: Any = field(default=None, repr=False, compare=False)

    @property
    def findings(self) -> list[Finding]:
        order = {layer: i for i, layer in enumerate(WALK)}
        found = [f for r in self.checks for f in r.findings]
        return sorted(found, key=lambda f: (order.get(f.layer, 9), f.code))

    def skipped_by_reason(self) -> list[tuple[str, list[str]]]:
        """(reason, codes) of the skipped checks, one entry per reason, in the ladder's order."""
        order = {layer: i for i, layer in enumerate((*WALK, Layer.FLOOR, Layer.TOOL))}
        groups: dict[str, list[str]] = {}
        for r in sorted(self.checks, key=lambda r: (order.get(r.layer, 9), r.code)):
            if r.status == "skipped":
                groups.setdefault(r.reason, []).append(r.code)
        return list(groups.items())

    @property
    def budget(self) -> dict[str, Any] | None:
        """The loss budget (degrade/loss_budget.py), read from the findings' evidence."""
        from degrade.loss_budget import build
        return build(self.findings)

    @property
    def degraded(self) -> bool:
        return self.verdict["layer"] in {layer.value for layer in WALK}

    @property
    def exit_code(self) -> int:
        """1 degraded, 3 inconclusive (too little could be checked), 0 nothing degraded."""
        return self.exit_code_for("error")

    def exit_code_for(self, fail_on: str = "error") -> int:
        """The exit code under `--fail-on`: error (default: 1 when a layer is degraded), warning
        (also 1 when any warning was raised), never (0 whatever was found; 3 still says that too
        little could be checked)."""
        if fail_on != "never" and (self.degraded or (fail_on == "warning" and any(
                f.severity.value == "warning" for f in self.findings))):
            return EXIT_DEGRADED
        return EXIT_INCONCLUSIVE if self.verdict["layer"] == "inconclusive" else EXIT_CLEAN

    def to_dict(self) -> dict[str, Any]:
        from degrade import __version__
        from degrade.report.svg import downsample
        return {
            "schema": SCHEMA,
            "degrade_version": __version__,
            "run": self.run,
            "verdict": self.verdict,
            "layers": {layer.value: rep.to_dict() for layer, rep in self.layers.items()},
            "findings": [f.to_dict() for f in self.findings],
            "budget": self.budget,
            "checks": [r.to_dict() for r in sorted(self.checks, key=lambda r: r.code)],
            "timing": {"total_s": round(self.total_seconds, 3), "model_passes": self.model_passes,
                       "planned_passes": self.planned_passes},
            # Added key (not in the §3 contract): the loss curves, so `degrade report` can redraw
            # them; downsampled like the HTML chart so a long run does not bloat the JSON.
            "curves": {str(name): dict(zip(("steps", "values"), downsample(*xy)))
                       for name, xy in self.curves.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(_jsonable(self.to_dict()), indent=indent, sort_keys=False, allow_nan=False)

    def to_markdown(self) -> str:
        from degrade.report.markdown import render
        return render(self)

    def to_html(self) -> str:
        from degrade.report.html import render
        return render(self)

    def _repr_html_(self) -> str:
        """Jupyter: the HTML report inline, in an iframe so that its styles stay its own."""
        import html
        return (f'<iframe srcdoc="{html.escape(self.to_html(), quote=True)}" title="degrade report" '
                'style="width:100%;height:900px;border:1px solid #ddd" sandbox></iframe>')

    def to_github(self) -> str:
        from degrade.report.ci_formats import github
        return github(self)

    def to_sarif(self) -> str:
        from degrade.report.ci_formats import sarif
        return sarif(self)

    def render(self, fmt: str) -> str:
        """The document in one of the file formats: json, markdown, html, github, sarif."""
        return {"json": self.to_json, "markdown": self.to_markdown, "html": self.to_html,
                "github": self.to_github, "sarif": self.to_sarif}[fmt]()

    def save(self, path: str | Path, fmt: str | None = None) -> Path:
        path = Path(path)
        fmt = fmt or {".json": "json", ".md": "markdown", ".html": "html", ".htm": "html",
                      ".sarif": "sarif"}.get(path.suffix.lower(), "json")
        text = self.render(fmt)
        # errors="replace": a lone surrogate (an undecodable file name) must not stop the report
        path.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8", errors="replace")
        return path


def _jsonable(obj: Any) -> Any:
    """Evidence may hold numpy scalars/arrays and non-finite floats: make it strict JSON."""
    import math

    import numpy as np
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return round(obj, 6)
    if isinstance(obj, Path):
        return str(obj)
    return obj
