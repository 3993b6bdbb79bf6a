"""A few steps of next-token training for the tests' tiny models: the loop several test files share."""
import torch

from degrade.bench.train import Collator


def train_lm(model, rows, steps, lr=3e-3, batch=32, seed=0):
    """AdamW (its default weight decay) on random batches of `rows`, labels shifted by one."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    collate, g = Collator(), torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = collate([rows[i] for i in torch.randint(0, len(rows), (batch,), generator=g).tolist()])
        logits = model(b["input_ids"], b["attention_mask"])
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 b["labels"][:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
