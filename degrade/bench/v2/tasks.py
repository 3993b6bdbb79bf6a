"""DegradeBench v2 task families: row generators drawn from a seed and a few size parameters.

Every family returns (train_rows, eval_rows) in degrade's data format, with no eval input repeated
in the training rows, so that a healthy run measures generalisation. A family is a causal LM
(`input_ids` + `labels`, only the answer scored) or a sequence classification (`input_ids` +
`label`, token 0 is [CLS]). `length` draws the size of an instance; the length-extrapolation fault
trains on short instances and evaluates on long ones.

| family | kind | what must be learned |
|---|---|---|
| copy | lm | `x SEP x`: attend k+1 tokens back (positional) |
| modadd | lm | `a b = (a + b) mod p`: the algebraic structure of shared/seeds/004 |
| sort | lm | `x SEP sorted(x)`: compare and count across the whole input |
| reverse | lm | `x SEP reversed(x)`: attend to a position mirrored about the separator |
| translate | lm | `x SEP f(x)`: a positional copy through a fixed dictionary f (stored in the MLPs) |
| kv | lm | `k1 v1 .. kn vn` then `q k -> v(k)` for every key: content-addressed retrieval (induction) |
| addition | lm | `a + b = c` digit by digit, least significant first, with carries |
| order | cls | is marker 1 before marker 2? (order-sensitive) |
| dyck | cls | is a bracket string over two bracket types balanced? |
| bigram | cls | does the bigram `1 2` occur (both tokens are in every row)? |
| lexical | cls | a "review" of filler words: positive when it holds more positive than negative words |
| review | cls | the lexical rule in English words, tokenised by the real all-MiniLM-L6-v2 tokenizer |
"""
from __future__ import annotations

import itertools

import numpy as np

from degrade.bench.tasks import IGNORE, copy_rows, order_rows

LM, CLS = "lm", "cls"


