"""Machine formats for CI (ruff's model): GitHub workflow annotations and SARIF 2.1.0.

Every warning and error finding becomes one annotation or result; info findings do not (they are
"nothing to fix"). The location is the run's file the finding reads most (trainer_state.json for
the curve checks, the checkpoint's config.json for model checks, else the run dir), relative to the
working directory when it lies under it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def _where(d) -> str:
    run_dir = Path(str(d.run.get("path", ".")))
    state = run_dir / "trainer_state.json"
    target = state if state.is_file() else run_dir
    try:
        return os.path.relpath(target)
    except ValueError:  # another drive (Windows)
        return str(target)


def _escape(text: str, prop: bool = False) -> str:
    """GitHub's workflow-command escaping (toolkit/core: escapeData / escapeProperty)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _actionable(d) -> list:
    return [f for f in d.findings if f.severity.value in ("error", "warning")]


def github(d) -> str:
    """`::error file=...,title=...::message` lines, then a notice with the verdict."""
    where = _escape(_where(d), prop=True)
    lines = []
    for f in _actionable(d):
        title = _escape(f"degrade {f.code} {f.name} ({f.layer.value})", prop=True)
        body = f.message + (f"\nFix: {f.fix}" if f.fix else "")
        lines.append(f"::{f.severity.value} file={where},title={title}::{_escape(body)}")
    v = d.verdict
    lines.append(f"::notice title={_escape('degrade verdict', prop=True)}::"
                 f"{_escape(str(v['layer']) + ': ' + str(v.get('headline', '')))}")
    return "\n".join(lines) + "\n"


def sarif(d) -> str:
    """One SARIF run: degrade's checks as rules, warning and error findings as results."""
    from degrade import __version__
    where = _where(d)
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in _actionable(d):
        rules.setdefault(f.code, {
            "id": f.code, "name": f.name,
            "shortDescription": {"text": f"{f.name} ({f.layer.value} layer)"},
            "help": {"text": f"degrade checks {f.code} (docs/checks/{f.code}.md)"},
            "properties": {"layer": f.layer.value}})
        results.append({
            "ruleId": f.code, "level": _LEVEL[f.severity.value],
            "message": {"text": f.message + (f" Fix: {f.fix}" if f.fix else "")},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": Path(where).as_posix()}}}],
            "properties": {"layer": f.layer.value, "confidence": round(float(f.confidence), 3),
                           "provisional": f.provisional}})
    doc = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "degrade", "version": __version__, "rules": list(rules.values())}},
        "results": results,
        "properties": {"verdict": d.verdict.get("layer"), "headline": d.verdict.get("headline")}}]}
    return json.dumps(doc, indent=2)
