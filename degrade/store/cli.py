"""`degrade runs`: the stored diagnoses (list, show), and the store flags of `degrade diagnose`."""
from __future__ import annotations

import json
import sys


def add_store_flags(d) -> None:
    d.add_argument("--store", metavar="PATH", help="where this diagnosis is kept: an SQLite file, or mlflow:[TRACKING_URI] (default: "
                   "[tool.degrade] store, else .degrade/runs.db beside pyproject.toml or here)")
    d.add_argument("--no-store", action="store_true", help="do not keep this diagnosis in the store")


def add_parser(sub) -> None:
    r = sub.add_parser("runs", help="the stored diagnoses: list, show, table, sweep, compare, repro")
    rs = r.add_subparsers(dest="runs_command", required=True)
    lst = rs.add_parser("list", help="one line per stored diagnosis, newest first")
    show = rs.add_parser("show", help="one stored diagnosis in full (JSON)")
    show.add_argument("id", help="its id in the store (an MLflow run id with --store mlflow:)")
    tab = rs.add_parser("table", help="one row per run: its params, the metric +- SE, the verdict")
    tab.add_argument("--by", help="comma-separated params as columns (default: those that vary)")
    tab.add_argument("--metric", default="loss", help="the logged metric to show (default: loss)")
    tab.add_argument("--format", choices=("text", "json"), default="text")
    swp = rs.add_parser("sweep", help="which parameter moves the metric or the verdict beyond noise")
    swp.add_argument("--metric", default="loss", help="the logged metric to compare (default: loss)")
    swp.add_argument("--size-param", default="data.train_rows", help="the param that is the training-set "
                     "size, for a learning curve per group of otherwise equal runs (default: data.train_rows, "
                     "the recorder's count)")
    swp.add_argument("--format", choices=("text", "json"), default="text")
    cmp = rs.add_parser("compare", help="`degrade compare` of two stored runs: what differs, and "
                        "whether the metric difference exceeds seed and evaluation noise")
    cmp.add_argument("a")
    cmp.add_argument("b")
    cmp.add_argument("--format", choices=("text", "json"), default="text")
    rep = rs.add_parser("repro", help="do two stored runs of one generator, params and data agree?")
    rep.add_argument("a")
    rep.add_argument("b")
    for p in (lst, show, tab, swp, rep, cmp):
        p.add_argument("--store", metavar="PATH", help="the store to read (default as for diagnose)")
    lst.add_argument("--verdict", help="only this verdict layer (observation, reachability, ..., none)")
    lst.add_argument("--code", help="only diagnoses with a finding of this code")
    lst.add_argument("--severity", choices=("error", "warning", "info"), help="with --code: of this severity")
    lst.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="only runs with this param value (repeatable), e.g. params.lr=0.001")
    lst.add_argument("--status", choices=("done", "failed"), help="only diagnoses that were made "
                     "(done) or runs whose diagnosis failed")
    lst.add_argument("--since", metavar="DATE", help="only diagnoses stored on or after this ISO date")
    lst.add_argument("--sort", metavar="METRIC", help="sort by this stored metric, lowest first")
    lst.add_argument("--format", choices=("text", "json"), default="text")


def store_diagnosis(d, args, config: dict) -> None:
    """Keep `d` in the store unless --no-store."""
    if not args.no_store:
        from degrade.store.row import diagnosis_row
        keep(diagnosis_row(d, d.source), args.store or config.get("store"))


def keep(row: dict, spec):
    """Store one row; its id, or None when the store cannot be used, which costs one stderr line,
    never the diagnosis."""
    from degrade.errors import InputError, one_line
    from degrade.store import record_row
    try:
        return record_row(row, spec)
    except InputError as e:
        print(f"degrade: diagnosis not stored: {one_line(e)}", file=sys.stderr)
        return None


