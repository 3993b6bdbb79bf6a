"""What many test files do the same way: train a tiny model a few steps, save its weights as a
bare model dir, open a run on it, run one check, and see the CLI refuse bad input."""
from pathlib import Path

import torch
from safetensors.torch import save_file

from degrade.bench.train import Collator, write_jsonl
from degrade.finding import Severity
from degrade.run import RunOptions, open_run
from degrade.suite import run_one


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


def save_weights(module: torch.nn.Module, folder: Path) -> Path:
    """folder/model.safetensors with the module's weights: a bare model dir (no config)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


def hf_run(root: Path, name: str, model, eval_rows):
    """A transformers model saved under root/name, opened with eval data (fast budget)."""
    d = root / name
    model.save_pretrained(d)
    ev = write_jsonl(eval_rows, root / f"{name}_eval.jsonl")
    return open_run(d, RunOptions(eval_data=str(ev), budget="fast"))


def run_check(run, cls, **opts):
    """The findings of one check, which must have run: its measurement on any model, trained or
    not (the pipeline's precondition is tested in tests/test_learned.py)."""
    res = run_one(run, cls, opts, preconditions=False)
    assert res.status == "ran", res.reason
    return res.findings


def errors(findings):
    return [f for f in findings if f.severity is Severity.ERROR]


def assert_rejected(argv: list, file_name: str, *problem_words: str) -> str:
    """`degrade diagnose ARGV` ends with exit 2, nothing on stdout, and one stderr line that names
    `file_name` and holds each of `problem_words` (case-insensitive): no traceback."""
    from conftest import one_thread, run_cli
    with one_thread():
        r = run_cli(["diagnose", *argv])
    assert r.code == 2, f"exit {r.code}; stderr: {r.stderr!r}"
    assert r.stdout == "", r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert "Traceback" not in r.stderr
    assert file_name in line, line
    for word in problem_words:
        assert word.lower() in line.lower(), line
    return line
