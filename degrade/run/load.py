"""Model loading: AutoModelForCausalLM / AutoModelForSequenceClassification /
AutoModelForSeq2SeqLM (any config with is_encoder_decoder) built from the checkpoint's config (no hub access), custom modeling code only with --trust-remote-code, and
plain nn.Modules through --model-factory module:callable. Weights are read one tensor at a time by
weights_file.open_weights (safetensors first, torch.load(weights_only=True) otherwise).
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

from degrade.errors import InputError, one_line
from degrade.inputs.files import is_regular
from degrade.inputs.model_config import check_layers_fit, read_config
from degrade.inputs.weights_header import TensorInfo, declared_tensors
from degrade.run.files import find_weights
from degrade.run.hf_auto import (auto_config, auto_tokenizer, model_from_config, refuse_remote_code,
                                 tokenizer_problem)
from degrade.run.weights_file import open_weights

from degrade.run.tasks import CAUSAL_LM, SEQ2SEQ, SEQ_CLS, TOKEN_TASKS  # noqa: E402 - re-exported for the checks


@dataclass
class ModelHandle:
    """A loaded model and how to call it: logits(input_ids, attention_mask) -> [B, T, V] or [B, C].
    For a seq2seq model input_ids is the decoder sequence and `source` the encoder's input."""

    module: nn.Module
    task: str  # causal-lm | sequence-classification | seq2seq
    source: str  # hf | factory
    path: Path
    device: str = "cpu"
    accepts_mask: bool = True
    adapter: Any = None  # run/adapter.py's Adapter when the model came from a PEFT adapter

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               positions: list[int] | None = None,
               source: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits [B, T, V] (or [B, C]); with `positions`, only those positions' [B, len, V]:
        a Hugging Face causal LM then computes no other (logits_to_keep), so a probe that reads a
        few positions of long sequences never holds a whole batch's vocabulary-wide logits.
        A seq2seq model needs `source`: (encoder input_ids, encoder attention mask)."""
        input_ids = input_ids.to(self.device)
        kwargs = {}
        if positions is not None and self.keeps_logits():
            kwargs["logits_to_keep"] = torch.as_tensor(positions, device=self.device)
        if self.task == SEQ2SEQ:
            if source is None:
                raise ValueError("a seq2seq model needs the source sequences")
            out = self.module(input_ids=source[0].to(self.device), attention_mask=source[1].to(self.device),
                              decoder_input_ids=input_ids, use_cache=False,
                              decoder_attention_mask=None if attention_mask is None else attention_mask.to(self.device))
        elif attention_mask is not None and self.accepts_mask:
            out = self.module(input_ids=input_ids, attention_mask=attention_mask.to(self.device), **kwargs)
        elif self.source == "factory":
            out = self.module(input_ids)
        else:
            out = self.module(input_ids=input_ids, **kwargs)
        out = getattr(out, "logits", out)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if positions is not None and not kwargs:
            out = out[:, list(positions)]
        return out.float()

    def keeps_logits(self) -> bool:
        if "_keeps" not in self.__dict__:
            self.__dict__["_keeps"] = self.source == "hf" and "logits_to_keep" in forward_params(self.module)
        return self.__dict__["_keeps"]

    @property
    def out_size(self) -> int | None:
        """Logits per position (vocabulary or classes), from the output layer or the config; None
        until the first forward shows it (engine/forward.py records it then)."""
        if "_out_size" not in self.__dict__:
            cfg = getattr(self.module, "config", None)
            size = _embedding_rows(self.module, "get_output_embeddings") if self.task in TOKEN_TASKS else None
            size = size or getattr(cfg, "num_labels" if self.task == SEQ_CLS else "vocab_size", None)
            if isinstance(size, int) and size > 0:
                self.__dict__["_out_size"] = size
        return self.__dict__.get("_out_size")

    def fit_problem(self, examples) -> str | None:
        """Why `examples` cannot be given to this model (inputs/model_fit.py), or None."""
        from degrade.inputs.model_fit import fit_problem
        emb = _embedding_rows(self.module, "get_input_embeddings")
        out = _embedding_rows(self.module, "get_output_embeddings")
        cfg = getattr(self.module, "config", None)
        classes = getattr(cfg, "num_labels", None) if self.task == SEQ_CLS and self.source == "hf" else None
        learned = self.positions if _has_learned_positions(self.module) else None
        return fit_problem(examples, vocab=emb, n_out=out if self.task in TOKEN_TASKS else None,
                           n_classes=classes, max_len=learned)

    @property
    def positions(self) -> int | None:
        """The longest sequence the model's position table holds, when it has one."""
        cfg = getattr(self.module, "config", None)
        for key in ("n_positions", "max_position_embeddings"):
            if cfg is not None and getattr(cfg, key, None):
                return int(getattr(cfg, key))
        return None


