"""--model-factory entry points for tests/test_instantiation_health.py (I304-I307): small models
with one code fault each. A bare run dir has no config, so degrade calls these with no arguments."""
import torch

from degrade.bench.faulty_models import FaultyGPT, new_bert_ignoring_padding
from degrade.bench.tiny_gpt import Block, TinyGPT


def healthy():
    return TinyGPT({})


def tiny():
    return TinyGPT({"d_model": 4, "n_layer": 1, "n_head": 1})


class _MaskDropped(TinyGPT):
    """Accepts attention_mask and never uses it."""

    def forward(self, input_ids, attention_mask=None):
        return super().forward(input_ids, None)


def mask_dropped():
    return _MaskDropped({})


class _NoMaskArgument(TinyGPT):
    """A bidirectional model with no attention_mask argument at all."""

    def forward(self, input_ids):
        return super().forward(input_ids, None)


def no_mask_argument_bidirectional():
    return _NoMaskArgument({"causal": False})


def no_mask_argument_causal():
    return _NoMaskArgument({})


def softmax_over_queries():
    return TinyGPT({"softmax_dim": -2})


def softmax_over_batch():
    return TinyGPT({"softmax_dim": 0})


def norm_over_sequence():
    return FaultyGPT({}, norm_bug="seq_axis")


def norm_without_sqrt():
    m = FaultyGPT({}, norm_bug="no_sqrt")
    with torch.no_grad():  # inputs far from unit variance, where the missing sqrt shows
        m.tok.weight.mul_(4)
    return m


class _Growing(Block):
    def forward(self, x, pad_mask):
        return 6 * super().forward(x, pad_mask)


def growing():
    m = TinyGPT({"n_layer": 4})
    m.blocks = torch.nn.ModuleList(_Growing(m.cfg) for _ in range(4))
    return m


class _Collapsing(Block):
    def forward(self, x, pad_mask):
        y = super().forward(x, pad_mask)
        return y.mean(1, keepdim=True).expand_as(y) + 1e-5 * y


def collapsing():
    m = TinyGPT({})
    m.blocks = torch.nn.ModuleList(_Collapsing(m.cfg) for _ in range(2))
    return m


def bert_ignoring_padding():
    return new_bert_ignoring_padding(12)
