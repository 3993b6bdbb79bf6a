"""A small decoder-only transformer as a plain nn.Module (nanoGPT-style), whose faults live in its
code the way real bugs do. `build(config)` is a --model-factory: `degrade.bench.tiny_gpt:build`.

config keys: vocab, d_model, n_layer, n_head, max_len, and the fault switches:
  causal (True): apply the causal mask; False is the classic mask leak;
  softmax_dim (-1): the axis the attention softmax normalises; -2 is the wrong-axis bug;
  positions ("learned"): "learned" absolute positions, or "none" (an order-blind model);
  window (None): attend only to the last `window` tokens (a too-short attention window);
  dead_heads ([]): heads whose output a bug zeroes;
  residual (True): False drops the attention residual connection.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

DEFAULTS = {"vocab": 17, "d_model": 64, "n_layer": 2, "n_head": 4, "max_len": 64, "causal": True,
            "softmax_dim": -1, "positions": "learned", "window": None, "dead_heads": [], "residual": True}


class Attention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg, self.n_head = cfg, cfg["n_head"]
        self.qkv = nn.Linear(cfg["d_model"], 3 * cfg["d_model"])
        self.o_proj = nn.Linear(cfg["d_model"], cfg["d_model"])

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        att = q @ k.transpose(-2, -1) / math.sqrt(C // self.n_head)
        allowed = torch.ones(T, T, dtype=torch.bool, device=x.device)
        if self.cfg["causal"]:
            allowed = torch.tril(allowed)
        if self.cfg["window"]:
            allowed &= torch.triu(torch.ones_like(allowed), diagonal=-(self.cfg["window"] - 1))
        mask = allowed[None, None]
        if pad_mask is not None:
            mask = mask & pad_mask[:, None, None, :].bool()
        att = att.masked_fill(~mask, float("-inf"))
        att = torch.nan_to_num(F.softmax(att, dim=self.cfg["softmax_dim"]))
        y = att @ v  # [B, heads, T, head_dim]
        for h in self.cfg["dead_heads"]:
            y[:, h] = 0
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        self.ln1, self.ln2 = nn.LayerNorm(cfg["d_model"]), nn.LayerNorm(cfg["d_model"])
        self.attn = Attention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg["d_model"], 4 * cfg["d_model"]), nn.GELU(),
                                 nn.Linear(4 * cfg["d_model"], cfg["d_model"]))

    def forward(self, x, pad_mask):
        a = self.attn(self.ln1(x), pad_mask)
        x = x + a if self.cfg["residual"] else a
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = {**DEFAULTS, **cfg}
        c = self.cfg
        self.tok = nn.Embedding(c["vocab"], c["d_model"])
        self.pos = nn.Embedding(c["max_len"], c["d_model"]) if c["positions"] == "learned" else None
        self.blocks = nn.ModuleList(Block(self.cfg) for _ in range(c["n_layer"]))
        self.ln_f = nn.LayerNorm(c["d_model"])
        self.head = nn.Linear(c["d_model"], c["vocab"], bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tok(input_ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(input_ids.shape[1], device=input_ids.device))
        for block in self.blocks:
            x = block(x, attention_mask)
        return self.head(self.ln_f(x))


def build(config: dict | None = None) -> TinyGPT:
    """The --model-factory entry point: degrade calls it with the run's recorded params."""
    model_cfg = (config or {}).get("model", config or {})
    return TinyGPT({k: v for k, v in model_cfg.items() if k in DEFAULTS})