def resolve_device(device: str) -> str:
    """auto -> cuda when torch sees a GPU, else cpu; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(None, f"--device {device}: no CUDA device is available (use --device cpu)")
    return device


def load_model(folder: Path, *, factory: str | None = None, trust_remote_code: bool = False,
               device: str = "auto", run_config: dict | None = None,
               run_config_path: Path | None = None, task_hint: str | None = None,
               root: Path | None = None) -> ModelHandle:
    """The checkpoint's model, its sizes checked against the weights on the meta device first:
    a config that does not describe these weights is refused before anything is allocated."""
    weights = find_weights(folder)
    if weights is None:
        raise InputError(folder, "has no model weights (model.safetensors or pytorch_model.bin)")
    shapes = declared_tensors(weights, root)
    state = None
    if shapes is None:  # torch files: the shapes are known once read (weights_only=True)
        state = open_weights(weights, root)
        shapes = {k: TensorInfo(str(v.dtype), tuple(v.shape)) for k, v in state.items()}
    if factory:
        check_layers_fit(run_config or {}, run_config_path or folder / "config.json", len(shapes), weights)
        build, task, source = (lambda: _from_factory(factory, run_config or {})), task_hint or CAUSAL_LM, "factory"
    else:
        config_doc = read_config(folder / "config.json", root)
        refuse_remote_code(folder / "config.json", config_doc, trust_remote_code, "modeling")
        check_layers_fit(config_doc, folder / "config.json", len(shapes), weights)
        build, task = _from_config(folder, trust_remote_code)
        source = "hf"
    meta = _on_meta(build)
    module = build() if meta is None else None
    _check_shapes(module if meta is None else meta, shapes, weights)
    module = module if module is not None else build()
    _copy_in(module, state if state is not None else open_weights(weights, root))
    if source == "hf" and hasattr(module, "tie_weights"):
        module.tie_weights()
    device = resolve_device(device)
    module.to(device).eval()
    accepts = source == "hf" or "attention_mask" in forward_params(module)
    return ModelHandle(module, task, source, Path(folder), device, accepts)


def load_with_adapter(folder: Path, base: Path, *, trust_remote_code: bool = False, device: str = "auto",
                      root: Path | None = None) -> ModelHandle:
    """A PEFT adapter checkpoint on its base model (run/adapter.py), merged where peft can."""
    from degrade.run.adapter import load_adapter_model
    module, task, adapter = load_adapter_model(folder, base, trust_remote_code, root)
    device = resolve_device(device)
    module.to(device).eval()
    return ModelHandle(module, task, "hf", Path(folder), device, True, adapter)


def _on_meta(build):
    """The model built on the meta device (shapes, no memory), or None when its code cannot be."""
    try:
        with torch.device("meta"):
            return build()
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - a factory may not support meta tensors: build it for real
        return None


def _check_shapes(module: nn.Module, shapes: dict, weights: Path) -> None:
    """The model's parameters and persistent buffers against the weights' declared tensors.
    Tied parameters (one tensor under several names) are satisfied by any of their names."""
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    named = module.state_dict(keep_vars=True)
    aliases: dict[int, list[str]] = {}
    for name, t in named.items():
        aliases.setdefault(id(t), []).append(name)
    missing = [names[0] for names in aliases.values()
               if not any(n in shapes for n in names) and not any(_is_tied(module, n) for n in names)]
    unexpected = [k for k in shapes if k not in named]
    wrong = [f"{k} is {list(shapes[k].shape)} in the weights, {list(t.shape)} in the model"
             for k, t in named.items() if k in shapes and tuple(t.shape) != shapes[k].shape]
    if missing or unexpected or wrong:
        raise InputError(weights, f"does not match the model: {len(missing)} missing (e.g. {missing[:2]}), "
                                  f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(wrong)} "
                                  f"of another shape{' (e.g. ' + wrong[0] + ')' if wrong else ''}")


def _from_config(folder: Path, trust_remote_code: bool):
    """(a builder of the model, its task) from the folder's config."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification
    config = auto_config(folder, trust_remote_code)
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "SequenceClassification" in archs:
        auto, task = AutoModelForSequenceClassification, SEQ_CLS
    elif getattr(config, "is_encoder_decoder", False):
        auto, task = AutoModelForSeq2SeqLM, SEQ2SEQ
    else:
        auto, task = AutoModelForCausalLM, CAUSAL_LM

    def build():
        try:
            return model_from_config(auto, config, trust_remote_code)
        except Exception as e:  # noqa: BLE001 - transformers' own code on the run's config: any
            # failure (a ValueError, a ZeroDivisionError for n_embd 0, ...) means the config is bad
            raise InputError(folder / "config.json", f"names no causal-LM, seq2seq or classification model "
                                                     f"this config can build ({type(e).__name__}: "
                                                     f"{one_line(e, 160)})") from None
    return build, task


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


