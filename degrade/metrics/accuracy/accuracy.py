"""Accuracy as an `evaluate` module: the fraction of predictions equal to their references.

Shipped with degrade so that it loads offline by path (evaluate.load(<this file>)).
"""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the proportion of predictions that equal their reference."
_KWARGS = """predictions (list of int), references (list of int), normalize (bool, default True),
sample_weight (list of float, optional). Returns {"accuracy": float}."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        hits = (np.asarray(predictions) == np.asarray(references)).astype(float)
        w = np.ones_like(hits) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        total = float((hits * w).sum())
        return {"accuracy": total / float(w.sum()) if normalize else total}
