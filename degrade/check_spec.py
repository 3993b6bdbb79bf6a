"""What the pipeline knows about a check before importing it: its code, name, layer, needs,
options and documentation, read from the check's source with `ast`.

Why: importing every check module imports torch (most model checks need it at module level), and
a history-only diagnosis, `degrade checks` or `degrade --help` must not pay seconds for that. A
check whose needs are unmet is skipped from its spec alone; its module is imported only when it
runs. The class attributes the spec reads must be literals (a test compares every spec with the
class it describes); a class the reader cannot follow is imported instead.
"""
from __future__ import annotations

import ast
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from degrade.layers import Layer
from degrade.option import Option, declared, defaults

_ATTRS = ("code", "name", "layer", "needs", "options", "publishes_axes", "probes", "requires_learning", "tasks",
          "compares_forwards")
DEFAULT_TASKS = frozenset({"causal-lm", "sequence-classification"})  # check.py: Check.tasks


@dataclass(frozen=True)
class CheckSpec:
    code: str
    name: str
    layer: Layer
    needs: frozenset = frozenset()
    options: dict = field(default_factory=dict, hash=False, compare=False)  # name -> default
    publishes_axes: bool = False
    probes: int = 0
    docstring: str = ""
    module: str = ""
    qualname: str = ""
    cls: Any = field(default=None, hash=False, compare=False)  # set for plugins (already loaded)
    option_list: tuple = field(default=(), hash=False, compare=False)  # the Option declarations
    requires_learning: bool = False
    tasks: frozenset = DEFAULT_TASKS
    compares_forwards: bool = False

    def load(self):
        """The check class (imports its module the first time)."""
        if self.cls is not None:
            return self.cls
        cls = getattr(importlib.import_module(self.module), self.qualname)
        object.__setattr__(self, "cls", cls)
        return cls

    def doc(self) -> str:
        return inspect.cleandoc(self.docstring or "(no documentation)")

    def summary(self) -> str:
        """The docstring's first paragraph, on one line."""
        return " ".join(self.doc().split("\n\n")[0].split())

    @classmethod
    def of(cls, check_class) -> "CheckSpec":
        """The spec of a loaded class (plugins, tests)."""
        if isinstance(check_class, CheckSpec):
            return check_class
        return cls(check_class.code, check_class.name, check_class.layer, frozenset(check_class.needs),
                   defaults(check_class.options), bool(check_class.publishes_axes),
                   int(getattr(check_class, "probes", 0)), check_class.__doc__ or "",
                   check_class.__module__, check_class.__qualname__, check_class,
                   tuple(declared(check_class.options)), bool(getattr(check_class, "requires_learning", False)),
                   frozenset(getattr(check_class, "tasks", DEFAULT_TASKS)),
                   bool(getattr(check_class, "compares_forwards", False)))


def specs_in(path: Path, module: str) -> list[CheckSpec] | None:
    """The specs of the check classes a module's source defines, or None when the source holds
    something the reader cannot follow (then the module is imported)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or not any(_name(b) == "Check" for b in node.bases):
            continue
        attrs = _class_attrs(node)
        if attrs is None or "code" not in attrs:
            return None
        try:
            layer = Layer(attrs["layer"])
        except (KeyError, ValueError):
            return None
        options = attrs.get("options", ())
        out.append(CheckSpec(attrs["code"], attrs["name"], layer, frozenset(attrs.get("needs", ())),
                             defaults(options), attrs.get("publishes_axes", False),
                             attrs.get("probes", 0), ast.get_docstring(node, clean=False) or "",
                             module, node.name, option_list=tuple(declared(options)),
                             requires_learning=attrs.get("requires_learning", False),
                             tasks=frozenset(attrs.get("tasks", DEFAULT_TASKS)),
                             compares_forwards=attrs.get("compares_forwards", False)))
    return out


def _name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _class_attrs(node: ast.ClassDef) -> dict[str, Any] | None:
    attrs: dict[str, Any] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            targets, value = [stmt.targets[0]], stmt.value
        else:
            continue
        t = targets[0]
        pairs = (list(zip(t.elts, value.elts)) if isinstance(t, ast.Tuple) and isinstance(value, ast.Tuple)
                 else [(t, value)])
        for target, val in pairs:
            if isinstance(target, ast.Name) and target.id in _ATTRS:
                try:
                    attrs[target.id] = _literal(val)
                except ValueError:
                    return None
    return attrs


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Attribute) and _name(node.value) == "Layer":  # Layer.REACHABILITY
        return Layer[node.attr].value
    if isinstance(node, ast.Call) and _name(node.func) == "frozenset":
        return frozenset(_literal(node.args[0])) if node.args else frozenset()
    if isinstance(node, ast.Call) and _name(node.func) == "Option":
        return Option(*(_literal(a) for a in node.args), **{k.arg: _literal(k.value) for k in node.keywords})
    if isinstance(node, (ast.Tuple, ast.List)):  # may hold Option(...) calls
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.JoinedStr):
        raise ValueError("an f-string is not a literal")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # implicit concatenation split by +
        return _literal(node.left) + _literal(node.right)
    return ast.literal_eval(node)
