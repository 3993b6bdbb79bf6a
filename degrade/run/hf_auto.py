"""The only place degrade calls transformers' Auto* loaders, and each call passes trust_remote_code
explicitly from the user's --trust-remote-code flag, with local files only.

Why explicit: transformers treats trust_remote_code=None as "ask", and asks on stdin; with
`echo y | degrade diagnose` that answer ran a run dir's tokenization_*.py. With False it refuses.
degrade also refuses an auto_map itself, before transformers sees the folder, so that the message
names the file and the flag (tests/test_remote_code.py plants marker-writing modules for the
config, the model, the tokenizer and a processor).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from degrade.errors import InputError, one_line
from degrade.inputs.files import is_regular
from degrade.inputs.json_doc import read_object

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "merges.txt", "spiece.model", "tokenizer.model", "sentencepiece.bpe.model",
                   "special_tokens_map.json", "added_tokens.json")


def refuse_remote_code(path: Path, doc: dict, trust_remote_code: bool, what: str) -> None:
    if doc.get("auto_map") and not trust_remote_code:
        raise InputError(path, f"needs custom {what} code (auto_map); pass --trust-remote-code if "
                               "you trust this checkpoint")


def auto_config(folder: Path, trust_remote_code: bool):
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code,
                                          local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for a bad config
        raise InputError(folder / "config.json", f"is not a usable transformers config ({one_line(e, 160)})") from None


def model_from_config(auto_class, config, trust_remote_code: bool):
    return auto_class.from_config(config, trust_remote_code=trust_remote_code)


def tokenizer_problem(folder: Path, trust_remote_code: bool, root: Path | None) -> str | None:
    """Why the folder's tokenizer may not be loaded (custom code, a link out, a FIFO...), or None."""
    from degrade.inputs.files import confined, regular_file
    for name in TOKENIZER_FILES:
        p = folder / name
        try:
            if p.exists() or p.is_symlink():
                confined(p, root)
                regular_file(p)
        except InputError as e:
            return str(e)
    cfg = folder / "tokenizer_config.json"
    if is_regular(cfg):
        try:
            refuse_remote_code(cfg, read_object(cfg, "tokenizer", root), trust_remote_code, "tokenizer")
        except InputError as e:
            return str(e)
    return None


def auto_tokenizer(folder: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code,
                                         local_files_only=True)


def auto_pretrained(auto_name: str, folder: Path, trust_remote_code: bool, **kwargs: Any):
    """transformers' `auto_name` (e.g. AutoModelForSequenceClassification) from a local folder: a
    PEFT adapter's base model (run/adapter.py), whose folder degrade did not choose to trust."""
    import transformers
    return getattr(transformers, auto_name).from_pretrained(
        str(folder), local_files_only=True, trust_remote_code=trust_remote_code, **kwargs)
