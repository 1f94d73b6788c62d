"""Opening ``.pt2`` files (``torch.export.save``) without running code that came with them.

``torch.export.load`` is not safe on a file from someone else (read in torch 2.13's
``torch/export/pt2_archive/_package.py`` and ``torch/_export/serde/serialize.py``, and its
own docstring says "uses pickle under the hood... Never load data from an untrusted source"):

- weights and constants marked ``use_pickle`` go through ``torch.load(weights_only=False)``;
- ``custom_obj_*`` / ``opaque_obj_*`` constants through ``torch._C._pickle_load_obj`` and
  ``pickle.loads``;
- sample inputs through ``torch.load(weights_only=True)`` with a silent fallback to
  ``weights_only=False``; archives in the older zip layout the same way;
- ``data/aotinductor/`` holds compiled shared libraries;
- shape expressions (``expr_str``) are parsed with ``sympy.sympify``, which uses ``eval``;
- node targets are looked up by ``getattr`` from strings, so a crafted graph could call
  ``torch.ops.load_library`` or ``torch.os.system``;
- ``ExportedProgram.module()`` turns the stored ``guards_code`` strings into Python source
  and ``exec``s it.

So :func:`check_pt2` reads the archive with ``zipfile`` and ``json`` first and refuses all of
the above; only then is ``torch.export.load`` called. What is left (raw tensor bytes, a graph
of registered operators, sample inputs that ``weights_only`` accepts) runs no stored code.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path

from maas_lab.errors import UsageError
from maas_lab.hints import command

_FIXED = {
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
}
_ALLOWED = re.compile(
    r"^(models/(?P<model>[A-Za-z0-9_.-]+)\.json"
    r"|data/sample_inputs/[A-Za-z0-9_.-]+\.pt"
    r"|data/weights/[A-Za-z0-9_.-]+_weights_config\.json"
    r"|data/weights/weight_[0-9]+"
    r"|data/constants/[A-Za-z0-9_.-]+_constants_config\.json"
    r"|data/constants/tensor_[0-9]+"
    r"|extra/[^/]+)$"
)
_SYMBOL = re.compile(r"^[a-z]+[0-9]+$")
# What sympy.srepr / str write for torch's shape expressions, and nothing that reaches Python.
_SYM_CALLS = {
    "Symbol",
    "Integer",
    "Float",
    "Rational",
    "Add",
    "Mul",
    "Pow",
    "Max",
    "Min",
    "Mod",
    "Abs",
    "Eq",
    "Ne",
    "Lt",
    "Le",
    "Gt",
    "Ge",
    "And",
    "Or",
    "Not",
    "floor",
    "ceiling",
    "sqrt",
    "Piecewise",
    "ExprCondPair",
    "StrictLessThan",
    "StrictGreaterThan",
    "LessThan",
    "GreaterThan",
    "Equality",
    "Unequality",
    "BooleanTrue",
    "BooleanFalse",
    "IntInfinity",
    "NegativeIntInfinity",
    "Infinity",
    "NegativeInfinity",
    "FloorDiv",
    "ModularIndexing",
    "Where",
    "PythonMod",
    "CleanDiv",
    "CeilToInt",
    "FloorToInt",
    "CeilDiv",
    "LShift",
    "RShift",
    "PowByNatural",
    "FloatPow",
    "FloatTrueDiv",
    "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat",
    "TruncToInt",
    "RoundToInt",
    "RoundDecimal",
    "ToFloat",
    "Identity",
}
_SYM_NAMES = {"oo", "zoo", "nan", "int_oo", "true", "false"}
_ASSUMPTIONS = {
    "positive",
    "negative",
    "nonnegative",
    "nonpositive",
    "integer",
    "real",
    "finite",
    "extended_real",
    "zero",
    "nonzero",
    "even",
    "odd",
    "rational",
}
_AST_OK = (
    ast.Expression,
    ast.Load,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.BoolOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.USub,
    ast.UAdd,
    ast.Not,
    ast.Invert,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.And,
    ast.Or,
    ast.BitAnd,
    ast.BitOr,
)
_OPERATOR_TARGETS = {
    "getitem",
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "mod",
    "pow",
    "neg",
    "pos",
    "abs",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and_",
    "or_",
    "xor",
    "not_",
    "invert",
    "lshift",
    "rshift",
}
# aten operators whose names are dunders (all other dunders are refused as attribute tricks):
# the bitwise and shift operators, registered as aten::__and__.Tensor etc. An encoder's
# attention mask is combined with ``&`` (transformers' masking_utils), giving aten.__and__.
_ATEN_DUNDERS = {"__and__", "__or__", "__xor__", "__lshift__", "__rshift__"}
_TORCH_TARGETS = {
    "torch.sym_int",
    "torch.sym_float",
    "torch.sym_max",
    "torch.sym_min",
    "torch.sym_not",
    "torch.sym_ite",
    "torch.sym_sqrt",
    "torch.sym_sum",
    "torch._sym_sqrt",
}


def _refuse(path: Path, why: str) -> UsageError:
    return UsageError(
        f"{path.name} is not a .pt2 file that can be opened safely: {why}. maas_lab only opens "
        "torch.export archives with plain tensor data and standard operators; export the "
        f"model again with torch.export.export + torch.export.save (or "
        f"{command('export', 'REF', to='torch-export')})."
    )


def check_sym_expr(text: str) -> None:
    """Raise ``ValueError`` unless ``text`` is a plain sympy shape expression."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"shape expression {text!r} does not parse") from None
    for node in ast.walk(tree):
        if isinstance(node, _AST_OK):
            continue
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _SYM_CALLS):
                raise ValueError(f"shape expression {text!r} calls {ast.unparse(node.func)}")
        elif isinstance(node, ast.Name):
            if node.id not in _SYM_CALLS and node.id not in _SYM_NAMES:
                if not _SYMBOL.fullmatch(node.id):
                    raise ValueError(f"shape expression {text!r} names {node.id!r}")
        elif isinstance(node, ast.keyword):
            value = node.value
            if node.arg not in _ASSUMPTIONS or not (
                isinstance(value, ast.Constant) and isinstance(value.value, bool)
            ):
                raise ValueError(f"shape expression {text!r} has argument {node.arg!r}")
        elif isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, str) and not _SYMBOL.fullmatch(v):
                raise ValueError(f"shape expression {text!r} holds the string {v!r}")
            if not isinstance(v, (str, int, float, bool)):
                raise ValueError(f"shape expression {text!r} holds {v!r}")
        else:
            raise ValueError(f"shape expression {text!r} uses {type(node).__name__}")


