"""DegradeBench: small real training runs, healthy or with one injected fault, and their scoring.

tasks.py generates data, tiny_gpt.py is a plain nn.Module transformer whose faults live in its
code, train.py trains runs with the Hugging Face Trainer or a plain loop with degrade's Recorder.
"""
