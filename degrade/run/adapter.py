"""PEFT adapters: a checkpoint that holds adapter_model.safetensors + adapter_config.json (LoRA,
IA3, ...) instead of full weights, loaded with the `peft` library onto its base model.

The base is `--base-model PATH`, else the adapter's `base_model_name_or_path`: a local folder, or
a model already in the local Hugging Face cache (`local_files_only`: never downloaded). The adapter
tensors are read by weights_file.open_weights (safetensors first; a .bin with weights_only=True)
and put into the model with peft's own set_peft_model_state_dict, so peft never opens a file.
A LoRA adapter is then merged into the base weights (exact up to float rounding): every check
sees a plain transformers model, and the adapter's own tensors stay on the handle for R214.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from degrade.errors import InputError, one_line
from degrade.inputs.files import is_regular
from degrade.inputs.json_doc import read_object

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
CONFIG = "adapter_config.json"
# peft's task_type -> (transformers auto class, degrade task)
TASKS = {"CAUSAL_LM": ("AutoModelForCausalLM", "causal-lm"),
         "SEQ_CLS": ("AutoModelForSequenceClassification", "sequence-classification"),
         "SEQ_2_SEQ_LM": ("AutoModelForSeq2SeqLM", "seq2seq")}


@dataclass(frozen=True)
class Adapter:
    """What R214 reads: the adapter's config and its tensors (name -> tensor, as saved)."""
    path: Path
    config: dict
    tensors: dict


def find_adapter(folder: Path) -> Path | None:
    if not is_regular(folder / CONFIG):
        return None
    return next((folder / n for n in ADAPTER_FILES if is_regular(folder / n)), None)


def adapter_config(folder: Path, root: Path | None = None) -> dict:
    return read_object(folder / CONFIG, "adapter config", root)


def base_model_dir(folder: Path, given: str | None, root: Path | None = None) -> tuple[Path | None, str]:
    """(the base model's folder, or None; where it was looked for, for the skip reason)."""
    if given:
        p = Path(given).expanduser()
        if not (p / "config.json").is_file():
            raise InputError(p, "is not a model folder (--base-model needs config.json and weights)")
        return p, str(p)
    name = adapter_config(folder, root).get("base_model_name_or_path")
    if not isinstance(name, str) or not name:
        return None, f"{folder / CONFIG} names no base_model_name_or_path"
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser(), name
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(name, local_files_only=True)), name
    except Exception:  # noqa: BLE001 - not cached (or not a repo id): the reason says what to pass
        return None, f"{name} (not a local folder, not in the local Hugging Face cache)"


def load_adapter_model(folder: Path, base: Path, trust_remote_code: bool, root: Path | None = None):
    """(the model with the adapter applied, its degrade task, the Adapter)."""
    import peft

    from degrade.run.hf_auto import auto_config, auto_pretrained, refuse_remote_code
    from degrade.run.weights_file import open_weights
    cfg_doc = adapter_config(folder, root)
    weights = find_adapter(folder)
    state = open_weights(weights, root)
    tensors = {k: state[k] for k in state}
    config = auto_config(base, trust_remote_code)
    refuse_remote_code(base / "config.json", config.to_dict(), trust_remote_code, "modeling")
    auto_name, task = TASKS.get(cfg_doc.get("task_type") or "", (None, None))
    if auto_name is None:
        auto_name, task = (("AutoModelForSeq2SeqLM", "seq2seq") if getattr(config, "is_encoder_decoder", False)
                           else ("AutoModelForCausalLM", "causal-lm"))
    kwargs: dict[str, Any] = {}
    if task == "sequence-classification":
        heads = [t for k, t in tensors.items() if "modules_to_save" in k and k.endswith(".weight")
                 and t.ndim == 2]
        if heads:
            kwargs["num_labels"] = int(heads[-1].shape[0])  # the saved head's last layer
    try:
        model = auto_pretrained(auto_name, base, trust_remote_code, **kwargs)
        peft_config = peft.PeftConfig.from_peft_type(**{k: v for k, v in cfg_doc.items()
                                                        if k not in ("auto_mapping", "peft_version")})
        wrapped = peft.get_peft_model(model, peft_config)
        result = peft.set_peft_model_state_dict(wrapped, tensors)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers' and peft's own errors on these files
        raise InputError(folder / CONFIG, f"could not be applied to the base model {base} "
                                          f"({type(e).__name__}: {one_line(e, 160)})") from None
    unexpected = list(getattr(result, "unexpected_keys", None) or [])
    if unexpected:
        raise InputError(weights, f"does not fit the base model {base}: {len(unexpected)} unexpected "
                                  f"tensor(s), e.g. {unexpected[:2]}")
    module = wrapped.merge_and_unload() if hasattr(wrapped, "merge_and_unload") and _mergeable(peft_config) \
        else wrapped
    return module, task, Adapter(weights, cfg_doc, tensors)


def _mergeable(config) -> bool:
    return str(getattr(config, "peft_type", "")).split(".")[-1] in ("LORA", "IA3", "LOHA", "LOKR", "ADALORA")
