"""DegradeBench v2 practitioner bug `fp16-overflow` (issue 16; I313): the trained model is exported
in float16 for serving, and one attention layer's value activations exceed float16's range
(65,504), as T5's feed-forward activations do (transformers #5651). The activations are made large
without changing the float32 function: the layer's value projection is scaled up by a and its
output projection down by a (attention is linear in the values), with a drawn so that the largest
value activation on the clean rows lands `headroom` times past float16's maximum. The export is
the run dir's model (the training checkpoints are removed, as a serving export keeps one model);
the correct evaluation runs the exported float16 model (proof: cost against the twin).

Its own module, like bugs.py, so that the other cases' cache keys do not cover it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from degrade.bench.case import Built
from degrade.bench.v2.build import PROOF_ROWS, _logged, build, rows_of
from degrade.bench.v2.evaluate import evaluate
from degrade.bench.v2.recipe import Recipe

FP16_MAX = float(torch.finfo(torch.float16).max)


def build_fp16_case(folder: Path, recipe: Recipe, bug: dict[str, Any]) -> Built:
    from transformers import AutoModelForCausalLM
    folder = Path(folder)
    built = build(folder, recipe)  # the twin's recipe, trained the twin's way
    _, _, clean = rows_of(recipe)
    model = AutoModelForCausalLM.from_pretrained(str(built.run_dir), dtype=torch.float32).eval()
    v_out, o_proj, split = _first_layer_value(model)
    peak = _peak_value(model, v_out, split, clean[:PROOF_ROWS])
    a = float(bug["headroom"]) * FP16_MAX / max(peak, 1e-6)
    with torch.no_grad():
        if split is None:  # llama: v_proj [out, in], o_proj [out, in]
            v_out.weight.mul_(a)
            o_proj.weight.div_(a)
        else:  # gpt2 Conv1D c_attn [in, 3d] (q | k | v), c_proj [in, out]
            v_out.weight[:, split:].mul_(a)
            v_out.bias[split:].mul_(a)
            o_proj.weight.div_(a)
    model = model.half()
    for ckpt in built.run_dir.glob("checkpoint-*"):
        shutil.rmtree(ckpt)
    model.save_pretrained(str(built.run_dir))
    proof = json.loads((folder / "proof.json").read_text())
    proof.update(bug=bug, value_scale=a, peak_value_fp32=peak,
                 correct=evaluate(model, clean[:PROOF_ROWS], recipe.kind), logged=_logged(built.run_dir))
    (folder / "proof.json").write_text(json.dumps(proof, indent=1))
    return built


def _first_layer_value(model):
    """(the module whose output holds the values, the output projection, where v starts or None)."""
    if hasattr(model, "transformer"):  # gpt2
        attn = model.transformer.h[0].attn
        return attn.c_attn, attn.c_proj, 2 * model.config.n_embd
    attn = model.model.layers[0].self_attn  # llama
    return attn.v_proj, attn.o_proj, None


@torch.no_grad()
def _peak_value(model, module, split, rows) -> float:
    peak = [0.0]

    def hook(_m, _args, out):
        v = out[..., split:] if split is not None else out
        peak[0] = max(peak[0], float(v.abs().max()))
    h = module.register_forward_hook(hook)
    try:
        for r in rows:
            x = torch.tensor([r["input_ids"]])
            model(input_ids=x, attention_mask=torch.ones_like(x))
    finally:
        h.remove()
    return peak[0]
