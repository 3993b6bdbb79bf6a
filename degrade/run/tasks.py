"""The tasks degrade knows how to score (the model's head decides which)."""
CAUSAL_LM = "causal-lm"
SEQ_CLS = "sequence-classification"
# An encoder-decoder (T5, BART, ...): scored like a causal LM over the decoder sequence
# [decoder start] + target, given the source (run/data.py's Examples.source).
SEQ2SEQ = "seq2seq"
# The tasks whose targets are tokens predicted left to right (engine/tokens.py's shift applies).
TOKEN_TASKS = (CAUSAL_LM, SEQ2SEQ)
