"""The experiment store kept in MLflow (`--store mlflow:[URI]`): one MLflow run per diagnosis.

Each diagnosis becomes a run with the row's params (and `generator.*`, `data.*`), its numeric
metrics, `degrade.*` tags (verdict, status, one `degrade.finding.CODE` per finding code) and the
artifacts diagnosis.json and report.html, so that the MLflow UI can sort and filter diagnoses
beside the training runs. When the training run is in the same MLflow (the recorder's
`mlflow_run_id`, else the run whose `output_dir` param is this run dir, as the Trainer's
report_to="mlflow" logs it), the diagnosis is nested under it, in its experiment; otherwise it goes
to the experiment `degrade`.

It answers exactly what SqliteStore answers. A row is rebuilt from the run's params and tags when
that gives it back exactly (checked when it is recorded: the tag `degrade.row` says "inline");
otherwise (a param key MLflow cannot take, a value too long...) from the artifact row.json.

mlflow is imported only here, only when this store is used; any failure of the tracking server or
of MLflow is a StoreError with one line.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from degrade.errors import InputError, one_line
from degrade.store import mlflow_row as R
from degrade.store.sqlite import StoreError, _typed

EXPERIMENT = "degrade"
# MLflow retries an HTTP call for minutes by default; a store that cannot be reached must cost
# the user seconds. Its artifact progress bars would clutter stderr. Set only when the user has
# not chosen, and put back on close().
_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                 "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
_BATCH = 100          # params (and tags) per log_batch call: MLflow's limit


class MlflowStore:
    def __init__(self, spec: str):
        uri = spec[len("mlflow:"):]
        if uri.startswith("//"):  # mlflow://host:port
            uri = "http:" + uri
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        if not uri:
            raise StoreError(None, "--store mlflow: has no tracking URI: pass --store mlflow:URI or set "
                                   "MLFLOW_TRACKING_URI")
        self.path = "mlflow:" + re.sub(r"//[^/@]*@", "//", uri)  # never show a password
        self._env = {k: v for k, v in _ENV_DEFAULTS.items() if k not in os.environ}
        os.environ.update(self._env)
        try:
            try:
                from mlflow.tracking import MlflowClient
            except ImportError:
                raise StoreError(self.path, 'needs MLflow: pip install "degrade[mlflow]"') from None
            with self._calling():
                self.client = MlflowClient(tracking_uri=uri)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for k in self._env:
            os.environ.pop(k, None)
        self._env = {}

    @contextlib.contextmanager
    def _calling(self):
        """Around every MLflow call: its failures as one line; its INFO logs and the run links it
        prints to stdout kept out of degrade's output (stdout may be a JSON diagnosis)."""
        log = logging.getLogger("mlflow")
        level = log.level
        log.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the server or MLflow raised: the store is unusable
            raise StoreError(self.path, _problem(e)) from None
        finally:
            log.setLevel(level)

    # ---- writing ---------------------------------------------------------------------------------
    def record(self, row: dict[str, Any]) -> str:
        """Log one diagnosis (row.py's row) as an MLflow run; returns its run id."""
        from mlflow.entities import Metric, Param
        summary = R.summary(row)
        params, tags, metrics = R.encode(summary, row.get("diagnosis") or {})
        inline = json.dumps(R.decode(params, tags, metrics), sort_keys=True) == json.dumps(summary, sort_keys=True)
        tags["degrade.row"] = "inline" if inline else "row.json"
        with self._calling():
            training = self._training_run(summary["run_path"])
            if training is not None:
                tags.update({"mlflow.parentRunId": training.info.run_id,
                             "degrade.training_run_id": training.info.run_id})
            experiment = training.info.experiment_id if training is not None else self._experiment()
            where = self.client.get_experiment(experiment).artifact_location
            if _inside(where, summary["run_path"]):
                raise StoreError(self.path, f"would keep its artifacts in the run dir ({where}), where degrade "
                                            "never writes: run degrade from elsewhere or give MLflow an artifact root")
            run_id = self.client.create_run(experiment, tags=tags,
                                            run_name=Path(summary["run_path"]).name or "degrade").info.run_id
            try:
                now = int(time.time() * 1000)
                items = [Param(k, v) for k, v in params.items()]
                for i in range(0, len(items), _BATCH):
                    self.client.log_batch(run_id, params=items[i:i + _BATCH])
                if metrics:
                    self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, (v, step) in metrics.items()])
                self._artifacts(run_id, row.get("diagnosis") or {}, summary)
                self.client.set_terminated(run_id)
            except BaseException:
                with contextlib.suppress(Exception):  # no half-written diagnosis left to list
                    self.client.delete_run(run_id)
                raise
        return run_id

    def _artifacts(self, run_id: str, diagnosis: dict, summary: dict) -> None:
        self.client.log_text(run_id, json.dumps(diagnosis), "diagnosis.json")
        self.client.log_text(run_id, json.dumps(summary, sort_keys=True), "row.json")
        if diagnosis:  # a failed row has none to render
            from degrade.report.from_json import diagnosis_from_dict
            from degrade.report.html import render
            try:
                html = render(diagnosis_from_dict(diagnosis))
            except InputError:
                return  # not a whole diagnosis document (a hand-made row): no report
            self.client.log_text(run_id, html, "report.html")

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is None:
            try:
                return self.client.create_experiment(EXPERIMENT)
            except Exception:  # noqa: BLE001 - created meanwhile by another degrade, else the error stands
                found = self.client.get_experiment_by_name(EXPERIMENT)
                if found is None:
                    raise
        return found.experiment_id

    def _training_run(self, run_path: str):
        """The MLflow run that trained `run_path`: the one its manifest names, else the newest
        whose `output_dir` param (logged by the Trainer's MLflowCallback) is this directory. None
        when there is none, or when looking fails (a link is not worth the diagnosis)."""
        run_id = _manifest_run_id(Path(run_path))
        with contextlib.suppress(Exception):  # a run of another tracking server: search instead
            run = self.client.get_run(run_id) if run_id else None
            if run is not None and run.info.lifecycle_stage == "active":
                return run
        like = _quote(f"%{Path(run_path).name}%")  # narrows; the match itself is made below
        if like is None or not Path(run_path).name:
            return None
        with contextlib.suppress(Exception):
            for run in self._search(f"params.output_dir LIKE {like}"):
                if "degrade.row" not in run.data.tags and _same_dir(run.data.params["output_dir"], run_path):
                    return run
        return None

    # ---- reading ---------------------------------------------------------------------------------
    def rows(self, *, verdict: str | None = None, code: str | None = None, severity: str | None = None,
             since: str | None = None, params: dict[str, str] | None = None,
             status: str | None = None) -> list[dict[str, Any]]:
        """As SqliteStore.rows. The server narrows by tag; each filter is also applied here, exactly
        as SqliteStore applies it (params compared as numbers, severity among all of a code's)."""
        code = R.mlflow_key(code.upper()) if code else None
        where = ["tags.`degrade.row` != ''"]
        for key, value in (("degrade.verdict", verdict), ("degrade.status", status)):
            if value and _quote(value):
                where.append(f"tags.`{key}` = {_quote(value)}")
        if code:
            where.append(f"tags.`degrade.finding.{code}` != ''")
        wanted = {k.replace('"', ''): _typed(v) for k, v in (params or {}).items()}
        out = []
        with self._calling():
            for run in self._search(" AND ".join(where)):
                tags = run.data.tags
                if (verdict and tags.get("degrade.verdict") != verdict) or \
                        (status and tags.get("degrade.status", "done") != status) or \
                        (since and tags.get("degrade.created", "") < since):
                    continue
                found = tags.get("degrade.findings", "").split()
                if code and (f"{code}:{severity}" not in found if severity else
                             not any(f.startswith(code + ":") for f in found)):
                    continue
                row = self._row(run)
                if all(R.equal(row["params"].get(k), v) for k, v in wanted.items()):
                    out.append(row)
        return out

    def get(self, rid: int | str) -> dict[str, Any] | None:
        with self._calling():
            try:
                run = self.client.get_run(str(rid))
            except Exception as e:  # noqa: BLE001 - an unknown or malformed id is "not stored"
                if getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise
            if "degrade.row" not in run.data.tags or run.info.lifecycle_stage != "active":
                return None
            return {**self._row(run), "diagnosis": json.loads(self._artifact(run.info.run_id, "diagnosis.json"))}

    def _row(self, run) -> dict[str, Any]:
        d = run.data
        if d.tags.get("degrade.row") == "inline":
            row = R.decode(d.params, d.tags, {k: (v, 0) for k, v in d.metrics.items()})
        else:
            row = json.loads(self._artifact(run.info.run_id, "row.json"))
        return {"id": run.info.run_id, **{k: row[k] for k in R.FIELDS if k != "id"}}

    def _artifact(self, run_id: str, name: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, name, tmp)).read_text(encoding="utf-8")

    def _search(self, where: str) -> list:
        """Runs of every experiment (a nested diagnosis lives in its training run's), newest first."""
        experiments = [e.experiment_id for e in
                       _pages(lambda token: self.client.search_experiments(max_results=1000, page_token=token))]
        return [] if not experiments else list(_pages(lambda token: self.client.search_runs(
            experiments, where, max_results=1000, page_token=token, order_by=["attributes.start_time DESC"])))


