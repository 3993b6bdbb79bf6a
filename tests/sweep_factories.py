"""--model-factory for tests/test_sweep.py: the sweep's tiny GPT-2 (degrade.demo.sweep's defaults),
except that a run whose recorded params say "die" kills the process building it, as an
out-of-memory kill or a segfault in native code would."""
import os


def gpt2_or_die(params: dict):
    if params.get("die"):
        os._exit(3)
    from degrade.bench.train import tiny_gpt2
    from degrade.demo.sweep import VOCAB
    return tiny_gpt2(VOCAB + 1, n_layer=1, n_embd=32, n_head=2)
