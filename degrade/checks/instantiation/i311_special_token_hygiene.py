"""I311 special-token-hygiene: BOS doubled or missing, pad inside content, train and eval
tokenised differently, token ids outside the embedding."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

from degrade.check import Check, CheckSkipped
from degrade.errors import one_line
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.data import IGNORE_INDEX
from degrade.stats import num


class SpecialTokenHygiene(Check):
    """Special tokens used another way than the tokenizer, the model or the other split uses them.

    What it detects, in the rows the model reads (a seq2seq run's source; the decoder side is
    range-checked only), with config.json's bos/eos/pad/decoder_start ids and vocab_size and the
    run's tokenizer when the run dir holds one: (1) doubled BOS, rows opening [BOS, BOS]: a chat
    template that writes BOS, tokenised by a tokenizer that adds it again (vLLM #16976, llama.cpp
    #7107); an error when at least `min_share` of a split's rows do and `chance_ratio` times more
    often than the id's rate inside rows makes likely (a config BOS that is also a content symbol
    raises nothing). (2) The tokenizer's template missing: at least `missing_share` of a split's
    rows lack the head (BOS, [CLS]) or tail (EOS, [SEP]) the tokenizer adds to any text (tokenised
    with add_special_tokens=False, or cut after tokenising): a warning; info when the split looks
    packed (`packed_share` of its rows of one length). (3) Pad inside content: the pad id between
    real tokens in at least `min_share` of a split's rows (rows are stored unpadded; trailing pads
    are only counted): an error when the tokenizer names the id a special token, else a warning
    (the config's pad id may be a content symbol). A pad id equal to BOS, EOS or UNK is not
    tested: there it is real content (pad = eos, transformers #23530). (4) Train and eval tokenised
    differently: the shares of rows opening with BOS, the template's head or a split's marker (its
    most frequent first token, when it opens `marker_share` of the rows), closing with EOS, the
    tail or a marker, holding a special id inside, and (when only one split is piled up at its
    longest length: rows of three or more lengths, `pileup_ratio` times as many at the longest as
    at the next, the mark of truncation) at that length; a warning for a difference of `min_diff` and
    `z` standard errors (two-proportion z-test). (5) Any input, source or label id (-100 aside)
    below 0 or at or past the embedding (vocab_size; else the recorder's params, else the model's
    input embedding): an error. Parts that cannot be tested say why (evidence: not_tested).

    Why it matters: a model trained with one BOS and served with two, or evaluated without the
    EOS it learned, is scored on inputs it never saw; pad ids inside content are attended to and
    learned as text; an id past the embedding crashes a GPU kernel or silently reads another row.

    Evidence used: the eval data and, when given, the training data (token ids), config.json and
    the run's tokenizer (local files, no remote code).

    Fix: tokenise templated text with add_special_tokens=False (or drop BOS from the template);
    tokenise train and eval with one function (template, special tokens, truncation side); pad
    in the collator, after packing, with an attention mask; retokenise with the model's
    tokenizer, or resize the embedding to it.
    """

    code, name, layer = "I311", "special-token-hygiene", Layer.INSTANTIATION
    needs = frozenset({"eval_data"})
    tasks = frozenset({"causal-lm", "seq2seq", "sequence-classification"})
    options = (
        Option("min_share", 0.05,
               source="design choice: a template or collator bug touches every row it builds (vLLM #16976, "
                      "llama.cpp #7107), so a real case is near 100%; 5% still catches one bad source in twenty",
               help="Share of a split's rows with a doubled BOS, or pad inside content, for a finding."),
        Option("chance_ratio", 10.0,
               source="design choice: a content symbol opens rows in pairs about as often as its squared rate "
                      "inside rows (ratio near 1); a doubled BOS far more (BOS is rare inside rows)",
               help="The doubled-start share must be this multiple of the id's squared rate at positions 2+."),
        Option("missing_share", 0.5,
               source="design choice: a tokenizer templates every row; a majority without it was tokenised "
                      "another way, a minority may be left-truncation or a few raw rows",
               help="Share of a split's rows lacking the tokenizer's head or tail for a warning."),
        Option("packed_share", 0.9, source="design choice: packed chunks share one length, natural rows do not",
               help="Share of rows of one length from which a split counts as packed (template part: info)."),
        Option("marker_share", 0.5,
               source="design choice: a marker opens (closes) most rows; a mode picked after the fact among "
                      "content tokens would inflate the z-test",
               help="Share of its split's rows a most frequent first (last) token must reach to be compared."),
        Option("min_diff", 0.2,
               source="design choice: a fifth of the rows, far above the noise of a few hundred rows and far "
                      "below the all-or-nothing difference a changed template makes",
               help="Difference of a share between train and eval for a warning (with z)."),
        Option("z", 3.0, source="statistical convention: 3 standard errors (several shares are compared)",
               help="Two-proportion z a train/eval difference must also reach."),
        Option("pileup_ratio", 3.0,
               source="design choice: natural lengths thin out toward the maximum; truncation stacks every "
                      "longer row on it, a multiple of the next length's count",
               help="Rows at the longest length over rows at the next length for a split to count as truncated."),
    )

    def run(self, run):
        o, cfg = self.opts, run.config or {}
        data = {"eval": run.eval_data}
        if run.train_data is not None:  # optional: without it part 4 is not tested
            data["train"] = run.train_data
        rows = {s: [r for r in (d.model_input(i) for i in range(len(d))) if r] for s, d in data.items()}
        if not any(rows.values()):
            raise CheckSkipped("every eval and training row is empty")
        tok, tok_why = _tokenizer(run)
        bos, eos, pad = (_ids(cfg.get(k)) | _ids(getattr(tok, k, None))
                         for k in ("bos_token_id", "eos_token_id", "pad_token_id"))
        tok_special = _ids(list(getattr(tok, "all_special_ids", None) or []))
        specials = bos | eos | pad | tok_special | _ids(cfg.get("decoder_start_token_id"))
        head, tail = _template(tok) if tok is not None else ([], [])
        ev: dict[str, Any] = {"rows": {s: len(r) for s, r in rows.items()}, "special_ids": sorted(specials),
                              "tokenizer_template": {"head": head, "tail": tail} if tok else None}
        skip: dict[str, str] = {}
        out = []  # (severity, confidence, message, fix)

        # (1) doubled BOS: the template's first token (else config BOS) twice at the start
        marks = set(head[:1]) or bos
        if not marks:
            skip["doubled_bos"] = "no BOS id (config.json, tokenizer) and no tokenizer template head"
        else:
            part, hits = ev.setdefault("doubled_bos", {}), {}
            for s, rs in rows.items():
                n2 = sum(len(r) - 2 for r in rs if len(r) > 2)
                inner = sum(r[2:].count(m) for r in rs for m in marks) / n2 if n2 else 0.0
                share = sum(len(r) > 1 and r[0] == r[1] and r[0] in marks for r in rs) / max(len(rs), 1)
                part[s] = {"share": num(share, 3), "inner_rate": num(inner, 3)}
                if share >= o["min_share"] and share >= o["chance_ratio"] * inner ** 2:
                    hits[s] = share
            if hits:
                out.append(("error", 0.9, f"{_where(hits)} start with BOS twice (id {sorted(marks)}): a template "
                            "that writes BOS, tokenised by a tokenizer that adds it again.",
                            "Tokenise templated text with add_special_tokens=False (or drop BOS from the "
                            "template) and retrain."))

        # (2) the tokenizer's head / tail missing from the rows
        if tok is None or not (head or tail):
            skip["template"] = tok_why or "the tokenizer adds no special tokens to a plain text"
        else:
            part, hits, packed = ev.setdefault("template", {}), {}, {}
            for s, rs in rows.items():
                miss = {k: sum((r[:len(m)] if k == "head" else r[-len(m):]) != m for r in rs) / max(len(rs), 1)
                        for k, m in (("head", head), ("tail", tail)) if m}
                packed[s] = Counter(map(len, rs)).most_common(1)[0][1] >= o["packed_share"] * len(rs)
                part[s] = {**{f"missing_{k}": num(v, 3) for k, v in miss.items()}, "packed": packed[s]}
                if max(miss.values()) >= o["missing_share"]:
                    hits[s] = max(miss.values())
            if hits:
                chunks = all(packed[s] for s in hits)  # packed chunks start and end mid-text
                out.append(("info" if chunks else "warning", 0.6, f"{_where(hits)} lack the "
                            + " or ".join(f"{k} {m}" for k, m in (("head", head), ("tail", tail)) if m)
                            + " the tokenizer puts around every text" + (" (the rows look packed)." if chunks
                            else ": tokenised with add_special_tokens=False, or cut after tokenising."),
                            "Tokenise every split with the tokenizer's own template (or the chat template the "
                            "model is served with), truncating through the tokenizer."))

        # (3) pad between real tokens (a pad id shared with BOS/EOS/UNK marks real content too:
        # pad = eos, transformers #23530; pad = unk, a common Llama recipe)
        pads = pad - bos - eos - _ids(getattr(tok, "unk_token_id", None))
        if not pads:
            skip["pad_inside"] = ("no pad id" if not pad else f"the pad id {sorted(pad)} is also BOS/EOS/UNK: "
                                  "inside a row it is real content")
        else:
            part, hits = ev.setdefault("pad_inside", {}), {}
            confirmed = bool(pads & tok_special)  # else the config's pad id may be a content symbol
            for s, rs in rows.items():
                cores = [_strip(r, pads) for r in rs if not pads.isdisjoint(r)]
                inside = sum(not pads.isdisjoint(r[a:b]) for r, a, b in cores)
                share = inside / max(len(rs), 1)
                part[s] = {"rows_with_pad_inside": inside, "share": num(share, 3),
                           "rows_ending_in_pad": sum(b < len(r) for r, a, b in cores)}
                if share >= o["min_share"]:
                    hits[s] = share
            if hits:
                out.append(("error" if confirmed else "warning", 0.9 if confirmed else 0.5,
                            f"{_where(hits)} hold the pad id {sorted(pads)} between real tokens"
                            + ("" if confirmed else " (config.json's pad id; no tokenizer says it is not also a "
                               "content symbol)") + ": padding inside content is attended to and learned.",
                            "Pack first, then pad in the collator with an attention mask; never concatenate "
                            "padded pieces."))

        # (4) train vs eval: first/last tokens, specials inside rows, truncation pile-up
        if not rows.get("train") or not rows["eval"]:
            skip["train_vs_eval"] = ("no training data (pass --train-data PATH)" if "train" not in rows
                                     else "a split is empty")
        else:
            feats: dict[str, Any] = {}  # name -> f(row, split) -> bool
            firsts, lasts = ({m for rs in rows.values() for m, c in Counter(r[i] for r in rs).most_common(1)
                              if c >= o["marker_share"] * len(rs)} for i in (0, -1))
            for m in sorted(firsts | set(head[:1]) | bos):
                feats[f"starts_with_{m}"] = lambda r, s, m=m: r[0] == m
            for m in sorted(lasts | set(tail[-1:]) | eos):
                feats[f"ends_with_{m}"] = lambda r, s, m=m: r[-1] == m
            feats["special_inside"] = lambda r, s: not specials.isdisjoint(r[1:-1])
            top = {s: max(len(r) for r in rs) for s, rs in rows.items()}
            piled = {s: _piled(rs, o["pileup_ratio"]) for s, rs in rows.items()}
            if piled["train"] != piled["eval"]:  # only one split is cut: compare its pile-up share
                feats["at_max_length"] = lambda r, s: len(r) == top[s]
            part, flagged = ev.setdefault("train_vs_eval", {"max_length": top, "truncated": piled}), []
            for name, f in feats.items():
                p = {s: sum(f(r, s) for r in rows[s]) / len(rows[s]) for s in ("train", "eval")}
                zz = _z(p["train"], len(rows["train"]), p["eval"], len(rows["eval"]))
                part[name] = {"train": num(p["train"], 3), "eval": num(p["eval"], 3), "z": num(zz, 3)}
                if abs(p["train"] - p["eval"]) >= o["min_diff"] and abs(zz) >= o["z"]:
                    flagged.append(f"{name} {p['train']:.0%} in train vs {p['eval']:.0%} in eval")
            if flagged:
                out.append(("warning", 0.7, "Train and eval were tokenised differently: " + "; ".join(flagged)
                            + ". The model is evaluated on inputs it never saw in training.",
                            "Tokenise both splits with one function: the same template, special tokens, "
                            "max_length and truncation side."))

        # (5) ids outside the embedding (or negative; -100 is allowed in labels)
        vocab, where = _vocab(run, cfg)
        if vocab is None:
            skip["ids_in_range"] = where
        else:
            part, hits = ev.setdefault("ids_in_range", {"embedding_size": vocab, "from": where}), {}
            for s, d in data.items():
                cols = {"input_ids": d.input_ids, "source": d.source, "labels": d.labels}
                bad = {c: sum(_out_of_range(r, vocab, c == "labels") for r in rs) for c, rs in cols.items() if rs}
                part[s] = {f"{c}_rows_out_of_range": n for c, n in bad.items()}
                hits.update({f"{s} {c}": n for c, n in bad.items() if n})
            if hits:
                out.append(("error", 0.95, f"Token ids outside the embedding of {vocab} rows ("
                            + ", ".join(f"{n} rows of {k}" for k, n in hits.items()) + "): on a GPU the lookup "
                            "fails, on some kernels it silently reads another row.",
                            "Tokenise with the model's own tokenizer, or resize the embedding "
                            "(model.resize_token_embeddings(len(tokenizer))) and retrain."))

        ev.update({"not_tested": skip} if skip else {})
        if len(skip) == 5:
            raise CheckSkipped("; ".join(f"{k}: {v}" for k, v in skip.items()))
        if not out:
            return [self.finding("info", "No special-token problem in the parts tested"
                                 + (f" ({len(skip)} not tested: {', '.join(skip)})." if skip else "."),
                                 confidence=0.5, evidence=ev)]
        return [self.finding(sev, msg, confidence=c, evidence=ev, fix=fix,
                             next_experiment="Decode three rows of each split with special tokens shown "
                                             "(skip_special_tokens=False) and compare them with what the "
                                             "model is served.")
                for sev, c, msg, fix in out]


def _ids(v: Any) -> set[int]:
    """A config/tokenizer id field (an int, a list of ints or None) as a set of ids."""
    vals = v if isinstance(v, (list, tuple, set)) else [v]
    return {x for x in vals if isinstance(x, int) and not isinstance(x, bool) and x >= 0}


def _tokenizer(run) -> tuple[Any, str | None]:
    try:
        tok = run._tokenizer_for_text()
    except Exception as e:  # noqa: BLE001 - an unreadable tokenizer leaves its parts untested
        return None, f"the run's tokenizer could not be read: {one_line(e, 200)}"
    return tok, None if tok is not None else "the run dir holds no tokenizer"


def _template(tok) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a plain text (its post-processor template)."""
    try:
        full = list(tok("a")["input_ids"])
        bare = list(tok("a", add_special_tokens=False)["input_ids"])
    except Exception:  # noqa: BLE001 - a tokenizer that cannot encode has no template to test
        return [], []
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i], full[i + len(bare):]
    return [], []


def _where(hits: dict[str, float]) -> str:
    return " and ".join(f"{v:.0%} of the {s} rows" for s, v in hits.items())


def _strip(r: list[int], pads: set[int]) -> tuple[list[int], int, int]:
    """The row and the bounds of its content once leading and trailing pads are cut off."""
    a = next((i for i, t in enumerate(r) if t not in pads), len(r))
    b = len(r) - next((i for i, t in enumerate(reversed(r)) if t not in pads), len(r))
    return r, a, max(a, b)


def _out_of_range(r: list[int], vocab: int, labels: bool) -> bool:
    """An id past the embedding, or negative (-100 is allowed in labels)."""
    return bool(r) and (max(r) >= vocab or min(r) < 0 and any(t < 0 and not (labels and t == IGNORE_INDEX)
                                                              for t in r))


def _piled(rs: list[list[int]], ratio: float) -> bool:
    """Rows stacked at the longest length: truncation cut every longer row there. Rows of one or two
    lengths (a fixed-length task, packed chunks) show no spread to stand out from: never piled."""
    n = sorted(Counter(map(len, rs)).items())  # (length, rows), shortest first
    return len(n) >= 3 and n[-1][1] >= max(2.0, ratio * n[-2][1])


def _z(p1: float, n1: int, p2: float, n2: int) -> float:
    """Two-proportion z (pooled); 0 when both shares are 0 or 1 (no variance, no difference)."""
    p = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return (p1 - p2) / se if se > 0 else 0.0


def _vocab(run, cfg) -> tuple[int | None, str]:
    """The embedding size and where it comes from, or None and why it is unknown."""
    if isinstance(cfg.get("vocab_size"), int):
        return cfg["vocab_size"], "config.json vocab_size"
    params = run.run_config or {}  # a recorded run's factory params: {"vocab": n} or {"model": {"vocab": n}}
    nested = params.get("model") if isinstance(params.get("model"), dict) else {}
    for v in (params.get("vocab"), nested.get("vocab")):
        if isinstance(v, int) and not isinstance(v, bool):
            return v, "the recorder's params (vocab)"
    if run.model_unavailable() is not None:
        return None, "no vocab_size in config.json and no model to read the embedding from"
    try:  # data that does not fit the model (ids past its embedding) makes loading it fail: InputError
        n = _embedding_rows(run.model().module)
    except Exception as e:  # noqa: BLE001 - an optional input: say why in the evidence
        return None, f"no vocab_size in config.json, and the model could not be read: {one_line(e, 200)}"
    return (n, "the model's input embedding") if n else (None, "no vocab_size and no token embedding found")


def _embedding_rows(module) -> int | None:
    """The input embedding's rows: get_input_embeddings(), else the first embedding table that is
    not a position table (a factory model: TinyGPT's `tok`)."""
    import torch.nn as nn

    from degrade.probing.components import find_positions
    emb = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    if not isinstance(emb, nn.Embedding):
        pos = {p.module_name for p in find_positions(module)}
        emb = next((m for n, m in module.named_modules() if isinstance(m, nn.Embedding) and n not in pos), None)
    return emb.num_embeddings if emb is not None else None
