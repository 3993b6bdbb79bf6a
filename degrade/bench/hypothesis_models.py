"""Plain nn.Module classifiers that embody architectural hypotheses HF models cannot express.

Used by the perception bench cases (degrade/bench/cases/perception.py) and diagnosed through
--model-factory. Each is correctly implemented: what is wrong is the hypothesis, not the code.

- `Encoder` with positions "none": a bidirectional transformer encoder without any position
  mechanism. Attention is permutation-invariant, so the [CLS] output is a function of the bag of
  tokens: the hypothesis "order does not matter".
- `BagOfEmbeddings`: mean of the token embeddings through an MLP (a deep-averaging network):
  the hypothesis "a sequence is the bag of its tokens".

Both take input_ids (and attention_mask), return logits [batch, classes], and, given `labels`,
a {"loss", "logits"} dict so that the Hugging Face Trainer can train them as they are.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ENCODER = {"vocab": 12, "d_model": 64, "n_layer": 2, "n_head": 4, "max_len": 32, "classes": 2,
           "positions": "none"}
BAG = {"vocab": 12, "d_model": 64, "classes": 2}


def _output(logits: torch.Tensor, labels: torch.Tensor | None):
    if labels is None:
        return logits
    return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class Encoder(nn.Module):
    """A BERT-like encoder (pre-norm blocks, pooled at the first real token, [CLS]); positions
    "learned" or "none"."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = c = {**ENCODER, **cfg}
        self.tok = nn.Embedding(c["vocab"], c["d_model"])
        self.pos = nn.Embedding(c["max_len"], c["d_model"]) if c["positions"] == "learned" else None
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(
            c["d_model"], c["n_head"], 4 * c["d_model"], dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(c["n_layer"]))
        self.ln_f = nn.LayerNorm(c["d_model"])
        self.head = nn.Linear(c["d_model"], c["classes"])

    def forward(self, input_ids, attention_mask=None, labels=None):
        x = self.tok(input_ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(input_ids.shape[1], device=input_ids.device))
        pad = None if attention_mask is None else ~attention_mask.bool()
        for block in self.blocks:
            x = block(x, src_key_padding_mask=pad)
        # pool the first real token ([CLS]), wherever padding put it
        first = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if attention_mask is None \
            else attention_mask.long().argmax(1)
        cls = x[torch.arange(x.shape[0], device=x.device), first]
        return _output(self.head(self.ln_f(cls)), labels)


class BagOfEmbeddings(nn.Module):
    """Mean of the (unpadded) token embeddings, then a 2-layer MLP: a deep-averaging network."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = c = {**BAG, **cfg}
        self.tok = nn.Embedding(c["vocab"], c["d_model"])
        self.mlp = nn.Sequential(nn.Linear(c["d_model"], 4 * c["d_model"]), nn.GELU(),
                                 nn.Linear(4 * c["d_model"], c["classes"]))

    def forward(self, input_ids, attention_mask=None, labels=None):
        x = self.tok(input_ids)
        m = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        m = m.to(x.dtype)[..., None]
        mean = (x * m).sum(1) / m.sum(1).clamp(min=1)
        return _output(self.mlp(mean), labels)


def order_blind_encoder():
    """--model-factory for the order-blind encoder case (vocab 12, no positions)."""
    return Encoder({"positions": "none"})


def bag_of_embeddings():
    """--model-factory for the bag-of-embeddings case (vocab 12)."""
    return BagOfEmbeddings({})
