"""Which way a logged metric improves, read from its name, and where its ceiling is.

The names are those the Hugging Face `evaluate` metrics and Trainer logs use (eval_accuracy,
eval_f1, eval_wer, eval_cer, eval_perplexity, eval_rouge1 ...). A metric whose direction is not
known is left unread rather than guessed.
"""
from __future__ import annotations

import re

HIGHER_IS_BETTER = re.compile(r"(accuracy|^acc$|_acc$|f1|exact_match|^em$|bleu|rouge|precision|"
                              r"recall|auc|matthews|mcc|spearman|pearson|chrf|meteor|bertscore)", re.I)
# Error rates, perplexities and losses: lower is better.
LOWER_IS_BETTER = re.compile(r"(wer$|cer$|^ter$|_ter$|error|perplexity|ppl|loss$|mse$|mae$|rmse$|"
                             r"^nll$|_nll$|bpb$|bpc$)", re.I)
# Accuracy-like metrics bounded above: at this share of their maximum they are at a ceiling.
_BOUNDED = re.compile(r"(accuracy|^acc$|_acc$|f1|exact_match|^em$|precision|recall|auc)", re.I)


def direction(name: str) -> int | None:
    """+1 when higher is better, -1 when lower is better, None when the name does not say."""
    if HIGHER_IS_BETTER.search(name):
        return 1
    if LOWER_IS_BETTER.search(name):
        return -1
    return None


def higher_is_better(name: str) -> bool:
    return direction(name) == 1


def at_ceiling(name: str, value: float) -> bool:
    """A bounded higher-is-better metric at its maximum (1.0, or 100 when logged in percent):
    nothing left to gain, so a change of the loss there costs no decisions."""
    if not _BOUNDED.search(name):
        return False
    top = 100.0 if value > 1.0 + 1e-9 else 1.0
    return value >= 0.999 * top
