"""The ladder's layers and the order degrade walks them (DESIGN.md §1)."""
from enum import Enum


class Layer(str, Enum):
    OBSERVATION = "observation"  # M_O: what the evaluation tells us
    REACHABILITY = "reachability"  # M_R: what training actually reached
    INSTANTIATION = "instantiation"  # M_I: the code that realises the hypothesis
    PERCEPTION = "perception"  # M_P: the hypothesis itself
    FLOOR = "floor"  # M_D: estimates of the irreducible loss (D5xx), never a verdict
    TOOL = "tool"  # X9xx: degrade's own trouble (a check failed, an input was unreadable)

    def __str__(self) -> str:
        return self.value


# Backwards, from the outside in: a layer's evidence is only trustworthy once the layers outside it
# are clean, so the outermost degraded layer is the verdict.
WALK = (Layer.OBSERVATION, Layer.REACHABILITY, Layer.INSTANTIATION, Layer.PERCEPTION)

CODE_PREFIX = {"O": Layer.OBSERVATION, "R": Layer.REACHABILITY, "I": Layer.INSTANTIATION,
               "P": Layer.PERCEPTION, "D": Layer.FLOOR, "X": Layer.TOOL}
