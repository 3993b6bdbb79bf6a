"""Weights read one tensor at a time (degrade/run/weights_file.py) and the activation bound on
batch sizes (degrade/engine/batching.py): what keeps a 124M-parameter diagnosis within
2 x checkpoint + 1 GB (docs/benchmarks.md, "What a diagnosis costs")."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from degrade.checks.reachability.weights import relative_change
from degrade.engine.batching import activation_bytes, rows_per_batch
from degrade.errors import InputError
from degrade.run.weights_file import open_weights


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(5, 3, generator=g), "a.bias": torch.zeros(5),
            "half": torch.randn(4, 2, generator=g).to(torch.bfloat16), "ids": torch.arange(6),
            "empty": torch.zeros(0, 3)}


def test_safetensors_read_back_exactly_in_their_dtype(tmp_path):
    t = _tensors()
    save_file(t, tmp_path / "model.safetensors")
    w = open_weights(tmp_path / "model.safetensors")
    assert sorted(w) == sorted(t)
    for k, v in t.items():
        assert w[k].dtype == v.dtype and torch.equal(w[k], v)
    assert w.info("half").dtype == "BF16" and w.is_float("half") and not w.is_float("ids")
    assert w.info("a.weight").shape == (5, 3)


def test_sharded_index_and_torch_file(tmp_path):
    t = _tensors()
    save_file({k: t[k] for k in ("a.weight", "a.bias")}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({k: t[k] for k in ("half", "ids")}, tmp_path / "model-00002-of-00002.safetensors")
    wmap = {"a.weight": "model-00001-of-00002.safetensors", "a.bias": "model-00001-of-00002.safetensors",
            "half": "model-00002-of-00002.safetensors", "ids": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    w = open_weights(tmp_path / "model.safetensors.index.json")
    assert sorted(w) == sorted(wmap) and torch.equal(w["half"], t["half"])
    torch.save(t, tmp_path / "pytorch_model.bin")
    b = open_weights(tmp_path / "pytorch_model.bin")
    assert torch.equal(b["a.weight"], t["a.weight"]) and b.info("ids").shape == (6,)


def test_truncated_tensor_data_is_bad_input(tmp_path):
    save_file(_tensors(), tmp_path / "model.safetensors")
    raw = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(raw[:-8])
    with pytest.raises(InputError, match="truncated"):
        open_weights(tmp_path / "model.safetensors")


def test_relative_change_streams_and_finds_frozen_tensors(tmp_path):
    a = _tensors()
    b = {**a, "a.weight": a["a.weight"] + 1.0}
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    ch = relative_change(open_weights(tmp_path / "a.safetensors"), open_weights(tmp_path / "b.safetensors"))
    assert ch["a.bias"]["delta"] == 0.0 and ch["half"]["delta"] == 0.0
    assert ch["a.weight"]["delta"] == pytest.approx(15 ** 0.5) and ch["a.weight"]["dim"] == 2
    assert "ids" not in ch and "empty" not in ch


def test_activation_bound_sizes_classifier_batches():
    """A two-logit classifier is sized by its activations (BERT-base at 128 tokens), a small model
    is not limited, and a backward keeps every layer."""
    base = (12, 768, 12)
    assert rows_per_batch(128, 2) == 64  # logits alone would allow the maximum
    fwd, bwd = rows_per_batch(128, 2, base), rows_per_batch(128, 2, base, backward=True)
    assert 1 <= bwd < fwd < 64
    assert rows_per_batch(16, 2, (2, 64, 4)) == 64
    assert activation_bytes(base, 128, True) == 6 * activation_bytes(base, 128, False)
