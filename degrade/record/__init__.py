"""Writing a run from inside training, in degrade's native format (docs/recording.md).

- `Recorder` (degrade.record.recorder): plain PyTorch loops;
- `DegradeCallback` (degrade.record.callback): the Hugging Face Trainer;
- `DegradeLightningCallback` (degrade.record.lightning): a Lightning Trainer;
- `read_layer_stats`, `tensor_digest` (degrade.record.layer_stats): what checks use to read
  layers.jsonl and compare parameters with initial_digest.json.

Imported lazily: the callbacks pull in transformers and lightning.
"""
from __future__ import annotations

from degrade.record.manifest import FORMAT

__all__ = ["FORMAT", "Recorder", "DegradeCallback", "DegradeLightningCallback", "read_layer_stats",
           "LayerStats", "tensor_digest"]


def __getattr__(name):
    if name == "Recorder":
        from degrade.record.recorder import Recorder
        return Recorder
    if name == "DegradeCallback":
        from degrade.record.callback import DegradeCallback
        return DegradeCallback
    if name == "DegradeLightningCallback":
        from degrade.record.lightning import DegradeLightningCallback
        return DegradeLightningCallback
    if name in ("read_layer_stats", "LayerStats", "tensor_digest"):
        from degrade.record import layer_stats
        return getattr(layer_stats, name)
    raise AttributeError(f"module 'degrade.record' has no attribute {name!r}")