_GUARD_NAMES = {"L", "math", "inf"}
_GUARD_ATTRS = {"size", "stride", "storage_offset", "dim", "isnan", "inf"}
_GUARD_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_guard(text: str) -> None:
    """Raise ``ValueError`` unless a guard is arithmetic on input sizes, like
    ``(2*L['x'].size()[0]) != (1 + L['y'].size()[0])``: torch pastes it into code it execs."""
    if any(c in text for c in '\n\r#"\\'):
        raise ValueError(f"guard {text!r} has a newline, comment, quote or escape")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"guard {text!r} does not parse") from None
    for node in ast.walk(tree):
        if isinstance(node, _AST_OK + (ast.Subscript, ast.Call)):
            continue
        if isinstance(node, ast.Name) and (node.id in _GUARD_NAMES or node.id in _SYM_CALLS):
            continue
        if isinstance(node, ast.Attribute) and node.attr in _GUARD_ATTRS:
            continue
        if isinstance(node, ast.Constant) and (
            isinstance(node.value, (int, float, bool))
            or (isinstance(node.value, str) and _GUARD_KEY.fullmatch(node.value))
        ):
            continue
        raise ValueError(f"guard {text!r} uses {ast.unparse(node)!r}")


def check_target(target: str) -> None:
    """Raise ``ValueError`` unless a graph node calls a registered operator or plain math."""
    import math

    import torch

    if target.startswith("torch.ops."):
        parts = target.split(".")[2:]
        allowed = _ATEN_DUNDERS if parts[:1] == ["aten"] else set()
        dunders = [
            p for i, p in enumerate(parts) if p.startswith("__") and not (i == 1 and p in allowed)
        ]
        if not 2 <= len(parts) <= 3 or not all(parts) or dunders:
            raise ValueError(f"node target {target!r} is not an operator name")
        namespace = getattr(torch.ops, parts[0], None)
        spaces = tuple(
            getattr(torch._ops, n)
            for n in ("_OpNamespace", "_HigherOrderNamespace")
            if hasattr(torch._ops, n)
        )
        if not spaces or not isinstance(namespace, spaces):
            raise ValueError(f"node target {target!r} is not in an operator namespace")
        try:
            op = getattr(namespace, parts[1])
            if len(parts) == 3:
                op = getattr(op, parts[2])
        except (AttributeError, RuntimeError):
            raise ValueError(
                f"operator {target!r} is not registered in this process (a custom op whose "
                "library is not imported?)"
            ) from None
        if not isinstance(op, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
            if not (len(parts) == 2 and isinstance(op, torch._ops.OpOverloadPacket)):
                raise ValueError(f"node target {target!r} is not an operator")
        return
    if target.startswith("_operator.") and target.split(".", 1)[1] in _OPERATOR_TARGETS:
        return
    if target.startswith("math."):
        name = target.split(".", 1)[1]
        if name.isidentifier() and not name.startswith("_") and callable(getattr(math, name, 0)):
            return
    if target in _TORCH_TARGETS:
        return
    raise ValueError(f"node target {target!r} is not a registered operator")


def _walk(value, found: dict) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("guards_code"), list):
            found["guards"].extend(value["guards_code"])
        if isinstance(value.get("expr_str"), str):
            found["exprs"].append(value["expr_str"])
        if isinstance(value.get("target"), str) and "inputs" in value and "outputs" in value:
            found["targets"].add(value["target"])
        for v in value.values():
            _walk(v, found)
    elif isinstance(value, list):
        for v in value:
            _walk(v, found)


