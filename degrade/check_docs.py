"""Check documentation generated from one source: each check's docstring (What it detects / Why it
matters / Evidence used / Fix) and its Option declarations (the thresholds with their sources).

`degrade checks CODE` prints `page(spec)`; docs/checks/ holds one page per check and an index,
written by `python -m degrade.check_docs docs/checks` (ruff's one-rule-per-file docs). A test
fails when the committed pages differ from what this module writes, so they never drift.
"""
from __future__ import annotations

import sys
from pathlib import Path

from degrade.check_spec import CheckSpec
from degrade.layers import WALK


def _value(v) -> str:
    return "none" if v is None else repr(v)


def options_table(spec: CheckSpec) -> str:
    if not spec.option_list:
        return "Options: none."
    rows = ["| option | default | what it means | source |", "|---|---|---|---|"]
    for o in spec.option_list:
        cells = [f"`{o.name}`", f"`{_value(o.default)}`", o.help or "", o.source or "**no source**"]
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(rows)


def page(spec) -> str:
    """One check's page (a CheckSpec or a Check class): title, needs, the docstring, the options
    with their sources."""
    spec = CheckSpec.of(spec)
    needs = ", ".join(sorted(spec.needs)) or "nothing"
    reads = spec.needs & {"model", "eval_data", "train_data"}
    tasks = f" Tasks: {', '.join(sorted(spec.tasks))}." if reads else " Tasks: any (reads no model or data)."
    return (f"# {spec.code} {spec.name}\n\nLayer: {spec.layer.value}. Needs: {needs}.{tasks}\n\n"
            f"{spec.doc()}\n\n## Options\n\n{options_table(spec)}\n\nOverride with "
            f"`--set {spec.code}.<option>=<value>` or `[tool.degrade.options.{spec.code}]`.\n")


def index(specs: list[CheckSpec]) -> str:
    lines = ["# Checks", "", "Generated from the checks' declarations by `python -m degrade.check_docs "
             "docs/checks`; do not edit by hand.", ""]
    for layer in WALK:
        mine = [s for s in specs if s.layer == layer]
        if not mine:
            continue
        lines += [f"## {layer.value}", "", "| code | name | what it detects |", "|---|---|---|"]
        lines += [f"| [{s.code}]({s.code}.md) | {s.name} | {s.summary()} |" for s in mine]
        lines.append("")
    return "\n".join(lines)


def pages(specs: list[CheckSpec]) -> dict[str, str]:
    """file name -> content for every page under docs/checks/."""
    out = {f"{s.code}.md": page(s) for s in specs}
    out["README.md"] = index(specs)
    return out


def main(argv: list[str]) -> int:
    import argparse
    from degrade.registry import builtin_specs
    ap = argparse.ArgumentParser(prog="python -m degrade.check_docs",
                                 description="Write docs/checks/ from the checks' declarations.")
    ap.add_argument("folder", nargs="?", default="docs/checks")
    folder = Path(ap.parse_args(argv).folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = pages(sorted(builtin_specs(), key=lambda s: s.code))
    for old in folder.glob("*.md"):
        if old.name not in written:
            old.unlink()
    for name, text in written.items():
        (folder / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(written)} pages to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