def _lm(prompt: list[int], answer: list[int]) -> dict:
    return {"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer}


def sort_rows(n: int, vocab: int, length: tuple[int, int], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        x = rng.integers(0, vocab, size=int(rng.integers(length[0], length[1] + 1))).tolist()
        rows.append(_lm(x + [vocab], sorted(x)))
    return rows


def kv_rows(n: int, vocab: int, length: tuple[int, int], seed: int) -> list[dict]:
    """Keys 0..vocab/2-1, values vocab/2..vocab-1, query marker `vocab`; distinct keys per row.
    After the pairs, every key is asked once in a shuffled order (`vocab k v`), only the values
    scored: one answer per row gave too little signal to learn retrieval in the recipe's budget
    (46% held-out accuracy after 1,500 steps, one seed)."""
    rng = np.random.default_rng(seed)
    half, rows = vocab // 2, []
    for _ in range(n):
        pairs = int(rng.integers(length[0], min(length[1], half) + 1))
        keys = rng.choice(half, size=pairs, replace=False)
        vals = rng.integers(half, vocab, size=pairs)
        ids = [int(t) for kv in zip(keys, vals) for t in kv]
        labels = [IGNORE] * len(ids)
        for q in rng.permutation(pairs):
            ids += [vocab, int(keys[q]), int(vals[q])]
            labels += [IGNORE, IGNORE, int(vals[q])]
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def reverse_rows(n: int, vocab: int, length: tuple[int, int], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        x = rng.integers(0, vocab, size=int(rng.integers(length[0], length[1] + 1))).tolist()
        rows.append(_lm(x + [vocab], x[::-1]))
    return rows


def translate_rows(n: int, vocab: int, length: tuple[int, int], seed: int) -> list[dict]:
    """`x SEP f(x)`: word-by-word translation through a dictionary f (a permutation of the
    vocabulary drawn from the seed's family key, shared by train and eval): a positional copy
    plus a lookup the MLPs must store."""
    rng = np.random.default_rng(seed)
    f = np.random.default_rng([vocab, 4099]).permutation(vocab).tolist()
    rows = []
    for _ in range(n):
        x = rng.integers(0, vocab, size=int(rng.integers(length[0], length[1] + 1))).tolist()
        rows.append(_lm(x + [vocab], [f[t] for t in x]))
    return rows


def addition_rows(n: int, length: tuple[int, int], seed: int) -> list[dict]:
    """Digits 0-9, '+' = 10, '=' = 11; operands and the sum written least significant digit first
    (so each sum digit depends on the digits before it and one carry)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        d = int(rng.integers(length[0], length[1] + 1))
        a, b = (int(rng.integers(0, 10 ** d)) for _ in range(2))

        def digits(v: int, w: int) -> list[int]:
            return [(v // 10 ** i) % 10 for i in range(w)]
        rows.append(_lm(digits(a, d) + [10] + digits(b, d) + [11], digits(a + b, d + 1)))
    return rows


def dyck_rows(n: int, length: tuple[int, int], seed: int) -> list[dict]:
    """[CLS]=0, '(' 1, ')' 2, '[' 3, ']' 4. Half balanced; the other half one edit away from
    balanced (a swapped type, a moved closer), so that bracket counts alone do not decide it."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pairs = int(rng.integers(max(1, length[0] // 2), max(1, length[1] // 2) + 1))
        s, stack = [], []
        opens = pairs
        while opens or stack:
            if opens and (not stack or rng.random() < 0.5):
                t = int(rng.choice([1, 3]))
                s.append(t)
                stack.append(t + 1)
                opens -= 1
            else:
                s.append(stack.pop())
        label = 1
        if i % 2:
            label = 0
            j = int(rng.integers(len(s)))
            if s[j] in (2, 4) and rng.random() < 0.5:
                s[j] = 6 - s[j]  # ')' <-> ']'
            else:
                k = int(rng.integers(len(s)))
                s[j], s[k] = s[k], s[j]
            if _balanced(s):
                label = 1
        rows.append({"input_ids": [0] + s, "label": label})
    return rows


def _balanced(s: list[int]) -> bool:
    stack = []
    for t in s:
        if t in (1, 3):
            stack.append(t + 1)
        elif not stack or stack.pop() != t:
            return False
    return not stack


def bigram_rows(n: int, vocab: int, length: tuple[int, int], seed: int) -> list[dict]:
    """Positive when the bigram `1 2` occurs; every row holds both tokens 1 and 2 (so neither's
    presence decides it), the negatives never adjacent in that order (a local order rule)."""
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        k = int(rng.integers(length[0], length[1] + 1))
        body = rng.integers(3, vocab, size=k).tolist()
        i, j = (int(v) for v in rng.choice(k, size=2, replace=False))
        label = int(rng.random() < 0.5)
        if label:
            i = min(i, k - 2)
            body[i], body[i + 1] = 1, 2
        else:
            body[i], body[j] = 1, 2
        pairs = sum(a == 1 and b == 2 for a, b in zip(body, body[1:]))
        if (pairs > 0) == bool(label):
            rows.append({"input_ids": [0] + body, "label": label})
    return rows


def lexical_rows(n: int, vocab: int, length: tuple[int, int], seed: int) -> list[dict]:
    """Tokens 1-4 positive words, 5-8 negative words, 9..vocab-1 filler; positive when there are
    more positive than negative words (ties excluded)."""
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        k = int(rng.integers(length[0], length[1] + 1))
        body = rng.integers(9, vocab, size=k)
        n_pos, n_neg = (int(v) for v in rng.integers(0, 4, size=2))
        if n_pos == n_neg or n_pos + n_neg > k:
            continue
        slots = rng.choice(k, size=n_pos + n_neg, replace=False)
        body[slots[:n_pos]] = rng.integers(1, 5, size=n_pos)
        body[slots[n_pos:]] = rng.integers(5, 9, size=n_neg)
        rows.append({"input_ids": [0] + body.tolist(), "label": int(n_pos > n_neg)})
    return rows


POSITIVE = ["wonderful", "great", "excellent", "delightful", "superb", "lovely", "brilliant", "fantastic"]
NEGATIVE = ["terrible", "awful", "dreadful", "horrible", "boring", "poor", "disappointing", "bad"]
FILLER = ["the", "movie", "was", "and", "a", "meal", "with", "friends", "it", "felt", "really", "at",
          "times", "book", "show", "hotel", "our", "trip", "my", "very", "quite", "overall", "plot", "staff"]


def review_rows(n: int, vocab: int, length: tuple[int, int], seed: int) -> list[dict]:
    """The lexical rule over English words: `text` and `label` (build.py tokenises the text with
    the pretrained model's own tokenizer). `vocab` is unused (the tokenizer's)."""
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        k = int(rng.integers(length[0], length[1] + 1))
        n_pos, n_neg = (int(v) for v in rng.integers(0, 3, size=2))
        if n_pos == n_neg or n_pos + n_neg > k:
            continue
        words = [FILLER[int(i)] for i in rng.integers(0, len(FILLER), size=k)]
        slots = rng.choice(k, size=n_pos + n_neg, replace=False)
        for j, slot in enumerate(slots):
            words[slot] = (POSITIVE if j < n_pos else NEGATIVE)[int(rng.integers(len(POSITIVE)))]
        rows.append({"text": " ".join(words) + ".", "label": int(n_pos > n_neg)})
    return rows


def modadd_split(p: int, train_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    pairs = list(itertools.product(range(p), range(p)))
    np.random.default_rng(seed).shuffle(pairs)
    rows = [_lm([a, b, p], [(a + b) % p]) for a, b in pairs]
    cut = int(len(rows) * train_fraction)
    return rows[:cut], rows[cut:]


# family -> (kind, vocabulary size the model needs, default instance lengths, row generator)
def _copy(n, vocab, length, seed):
    return copy_rows(n, vocab=vocab, min_k=length[0], max_k=length[1], seed=seed)


def _order(n, vocab, length, seed):
    # order_rows draws fixed-length rows; mix lengths for the length fault
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out += order_rows(1, vocab=vocab, length=int(rng.integers(length[0], length[1] + 1)), seed=seed * 100003 + i)
    return out


FAMILIES = {
    "copy": (LM, lambda v: v + 1, (4, 8), _copy),
    "sort": (LM, lambda v: v + 1, (4, 8), sort_rows),
    "reverse": (LM, lambda v: v + 1, (4, 8), reverse_rows),
    "translate": (LM, lambda v: v + 1, (4, 8), translate_rows),
    "kv": (LM, lambda v: v + 1, (3, 6), kv_rows),
    "addition": (LM, lambda v: 12, (2, 4), lambda n, v, length, seed: addition_rows(n, length, seed)),
    "modadd": (LM, lambda p: p + 1, (0, 0), None),
    "order": (CLS, lambda v: v, (8, 12), _order),
    "dyck": (CLS, lambda v: 5, (6, 12), lambda n, v, length, seed: dyck_rows(n, length, seed)),
    "bigram": (CLS, lambda v: v, (8, 14), bigram_rows),
    "lexical": (CLS, lambda v: v, (8, 16), lexical_rows),
    "review": (CLS, lambda v: v, (6, 14), review_rows),
}


def family_rows(family: str, n_train: int, n_eval: int, vocab: int, seed: int,
                train_length: tuple[int, int] | None = None,
                eval_length: tuple[int, int] | None = None) -> tuple[list[dict], list[dict]]:
    """(train, eval) rows of a family; eval inputs never appear in train."""
    kind, _, default, gen = FAMILIES[family]
    if family == "modadd":
        return modadd_split(vocab, 0.8, seed)
    train = gen(n_train, vocab, train_length or default, seed)
    pool = gen(4 * n_eval, vocab, eval_length or train_length or default, seed + 7919)
    key_of = (lambda r: r["text"]) if family == "review" else (lambda r: tuple(r["input_ids"]))
    seen, evals = {key_of(r) for r in train}, []
    for row in pool:
        key = key_of(row)
        if key not in seen:
            seen.add(key)
            evals.append(row)
            if len(evals) == n_eval:
                break
    return train, evals


def model_vocab(family: str, vocab: int) -> int:
    return FAMILIES[family][1](vocab)


def kind_of(family: str) -> str:
    return FAMILIES[family][0]
