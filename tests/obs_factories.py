"""--model-factory entry points for tests/test_observation_more.py: oracle models that solve a
task exactly (no training), so that a test can control the eval data around a known-good model.

A bare run dir has no config, so degrade calls these with no arguments (load.py)."""
import torch
from torch import nn

ORDER_VOCAB = 12
COPY_SEP = 16  # copy task over symbols 0..15, separator 16 (degrade.bench.tasks.copy_rows)
COPY_VOCAB = 17


class OracleOrder(nn.Module):
    """Sequence classification: label 1 when token 1 comes before token 2 (tasks.order_rows)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(6.0))

    def forward(self, input_ids, attention_mask=None):
        pos = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        big = input_ids.shape[1] + 1
        p1 = torch.where(input_ids == 1, pos, big).min(1).values
        p2 = torch.where(input_ids == 2, pos, big).min(1).values
        sign = 2 * (p1 < p2).float() - 1
        return torch.stack([-sign, sign], dim=1) * self.scale / 2


class OracleCopy(nn.Module):
    """Causal LM for `x SEP x`: after the separator it predicts the token to copy; elsewhere it
    is uniform (those positions are not scored)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))

    def forward(self, input_ids, attention_mask=None):
        b, t = input_ids.shape
        logits = torch.zeros(b, t, COPY_VOCAB)
        for r in range(b):
            seps = (input_ids[r] == COPY_SEP).nonzero().flatten()
            if seps.numel() == 0:
                continue
            k = int(seps[0])
            for pos in range(k, min(2 * k, t)):
                logits[r, pos, int(input_ids[r, pos - k])] = 1.0
        return logits * self.scale


def oracle_order():
    return OracleOrder()


def oracle_copy():
    return OracleCopy()


def presence_rows(n: int, seed: int) -> list[dict]:
    """Sequence classification: label 1 when token 5 occurs among 8 filler tokens (3..11), which
    a bag-of-words baseline learns exactly."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        body = torch.randint(3, 12, (8,), generator=g).tolist()
        rows.append({"input_ids": [0] + body, "label": int(5 in body)})
    return rows


PRESENCE_TRAIN = presence_rows(400, seed=1)


class MemorisingPresence(nn.Module):
    """Right on its training rows (PRESENCE_TRAIN); elsewhere confidently wrong on about a fifth
    of the rows (those whose token sum is a multiple of 5), as an over-confident model that
    memorised its training set is: the eval labels are right, the model is not."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(6.0))
        self.memorised = {tuple(r["input_ids"]) for r in PRESENCE_TRAIN}

    def forward(self, input_ids, attention_mask=None):
        present = (input_ids == 5).any(1).float()
        flip = torch.tensor([tuple(r) not in self.memorised and sum(r) % 5 == 0 for r in input_ids.tolist()])
        sign = torch.where(flip, 1 - 2 * present, 2 * present - 1)
        return torch.stack([-sign, sign], dim=1) * self.scale / 2


def memorising_presence():
    return MemorisingPresence()