def _pages(fetch):
    """Every item of a paged MLflow answer."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def _quote(value: str) -> str | None:
    """A string literal of MLflow's filter syntax, which has no escapes: None when it needs one."""
    if "'" not in value:
        return f"'{value}'"
    return f'"{value}"' if '"' not in value else None


def _same_dir(value: str, run_path: str) -> bool:
    """An output_dir param names this run dir: absolute, or relative to the current directory."""
    try:
        return Path(value).expanduser().resolve() == Path(run_path)
    except (OSError, RuntimeError, ValueError):
        return False


def _inside(artifact_location: str | None, run_path: str) -> bool:
    """Artifacts that would land in the run dir: a local backend without an artifact root keeps
    them under ./mlruns, and the current directory may be the run dir."""
    where = artifact_location or ""
    if re.match(r"[A-Za-z][\w+.-]+:", where) and not where.startswith("file:"):
        return False  # mlflow-artifacts:, s3:, ...: not files of this machine
    local = Path(re.sub(r"^file:(//)?", "", where)).resolve()
    return local == Path(run_path) or Path(run_path) in local.parents


def _manifest_run_id(run_dir: Path) -> str | None:
    """The MLflow run id the recorder saw active at train time (degrade/manifest.json), read-only."""
    from degrade.inputs.json_doc import read_object
    path = run_dir / "degrade" / "manifest.json"
    if not path.is_file():
        return None
    try:
        rid = read_object(path, "manifest", run_dir).get("mlflow_run_id")
    except InputError:
        return None
    return rid if isinstance(rid, str) and rid else None


def _problem(e: Exception) -> str:
    text = str(e)
    if "Connection refused" in text:
        return "refused the connection (is the MLflow server running?)"
    if "timed out" in text.lower() or "Timeout" in text:
        return f"did not answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '?')} s"
    if "Name or service not known" in text or "Failed to resolve" in text or "nodename nor servname" in text:
        return "names a host that cannot be found"
    first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(e).__name__
    return f"MLflow failed: {one_line(first, 300)}"
