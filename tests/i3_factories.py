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


class TinySeq2Seq(torch.nn.Module):
    """A one-layer torch.nn.Transformer encoder-decoder called the way Hugging Face's are
    (input_ids, attention_mask, decoder_input_ids, ...); `causal=False` drops the decoder's mask,
    `use_mask=False` ignores the encoder's padding mask."""

    def __init__(self, cfg: dict):
        super().__init__()
        d, self.causal, self.use_mask = 32, bool(cfg.get("causal", True)), bool(cfg.get("use_mask", True))
        self.embed = torch.nn.Embedding(cfg["vocab_size"], d)
        self.pos = torch.nn.Embedding(64, d)
        self.core = torch.nn.Transformer(d, 4, 1, 1, 64, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(d, cfg["vocab_size"])

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                use_cache=None):
        def embed(x):
            return self.embed(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        T = decoder_input_ids.shape[1]
        mask = torch.nn.Transformer.generate_square_subsequent_mask(T) if self.causal else None
        pad = None if attention_mask is None or not self.use_mask else attention_mask == 0
        out = self.core(embed(input_ids), embed(decoder_input_ids), tgt_mask=mask,
                        src_key_padding_mask=pad, memory_key_padding_mask=pad)
        return self.head(out)


def seq2seq(cfg):
    return TinySeq2Seq(cfg)


def dropout_in_eval():
    """TinyGPT whose attention output goes through F.dropout(..., training=True): dropout that
    ignores model.eval(), as attention kernels given a fixed dropout_p do."""
    model = TinyGPT({})
    for block in model.blocks:
        block.attn.o_proj.register_forward_hook(
            lambda mod, args, out: torch.nn.functional.dropout(out, 0.1, training=True))
    return model
