"""What loading a torch.export archive would run as code, found before torch sees the file.

torch.export.load (torch 2.13) unpickles the saved sample inputs, legacy weight and constant files and
every payload marked use_pickle, falling back to weights_only=False; it pickle.loads custom and opaque
objects; it loads AOTInductor shared libraries; and it evaluates every shape expression with
sympy.sympify, which is Python's eval. Each is checked here, on the same bytes, before torch sees them.
Call targets in the graph are checked by torch's own verifier as it loads (tests/test_hostile_loading.py).
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import os
import re
import zipfile
from collections.abc import Iterator

import torch

from gradcheck_cli.load.quiet_torch import quiet_torch

# Read by the older (torch 2.7) zip format that torch.export.load falls back to; each is unpickled.
_LEGACY_EXPORT_PICKLES = (
    "serialized_state_dict.pt",
    "serialized_state_dict.json",
    "serialized_constants.pt",
    "serialized_constants.json",
    "serialized_example_inputs.pt",
)
_MAX_FORMULA_LENGTH = 10_000
# Strings in a shape formula are symbol names or numbers (Symbol('s0'), Float('1.5')): a string that
# sympy parses again can then only name something, never call it.
_FORMULA_STRING = re.compile(r"[A-Za-z][A-Za-z0-9_]*|[-+0-9.eE]+")
_FORMULA_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.keyword, ast.Name, ast.Load,
    ast.Constant, ast.Tuple, ast.operator, ast.unaryop, ast.cmpop, ast.boolop,
)  # fmt: skip


def export_hazard(data: bytes) -> str | None:
    """What in this torch.export archive loading would run as code, said for the user; None when it holds
    only what ``torch.load(weights_only=True)`` reads and shape formulas. Both formats torch.export.load
    tries are checked: the .pt2 archive, then the older zip format it falls back to."""
    return _pt2_hazard(data) or _legacy_export_hazard(data)


def _pt2_hazard(data: bytes) -> str | None:
    from torch.export.pt2_archive import PT2ArchiveReader
    from torch.export.pt2_archive import constants as pt2

    try:
        with quiet_torch():
            reader = PT2ArchiveReader(io.BytesIO(data))
            names = set(reader.get_file_names())
    except Exception:
        return None  # not a .pt2 archive: torch.export.load reads none of it either
    if any(name.startswith(pt2.AOTINDUCTOR_DIR) for name in names):
        return "compiled AOTInductor code"

    def read(name: str) -> bytes | None:
        return reader.read_bytes(name) if name in names else None

    prefix, suffix = pt2.MODELS_FILENAME_FORMAT.split("{}")
    for file in sorted(names):
        if not file.startswith(pt2.MODELS_DIR):
            continue
        model_name = file[len(prefix) : -len(suffix)]  # as torch.export.load slices it
        expression = _unsafe_expression(read(file))
        if expression is not None:
            return f"a shape expression that is not a formula ({expression[:60]!r})"
        pickled = [pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model_name)]
        for directory, config_format in (
            (pt2.WEIGHTS_DIR, pt2.WEIGHTS_CONFIG_FILENAME_FORMAT),
            (pt2.CONSTANTS_DIR, pt2.CONSTANTS_CONFIG_FILENAME_FORMAT),
        ):
            legacy = f"{directory}{model_name}.pt"
            if legacy in names:
                pickled.append(legacy)
                continue
            for path_name, use_pickle in _payloads(read(config_format.format(model_name))):
                if path_name.startswith((pt2.CUSTOM_OBJ_FILENAME_PREFIX, pt2.OPAQUE_OBJ_FILENAME_PREFIX)):
                    return f"pickled Python objects ({os.path.join(directory, path_name)})"
                if use_pickle:
                    pickled.append(os.path.join(directory, path_name))
        for name in pickled:
            if not _loads_weights_only(read(name)):
                return f"pickled Python objects ({name})"
    return None


def _legacy_export_hazard(data: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if "version" not in archive.namelist():
                return None  # torch.export.load refuses the file before reading any of it
            for info in archive.infolist():  # read the way torch.export.load reads them
                if info.filename == "serialized_exported_program.json":
                    expression = _unsafe_expression(archive.read(info.filename))
                    if expression is not None:
                        return f"a shape expression that is not a formula ({expression[:60]!r})"
                elif info.filename in _LEGACY_EXPORT_PICKLES and not _loads_weights_only(archive.read(info.filename)):
                    return f"pickled Python objects ({info.filename})"
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError):
        return None  # unreadable here is unreadable to torch.export.load too, before anything is unpickled
    return None


def _payloads(config: bytes | None) -> Iterator[tuple[str, bool]]:
    """(path_name, use_pickle) of each payload a weights or constants config lists."""
    try:
        entries = json.loads(config or b"{}").get("config") or {}
    except (ValueError, RecursionError, AttributeError):
        return  # torch cannot read the config either, and stops there
    for entry in entries.values() if isinstance(entries, dict) else ():
        if isinstance(entry, dict) and isinstance(entry.get("path_name"), str):
            yield entry["path_name"], bool(entry.get("use_pickle"))


def _loads_weights_only(data: bytes | None) -> bool:
    """Whether the weights-only unpickler, which runs no code from the file, reads ``data``."""
    if not data:
        return True  # torch reads an empty artifact as {} without unpickling
    try:
        with quiet_torch():
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def _unsafe_expression(program_json: bytes | None) -> str | None:
    """The first shape expression (``expr_str``) in a serialized program that is not a plain formula."""
    try:
        document = json.loads(program_json or b"{}")
    except (ValueError, RecursionError):
        return None  # torch cannot read the program either
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str" and not (isinstance(value, str) and is_formula(value)):
                    return str(value)
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return None


def is_formula(text: str) -> bool:
    """A sympy expression as torch writes it (``Max(Integer(1), Symbol('s0', positive=True))``): calls of
    sympy expression classes on names, numbers and formulas. No attributes, subscripts or other calls,
    which sympify would evaluate as Python."""
    if len(text) > _MAX_FORMULA_LENGTH:
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _FORMULA_NODES):
            return False
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or not _is_expression_class(node.func.id):
                return False
            if any(keyword.arg is None for keyword in node.keywords):
                return False
        elif isinstance(node, ast.Name) and (node.id.startswith("_") or hasattr(builtins, node.id)):
            return False
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if not _FORMULA_STRING.fullmatch(node.value):
                return False
        elif isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, bool)):
            return False
    return True


def _is_expression_class(name: str) -> bool:
    """A sympy expression class, or one of torch's (FloorDiv, ModularIndexing...), that sympify would
    call by this name."""
    import sympy
    import torch.utils._sympy.functions as torch_functions

    if name.startswith("_") or hasattr(builtins, name):
        return False
    # sympify looks a name up in torch's table first, then in sympy's: both, where they exist, must be classes.
    found = [getattr(module, name) for module in (torch_functions, sympy) if hasattr(module, name)]
    return bool(found) and all(isinstance(value, type) and issubclass(value, sympy.Basic) for value in found)
