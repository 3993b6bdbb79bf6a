"""--model-factory entry points for tests/test_instantiation.py: TinyGPT with one fault switched on.

A bare run dir has no config, so degrade calls these with no arguments (load.py)."""
import torch

from degrade.bench.tiny_gpt import TinyGPT


def healthy():
    return TinyGPT({})


def leaky():
    return TinyGPT({"causal": False})


def wrong_softmax():
    return TinyGPT({"softmax_dim": -2})


def dead_heads():
    return TinyGPT({"dead_heads": [0, 1, 2, 3]})


def no_positions():
    return TinyGPT({"positions": "none"})


class _UnwiredPositions(TinyGPT):
    """A position table that the forward pass forgets to add (a classic wiring bug)."""

    def forward(self, input_ids, attention_mask=None):
        x = self.tok(input_ids)
        for block in self.blocks:
            x = block(x, attention_mask)
        return self.head(self.ln_f(x))


class _ConstantPositions(TinyGPT):
    """Position ids that are all zero: the table is called but says nothing about order."""

    def forward(self, input_ids, attention_mask=None):
        x = self.tok(input_ids) + self.pos(torch.zeros_like(input_ids[0]))
        for block in self.blocks:
            x = block(x, attention_mask)
        return self.head(self.ln_f(x))


def unwired_positions():
    return _UnwiredPositions({})


def constant_positions():
    return _ConstantPositions({})
