"""config.json, type-checked before transformers sees it, and its sizes checked against the weights
before any model is built.

- The config is a JSON object; `model_type` a string, `architectures` a list of strings,
  `auto_map` an object; size fields (vocab_size, hidden_size, n_layer, ...) non-negative integers
  below 2^31, dropout rates numbers in [0, 1], at the top level and in nested sub-configs
  (text_config, encoder, decoder, ...).
- A layer count above the number of tensors in the weights is refused at once: every layer holds
  at least one tensor, and building 10^12 layers (even on the meta device) would never finish.
- The rest of the size check is done by building the model on the meta device (no memory) and
  comparing its parameter shapes with the weights' declared shapes (degrade/run/load.py).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from degrade.errors import InputError
from degrade.inputs.json_doc import pointer, read_object, type_name

MAX_SIZE = 2 ** 31
LAYER_KEYS = frozenset({"n_layer", "n_layers", "num_layers", "num_hidden_layers", "num_decoder_layers",
                        "encoder_layers", "decoder_layers"})
SIZE_KEYS = LAYER_KEYS | {
    "vocab_size", "type_vocab_size", "hidden_size", "n_embd", "d_model", "d_ff", "d_kv", "n_inner",
    "intermediate_size", "encoder_ffn_dim", "decoder_ffn_dim", "n_head", "num_heads",
    "num_attention_heads", "num_key_value_heads", "encoder_attention_heads",
    "decoder_attention_heads", "n_positions", "max_position_embeddings", "n_ctx", "num_labels",
    "num_experts"}


# Dropout rates (attn_pdrop, hidden_dropout_prob, dropout_rate, ...): torch refuses any value
# outside [0, 1] in every forward pass, eval mode included, so such a config cannot be scored.
_PROBABILITY_KEY = re.compile(r"(dropout|pdrop)(_prob|_rate|_p)?$")


def read_config(path: Path, root: Path | None = None) -> dict[str, Any]:
    doc = read_object(path, "model config", root)
    validate_config(doc, path)
    return doc


def eos_token_ids(config: dict | None) -> set[int]:
    """config.json's eos_token_id, an int or a list of them (Llama 3 names several)."""
    eos = (config or {}).get("eos_token_id")
    if isinstance(eos, int):
        return {eos}
    return {e for e in eos if isinstance(e, int)} if isinstance(eos, list) else set()


def validate_config(doc: dict, path: Path, at: tuple = (), depth: int = 0) -> None:
    for key, kind in (("model_type", str), ("architectures", list), ("auto_map", dict)):
        v = doc.get(key)
        if v is not None and not isinstance(v, kind):
            raise InputError(path, f"{pointer(*at, key)}: expected {type_name(kind())}, got {type_name(v)}")
    if not all(isinstance(a, str) for a in doc.get("architectures") or []):
        raise InputError(path, f"{pointer(*at, 'architectures')}: expected a list of strings")
    for key, v in doc.items():
        if key in SIZE_KEYS and v is not None and not _size_ok(v):
            got = repr(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else type_name(v)
            raise InputError(path, f"{pointer(*at, key)}: expected a non-negative integer below "
                                   f"2^31, got {got}")
        if _PROBABILITY_KEY.search(key) and v is not None and not (
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1):
            raise InputError(path, f"{pointer(*at, key)}: expected a probability in [0, 1], got "
                                   f"{v!r}" if isinstance(v, (int, float)) else f"{pointer(*at, key)}: "
                                   f"expected a probability in [0, 1], got {type_name(v)}")
        if isinstance(v, dict) and depth < 3:  # text_config, encoder, decoder, vision_config ...
            validate_config(v, path, (*at, key), depth + 1)


def _size_ok(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_SIZE


def layer_counts(doc: dict, at: tuple = (), depth: int = 0) -> list[tuple[str, int]]:
    """(JSON pointer, value) of every layer-count field, nested sub-configs included."""
    found = [(pointer(*at, k), v) for k, v in doc.items() if k in LAYER_KEYS and _size_ok(v)]
    for k, v in doc.items():
        if isinstance(v, dict) and depth < 3:
            found += layer_counts(v, (*at, k), depth + 1)
    return found


def check_layers_fit(doc: dict, path: Path, n_tensors: int, weights: Path) -> None:
    """Every layer holds at least one tensor: a config claiming more layers than the weights hold
    tensors describes another model (or is corrupt)."""
    for where, n in layer_counts(doc):
        if n > n_tensors:
            raise InputError(path, f"{where} says {n:,} layers, but {weights.name} holds only "
                                   f"{n_tensors:,} tensors: the config does not describe these weights")
