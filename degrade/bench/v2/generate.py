"""DegradeBench v2 cases from one bench seed: (family, model class, fault, severity, seed) -> a run.

Groups are the (family, model class) pairs a kind allows. Each group gets SEEDS_PER_GROUP
generator seeds; each generator seed makes its healthy run (the twin) and FAULTS_PER_SEED faulty
runs. A generator seed belongs to one split, dealt per group from SPLIT_CYCLE shuffled by the
bench seed: splits are by generator seed, so a twin and its faults never straddle two splits.
Faults are dealt per split, each slot taking the fault the split holds fewest of among those the
group allows (ties: the fault fewer groups allow first, so that the scarce ones are not crowded
out, then an order shuffled by the bench seed): every fault is in every split as long as a split
has a slot for it. Severities are drawn from the generator seed (faults.py). Practitioner bugs
(faults.BUG_FAULTS, built by bugs.py and the bug_*.py modules) take BUGS_PER_SEED more slots per
dev and test generator seed of the groups they apply to (the calibration split is left to the
faults the calibration was fitted on), dealt the same way among themselves (ties: the bug fewer
model classes take first): adding one leaves every other case as it was.

The committed bench seed is BENCH_SEED; `degrade bench --bench-seed N` deals a fresh set
(new generator seeds, so new sizes, severities and splits).
"""
from __future__ import annotations

import hashlib
from collections import Counter
from functools import partial

import numpy as np

from degrade.bench.case import Case
from degrade.bench.v2.bug_eos import build_eos_case
from degrade.bench.v2.bug_models import build_model_bug_case
from degrade.bench.v2.bug_precision import build_fp16_case
from degrade.bench.v2.bug_tokens import build_bos_case
from degrade.bench.v2.bugs import build_bug_case
from degrade.bench.v2.build import build_case
from degrade.bench.v2.faults import BUG_FAULTS, FAULTS, applicable
from degrade.bench.v2.models import MODELS
from degrade.bench.v2.recipe import Recipe, healthy_recipe
from degrade.bench.v2.tasks import kind_of

BENCH_SEED = 2026
SEEDS_PER_GROUP = 5
FAULTS_PER_SEED = 2
BUGS_PER_SEED = 2  # practitioner bugs (faults.BUG_FAULTS) per dev/test generator seed; none on calibration
SPLIT_CYCLE = ("dev", "dev", "calibration", "test", "test")
BUG_BUILDERS = {"eos-masked-as-padding": build_eos_case, "fp16-overflow": build_fp16_case,  # else bugs.py
                "doubled-bos": build_bos_case, "attention-dropout-in-eval": build_model_bug_case,
                "kv-cache-off-by-one": build_model_bug_case, "position-ids-dropped": build_model_bug_case}
# Left out, measured on one or two seeds each at the healthy recipe's budget (tasks.py has them):
# kv retrieval (27-46% held-out accuracy), multi-digit addition (74% after 1,500 steps), Dyck
# (56% after 1,200 steps), bigram detection (62% after 1,000 steps), histogram (60-62%); modadd on
# tinygpt's plain linear-decay loop (at most 75% in 600 steps; the HF runs use the grokking
# recipe's constant LR). sort-llama and reverse-gpt2 are left out for the build's time budget.
GROUPS = [("copy", m) for m in ("gpt2", "llama", "tinygpt", "bart")] + \
         [("sort", m) for m in ("gpt2", "tinygpt")] + [("reverse", m) for m in ("llama", "bart")] + \
         [(f, m) for f in ("translate", "modadd") for m in ("gpt2", "llama")] + \
         [(f, m) for f in ("order", "lexical") for m in ("bert", "distilbert")] + [("review", "minilm")]


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


