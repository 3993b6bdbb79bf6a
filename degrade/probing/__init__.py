"""Machinery shared by the model-based checks: batched scoring, hooks, ablation."""
