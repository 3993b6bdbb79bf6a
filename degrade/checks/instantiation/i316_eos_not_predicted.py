"""I316 eos-not-predicted: where a sequence ends, the model does not predict EOS, and does not stop."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from degrade.check import Check, CheckSkipped
from degrade.engine.forward import mode
from degrade.inputs.model_config import eos_token_ids
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.data import IGNORE_INDEX
from degrade.run.tasks import SEQ2SEQ
from degrade.stats import num


class EosNotPredicted(Check):
    """The model never learned to stop: at the end of a sequence EOS is no likelier than elsewhere.

    What it detects: on eval rows that end with the checkpoint's `eos_token_id`, the model's
    probability of EOS at the position that precedes the row's final EOS (where it must stop)
    against its probability of EOS at the row's other positions (where it must not): the share of
    rows where EOS is the top-1 prediction at the end, and the AUC of p(EOS) separating the end
    from the other positions (Mann-Whitney). Then, when the model can generate (a Hugging Face
    model with `generate`), greedy decoding from up to `n_prompts` eval prompts (each row up to its
    first target) for twice the longest target: how many stop with EOS. A model trained with EOS
    masked in its labels (pad_token = eos_token with the pad id masked: transformers #23530, trl
    #976; I310 reads the training labels) puts no mass on EOS anywhere. Error when EOS is top-1 at
    no more than `max_end_top1` of the ends and the AUC is below `min_auc`, unless generation
    stopped in at least half of the prompts.

    Why it matters: the loss and every teacher-forced metric look normal (EOS is one token per
    row), but generation runs to the length limit, and generated outputs carry text after the
    answer that a generation metric scores as wrong.

    Evidence used: the model, the eval data (rows ending with EOS) and config.json's eos_token_id.
    When fewer than `min_share_ending_with_eos` of the eval rows end with EOS, the data does not
    mark where sequences stop (the EOS id is a content token, or rows are truncated): not tested.

    Fix: keep the real EOS as a target (mask the padding by the attention mask, or give padding
    its own token) and retrain; I310 tells whether the training labels masked it.
    """

    code, name, layer = "I316", "eos-not-predicted", Layer.INSTANTIATION
    needs = frozenset({"model", "eval_data", "decoder"})
    tasks = frozenset({"causal-lm", "seq2seq"})
    probes = 1
    requires_learning = True
    options = (
        Option("max_end_top1", 0.1,
               source="design choice: a model trained with EOS as a target predicts it first at most row "
                      "ends (the trained copy model in tests/test_eos_not_predicted.py: 100%); a tenth "
                      "leaves room for rows whose end is not predictable",
               help="Share of row ends where EOS is the top-1 prediction at or below which it is not "
                    "predicted."),
        Option("min_auc", 0.75,
               source="design choice: AUC 0.5 is no separation; 0.75 is halfway to perfect, far below a "
                      "model that learned to stop (tests: 1.0)",
               help="AUC of p(EOS) separating row ends from other positions below which the model does "
                    "not know where rows end."),
        Option("min_share_ending_with_eos", 0.5,
               source="design choice: data that marks sequence ends with EOS ends nearly every row with "
                      "it (the bench's eos-masked-as-padding cases: every row), while an EOS id that is "
                      "also a content token ends about 1/vocabulary of rows by chance (id 0 of a 16-symbol "
                      "copy task: 1 in 16, degrade.demo.sweep); half separates the two",
               help="Share of eval rows that must end with EOS for the data to say where sequences stop."),
        Option("n_prompts", 8,
               source="design choice: generation is corroboration, not the measurement; 8 prompts bound "
                      "its token-by-token cost",
               help="Eval prompts decoded greedily to see whether generation stops."),
    )

    def run(self, run):
        ids = eos_token_ids(run.config)
        if not ids:
            raise CheckSkipped("config.json names no eos_token_id")
        model, data = run.model(), run.eval_data
        ends = {i: _final_eos(x, ids) for i, x in enumerate(data.input_ids)}
        eligible = [i for i, t in ends.items() if t is not None]
        share = len(eligible) / max(len(ends), 1)
        if share < self.opts["min_share_ending_with_eos"]:
            raise CheckSkipped(f"{share:.0%} of the eval rows end with EOS (token {sorted(ids)}): the data "
                               "does not mark where a sequence should stop")
        idx = run.engine.probe_indices(data, eligible=eligible, minimum=16, cap=64)  # short rows: cheap
        p_end, p_other, top1 = [], [], []
        token = sorted(ids)[0]
        with mode(model.module, False), torch.no_grad():
            for i in map(int, idx):
                t = ends[i]
                x = torch.tensor([list(data.input_ids[i][:t + 1])])
                src = None if data.source is None else _source(data, i)
                logp = torch.log_softmax(model.logits(x, torch.ones_like(x), source=src)[0], -1)
                p = logp[:, sorted(ids)].exp().sum(-1).cpu().numpy()  # p(EOS) predicted at each position
                p_end.append(p[t - 1])
                p_other.extend(p[:t - 1].tolist())
                top1.append(int(logp[t - 1].argmax()) in ids)
        auc = _auc(np.asarray(p_end), np.asarray(p_other))
        ev: dict[str, Any] = {"eos_token_ids": sorted(ids), "rows": len(p_end), "end_top1_share": num(float(np.mean(top1)), 3),
                              "median_p_eos_at_end": num(float(np.median(p_end))),
                              "median_p_eos_elsewhere": num(float(np.median(p_other))) if p_other else None,
                              "auc_end_vs_elsewhere": num(auc, 3) if auc is not None else None}
        stopped = _generation(run, model, data, idx[: int(self.opts["n_prompts"])], ids, token, ev)
        blind = ev["end_top1_share"] <= self.opts["max_end_top1"] and (auc is None or auc < self.opts["min_auc"])
        if not blind or (stopped is not None and stopped >= 0.5):
            return []
        return [self.finding(
            "error", f"The model does not predict EOS where sequences end: EOS is its first choice at "
            f"{ev['end_top1_share']:.0%} of {len(p_end)} row ends (median p = {ev['median_p_eos_at_end']:.2g}, "
            + (f"AUC {auc:.2f} against other positions)" if auc is not None else "no other positions)")
            + (f", and greedy generation stopped in {stopped:.0%} of the prompts" if stopped is not None else "")
            + ": it never learned to stop.", confidence=0.85, evidence=ev,
            fix="Keep the real EOS as a training target (mask padding by the attention mask, or give "
                "padding its own token) and retrain; see I310 for the training labels.",
            next_experiment="Count EOS positions with labels != -100 in one training batch: zero confirms "
                            "the collator masked them.")]


def _final_eos(row, ids) -> int | None:
    """The first EOS of the run of EOS that ends the row (its final stop; a multi-turn row's earlier
    stops are turn ends), or None when the row does not end with EOS."""
    t = len(row) - 1
    if t < 1 or row[t] not in ids:
        return None
    while t > 1 and row[t - 1] in ids:
        t -= 1
    return t


def _source(data, i: int):
    s = torch.tensor([list(data.source[i])])
    return s, torch.ones_like(s)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """P(a random end position's p(EOS) > a random other position's), ties counted half."""
    if pos.size == 0 or neg.size == 0:
        return None
    both = np.concatenate([pos, neg])
    ranks = both.argsort().argsort() + 1.0
    for v in np.unique(both):  # average ranks over ties
        tie = both == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def _generation(run, model, data, idx, ids, token: int, ev: dict) -> float | None:
    """Share of prompts whose greedy continuation emits EOS within twice the longest target."""
    gen = getattr(model.module, "generate", None)
    if gen is None:
        ev["generation"] = "not tested: the model has no generate()"
        return None
    longest = max(sum(1 for y in data.token_labels(int(i)) if y != IGNORE_INDEX) for i in idx)
    stops = 0
    with mode(model.module, False), torch.no_grad():
        for i in map(int, idx):
            labels = data.token_labels(i)
            start = next((t for t, y in enumerate(labels) if y != IGNORE_INDEX), 1)
            if model.task == SEQ2SEQ:
                src, _ = _source(data, i)
                out = gen(input_ids=src.to(model.device), max_new_tokens=2 * longest + 1, do_sample=False,
                          eos_token_id=token, pad_token_id=token)
            else:
                prompt = torch.tensor([list(data.input_ids[i][:max(1, start)])], device=model.device)
                out = gen(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=2 * longest + 1,
                          do_sample=False, eos_token_id=token, pad_token_id=token)[:, prompt.shape[1]:]
            stops += any(int(t) in ids for t in out[0].tolist()[1 if model.task == SEQ2SEQ else 0:])
    ev["generation"] = {"prompts": len(idx), "stopped_with_eos": stops, "max_new_tokens": 2 * longest + 1}
    return stops / max(len(idx), 1)
