"""The bounds degrade puts on what it reads, and why each has its value.

A bound exists so that a corrupt or hostile file ends in one line and exit 2 instead of a hang or
an allocation the machine cannot make. Each value sits far above what real runs produce.
"""
MIB = 1 << 20

# Whole-document JSON files. A trainer_state.json holds one record per logging step: a 1M-step
# run logged every step is ~100 MB (about 100 bytes a record, measured on shared/real-runs/).
MAX_BYTES = {
    "trainer state": 256 * MIB,
    "model config": 16 * MIB,  # id2label of 100k classes is ~3 MB
    "adapter config": 16 * MIB,  # adapter_config.json: target module lists, rank patterns
    "weight index": 64 * MIB,  # one entry per tensor: 100k tensors is ~10 MB
    "results": 16 * MIB,
    "manifest": 64 * MIB,
    "diagnosis": 256 * MIB,
    "tokenizer": 512 * MIB,  # tokenizer.json of a 256k vocabulary is ~35 MB
    "data": 4096 * MIB,  # a .json data file is one document: stream bigger data as .jsonl
    "json": 64 * MIB,
}
MAX_LINE_BYTES = 256 * MIB  # one JSON-lines record (a data row of 10^7 tokens is ~80 MB)

# Nesting: trainer state, configs and data rows are at most ~5 levels deep in practice.
MAX_DEPTH = 64
# Integers longer than this are read as floats (Python refuses to parse > 4300 digits anyway).
MAX_INT_DIGITS = 19
# A step or count beyond 2^53 cannot be held exactly by the float64 series the checks compute on.
MAX_STEP = 2 ** 53

# Safetensors: the format itself caps the header at 100 MB (safetensors' MAX_HEADER_SIZE).
MAX_SAFETENSORS_HEADER = 100_000_000
