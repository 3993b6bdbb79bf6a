"""The tasks degrade knows how to score (the model's head decides which)."""
CAUSAL_LM = "causal-lm"
SEQ_CLS = "sequence-classification"
