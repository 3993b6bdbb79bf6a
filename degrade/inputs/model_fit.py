"""Data against the model it is given to: token ids inside the embedding, targets inside the output,
sequences inside a learned position table. Out of range is bad input (exit 2): the data was
tokenised for another model, and scoring it would crash or index garbage."""
from __future__ import annotations


def fit_problem(examples, *, vocab: int | None = None, n_out: int | None = None,
                n_classes: int | None = None, max_len: int | None = None) -> str | None:
    """Why `examples` cannot be given to the model, naming the first row at fault; None if they fit."""
    def row(i: int) -> str:
        return f"row {examples.rows[i] + 1}" if examples.rows is not None else f"row {i + 1}"

    sources = getattr(examples, "source", None) or []
    for i, ids in [*enumerate(examples.input_ids), *enumerate(sources)]:
        if max_len is not None and len(ids) > max_len:
            return (f"{row(i)} has {len(ids):,} tokens; the model's learned position table holds "
                    f"{max_len:,} (truncate the data as training did)")
        if vocab is not None and ids and max(ids) >= vocab:
            return (f"{row(i)} holds token id {max(ids):,}, outside the model's vocabulary of "
                    f"{vocab:,} (was it tokenised for another model?)")
    if n_out is not None and examples.labels is not None:
        for i, lab in enumerate(examples.labels):
            if lab and max(lab) >= n_out:
                return f"{row(i)} has label token {max(lab):,}; the model predicts {n_out:,} tokens"
    if n_classes is not None and examples.label is not None:
        for i, c in enumerate(examples.label):
            if c >= n_classes:
                return f"{row(i)} has class {c}; the model has {n_classes} classes"
    return None
