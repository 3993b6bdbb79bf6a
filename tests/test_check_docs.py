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

# Options whose default no paper, tool, measurement or argument backs yet: each is declared with
# source "unsourced: chosen by hand; to be measured on DegradeBench v2's dev split". This set may
# only shrink: give an option a real source, then delete its entry here (the test fails while an
# entry names an option that no longer exists or now has a source).
UNSOURCED_ALLOWED = {
    ("I302", "min_gain_fraction"),
    ("I303", "n_cuts"), ("I303", "min_reference_tv"),
    ("I304", "pad_tokens"), ("I304", "min_fraction"),
    ("I305", "min_fitted_fraction"), ("I305", "min_gap"), ("I305", "max_end_ratio"),
    ("I305", "max_end_sigmas"),
    ("I307", "collapse_tol"), ("I307", "collapse_input_ratio"),
    ("O103", "boilerplate_fraction"),
    ("O104", "min_clean_accuracy"), ("O104", "min_confidence"), ("O104", "train_ratio"),
    ("O104", "length_rate_ratio"), ("O104", "structure_p"), ("O104", "remap_share"),
    ("O105", "p_value"), ("O105", "unseen_accuracy_ratio"), ("O105", "axis_drop"), ("O105", "axis_z"),
    ("O105", "axis_feature_auc"),
    ("O106", "pileup_ratio"), ("O106", "trunc_drop"), ("O106", "trunc_z"), ("O106", "oov_fraction"),
    ("O106", "unk_warning"), ("O106", "unk_ratio"), ("O106", "unseen_token_warning"),
    ("O106", "majority_warning"), ("O106", "opposite_acc"), ("O106", "opposite_loss"),
    ("O106", "opposite_rho"), ("O106", "min_evals"),
    ("O107", "min_remapped_accuracy"), ("O107", "k"), ("O107", "topk_warning"), ("O107", "topk_gap"),
    ("O107", "max_chance_k"),
    ("P401", "min_acc_gain"), ("P401", "min_examples"),
    ("P402", "min_group"), ("P402", "table_separation_sd"),
    ("P403", "min_acc_gain"),
    ("P404", "n_slots"), ("P404", "min_token_coverage"), ("P404", "min_examples"),
    ("P406", "min_share"), ("P406", "min_examples"),
    ("R208", "min_train_accuracy"), ("R208", "min_accuracy_gap"),
    ("R209", "max_conflict_fraction"), ("R209", "min_near_length"),
    ("R210", "fall_ratio"),
}

SPECS = sorted(builtin_specs(), key=lambda s: s.code)


def _unsourced(source: str) -> bool:
    return not (source or "").strip() or source.strip().lower().startswith("unsourced")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.code)
def test_every_option_has_a_source(spec):
    assert not isinstance(spec.load().options, dict), (
        f"{spec.code} declares its options as a dict; declare them as Option(name, default, source, "
        "help) (degrade/option.py)")
    missing = [o.name for o in spec.option_list
               if _unsourced(o.source) and (spec.code, o.name) not in UNSOURCED_ALLOWED]
    assert not missing, (f"{spec.code}: option(s) {', '.join(missing)} have no source (a paper, a tool's "
                         "code, a measurement, or the argument behind the number)")
    for o in spec.option_list:
        assert o.help.strip(), f"{spec.code}.{o.name}: no help text"


def test_unsourced_allowed_only_shrinks():
    by_code = {s.code: s for s in SPECS}
    for code, name in sorted(UNSOURCED_ALLOWED):
        assert code in by_code, f"UNSOURCED_ALLOWED names {code}, which is not a built-in check"
        opts = {o.name: o for o in by_code[code].option_list}
        assert name in opts, f"UNSOURCED_ALLOWED names {code}.{name}, which no longer exists: remove it"
        assert _unsourced(opts[name].source), (f"{code}.{name} now has a source: remove it from "
                                               "UNSOURCED_ALLOWED")


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
