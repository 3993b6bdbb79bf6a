"""`degrade runs`: the stored diagnoses (list, show), and the store flags of `degrade diagnose`."""
from __future__ import annotations

import json
import sys


def add_store_flags(d) -> None:
    d.add_argument("--store", metavar="PATH", help="the SQLite store this diagnosis is kept in (default: "
                   "[tool.degrade] store, else .degrade/runs.db beside pyproject.toml or here)")
    d.add_argument("--no-store", action="store_true", help="do not keep this diagnosis in the store")


def add_parser(sub) -> None:
    r = sub.add_parser("runs", help="the stored diagnoses: list, show")
    rs = r.add_subparsers(dest="runs_command", required=True)
    lst = rs.add_parser("list", help="one line per stored diagnosis, newest first")
    show = rs.add_parser("show", help="one stored diagnosis in full (JSON)")
    show.add_argument("id", type=int)
    for p in (lst, show):
        p.add_argument("--store", metavar="PATH", help="the store to read (default as for diagnose)")
    lst.add_argument("--verdict", help="only this verdict layer (observation, reachability, ..., none)")
    lst.add_argument("--code", help="only diagnoses with a finding of this code")
    lst.add_argument("--severity", choices=("error", "warning", "info"), help="with --code: of this severity")
    lst.add_argument("--format", choices=("text", "json"), default="text")


def store_diagnosis(d, args, config: dict) -> None:
    """Keep `d` in the store unless --no-store; a store that cannot be used costs one stderr line,
    never the diagnosis."""
    if args.no_store:
        return
    from degrade.errors import InputError, one_line
    from degrade.run import RunOptions, open_run
    from degrade.store import record
    try:
        run = open_run(args.run_dir, RunOptions(train_data=args.train_data, eval_data=args.eval_data,
                                                checkpoint=args.checkpoint, model_factory=args.model_factory))
        record(d, run, args.store or config.get("store"))
    except InputError as e:
        print(f"degrade: diagnosis not stored: {one_line(e)}", file=sys.stderr)


def runs(args, config: dict) -> int:
    from degrade.store import open_store
    store = open_store(args.store or config.get("store"))
    try:
        if args.runs_command == "show":
            row = store.get(args.id)
            if row is None:
                print(f"degrade: no stored diagnosis {args.id} in {store.path}", file=sys.stderr)
                return 2
            sys.stdout.write(json.dumps(row, indent=2) + "\n")
            return 0
        rows = store.rows(verdict=args.verdict, code=args.code, severity=args.severity)
        if args.format == "json":
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            return 0
        for r in rows:
            conf = f"{r['verdict_confidence']:.2f}" if r["verdict_confidence"] is not None else "-"
            print(f"{r['id']:>5}  {r['created']}  {r['verdict_layer']:<14} {conf:>5}  {r['run_path']}")
        return 0
    finally:
        store.close()
