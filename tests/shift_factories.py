"""--model-factory entry point for tests/test_shift_embeddings.py: a bag-of-embeddings classifier
over a 30,000-token vocabulary (big enough that O105's hashed token histogram cannot tell two
halves of it apart, while the model's embedding table can)."""
import torch
from torch import nn

VOCAB, DIM = 30_000, 16


class BagOfEmbeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.head = nn.Linear(DIM, 2)

    def forward(self, input_ids, attention_mask=None):
        mask = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).unsqueeze(-1)
        return self.head((self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1))
