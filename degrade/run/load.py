"""Model loading: AutoModelForCausalLM / AutoModelForSequenceClassification built from the
checkpoint's config (no hub access), custom modeling code only with --trust-remote-code, and
plain nn.Modules through --model-factory module:callable. Weights are read by files.load_state_dict
(safetensors first, torch.load(weights_only=True) otherwise).
"""
from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from degrade.errors import InputError
from degrade.run.files import find_weights, load_state_dict, read_json

CAUSAL_LM = "causal-lm"
SEQ_CLS = "sequence-classification"


@dataclass
class ModelHandle:
    """A loaded model and how to call it: logits(input_ids, attention_mask) -> [B, T, V] or [B, C]."""

    module: nn.Module
    task: str  # causal-lm | sequence-classification
    source: str  # hf | factory
    path: Path
    device: str = "cpu"
    accepts_mask: bool = True

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        input_ids = input_ids.to(self.device)
        if attention_mask is not None and self.accepts_mask:
            out = self.module(input_ids=input_ids, attention_mask=attention_mask.to(self.device))
        else:
            out = self.module(input_ids) if self.source == "factory" else self.module(input_ids=input_ids)
        out = getattr(out, "logits", out)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float()

    @property
    def positions(self) -> int | None:
        """The longest sequence the model's position table holds, when it has one."""
        cfg = getattr(self.module, "config", None)
        for key in ("n_positions", "max_position_embeddings"):
            if cfg is not None and getattr(cfg, key, None):
                return int(getattr(cfg, key))
        return None


def load_model(folder: Path, *, factory: str | None = None, trust_remote_code: bool = False,
               device: str = "cpu", run_config: dict | None = None,
               task_hint: str | None = None) -> ModelHandle:
    weights = find_weights(folder)
    if weights is None:
        raise InputError(folder, "has no model weights (model.safetensors or pytorch_model.bin)")
    if factory:
        module = _from_factory(factory, run_config or {})
        task = task_hint or CAUSAL_LM
        source = "factory"
    else:
        module, task = _from_config(folder, trust_remote_code)
        source = "hf"
    state = load_state_dict(weights)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if source == "hf" and hasattr(module, "tie_weights"):
        module.tie_weights()
        tied = {k for k, _ in module.named_parameters()}  # names that survive tying
        missing = [k for k in missing if k in tied and not _is_tied(module, k)]
    if missing or unexpected:
        raise InputError(weights, f"does not match the model: {len(missing)} missing "
                                  f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    module.to(device).eval()
    accepts = source == "hf" or "attention_mask" in _forward_params(module)
    return ModelHandle(module, task, source, Path(folder), device, accepts)


def _from_config(folder: Path, trust_remote_code: bool) -> tuple[nn.Module, str]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    cfg_path = folder / "config.json"
    cfg_dict = read_json(cfg_path)
    if cfg_dict.get("auto_map") and not trust_remote_code:
        raise InputError(cfg_path, "needs custom modeling code (auto_map); pass --trust-remote-code "
                                   "if you trust this checkpoint")
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code,
                                            local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(cfg_path, f"is not a usable transformers config ({str(e).splitlines()[0][:160]})") from None
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "SequenceClassification" in archs:
        auto, task = AutoModelForSequenceClassification, SEQ_CLS
    else:
        auto, task = AutoModelForCausalLM, CAUSAL_LM
    try:
        model = auto.from_config(config, trust_remote_code=trust_remote_code)
    except ValueError as e:
        raise InputError(cfg_path, f"names no causal-LM or classification model ({str(e).splitlines()[0][:160]})") from None
    return model, task


def _from_factory(spec: str, run_config: dict) -> nn.Module:
    if ":" not in spec:
        raise InputError(None, f"--model-factory {spec!r} must look like module:callable")
    mod_name, attr = spec.split(":", 1)
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # the user's own module, in the current directory
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(None, f"--model-factory {spec}: cannot import ({e})") from None
    # A factory that can take a positional argument gets the run's config, even when it has a default.
    takes_config = any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                       for p in inspect.signature(fn).parameters.values())
    module = fn(run_config) if takes_config else fn()
    if not isinstance(module, nn.Module):
        raise InputError(None, f"--model-factory {spec} returned a {type(module).__name__}, not an nn.Module")
    return module


def _forward_params(module: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _is_tied(module: nn.Module, name: str) -> bool:
    keys = getattr(module, "_tied_weights_keys", None) or []
    if isinstance(keys, dict):
        keys = list(keys)
    return any(name == k or name.endswith(k) for k in keys)


def load_tokenizer(folders: list[Path]) -> Any:
    """The run's tokenizer from the first folder that has one (local files only), else None."""
    from transformers import AutoTokenizer
    for folder in folders:
        if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
            try:
                return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            except Exception:  # noqa: BLE001 - try the next folder
                continue
    return None