def check_pt2(path: str | Path) -> None:
    """Raise ``UsageError`` unless ``torch.export.load`` would run no code from ``path``."""
    import torch

    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _refuse(path, f"not a zip archive ({exc})") from None
    with archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any("/" not in n for n in names):
            raise _refuse(path, "the archive does not have the single root folder of torch 2.x")
        rel = {n.split("/", 1)[1]: n for n in names}
        odd = sorted(r for r in rel if r not in _FIXED and not _ALLOWED.fullmatch(r))
        if odd:
            raise _refuse(path, f"it holds {', '.join(odd[:3])} (pickled or compiled code)")
        if "archive_format" not in rel or archive.read(rel["archive_format"]).strip() != b"pt2":
            raise _refuse(path, "archive_format is not pt2")
        models = [m.group("model") for r in rel if (m := _ALLOWED.fullmatch(r)) and m["model"]]
        if not models:
            raise _refuse(path, "it holds no exported program (models/*.json)")
        found: dict = {"exprs": [], "targets": set(), "guards": []}
        for kind in ("weights", "constants"):
            for r in (r for r in rel if r.endswith(f"_{kind}_config.json")):
                config = json.loads(archive.read(rel[r]))
                for key, meta in (config.get("config") or {}).items():
                    if meta.get("use_pickle") or not (
                        str(meta.get("path_name", "")).startswith(("weight_", "tensor_"))
                    ):
                        raise _refuse(path, f"{kind} entry {key!r} is stored as a pickle")
        for model in models:
            sample = rel.get(f"data/sample_inputs/{model}.pt")
            if sample is None:
                raise _refuse(path, f"model {model!r} has no sample inputs")
            try:
                torch.load(io.BytesIO(archive.read(sample)), weights_only=True)
            except Exception as exc:
                raise _refuse(path, f"its sample inputs need full unpickling ({exc})") from None
            _walk(json.loads(archive.read(rel[f"models/{model}.json"])), found)
    try:
        for expr in found["exprs"]:
            check_sym_expr(expr)
        for target in sorted(found["targets"]):
            check_target(target)
        for guard in found["guards"]:
            if not isinstance(guard, str):
                raise ValueError(f"guard {guard!r} is not text")
            check_guard(guard)
    except ValueError as exc:
        raise _refuse(path, str(exc)) from None


def load_pt2(path: str | Path):
    """The ``ExportedProgram`` in ``path``, after :func:`check_pt2`."""
    import torch

    check_pt2(path)
    return torch.export.load(str(path))
