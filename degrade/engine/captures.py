"""What the shared eval pass records besides the logits, through forward hooks that always come
off: per head and MLP, the largest |output| and the mean output (I302's exact-zero test, mean
ablation); per MLP unit, how often it is positive (R211's dead units). A capture whose hooks meet
a module they cannot read records nothing for it; the pass itself never fails because of one."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from degrade.probing.ablation import ComponentStats, capture_stats
from degrade.probing.activations import UnitCounter, find_activations
from degrade.probing.components import find_components


class ComponentCapture:
    name = "components"

    def __init__(self, module: torch.nn.Module, heads=None, mlps=None):
        """All the model's heads and MLPs, or only the given ones."""
        self.components = find_components(module)
        self.heads = self.components.heads if heads is None else heads
        self.mlps = self.components.mlps if mlps is None else mlps
        self.stats: ComponentStats | None = None

    @contextmanager
    def attached(self, module: torch.nn.Module):
        with capture_stats(module, self.heads, self.mlps) as stats:
            self.stats = stats
            yield

    def batch(self, mask: torch.Tensor) -> None:
        if self.stats is not None:
            self.stats.mask = mask

    def result(self):
        return self.components, self.stats


class UnitCapture(UnitCounter):
    def __init__(self, module: torch.nn.Module):
        mods, self.how = find_activations(module)
        super().__init__(mods)

    def result(self):
        return super().result(), self.how
