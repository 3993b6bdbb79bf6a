"""A stored row as MLflow params, tags and metrics, and back (mlflow_store.py).

MLflow keys take only `[A-Za-z0-9_-. /]` and at most 250 characters, param values 6000, tag values
8000 (older servers 5000). encode() maps a row onto those; decode() rebuilds the row from them,
typed back (numbers as numbers, true/false as bools). Where that round trip is not exact, the store
keeps the row as the artifact row.json instead.
"""
from __future__ import annotations

import json
import re
from typing import Any

from degrade.store.sqlite import _JSON_COLUMNS, _SUMMARY

_KEY_MAX = 250        # MLflow's limit on a param, metric or tag key
_PARAM_MAX = 6000     # ... on a param value
_TAG_MAX = 5000       # ... on a tag value is 8000 (older servers: 5000)
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_SEVERITY = {"error": 0, "warning": 1, "info": 2}
FIELDS = _SUMMARY.split(", ")


def summary(row: dict) -> dict[str, Any]:
    """What SqliteStore.rows() gives back for `row` (without its id): JSON columns through JSON,
    the confidence a REAL, status and error defaulted."""
    out = {k: row.get(k) for k in FIELDS if k != "id"}
    out.update({k: json.loads(json.dumps(row.get(k) or {}, sort_keys=True)) for k in _JSON_COLUMNS})
    conf = row.get("verdict_confidence")
    out.update(verdict_confidence=float(conf) if conf is not None else None, status=row.get("status") or "done",
               headline=row.get("headline") or "")
    return out


def encode(s: dict, diagnosis: dict) -> tuple[dict[str, str], dict[str, str], dict[str, tuple[float, int]]]:
    params: dict[str, str] = {}
    for prefix, values in (("", s["params"]), ("generator.", s["generator"]), ("data.", s["data"])):
        for k, v in values.items():
            key, base, n = mlflow_key(prefix + k), mlflow_key(prefix + k)[:_KEY_MAX - 8], 1
            while key in params:  # two keys that sanitize alike: both kept (the row comes from row.json)
                n += 1
                key = f"{base}_{n}"
            params[key] = (v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list))
                           else str(v))[:_PARAM_MAX]
    tags = {"degrade.verdict": s["verdict_layer"], "degrade.status": s["status"],
            "degrade.headline": s["headline"], "degrade.run_path": s["run_path"],
            "degrade.run_fingerprint": s["run_fingerprint"], "degrade.version": s["degrade_version"],
            "degrade.created": s["created"], "degrade.metrics": json.dumps(s["metrics"], sort_keys=True)}
    if s["error"] is not None:
        tags["degrade.error"] = s["error"]
    worst: dict[str, str] = {}
    for f in diagnosis.get("findings", []):
        code, sev = str(f.get("code", "")).upper(), str(f.get("severity", ""))
        if code not in worst or _SEVERITY.get(sev, 3) < _SEVERITY.get(worst[code], 3):
            worst[code] = sev
    tags.update({f"degrade.finding.{mlflow_key(c)}": sev for c, sev in worst.items()})
    # every (code, severity) pair, for an exact --code C --severity S when a code was found twice
    tags["degrade.findings"] = " ".join(sorted({f"{mlflow_key(str(f.get('code', '')).upper())}:{f.get('severity')}"
                                                for f in diagnosis.get("findings", [])}))
    tags = {k: str(v)[:_TAG_MAX] for k, v in tags.items()}
    metrics: dict[str, tuple[float, int]] = {}
    for name, m in s["metrics"].items():
        step = m.get("step") if isinstance(m, dict) else None
        step = int(step) if number(step) else 0
        for key, v in ((name, m.get("value") if isinstance(m, dict) else m),
                       (name + "_se", m.get("se") if isinstance(m, dict) else None)):
            if number(v):
                metrics[mlflow_key(key)] = (float(v), step)
    if s["verdict_confidence"] is not None:
        metrics["degrade.verdict_confidence"] = (s["verdict_confidence"], 0)
    return params, tags, metrics


def decode(params: dict[str, str], tags: dict[str, str], metrics: dict[str, tuple[float, int]]) -> dict:
    cols: dict[str, dict] = {"params": {}, "generator": {}, "data": {}}
    for k, v in params.items():
        col = next((c for c in ("generator", "data") if k.startswith(c + ".")), "params")
        cols[col][k[len(col) + 1:] if col != "params" else k] = value(v)
    try:
        row_metrics = json.loads(tags.get("degrade.metrics", "{}"))
    except ValueError:  # cut at the tag limit: row.json has it
        row_metrics = None
    conf = metrics.get("degrade.verdict_confidence")
    return {"created": tags.get("degrade.created"), "run_path": tags.get("degrade.run_path"),
            "run_fingerprint": tags.get("degrade.run_fingerprint"),
            **{c: dict(sorted(cols[c].items())) for c in ("generator", "params", "data")},
            "metrics": row_metrics, "verdict_layer": tags.get("degrade.verdict"),
            "verdict_confidence": conf[0] if conf else None, "headline": tags.get("degrade.headline", ""),
            "degrade_version": tags.get("degrade.version"), "status": tags.get("degrade.status", "done"),
            "error": tags.get("degrade.error")}


def value(text: str) -> Any:
    """A param value typed back: numbers as numbers, True/False as bools, None as None."""
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    return {"True": True, "true": True, "False": False, "false": False, "None": None}.get(text, text)


def equal(value: Any, wanted: Any) -> bool:
    """SQLite's `json_extract(params, key) = typed` in Python: true is 1, numbers compare as numbers,
    strings as strings, null equals nothing."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(wanted, str) or isinstance(value, str):
        return value == wanted
    return number(value) and float(value) == float(wanted)


def number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def mlflow_key(name: str) -> str:
    return _BAD_KEY.sub("_", name)[:_KEY_MAX]
