"""Bounded JSON: every document degrade reads goes through parse_json.

Defined outcomes (docs/design-notes.md, "Reading untrusted input"):
- UTF-8, with or without a BOM; UTF-16/32 with a BOM. Anything else: rejected with the offset.
- Nesting deeper than MAX_DEPTH: rejected (Python's own parser would raise RecursionError).
- Integers longer than MAX_INT_DIGITS digits: read as floats (inf beyond 1e308), not refused
  (Python refuses more than 4,300 digits with a ValueError).
- NaN, Infinity, -Infinity: accepted (the Trainer writes them for a diverged loss).
- Lone UTF-16 surrogates (\\ud800 without its pair): replaced by U+FFFD, so that no renderer
  meets a string it cannot encode.
- Duplicate keys: the last one wins (as every JSON library does).
"""
from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any, Iterator

from degrade.errors import InputError
from degrade.inputs.files import is_lfs_pointer, open_stream, read_bytes
from degrade.inputs.limits import MAX_DEPTH, MAX_INT_DIGITS, MAX_LINE_BYTES

_KEEP = b'[]{}"\\'
_DELETE = bytes(i for i in range(256) if i not in _KEEP)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE = re.compile("[\ud800-\udfff]")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def pointer(*parts: object) -> str:
    """A JSON pointer (RFC 6901) naming a field: pointer("log_history", 3, "step")."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"


def type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _int(text: str) -> int | float:
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else float(text)


def decode(raw: bytes, path: Path | str | None) -> tuple[str, str]:
    """(text, encoding): UTF-8 unless a BOM says otherwise."""
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(encoding), encoding
    except UnicodeDecodeError as e:
        raise InputError(path, f"is not {encoding.upper().replace('-SIG', '')} text (invalid byte "
                               f"0x{raw[e.start]:02x} at offset {e.start})") from None


def max_depth(raw: bytes) -> int:
    """The deepest nesting of a valid JSON text: its brackets outside strings, counted in C."""
    import numpy as np
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return 0
    skeleton = _STRING.sub(b"", raw.translate(None, _DELETE))
    b = np.frombuffer(skeleton, np.uint8)
    step = (b == ord("[")).astype(np.int32) + (b == ord("{")) - (b == ord("]")) - (b == ord("}"))
    return int(np.cumsum(step).max(initial=0))


def parse_json(raw: bytes, path: Path | str | None, line: int | None = None) -> Any:
    """A JSON document from bytes; `line` names the line of a JSON-lines file in messages."""
    where = f"line {line} " if line is not None else ""
    if not raw.strip():
        raise InputError(path, f"{where}is empty")
    text, encoding = decode(raw, path)
    try:
        doc = json.loads(text, parse_int=_int)
    except json.JSONDecodeError as e:
        at = f"column {e.colno}" if line is not None else f"line {e.lineno}, column {e.colno}"
        raise InputError(path, f"{where}is not valid JSON ({at}: {e.msg})") from None
    except RecursionError:
        raise InputError(path, f"{where}nests deeper than {MAX_DEPTH} levels") from None
    if max_depth(raw if encoding.startswith("utf-8") else text.encode("utf-8", "surrogatepass")) > MAX_DEPTH:
        raise InputError(path, f"{where}nests deeper than {MAX_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(raw):
        doc = _without_lone_surrogates(doc)
    return doc


def _without_lone_surrogates(doc: Any) -> Any:
    # json.loads joins valid surrogate pairs, so any surrogate left in a string is a lone one.
    def fix(v):
        if isinstance(v, str):
            return _LONE.sub("\ufffd", v)
        if isinstance(v, dict):
            return {fix(k): fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return fix(doc)


def read_json(path: Path, kind: str = "json", root: Path | None = None) -> Any:
    """A whole JSON document, within the size bound of its kind (limits.MAX_BYTES)."""
    return parse_json(read_bytes(path, kind, root), path)


def read_object(path: Path, kind: str = "json", root: Path | None = None) -> dict:
    doc = read_json(path, kind, root)
    if not isinstance(doc, dict):
        raise InputError(path, f"must be a JSON object, not {type_name(doc)}")
    return doc


def iter_jsonl(path: Path, root: Path | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, record) of a JSON-lines file, one line at a time. A process killed
    mid-write leaves a partial last line: that one line is dropped."""
    path = Path(path)
    if is_lfs_pointer(path):
        raise InputError(path, "is a Git LFS pointer, not JSON lines (git lfs pull)")
    with open_stream(path, root) as f:
        first = True
        for i, line in enumerate(_lines(f, path), 1):
            if first:
                line, first = line.removeprefix(codecs.BOM_UTF8), False
            if not line.strip():
                continue
            try:
                record = parse_json(line, path, line=i)
            except InputError:
                if f.peek(1):
                    raise
                return  # a torn last line
            yield i, record


def _lines(f, path: Path) -> Iterator[bytes]:
    while line := f.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            raise InputError(path, f"has a line longer than {MAX_LINE_BYTES >> 20} MB")
        yield line