def runs(args, config: dict) -> int:
    from degrade.store import open_store
    store = open_store(args.store or config.get("store"))
    try:
        return _COMMANDS[args.runs_command](store, args)
    finally:
        store.close()


def _show(store, args) -> int:
    row = store.get(args.id)
    if row is None:
        print(f"degrade: no stored diagnosis {args.id} in {store.path}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(row, indent=2) + "\n")
    return 0


def _list(store, args) -> int:
    from degrade.errors import InputError
    from degrade.store.table import metric_of
    bad = [p for p in args.param if "=" not in p]
    if bad:
        raise InputError(None, f"--param {bad[0]}: expected KEY=VALUE")
    rows = store.rows(verdict=args.verdict, code=args.code, severity=args.severity, since=args.since,
                      params=dict(p.split("=", 1) for p in args.param), status=args.status)
    if args.sort:  # runs without the metric last
        rows.sort(key=lambda r: (metric_of(r, args.sort)[0] is None, metric_of(r, args.sort)[0] or 0.0))
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    for r in rows:
        conf = f"{r['verdict_confidence']:.2f}" if r["verdict_confidence"] is not None else "-"
        dirty = "*" if r["generator"].get("git_dirty") else " "
        print(f"{r['id']:>5}{dirty} {r['created']}  {r['verdict_layer']:<14} {conf:>5}  {r['run_path']}"
              + (f"  ({r['error']})" if r["status"] == "failed" else ""))
    return 0


def _table(store, args) -> int:
    from degrade.store.table import render, table
    t = table(store.rows(), [c.strip() for c in args.by.split(",")] if args.by else None, args.metric)
    sys.stdout.write((json.dumps(t, indent=2) if args.format == "json" else render(t)) + "\n")
    return 0


def _sweep(store, args) -> int:
    from degrade.store.table import sweep
    result = sweep(store.rows(status="done"), args.metric, args.size_param)
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        print_sweep(result)
    return 0


def print_sweep(result: dict) -> None:
    """One line per param that some pair of runs differs in alone; then each learning curve."""
    said = False
    for name, v in result["params"].items():
        if not v["pairs"]:
            continue
        moves = [w for w, yes in (("the metric", v["moves_metric"]), ("the verdict", v["moves_verdict"])) if yes]
        z = f"max {v['max_z']:.1f} SE" if v["max_z"] is not None else "no error bars"
        print(f"{name}: {v['pairs']} pair(s) differing in it alone, {z}; "
              + ("moves " + " and ".join(moves) if moves else "moves nothing beyond noise"))
        said = True
    if not said:
        print(f"no two of the {result['runs']} runs differ in one param alone: not a grid sweep, so no "
              "param's effect can be told apart")
    for c in result["data_curves"]:
        fixed = ", ".join(f"{k}={v}" for k, v in c["fixed"].items())
        print(f"learning curve{' at ' + fixed if fixed else ''}: {c['reading']}: {c['message']}")


def _compare(store, args) -> int:
    from degrade.compare import compare
    from degrade.report.compare_text import render
    rows = [store.get(i) for i in (args.a, args.b)]
    for i, row in zip((args.a, args.b), rows):
        if row is None:
            print(f"degrade: no stored diagnosis {i} in {store.path}", file=sys.stderr)
            return 2
    c = compare(rows[0]["run_path"], rows[1]["run_path"])
    sys.stdout.write((json.dumps(c.to_dict(), indent=2) if args.format == "json" else render(c)) + "\n")
    return 0


def _repro(store, args) -> int:
    from degrade.store.table import repro
    a, b = store.get(args.a), store.get(args.b)
    if a is None or b is None:
        print(f"degrade: no stored diagnosis {args.a if a is None else args.b} in {store.path}", file=sys.stderr)
        return 2
    result = repro(a, b)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0 if result["reproduced"] or not result["comparable"] else 1


_COMMANDS = {"list": _list, "show": _show, "table": _table, "sweep": _sweep, "repro": _repro, "compare": _compare}
