"""Rebuilding a Diagnosis from a saved `degrade/diagnosis-v1` JSON file (`degrade report`).

The ladder is not re-walked: the saved verdict and layer statuses are what the diagnosis
concluded, and a report must show that, not what today's ladder would say. Findings are not
stored under their checks in the JSON, so each is given back to the check with its code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from degrade.check import CheckResult
from degrade.diagnosis import SCHEMA, Diagnosis
from degrade.errors import InputError
from degrade.finding import Finding, Severity
from degrade.ladder import LayerReport
from degrade.layers import CODE_PREFIX, Layer
from degrade.report.svg import number


class _Bad(Exception):
    """A problem at one place in the document; load_diagnosis adds the file name."""


def load_diagnosis(path: str | Path) -> Diagnosis:
    from degrade.inputs.json_doc import read_json  # invalid JSON, LFS pointers, unreadable -> InputError
    doc = read_json(Path(path), "diagnosis")
    if not isinstance(doc, dict):
        raise InputError(path, f"is not a degrade diagnosis (top level is a {type(doc).__name__})")
    if doc.get("schema") != SCHEMA:
        found = doc.get("schema")
        raise InputError(path, f"is not a {SCHEMA} file (schema: {found!r})" if found else
                         f"is not a degrade diagnosis (no \"schema\": \"{SCHEMA}\" key)")
    try:
        return _diagnosis(doc)
    except _Bad as e:
        raise InputError(path, str(e)) from None


def diagnosis_from_dict(doc: Any, where: str = "diagnosis") -> Diagnosis:
    """A Diagnosis from an already parsed diagnosis document (a stored one, say); InputError
    naming `where` when it is not one."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise InputError(where, f"is not a {SCHEMA} document")
    try:
        return _diagnosis(doc)
    except _Bad as e:
        raise InputError(where, str(e)) from None


def _diagnosis(doc: dict[str, Any]) -> Diagnosis:
    findings = [_finding(f, f"findings[{i}]") for i, f in enumerate(_get(doc, "findings", list))]
    checks = [_check(c, f"checks[{i}]") for i, c in enumerate(_get(doc, "checks", list))]
    by_code = {c.code: c for c in checks}
    for f in findings:
        home = by_code.get(f.code)
        if home is None:  # a finding whose check is not listed: keep it under a stand-in check
            home = by_code[f.code] = CheckResult(f.code, f.name, f.layer, "ran")
            checks.append(home)
        home.findings.append(f)
    layers = {_layer(name, "layers"): _layer_report(name, rep, findings)
              for name, rep in _get(doc, "layers", dict).items()}
    verdict = _get(doc, "verdict", dict)
    for key in ("layer", "confidence", "headline", "next_experiment"):
        _get(verdict, key, object, "verdict")
    timing = doc.get("timing") if isinstance(doc.get("timing"), dict) else {}
    return Diagnosis(run=_get(doc, "run", dict), verdict=verdict, layers=layers, checks=checks,
                     total_seconds=number(timing.get("total_s", 0.0)),
                     curves=_curves(doc.get("curves") or {}))


def _finding(f: Any, where: str) -> Finding:
    if not isinstance(f, dict):
        raise _Bad(f"{where} is not an object")
    try:
        severity = Severity(_get(f, "severity", str, where))
    except ValueError:
        raise _Bad(f"{where}.severity is {f['severity']!r}, not error/warning/info") from None
    return Finding(code=_get(f, "code", str, where), name=str(f.get("name", "")),
                   layer=_layer(_get(f, "layer", str, where), f"{where}.layer"), severity=severity,
                   message=str(f.get("message", "")), confidence=number(f.get("confidence", 1.0)),
                   evidence=f.get("evidence") if isinstance(f.get("evidence"), dict) else {},
                   fix=str(f.get("fix") or ""), next_experiment=str(f.get("next_experiment") or ""),
                   provisional=bool(f.get("provisional", False)))


def _check(c: Any, where: str) -> CheckResult:
    if not isinstance(c, dict):
        raise _Bad(f"{where} is not an object")
    status = _get(c, "status", str, where)
    if status not in ("ran", "skipped", "failed"):
        raise _Bad(f"{where}.status is {status!r}, not ran/skipped/failed")
    code = _get(c, "code", str, where)
    # Older files may lack name/layer on checks: the code's letter names the layer.
    layer = _layer(c["layer"], f"{where}.layer") if "layer" in c else _layer_of_code(code)
    return CheckResult(code, str(c.get("name", "")), layer, status, reason=str(c.get("reason") or ""),
                       seconds=number(c.get("seconds", 0.0)))


def _layer_report(name: str, rep: Any, findings: list[Finding]) -> LayerReport:
    if not isinstance(rep, dict):
        raise _Bad(f"layers.{name} is not an object")
    layer = _layer(name, "layers")
    pool = [f for f in findings if f.layer == layer]
    mine = []
    for code in _get(rep, "findings", list, f"layers.{name}"):
        match = next((f for f in pool if f.code == code), None)
        if match is None:
            raise _Bad(f"layers.{name} lists {code!r}, which is not among the findings")
        pool.remove(match)  # the same code twice means two findings: take them in order
        mine.append(match)
    return LayerReport(layer, _get(rep, "status", str, f"layers.{name}"), mine, str(rep.get("reason", "")))


def _curves(raw: Any) -> dict[str, tuple[list[float], list[float]]]:
    if not isinstance(raw, dict):
        raise _Bad("curves is not an object")
    out = {}
    for name, c in raw.items():
        if not isinstance(c, dict) or not isinstance(c.get("steps"), list) or \
                not isinstance(c.get("values"), list):
            raise _Bad(f"curves.{name} needs \"steps\" and \"values\" lists")
        out[name] = ([number(s) for s in c["steps"]], [number(v) for v in c["values"]])
    return out


def _get(obj: dict, key: str, kind: type, where: str = "") -> Any:
    at = f"{where}.{key}" if where else key
    if key not in obj:
        raise _Bad(f"has no {at!r}")
    if kind is not object and not isinstance(obj[key], kind):
        raise _Bad(f"{at} is a {type(obj[key]).__name__}, expected a {kind.__name__}")
    return obj[key]


def _layer(value: Any, where: str) -> Layer:
    try:
        return Layer(value)
    except ValueError:
        raise _Bad(f"{where}: {value!r} is not a layer") from None


def _layer_of_code(code: str) -> Layer:
    return CODE_PREFIX.get(code[:1].upper(), Layer.TOOL)
