"""The reductions of one pass's logits: everything the checks read of the model's predictions.

Per example: the loss and accuracy over its targets (probing/scoring.py's Scores). Per target
(probing/targets.py's Targets): the given label, the argmax, both probabilities, the rank of the
given label, the probabilities of a small set of candidate classes, and the top-k classes with
their probabilities (confident learning on LM tokens reads these instead of a second pass). Per
causal-LM example: the argmax at every position and the Min-K%++ token scores of its input
(probing/membership.py). Logits at position t predict the label at t + 1 (Hugging Face's shift).

Nothing vocabulary-wide outlives its chunk of positions (engine/batching.py sizes both).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from degrade.engine.batching import positions_per_chunk
from degrade.inputs.data_rows import IGNORE_INDEX
from degrade.run.tasks import TOKEN_TASKS

TOP_K = 8  # classes kept per target beyond the candidates (confident learning's alternatives)
MAX_CANDIDATES = 256  # classes whose probability is kept per target (LM: most frequent targets)


def candidate_classes(examples, indices: np.ndarray, n_classes: int, task: str) -> np.ndarray:
    if task not in TOKEN_TASKS:
        return np.arange(n_classes)
    counts: dict[int, int] = {}
    for i in indices:
        for t in examples.token_labels(int(i))[1:]:
            if t != IGNORE_INDEX:
                counts[t] = counts.get(t, 0) + 1
    top = sorted(counts, key=lambda t: -counts[t])[:MAX_CANDIDATES]
    return np.asarray(sorted(t for t in top if 0 <= t < n_classes), dtype=np.int64)


class TokenReductions:
    """Collects, batch by batch, what engine/pass_result.py assembles into Scores and Targets."""

    def __init__(self, examples, indices: np.ndarray, task: str):
        self.examples, self.indices, self.task = examples, indices, task
        n = len(indices)
        self.where = {int(i): k for k, i in enumerate(indices)}
        self.loss, self.correct, self.n_targets = np.zeros(n), np.zeros(n), np.zeros(n)
        self.lengths = np.asarray([len(examples.input_ids[int(i)]) for i in indices], dtype=int)
        width = int(self.lengths.max()) if n else 0
        self.pos_correct, self.pos_count, self.pos_loss = np.zeros(width), np.zeros(width), np.zeros(width)
        self.class_probs: dict[int, np.ndarray] = {}
        self.cols: dict[str, list] = {k: [] for k in ("example", "position", "given", "pred", "p_given",
                                                      "p_pred", "rank", "probs", "top_ids", "top_p")}
        self.rows_pred: dict[int, np.ndarray] = {}
        self.rows_label: dict[int, np.ndarray] = {}
        self.rows_input: dict[int, np.ndarray] = {}
        self.membership: dict[int, np.ndarray] = {}  # LM: Min-K%++ token scores of each input
        self.classes: np.ndarray | None = None
        self.n_classes = 0

    @torch.no_grad()
    def add(self, idx: np.ndarray, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
            logits: torch.Tensor) -> None:
        self.n_classes = int(logits.shape[-1])
        if self.classes is None:
            self.classes = candidate_classes(self.examples, self.indices, self.n_classes, self.task)
        if self.task in TOKEN_TASKS:
            self._add_lm(idx, ids, mask, labels, logits)
        else:
            self._add_classes(idx, logits)

    def _add_classes(self, idx, logits) -> None:
        lp = F.log_softmax(logits.float(), dim=-1).cpu()
        given = torch.tensor([self.examples.label[int(i)] for i in idx])
        keep = (given >= 0) & (given < lp.shape[-1])
        nll = -lp.gather(1, given.clamp(0, lp.shape[-1] - 1)[:, None])[:, 0]
        for r, e in enumerate(idx):
            k = self.where[int(e)]
            self.loss[k], self.correct[k], self.n_targets[k] = float(nll[r]), float(lp[r].argmax() == given[r]), 1
            self.class_probs[k] = lp[r].exp().numpy()
        self._targets(lp[keep], given[keep], torch.as_tensor(idx)[keep], torch.zeros(int(keep.sum()), dtype=torch.long))

    def _add_lm(self, idx, ids, mask, labels, logits) -> None:
        B, T, V = logits.shape
        nll_sum, hit_sum = torch.zeros(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
        count = torch.zeros(B, dtype=torch.long)
        preds, member = [], []
        step = positions_per_chunk(B, V)
        for t0 in range(0, max(T - 1, 0), step):
            t1 = min(t0 + step, T - 1)
            lp = F.log_softmax(logits[:, t0:t1].float(), dim=-1).cpu()  # predicts t0+1 .. t1
            target = labels[:, t0 + 1:t1 + 1]
            valid = target != IGNORE_INDEX
            safe = target.clamp(0, V - 1)
            tok_lp = lp.gather(-1, safe[..., None])[..., 0]
            pred = lp.argmax(-1)
            hit = (pred == target) & valid
            nll = torch.where(valid, -tok_lp, torch.zeros_like(tok_lp))
            nll_sum += nll.double().sum(1)
            hit_sum += hit.double().sum(1)
            count += valid.sum(1)
            pos = slice(t0 + 1, t1 + 1)  # a slice: a one-position chunk stays an array
            self.pos_loss[pos] += nll.sum(0).numpy()
            self.pos_correct[pos] += hit.sum(0).numpy()
            self.pos_count[pos] += valid.sum(0).numpy()
            preds.append(pred)
            member.append(self._membership(lp, ids[:, t0 + 1:t1 + 1]))
            ok = valid & (target < V)
            b, t = torch.nonzero(ok, as_tuple=True)
            self._targets(lp[b, t], target[b, t], torch.as_tensor(idx)[b], t + t0 + 1)
        pred_all = torch.cat(preds, 1) if preds else torch.zeros(B, 0, dtype=torch.long)
        member_all = torch.cat(member, 1) if member else torch.zeros(B, 0)
        input_valid = mask[:, 1:].bool()
        for r, e in enumerate(idx):
            k, n_tok = self.where[int(e)], len(self.examples.input_ids[int(e)])
            cnt = int(count[r])
            self.n_targets[k] = cnt
            self.loss[k] = float(nll_sum[r]) / max(cnt, 1)
            self.correct[k] = float(hit_sum[r]) / max(cnt, 1)
            self.rows_pred[int(e)] = pred_all[r, :max(n_tok - 1, 0)].numpy()
            self.rows_label[int(e)] = labels[r, :n_tok].numpy()
            self.rows_input[int(e)] = ids[r, :n_tok].numpy()
            self.membership[int(e)] = member_all[r][input_valid[r, :member_all.shape[1]]].numpy()

    @staticmethod
    def _membership(lp: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
        """Min-K%++ token scores (Zhang et al. 2024): (log p(x_t) - mu_t) / sigma_t, with mu and
        sigma the mean and spread of log p under the model's own next-token distribution."""
        p = lp.exp()
        mu = (p * lp).sum(-1)
        sigma = ((p * lp * lp).sum(-1) - mu * mu).clamp(min=1e-12).sqrt()
        tok = lp.gather(-1, next_ids.clamp(0, lp.shape[-1] - 1)[..., None])[..., 0]
        return ((tok - mu) / sigma).float()

    def _targets(self, rows_lp: torch.Tensor, given: torch.Tensor, example: torch.Tensor,
                 position: torch.Tensor) -> None:
        if not given.numel():
            return
        lp_given = rows_lp.gather(1, given[:, None])[:, 0]
        best_lp, best = rows_lp.max(-1)  # the first of tied maxima, as argmax everywhere else
        top_lp, top_ids = rows_lp.topk(min(TOP_K, rows_lp.shape[-1]), dim=-1)
        c = self.cols
        c["example"].append(example.numpy())
        c["position"].append(position.numpy())
        c["given"].append(given.numpy())
        c["pred"].append(best.numpy())
        c["p_given"].append(lp_given.exp().numpy())
        c["p_pred"].append(best_lp.exp().numpy())
        c["rank"].append((1 + (rows_lp > lp_given[:, None]).sum(-1)).numpy())
        c["probs"].append(rows_lp[:, torch.as_tensor(self.classes)].exp().numpy())
        c["top_ids"].append(top_ids.numpy())
        c["top_p"].append(top_lp.exp().numpy())
