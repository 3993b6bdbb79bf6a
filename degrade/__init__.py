"""degrade: tells you why your trained transformer performs badly, and where to look first.

    import degrade
    d = degrade.diagnose("runs/my-run", eval_data="eval.jsonl")
    print(d.verdict["headline"]); d.save("report.html")
"""
from degrade.check import Check, CheckResult
from degrade.errors import InputError
from degrade.finding import Finding, Severity
from degrade.layers import Layer

__version__ = "0.1.0"

__all__ = ["diagnose", "Diagnosis", "Finding", "Severity", "Layer", "Check", "CheckResult",
           "InputError", "Recorder", "DegradeCallback", "DegradeLightningCallback", "__version__"]

_RECORDERS = ("Recorder", "DegradeCallback", "DegradeLightningCallback")


def __getattr__(name):  # imported on first use: `import degrade` stays light, and a Ctrl-C while
    # the heavy modules load lands inside the CLI's handler rather than in a traceback
    if name in _RECORDERS:
        import degrade.record
        return getattr(degrade.record, name)
    if name == "diagnose":
        from degrade.api import diagnose
        return diagnose
    if name == "Diagnosis":
        from degrade.diagnosis import Diagnosis
        return Diagnosis
    raise AttributeError(f"module 'degrade' has no attribute {name!r}")
