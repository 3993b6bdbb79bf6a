"""A DegradeBench case: one small real training run, healthy or with exactly one injected fault.

Faults are injected the way real faults happen — in the data, the training configuration or the
model code — never as hints in the run dir. A case records the layer a careful engineer would
blame (`none` for healthy), the finding codes that name the fault, and one sentence on why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Built:
    """What a case's builder produced: the run dir and what `degrade diagnose` is given."""

    run_dir: Path
    train_data: Path | None = None
    eval_data: Path | None = None
    model_factory: str | None = None

    def diagnose_kwargs(self) -> dict:
        return {"train_data": self.train_data, "eval_data": self.eval_data,
                "model_factory": self.model_factory}


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # task family (copy | modadd | order | ... )
    layer: str  # expected verdict: none | observation | reachability | instantiation | perception
    codes: tuple[str, ...]  # finding codes that name the fault (empty for healthy runs)
    why: str  # one sentence: why this layer is the right answer
    build: Callable[[Path], Built] = field(compare=False)
    writer: str = "hf-trainer"  # hf-trainer | recorder
    quick: bool = False  # part of the --quick subset (v1; v2 draws a stratified one)
    # DegradeBench v2 (degrade/bench/v2): the generator's coordinates of the case
    model: str = ""  # model class
    fault: str = ""  # fault name (healthy, unfinished, ...)
    split: str = ""  # dev | calibration | test
    twin: str | None = None  # the healthy twin's case name
    proof: str = ""  # how the fault proves itself (v2/proof.py)
