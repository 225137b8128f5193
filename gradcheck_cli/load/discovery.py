"""Finding the model in a file's or module's namespace: the name the user gave, else the conventions
(factories, instances, buildable classes) in order; building it, and recording how it was found and where
it is defined."""

from __future__ import annotations

import inspect
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from gradcheck_cli.common import stages
from gradcheck_cli.common.errors import GradcheckError, quoted
from gradcheck_cli.load.importing import input_message
from gradcheck_cli.load.loaded_model import LoadedModel
from gradcheck_cli.measure.torch_compat import is_compiled_function, original_module

# Conventions for finding the model in a file, in the order they are tried.
FACTORY_NAMES = ("build_model", "get_model", "create_model", "make_model", "model_fn")
INSTANCE_NAMES = ("model", "net", "network", "module")


def find_model(namespace: dict[str, Any], entry: str | None, where: str, module_name: str) -> LoadedModel:
    if entry:
        if entry not in namespace:
            candidates = _all_candidates(namespace, module_name)
            listed = ", ".join(candidates) if candidates else "none found"
            raise GradcheckError(f"{where} has no {entry!r}; candidates: {listed}.")
        model, how = _materialize(entry, namespace[entry], where)
        return LoadedModel(model, how, namespace, None, *_source_of(namespace, entry))
    for candidates in _candidates_by_convention(namespace, module_name):
        if len(candidates) == 1:
            name = candidates[0]
            model, how = _materialize(name, namespace[name], where)
            return LoadedModel(model, how, namespace, None, *_source_of(namespace, name))
        if len(candidates) > 1:
            raise GradcheckError(
                f"{where} has several candidate models: {', '.join(candidates)}; pick one with --entry NAME "
                f"(or {where}:NAME)."
            )
    raise GradcheckError(
        f"no model found in {where}: define build_model() (or get_model/create_model/make_model/model_fn), a "
        "module-level nn.Module instance named model or net, or one nn.Module class that takes no arguments; "
        "or name it with --entry NAME."
    )


def _source_of(namespace: dict[str, Any], name: str) -> tuple[str | None, int | None]:
    """The file that defines ``name`` and the line: a function's or class's ``def``, else the first line
    that assigns the name at module level."""
    filename = namespace.get("__file__")
    if not filename:
        return None, None
    obj = namespace.get(name)
    try:
        if inspect.isfunction(obj) or inspect.isclass(obj):
            return _relative(filename), inspect.getsourcelines(obj)[1]
        assignment = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=")
        for number, line in enumerate(_read_source(filename).splitlines(), 1):
            if assignment.match(line):
                return _relative(filename), number
    except (OSError, TypeError, SyntaxError):
        pass
    return _relative(filename), None


def _read_source(filename: str) -> str:
    """The file's text in the encoding Python read it with (PEP 263 coding line, else UTF-8). Python
    accepts undecodable bytes in comments, so they are replaced here rather than failing."""
    with open(filename, "rb") as file:
        encoding, _ = tokenize.detect_encoding(file.readline)
        file.seek(0)
        return file.read().decode(encoding, errors="replace")


def _relative(filename: str) -> str:
    path = Path(filename).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _candidates_by_convention(namespace: dict[str, Any], module_name: str) -> Iterator[list[str]]:
    """Candidates per convention, in the order they are tried: factories, instances, buildable classes."""
    yield [name for name in FACTORY_NAMES if callable(namespace.get(name))]
    instances = [name for name, value in namespace.items() if isinstance(value, nn.Module) and not name.startswith("_")]
    conventional = [name for name in INSTANCE_NAMES if name in instances]
    if conventional:
        distinct = {id(original_module(namespace[name])) for name in conventional}  # model = torch.compile(net)
        yield conventional[:1] if len(distinct) == 1 else conventional
    else:
        # Any other instance counts if it has parameters and is not part of another one (an activation
        # or an encoder wrapped by the model is not the model).
        weighted = [name for name in instances if _has_parameters(namespace[name])]
        inner = {id(sub) for name in weighted for sub in namespace[name].modules() if sub is not namespace[name]}
        yield [name for name in weighted if id(namespace[name]) not in inner]
    yield [
        name
        for name, value in namespace.items()
        if inspect.isclass(value)
        and issubclass(value, nn.Module)
        and value.__module__ == module_name
        and _buildable_without_arguments(value)
    ]


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _all_candidates(namespace: dict[str, Any], module_name: str) -> list[str]:
    return [name for group in _candidates_by_convention(namespace, module_name) for name in group]


def _buildable_without_arguments(cls: type) -> bool:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


def _materialize(name: str, value: Any, where: str) -> tuple[nn.Module, str]:
    if isinstance(value, nn.Module):
        return value, f"the nn.Module instance `{name}` in {where}"
    if inspect.isclass(value) and issubclass(value, nn.Module):
        how = f"{name}() (the nn.Module class in {where}, built with no arguments)"
    elif is_compiled_function(value):
        raise GradcheckError(
            f"{name!r} in {where} is a function compiled with torch.compile, which gradcheck does not run; point it "
            "at the nn.Module (torch.compile(module) is fine: it is measured through its original module) or at "
            "a function that builds one, not compiled."
        )
    elif callable(value):
        how = f"{name}() in {where}"
    else:
        raise GradcheckError(
            f"{name!r} in {where} is a {type(value).__name__}, not a model or a function that builds one."
        )
    with stages.user_code(stages.BUILD):
        try:
            model = value()
        except EOFError as error:
            raise GradcheckError(input_message(error, f"{name}() in {where}", stages.BUILD)) from error
        except Exception as error:
            raise GradcheckError(f"{name}() in {where} raised {type(error).__name__}: {_device_hint(error)}") from error
    if not isinstance(model, nn.Module):
        raise GradcheckError(f"{name}() in {where} returned a {type(model).__name__}, not an nn.Module.")
    return model, how


def _device_hint(error: Exception) -> str:
    text = quoted(error)
    if "CUDA" in text or "cuda" in text or "NVIDIA driver" in text:  # the last: torch's CUDA build, no GPU
        return f"{text} (the model asks for a GPU this machine does not have; build it on the CPU)"
    return text
