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