def cases(bench_seed: int = BENCH_SEED) -> list[Case]:
    allowed = {(f, m): [x for x in applicable(kind_of(f), m, f) if x.name != "healthy"] for f, m in GROUPS}
    reach = {name: sum(name in {x.name for x in fs} for fs in allowed.values()) for name in FAULTS}
    shuffled = np.random.default_rng(_seed(bench_seed, "faults")).permutation(len(FAULTS))
    rank = dict(zip(FAULTS, shuffled))
    dealt: dict[tuple[str, str], int] = {}  # (split, fault) -> cases dealt so far
    out = []
    for family, model in GROUPS:
        assert kind_of(family) == MODELS[model]
        rng = np.random.default_rng(_seed(bench_seed, family, model))
        splits = [SPLIT_CYCLE[i] for i in rng.permutation(len(SPLIT_CYCLE))]
        for g in range(SEEDS_PER_GROUP):
            seed = _seed(bench_seed, family, model, g) % 100_000
            split = splits[g % len(splits)]
            base = healthy_recipe(family, model, seed)
            twin = f"v2-{family}-{model}-s{seed}-healthy"
            out.append(_case(twin, base, FAULTS["healthy"], split, None))
            left = list(allowed[(family, model)])
            for _ in range(FAULTS_PER_SEED):
                fault = min(left, key=lambda f: (dealt.get((split, f.name), 0), reach[f.name], rank[f.name]))
                left.remove(fault)
                dealt[(split, fault.name)] = dealt.get((split, fault.name), 0) + 1
                params = fault.draw(np.random.default_rng(_seed(seed, fault.name)), base.to_dict())
                out.append(_case(f"v2-{family}-{model}-s{seed}-{fault.name}", base.with_fault(params),
                                 fault, split, twin, params))
            bugs = [b for b in BUG_FAULTS.values() if kind_of(family) in b.kinds and model in b.models]
            for _ in range(BUGS_PER_SEED if bugs and split != "calibration" else 0):
                bug = min(bugs, key=lambda f: (dealt.get((split, f.name), 0), len(f.models), f.name))
                bugs.remove(bug)
                dealt[(split, bug.name)] = dealt.get((split, bug.name), 0) + 1
                params = bug.draw(np.random.default_rng(_seed(seed, bug.name)), base.to_dict())
                out.append(_case(f"v2-{family}-{model}-s{seed}-{bug.name}", base, bug, split, twin, params,
                                 build=partial(BUG_BUILDERS.get(bug.name, build_bug_case), recipe=base, bug=params)))
    return out


def _case(name: str, recipe: Recipe, fault, split: str, twin: str | None, params: dict | None = None,
          build=None) -> Case:
    writer = recipe.writer
    drawn = ", ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in (params or {}).items())
    why = f"{fault.name}" + (f" ({drawn})" if drawn else "")
    return Case(name, recipe.family, fault.layer, fault.codes, why, build or partial(build_case, recipe=recipe),
                writer, model=recipe.model, fault=fault.name, split=split, twin=twin, proof=fault.proof)


def quick(all_cases: list[Case], n: int = 30) -> list[Case]:
    """A stratified subset of at most `n` cases made of whole groups (a healthy twin with its
    faults), so that every faulty case in it can prove itself against its twin. Groups are taken
    greedily: each time the one that adds the most faults the subset does not hold yet (ties: the
    model class it holds fewest of, then by name), so that every fault is in it as far as `n`
    allows and no model class crowds the others out. A third of it is healthy twins. The
    practitioner bugs are left out: tests/test_bench_bugs.py builds each of them small."""
    groups: dict[str, list[Case]] = {}
    for c in sorted((c for c in all_cases if c.fault not in BUG_FAULTS), key=lambda c: c.name):
        groups.setdefault(c.twin or c.name, []).append(c)
    out: list[Case] = []
    while True:
        fits = [g for g in groups.values() if len(out) + len(g) <= n]
        if not fits:
            return out
        faults = {c.fault for c in out}
        models = Counter(c.model for c in out)
        best = min(fits, key=lambda g: (-len({c.fault for c in g} - faults), models[g[0].model], g[0].name))
        out += best
        del groups[best[0].twin or best[0].name]
