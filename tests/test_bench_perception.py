"""The perception bench cases are well-formed (building them is the bench's job, not a unit test's)."""
from __future__ import annotations

import inspect

from degrade.bench.cases.perception import CASES
from degrade.registry import builtin_checks


def test_perception_cases_are_distinct_and_cover_families():
    assert len(CASES) >= 6 and len({c.name for c in CASES}) == len(CASES)
    assert all(c.layer == "perception" and c.codes and c.why for c in CASES)
    assert len({c.family for c in CASES}) >= 2 and {c.family for c in CASES} <= {"copy", "modadd", "order"}
    assert sum(c.quick for c in CASES) == 2
    codes = {c.code for c in builtin_checks()}
    assert all(code in codes and code.startswith("P4") for c in CASES for code in c.codes)


def test_builders_keep_data_out_of_the_run_dir():
    # a builder trains into folder/"run" and writes data next to it, never inside it
    for c in CASES:
        fn = getattr(c.build, "func", c.build)
        src = inspect.getsource(fn)
        assert "hf_run(" in src or "plain_run(" in src, c.name
