"""Evidence as pictures in the report's finding cards (degrade/report/evidence_pictures.py)."""
from __future__ import annotations

from degrade.finding import Finding, Severity
from degrade.layers import Layer
from degrade.report.evidence_pictures import picture


def _f(code: str, evidence: dict) -> Finding:
    return Finding(code, "x", Layer.OBSERVATION, Severity.ERROR, "m", evidence=evidence)


def test_length_cliff_is_drawn_with_the_trained_length_marked():
    ev = {"trained_length": 11, "accuracy_by_length": [{"length": n, "accuracy": 1.0 if n <= 11 else 0.2,
                                                        "examples": 10} for n in range(5, 20, 2)]}
    svg = picture(_f("P402", ev))
    assert svg.startswith("<svg") and "trained length" in svg and "<path" in svg


def test_head_grid_crosses_inert_heads_and_shades_measured_ones():
    ev = {"components": {"attention_layers": 2, "heads_per_layer": [4]},
          "zero_output": ["L0.H1"], "delta_loss": {"L1.H2": 0.5, "L1.MLP": 0.1}}
    svg = picture(_f("I302", ev))
    assert svg.count("<rect") == 2 * 5  # 2 layers x (4 heads + the MLP)
    assert "L0.H1: inert" in svg and "L1.H2: delta loss 0.5" in svg and svg.count("<path") == 1


def test_tables_escape_what_the_run_wrote():
    rows = [{"eval_index": 0, "train_row": 3, "kind": "exact", "eval_preview": "<script>x</script>",
             "train_preview": "ok"}]
    html = picture(_f("O103", {"examples": rows}))
    assert "<table" in html and "&lt;script&gt;" in html and "<script>" not in html


def test_evidence_of_another_shape_draws_nothing():
    assert picture(_f("I302", {"components": "not a dict"})) == ""
    assert picture(_f("P402", {"accuracy_by_length": [{"len": 1}]})) == ""
    assert picture(_f("R201", {"anything": 1})) == ""
