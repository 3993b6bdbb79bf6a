"""manifest.json of the native run format: what produced a result.

The seed-003 idea: a result is (generator, params, data) -> metrics. The manifest records the
generator (code version, dirty-diff hash, package versions, model class and factory), the params
(hyperparameters, seed) and the data (paths and content fingerprints), so that degrade can tell
whether the data or code it is given is the data or code the run used.

Nothing here may break training: every probe of the environment degrades to null, and a data
fingerprint that cannot be computed is recorded with the reason.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

FORMAT = "degrade-run-v1"
EXACT_MAX_ROWS = 20_000  # above this (or EXACT_MAX_TOKENS), data gets a sampled fingerprint
EXACT_MAX_TOKENS = 4_000_000
EXACT_MAX_BYTES = 64 * 2**20  # a data file above this gets a file fingerprint
SAMPLE_ROWS = 64
_PACKAGES = ("torch", "transformers", "numpy", "datasets", "accelerate", "safetensors", "degrade")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write next to the target, then rename: a reader never sees half a manifest."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def json_safe(obj: Any, depth: int = 0) -> Any:
    """Params as JSON: dataclasses, Namespaces, configs with to_dict(), paths, tensors, numpy."""
    if depth > 20:
        return repr(obj)
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [json_safe(v, depth + 1) for v in items]
    if isinstance(obj, Path):
        return str(obj)
    if not isinstance(obj, type) and hasattr(obj, "to_dict") and callable(obj.to_dict):
        try:
            return json_safe(obj.to_dict(), depth + 1)
        except Exception:  # noqa: BLE001 - a broken to_dict falls back to repr
            return repr(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, depth + 1)
    if isinstance(obj, enum.Enum):
        return json_safe(obj.value, depth + 1)
    if type(obj).__name__ == "Namespace":
        return json_safe(vars(obj), depth + 1)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy values, tensors
        try:
            return json_safe(obj.tolist(), depth + 1)
        except Exception:  # noqa: BLE001
            return repr(obj)
    return repr(obj)


# ---- code and environment -------------------------------------------------------------------
def _git(args: list[str], cwd: str) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=True, timeout=20).stdout


def code_info(cwd: str | Path | None = None) -> dict[str, Any]:
    """git commit, dirty flag and a hash of the uncommitted diff (tracked files) of the cwd."""
    cwd = str(cwd or os.getcwd())
    info: dict[str, Any] = {"git_commit": None, "git_dirty": None, "dirty_diff_sha256": None,
                            "git_root": None, "script": _script()}
    try:
        info["git_commit"] = _git(["rev-parse", "HEAD"], cwd).decode().strip() or None
        info["git_root"] = _git(["rev-parse", "--show-toplevel"], cwd).decode().strip() or None
        status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
        info["git_dirty"] = bool(status.strip())
        if info["git_dirty"]:
            info["dirty_diff_sha256"] = hashlib.sha256(_git(["diff", "HEAD", "--binary"], cwd)).hexdigest()
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        pass  # no git, not a repository, no commit yet: leave what we have
    return info


def _script() -> str | None:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return str(Path(path).resolve()) if path and Path(path).is_file() else None


def package_versions() -> dict[str, str | None]:
    from importlib import metadata
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = getattr(torch.version, "cuda", None)
    return out


def environment_info() -> dict[str, Any]:
    """Where the run ran: OS, CPU, torch threads and accelerator (results can depend on them:
    kernels, reduction order, thread count). The host name only as a hash: it tells two machines
    apart without writing a host name into run dirs that get shared."""
    out: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                           "cpu_count": os.cpu_count(),
                           "hostname_sha256": hashlib.sha256(platform.node().encode()).hexdigest()[:12]}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_threads"] = torch.get_num_threads()
        try:
            out["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:  # noqa: BLE001 - a broken driver must not stop the recording
            out["cuda_device"] = None
    return out


# ---- model ----------------------------------------------------------------------------------
def model_info(model: Any, factory: str | None = None) -> dict[str, Any]:
    from degrade.record.layer_stats import unwrap
    m = unwrap(model)
    params = list(m.parameters())  # unique (tied weights once)
    cls = type(m)
    info = {"class": f"{cls.__module__}.{cls.__qualname__}",
            "n_params": int(sum(p.numel() for p in params)),
            "n_trainable": int(sum(p.numel() for p in params if p.requires_grad)),
            "dtype": str(params[0].dtype).replace("torch.", "") if params else None,
            "factory": factory, "hf": is_hf_model(m)}
    cfg = getattr(m, "config", None)
    if info["hf"] and cfg is not None:
        info["config"] = json_safe(cfg.to_dict())
    return info


def is_hf_model(model: Any) -> bool:
    return any(c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers")
               for c in type(model).__mro__)


def infer_task(model: Any) -> str | None:
    name = type(model).__name__
    if "ForSequenceClassification" in name:
        return "sequence-classification"
    if "ForCausalLM" in name or "LMHeadModel" in name:
        return "causal-lm"
    return None


# ---- data -----------------------------------------------------------------------------------
def describe_data(data: Any = None, path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """{"path", "fingerprint", "fingerprint_kind", "n"} for a split.

    fingerprint_kind:
      "examples": the same hash degrade.run.data computes for --train-data/--eval-data
                  (input_ids, labels, label), so degrade can tell the data it is given is the
                  data the run used;
      "sample":   sha256 of the length and an evenly spaced sample of rows (large in-memory data);
      "file":     sha256 of a data file's bytes (or of a folder's file names, sizes and heads).
    """
    if data is None and path is None:
        return None
    if isinstance(data, (str, os.PathLike)):
        data, path = None, data
    entry: dict[str, Any] = {"path": str(Path(path).resolve()) if path is not None else None,
                             "fingerprint": None, "fingerprint_kind": None, "n": None}
    try:
        if data is None:
            entry.update(_describe_path(Path(path)))
        else:
            entry.update(_describe_object(data))
    except Exception as e:  # noqa: BLE001 - metadata must never stop training
        entry["fingerprint_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return entry


def _describe_path(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"fingerprint_error": "path does not exist"}
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
        else path.stat().st_size
    small = size <= EXACT_MAX_BYTES
    if small:
        from degrade.errors import InputError
        from degrade.run.data import load_examples
        try:
            ex = load_examples(path)
            return {"fingerprint": ex.fingerprint, "fingerprint_kind": "examples", "n": len(ex)}
        except (InputError, ValueError, TypeError, KeyError, ImportError):
            pass
    return {"fingerprint": _file_hash(path), "fingerprint_kind": "file"}


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}|{size}|".encode())
        with open(f, "rb") as fh:
            if path.is_dir() or size > EXACT_MAX_BYTES:  # head and tail: cheap, catches most edits
                h.update(fh.read(2**20))
                if size > 2**21:
                    fh.seek(size - 2**20)
                    h.update(fh.read())
            else:
                for chunk in iter(lambda: fh.read(2**20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def _describe_object(data: Any) -> dict[str, Any]:
    # A DataLoader: describe its dataset (the batches are shuffled and collated).
    if hasattr(data, "dataset") and hasattr(data, "batch_size") and not hasattr(data, "column_names"):
        data = data.dataset
    try:
        n = len(data)
    except TypeError:
        return {"fingerprint_error": "data has no length (an iterable dataset): not fingerprinted"}
    out: dict[str, Any] = {"n": int(n)}
    cols = getattr(data, "column_names", None)
    if cols is not None and hasattr(data, "with_format"):  # a datasets.Dataset: columnar, fast
        data = data.with_format(None)
        if getattr(data, "_fingerprint", None):
            out["hf_fingerprint"] = data._fingerprint
        if "input_ids" in cols and _small(n, lambda: data[0]["input_ids"]):
            columns = {c: data[c] for c in ("input_ids", "labels", "label") if c in cols}
            out.update(fingerprint=_examples_fingerprint(columns), fingerprint_kind="examples")
            return out
    elif isinstance(data, (list, tuple)) and n and _small(n, lambda: _row(data[0]).get("input_ids")):
        rows = [_row(r) for r in data]  # already in memory: hash it all
        if all("input_ids" in r for r in rows):
            columns = {c: [r.get(c) for r in rows] for c in ("input_ids", "labels", "label")
                       if c in rows[0]}
            out.update(fingerprint=_examples_fingerprint(columns), fingerprint_kind="examples")
            return out
    # anything else (a torch Dataset may tokenize in __getitem__): the length and a sample of rows
    k = min(n, SAMPLE_ROWS)
    idx = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)}) if n else []
    h = hashlib.sha256(f"n={n}|".encode())
    for i in idx:
        h.update(json.dumps(_row(data[i]), sort_keys=True, default=repr, separators=(",", ":")).encode())
    out.update(fingerprint=h.hexdigest()[:16], fingerprint_kind="sample")
    return out


def _small(n: int, first_ids) -> bool:
    """Few enough rows and tokens to hash every example cheaply."""
    if n > EXACT_MAX_ROWS:
        return False
    try:
        width = len(first_ids() or [])
    except Exception:  # noqa: BLE001
        return False
    return n * max(width, 1) <= EXACT_MAX_TOKENS


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist") and callable(v.tolist):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _row(item: Any) -> dict[str, Any]:
    """One example as a dict: {"input_ids": [...]} for a bare token list or 1-D tensor."""
    item = _plain(item)
    if isinstance(item, dict):
        return item
    if isinstance(item, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in item):
        return {"input_ids": item}
    return {"value": item}


def _examples_fingerprint(columns: dict[str, list]) -> str:
    """degrade.run.data's fingerprint: labels only when per token, label when one per row."""
    from degrade.run.data import content_fingerprint
    input_ids = [[int(t) for t in _plain(x)] for x in columns["input_ids"]]
    labels = label = None
    raw = columns.get("labels")
    if raw is not None and raw and isinstance(_plain(raw[0]), list):
        labels = [[int(t) for t in _plain(x)] for x in raw]
    for key in ("label", "labels"):
        col = columns.get(key)
        if col is not None and col and not isinstance(_plain(col[0]), (list, str)):
            label = [int(_plain(x)) for x in col]
            break
    return content_fingerprint(input_ids, labels, label)
