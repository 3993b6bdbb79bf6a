"""Every built-in threshold is declared as an Option with a source, the specs read from source agree
with the classes, and docs/checks/ is exactly what degrade/check_docs.py generates.

Fast: specs are read from source; classes are imported once (torch included) for the comparison."""
from __future__ import annotations

from pathlib import Path

import pytest

from degrade.check_docs import pages
from degrade.check_spec import CheckSpec
from degrade.registry import builtin_specs

DOCS = Path(__file__).resolve().parent.parent / "docs" / "checks"

SPECS = sorted(builtin_specs(), key=lambda s: s.code)


def _unsourced(source: str) -> bool:
    return not (source or "").strip() or source.strip().lower().startswith("unsourced")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.code)
def test_every_option_has_a_source(spec):
    assert not isinstance(spec.load().options, dict), (
        f"{spec.code} declares its options as a dict; declare them as Option(name, default, source, "
        "help) (degrade/option.py)")
    missing = [o.name for o in spec.option_list if _unsourced(o.source)]
    assert not missing, (f"{spec.code}: option(s) {', '.join(missing)} have no source (a paper, a tool's "
                         "code, a measurement, or the argument behind the number)")
    for o in spec.option_list:
        assert o.help.strip(), f"{spec.code}.{o.name}: no help text"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.code)
def test_spec_from_source_matches_the_class(spec):
    loaded = CheckSpec.of(spec.load())
    for attr in ("code", "name", "layer", "needs", "options", "option_list"):
        assert getattr(spec, attr) == getattr(loaded, attr), f"{spec.code}: {attr} differs"


def test_docs_checks_are_generated():
    expected = pages(SPECS)
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in DOCS.glob("*.md")}
    assert set(on_disk) == set(expected), (
        f"docs/checks/ differs from the generated pages (missing: {sorted(set(expected) - set(on_disk))}, "
        f"extra: {sorted(set(on_disk) - set(expected))}): run `python -m degrade.check_docs docs/checks`")
    stale = sorted(name for name, text in expected.items() if on_disk[name] != text)
    assert not stale, f"stale pages {stale}: run `python -m degrade.check_docs docs/checks`"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.code)
def test_docstring_has_no_options_section(spec):
    lines = [line.strip() for line in spec.docstring.splitlines()]
    assert "Options:" not in lines, (f"{spec.code}: the docstring still has an Options: section; the "
                                     "generated page prints the declarations")