def _embedding_rows(module: nn.Module, getter: str) -> int | None:
    try:
        emb = getattr(module, getter)() if hasattr(module, getter) else None
    except (NotImplementedError, AttributeError):
        return None
    if isinstance(emb, nn.Embedding):
        return emb.num_embeddings
    if isinstance(emb, nn.Linear):
        return emb.out_features
    return None


def _has_learned_positions(module: nn.Module) -> bool:
    from degrade.probing.components import find_positions
    return any(p.kind == "learned" for p in find_positions(module))


def forward_params(module: nn.Module) -> set[str]:
    """The keyword arguments the module's forward takes. A subclass whose forward passes **kwargs
    on to its base takes what the base's forward takes too (a user's GPT-2 subclass that overrides
    forward(input_ids, **kwargs) still takes attention_mask and the cache)."""
    names: set[str] = set()
    for cls in type(module).__mro__:
        fn = cls.__dict__.get("forward")
        if fn is None:
            continue
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            break
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def _is_tied(module: nn.Module, name: str) -> bool:
    keys = getattr(module, "_tied_weights_keys", None) or []
    if isinstance(keys, dict):
        keys = list(keys)
    return any(name == k or name.endswith(k) for k in keys)


def load_tokenizer(folders: list[Path], trust_remote_code: bool = False,
                   root: Path | None = None) -> Any:
    """The run's tokenizer from the first folder that has one (local files only), else None.
    A tokenizer that needs custom code is refused without the flag (InputError names the file)."""
    for folder in folders:
        if not any(is_regular(folder / f) for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
            continue
        problem = tokenizer_problem(folder, trust_remote_code, root)
        if problem is not None:
            raise InputError(None, problem)
        try:
            return auto_tokenizer(folder, trust_remote_code)
        except Exception:  # noqa: BLE001 - try the next folder
            continue
    return None


def _copy_in(module: torch.nn.Module, weights) -> None:
    """Load tensor by tensor (each through load_state_dict, so modules' own load hooks still run):
    the peak is the model plus its largest tensor, not the model plus a second full copy."""
    for name in weights:
        module.load_state_dict({name: weights[name]}, strict=False)
