"""How much each hand-set threshold matters: every option chosen by hand (its source says "unsourced"
or "chosen by hand, then measured ...") at x0.5 and x2 of its default, scored on a DegradeBench v2
split (default: dev) against the defaults.

Per case: one diagnosis at the defaults, then for each variant only the check that owns the option
runs again on the same Run (the model passes it reads are cached) and the ladder walks the results
again. Each variant's outcomes are scored like `degrade bench` (degrade/bench/v2/scorecard.py): layer
top-1, false alarms on healthy runs (inconclusive counted), error-code recall; a verdict that moved
is listed by case.

    python benchmarks/option_sensitivity.py --split dev --workers 2 --output sensitivity.json

Needs the split built in --cache (`degrade bench --split dev` builds it).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

FACTORS = (0.5, 2.0)


HAND_CHOSEN = ("unsourced", "chosen by hand")  # how a source that no paper or tool backs begins


def hand_chosen_options() -> list[tuple[str, str, object]]:
    """(code, option, default) of every built-in option chosen by hand: not yet measured
    ("unsourced") or measured by this script ("chosen by hand, then measured ...")."""
    from degrade.registry import builtin_specs
    out = []
    for spec in sorted(builtin_specs(), key=lambda s: s.code):
        for o in spec.option_list:
            if (o.source or "").strip().lower().startswith(HAND_CHOSEN) and not isinstance(o.default, bool):
                out.append((spec.code, o.name, o.default))
    return out


def scaled(default, factor: float):
    """default x factor; integers stay integers (at least 1); a share in (0, 1] stays at most 1."""
    if isinstance(default, int):
        return max(1, round(default * factor))
    value = default * factor
    return min(value, 1.0) if 0 < default <= 1 < value else value


def _one_case(name: str, cache: str, split_seed, variants: list[tuple[str, str, object]]) -> dict:
    import torch
    torch.set_num_threads(1)
    from degrade.bench.runner import build_case, quiet
    from degrade.bench.suites import suite_cases
    from degrade.ladder import walk
    from degrade.registry import load_specs, selected
    from degrade.run import RunOptions, open_run
    from degrade.suite import run_checks
    case = next(c for c in suite_cases("v2", split_seed) if c.name == name)
    built = build_case(case, Path(cache))
    kw = built.diagnose_kwargs()
    run = open_run(built.run_dir, RunOptions(
        train_data=str(kw["train_data"]) if kw.get("train_data") else None,
        eval_data=str(kw["eval_data"]) if kw.get("eval_data") else None,
        model_factory=kw.get("model_factory"), budget="standard", seed=0, device="cpu"))
    usable, _ = load_specs()
    checks = selected(usable, None, None)
    by_code = {s.code: s for s in checks}

    def outcome(results) -> dict:
        results = copy.deepcopy(results)
        verdict, _ = walk(results)
        found = [f for r in results for f in r.findings if f.severity.value in ("error", "warning")]
        return {"layer": verdict["layer"], "codes": sorted({f.code for f in found}),
                "error_codes": sorted({f.code for f in found if f.severity.value == "error"})}

    with quiet():
        base = run_checks(run, checks, {})
        out = {"default": outcome(base)}
        for code, option, value in variants:
            if code not in by_code:
                continue
            (again,) = run_checks(run, [by_code[code]], {code: {option: value}})
            out[f"{code}.{option}={value}"] = outcome([again if r.code == code else r for r in base])
    return {"name": name, "expected_layer": case.layer, "expected_codes": list(case.codes),
            "family": case.family, "outcomes": out}


def _score(rows: list[dict], key: str) -> dict:
    """The bench's own split card (degrade/bench/v2/scorecard.py) of one variant's outcomes."""
    from degrade.bench.scorecard import CaseOutcome
    from degrade.bench.v2.scorecard import split_card
    outs = [CaseOutcome(r["name"], r["family"], r["expected_layer"], r["expected_codes"],
                        r["outcomes"][key]["layer"], r["outcomes"][key]["codes"], 0.0,
                        error_codes=r["outcomes"][key]["error_codes"])
            for r in rows if key in r["outcomes"]]
    card = split_card(outs)
    healthy = [o for o in outs if o.expected_layer == "none"]
    return {"layer_top1": card["layer_top1"], "healthy": len(healthy), "code_recall": card["code_recall"],
            "false_alarms": sum(o.predicted_layer not in ("none", "error") for o in healthy), "n": len(outs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="dev", choices=("dev", "calibration", "test"))
    ap.add_argument("--bench-seed", type=int, default=None)
    ap.add_argument("--cache", default=".bench-cache")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--checks", help="only these check codes (comma-separated)")
    ap.add_argument("--variant", action="append", default=[], metavar="CODE.option=value",
                    help="score this value too (repeatable), e.g. O101.abs_tol=1e-6")
    ap.add_argument("--output", "-o", help="write the per-variant table as JSON here")
    args = ap.parse_args(argv)
    from degrade.bench.suites import suite_cases
    from degrade.bench.v2.scorecard import proven
    built = [c for c in suite_cases("v2", args.bench_seed) if c.split == args.split
             and (Path(args.cache) / c.name / "built.json").is_file()]
    judged = proven(built, Path(args.cache))  # scored like the bench: cases that proved their fault
    cases = [c for c in built if judged[c.name][0]]
    wanted = set(args.checks.split(",")) if args.checks else None
    variants = [(code, name, scaled(default, f)) for code, name, default in hand_chosen_options()
                if wanted is None or code in wanted for f in FACTORS]
    from degrade.config import parse_option
    variants += [parse_option(text) for text in args.variant]
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(_one_case, c.name, args.cache, args.bench_seed, variants) for c in cases]
        for i, fut in enumerate(as_completed(futures), 1):
            rows.append(fut.result())
            print(f"{i}/{len(cases)} {rows[-1]['name']}", file=sys.stderr, flush=True)
    base = _score(rows, "default")
    table = {"split": args.split, "cases": len(rows), "default": base, "variants": {}}
    for code, name, value in variants:
        key = f"{code}.{name}={value}"
        s = _score(rows, key)
        moved = [f"{r['name']}: {r['outcomes']['default']['layer']} -> {r['outcomes'][key]['layer']}"
                 for r in rows if r["outcomes"][key]["layer"] != r["outcomes"]["default"]["layer"]]
        table["variants"][key] = {**s, "moved": moved}
        print(f"{key:45s} top-1 {base['layer_top1']:.3f} -> {s['layer_top1']:.3f}  false alarms "
              f"{base['false_alarms']} -> {s['false_alarms']}/{s['healthy']}  code recall "
              f"{base['code_recall']:.3f} -> {s['code_recall']:.3f}  moved {len(moved)}")
    if args.output:
        Path(args.output).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
