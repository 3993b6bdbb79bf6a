"""Models whose instantiation faults live in their code, the way real bugs do: DegradeBench's
instantiation cases train them and give them to degrade through --model-factory.

- `FaultyGPT`: TinyGPT (degrade.bench.tiny_gpt) whose LayerNorms can carry a hand-written bug
  (`norm_bug`): "no_sqrt" divides by the variance instead of the standard deviation (a classic
  slip in a hand-rolled LayerNorm), "seq_axis" normalises over the sequence axis instead of the
  features. Everything else (mask leak, softmax axis, dead heads, sizes) uses TinyGPT's own switches.
- `BertIgnoringPadding`: a Hugging Face BertForSequenceClassification whose forward drops the
  attention mask (a wrapper that "simplifies" the call), saved as a normal checkpoint.

The zero-argument factories below are the exact models the cases trained: a run written by the
HF Trainer from a plain nn.Module has no config, so the factory itself must know the sizes.
"""
from __future__ import annotations

import torch
from torch import nn

from degrade.bench.tiny_gpt import DEFAULTS, TinyGPT


class BuggyLayerNorm(nn.Module):
    """A hand-written LayerNorm with the same parameters (weight, bias) as nn.LayerNorm."""

    def __init__(self, d: int, bug: str = "none", eps: float = 1e-5):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))
        self.bug, self.eps = bug, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = 1 if self.bug == "seq_axis" else -1
        mu = x.mean(dim, keepdim=True)
        var = x.var(dim, keepdim=True, unbiased=False)
        scale = var + self.eps if self.bug == "no_sqrt" else torch.sqrt(var + self.eps)
        return (x - mu) / scale * self.weight + self.bias


class FaultyGPT(TinyGPT):
    def __init__(self, cfg: dict, norm_bug: str = "none"):
        super().__init__(cfg)
        d = self.cfg["d_model"]
        if norm_bug != "none":
            for block in self.blocks:
                block.ln1, block.ln2 = BuggyLayerNorm(d, norm_bug), BuggyLayerNorm(d, norm_bug)
            self.ln_f = BuggyLayerNorm(d, norm_bug)

    def forward(self, input_ids, attention_mask=None, labels=None):
        """Logits as TinyGPT gives them; with labels (the HF Trainer's call) also the shifted loss."""
        logits = super().forward(input_ids, attention_mask)
        if labels is None:
            return logits
        from transformers.modeling_outputs import CausalLMOutput
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                           labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)


def _bert_ignoring_padding_class():
    from transformers import BertForSequenceClassification

    class BertIgnoringPadding(BertForSequenceClassification):
        """The bug: the attention mask is accepted and silently dropped."""

        def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
            return super().forward(input_ids=input_ids, attention_mask=None, labels=labels, **kwargs)

    return BertIgnoringPadding


# ---- the models the bench cases train (and the factories degrade is given) ------------------
MODADD_P = 31
COPY_VOCAB = 16
PRESETS = {
    "modadd_leak": ({"vocab": MODADD_P + 1, "max_len": 8, "causal": False}, "none"),
    "copy_softmax_over_queries": ({"vocab": COPY_VOCAB + 1, "softmax_dim": -2}, "none"),
    "copy_dead_heads": ({"vocab": COPY_VOCAB + 1, "dead_heads": [1, 3]}, "none"),
    "copy_too_small": ({"vocab": COPY_VOCAB + 1, "d_model": 4, "n_layer": 2, "n_head": 1}, "none"),
    "copy_norm_no_sqrt": ({"vocab": COPY_VOCAB + 1}, "no_sqrt"),
}


def preset(name: str) -> FaultyGPT:
    cfg, bug = PRESETS[name]
    assert set(cfg) <= set(DEFAULTS)
    return FaultyGPT(cfg, bug)


def modadd_leak():
    return preset("modadd_leak")


def copy_softmax_over_queries():
    return preset("copy_softmax_over_queries")


def copy_dead_heads():
    return preset("copy_dead_heads")


def copy_too_small():
    return preset("copy_too_small")


def copy_norm_no_sqrt():
    return preset("copy_norm_no_sqrt")


def bert_ignoring_padding(config: dict):
    """--model-factory for the padding case: degrade passes the checkpoint's config.json."""
    from transformers import BertConfig
    return _bert_ignoring_padding_class()(BertConfig.from_dict(dict(config)))


def new_bert_ignoring_padding(vocab: int, *, max_len: int = 64, seed: int = 0):
    from transformers import BertConfig
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=max_len, num_labels=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
    return _bert_ignoring_padding_class()(cfg)
