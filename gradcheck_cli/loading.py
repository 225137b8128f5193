"""The loading layer: turn what the user pointed at into an ``nn.Module``, and say how it was found.

Targets: a Python file (``model.py``, ``model.py:NAME``), an importable object (``pkg.module:factory``),
or a saved model (TorchScript archive, ``torch.export`` program, or, with ``--trust-pickle``, a pickled
module). Every failure is a ``GradcheckError`` whose message names the problem and the way out.
``sys.path`` and ``sys.modules`` are restored after importing the user's code.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import re
import sys
import traceback
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradcheck_cli.errors import GradcheckError

# Conventions for finding the model in a file, in the order they are tried.
FACTORY_NAMES = ("build_model", "get_model", "create_model", "make_model", "model_fn")
INSTANCE_NAMES = ("model", "net", "network", "module")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".jit", ".torchscript", ".ckpt", ".bin")
_module_counter = itertools.count()


@dataclass
class LoadedModel:
    model: nn.Module
    description: str  # how it was found, e.g. "build_model() in examples/mlp.py"
    namespace: dict[str, Any] = field(default_factory=dict)  # the file's globals: example_inputs, loss_fn
    saved_inputs: tuple[tuple, dict] | None = None  # (args, kwargs) stored with a torch.export program
    # Where the model is defined, for annotations that point at it (SARIF, GitHub): the file, and the
    # line of the factory, class or assignment used (None for a saved model).
    source_path: str | None = None
    source_line: int | None = None


def load_target(
    target: str, *, entry: str | None = None, paths: list[str] | None = None, trust_pickle: bool = False
) -> LoadedModel:
    """Resolve ``target`` to a model. ``entry`` picks a name in a file or module explicitly."""
    location, _, attribute = _split_target(target)
    if attribute and entry and attribute != entry:
        raise GradcheckError(f"{target} names {attribute!r} but --entry names {entry!r}; give only one of them.")
    entry = attribute or entry
    path = Path(location)
    if path.suffix == ".py" or path.exists():
        if not path.exists():
            raise GradcheckError(f"{location}: file not found; check the path (it is relative to {Path.cwd()}).")
        if path.is_dir():
            raise GradcheckError(f"{location} is a folder; point gradcheck at a model file (.py) or a saved model.")
        if path.suffix.lower() in CHECKPOINT_SUFFIXES or (path.suffix != ".py" and zipfile.is_zipfile(path)):
            if entry:
                raise GradcheckError(f"{location} is a saved model, which has no names to pick; drop :{entry}.")
            return load_checkpoint(path, trust_pickle=trust_pickle)
        if path.suffix != ".py":
            raise GradcheckError(
                f"{location} is not a Python file or a saved model; pass a .py file that builds the model, "
                "a TorchScript / torch.export archive, or package.module:factory."
            )
        # The factory runs inside the import context too: it may import the file's siblings lazily.
        with _importable(paths or [], extra=path.resolve().parent):
            namespace = _exec_file(path)
            return _find_model(namespace, entry, where=str(location), module_name=namespace["__name__"])
    if "/" in location or location.endswith(CHECKPOINT_SUFFIXES):
        raise GradcheckError(f"{location}: file not found; check the path (it is relative to {Path.cwd()}).")
    if not attribute:
        raise GradcheckError(
            f"{target} is neither a file nor package.module:object; pass a model file such as model.py, or "
            "name the object, e.g. mypackage.models:build_model."
        )
    with _importable(paths or [], extra=Path.cwd()):
        module = _import_module(location)
        return _find_model(vars(module), entry, where=location, module_name=module.__name__)


def _split_target(target: str) -> tuple[str, str, str]:
    """'model.py:build' -> ('model.py', ':', 'build'); Windows drive letters are not split."""
    head, sep, tail = target.rpartition(":")
    if not sep or not tail or "/" in tail or "\\" in tail or len(head) <= 1:
        return target, "", ""
    return head, sep, tail


@contextmanager
def _importable(paths: list[str], extra: Path) -> Iterator[None]:
    """Put the target's folder and --path entries first on sys.path; restore sys.path and drop the
    modules the user's code imported from those folders afterwards, so nothing is left half-done."""
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    sys.path[:0] = [str(Path(p).resolve()) for p in paths] + [str(extra)]
    try:
        yield
    finally:
        sys.path[:] = saved_path
        roots = [str(Path(p).resolve()) for p in paths] + [str(extra)]
        for name in set(sys.modules) - saved_modules:
            module = sys.modules[name]
            # Namespace packages have no __file__, only a __path__.
            origins = [getattr(module, "__file__", None) or "", *list(getattr(module, "__path__", None) or [])]
            if any(origin.startswith(root) for origin in origins for root in roots):
                del sys.modules[name]


def _exec_file(path: Path) -> dict[str, Any]:
    name = f"_gradcheck_model_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GradcheckError(f"{path}: cannot be imported as a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it executes
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise GradcheckError(
            f"{error.filename or path}:{error.lineno}: syntax error: {error.msg}; fix the file and rerun."
        ) from error
    except ImportError as error:
        line = _line_in(error, path)
        missing = f"`{error.name}`" if getattr(error, "name", None) else "a module"
        raise GradcheckError(
            f"{path}{line} imports {missing}, which failed: {error}. Install it, or add its folder with --path."
        ) from error
    except Exception as error:
        raise GradcheckError(
            f"{path}{_line_in(error, path)} raised {type(error).__name__} while being imported: {error}"
        ) from error
    finally:
        sys.modules.pop(name, None)
    return vars(module)


def _line_in(error: BaseException, path: Path) -> str:
    """':LINE' of the deepest frame of the traceback that is in the user's file."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f":{frames[-1].lineno}" if frames else ""


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise GradcheckError(
                f"cannot import {name}: no module named {error.name!r} on the path; run from the folder "
                "that holds it or add that folder with --path."
            ) from error
        raise GradcheckError(
            f"{name} imports `{error.name}`, which is not installed: {error}. Install it, or add its folder with --path."
        ) from error
    except SyntaxError as error:
        raise GradcheckError(
            f"{error.filename}:{error.lineno}: syntax error: {error.msg}; fix the file and rerun."
        ) from error
    except Exception as error:
        raise GradcheckError(f"importing {name} raised {type(error).__name__}: {error}") from error


def _find_model(namespace: dict[str, Any], entry: str | None, where: str, module_name: str) -> LoadedModel:
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
        for number, line in enumerate(Path(filename).read_text(encoding="utf-8").splitlines(), 1):
            if assignment.match(line):
                return _relative(filename), number
    except (OSError, TypeError):
        pass
    return _relative(filename), None


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
        distinct = {id(namespace[name]) for name in conventional}
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
    elif callable(value):
        how = f"{name}() in {where}"
    else:
        raise GradcheckError(
            f"{name!r} in {where} is a {type(value).__name__}, not a model or a function that builds one."
        )
    try:
        model = value()
    except Exception as error:
        raise GradcheckError(f"{name}() in {where} raised {type(error).__name__}: {_device_hint(error)}") from error
    if not isinstance(model, nn.Module):
        raise GradcheckError(f"{name}() in {where} returned a {type(model).__name__}, not an nn.Module.")
    return model, how


def _device_hint(error: Exception) -> str:
    text = str(error)
    if "CUDA" in text or "cuda" in text:
        return f"{text} (the model asks for a GPU this machine does not have; build it on the CPU)"
    return text


def load_checkpoint(path: Path, *, trust_pickle: bool) -> LoadedModel:
    """Tell the saved formats apart by their archive contents, and refuse to unpickle without consent."""
    names = _archive_names(path)
    if any(name.endswith("archive_format") for name in names) or path.suffix == ".pt2":
        return _load_export(path)
    if any(name.endswith("constants.pkl") for name in names):
        return _load_torchscript(path)
    if not _is_torch_save(path, names):
        raise GradcheckError(
            f"{path} is not a saved model gradcheck can read: save it with torch.jit.script(model).save(...), "
            "torch.export.save(...) or torch.save(model), or scan the .py file that builds it."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "Weights only load failed" not in str(error):
            raise GradcheckError(f"{path} could not be read as a torch.save file: {error}") from error
        if not trust_pickle:
            raise GradcheckError(
                f"{path} is a pickled Python object; unpickling runs arbitrary code from the file, so gradcheck "
                "loads it only with --trust-pickle (use it for files you trust), or save the model with "
                "torch.jit.script(model).save(...) or torch.export instead."
            ) from error
        obj = _unpickle(path)
    if isinstance(obj, nn.Module):
        return LoadedModel(obj, f"the pickled module in {path}", source_path=str(path))
    raise GradcheckError(_not_a_model(path, obj))


def _is_torch_save(path: Path, names: list[str]) -> bool:
    """torch.save writes a zip archive with a data.pkl, or (legacy format) a raw pickle stream."""
    if any(name.endswith("data.pkl") for name in names):
        return True
    with open(path, "rb") as file:
        return file.read(1) == b"\x80"  # the pickle protocol opcode that starts protocol 2+ streams


def _archive_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _load_torchscript(path: Path) -> LoadedModel:
    try:
        model = torch.jit.load(str(path))
    except RuntimeError as error:
        if "cuda" in str(error).lower():
            raise GradcheckError(
                f"{path} was saved on a CUDA device, which this machine does not have; re-save it from the CPU "
                "(model.cpu()) or scan it where a GPU is."
            ) from error
        raise GradcheckError(f"{path} is not a readable TorchScript archive: {error}") from error
    return LoadedModel(model, f"the TorchScript module in {path}", source_path=str(path))


def _load_export(path: Path) -> LoadedModel:
    try:
        program = torch.export.load(str(path))
        # unflatten restores the original module hierarchy, so layers can be hooked one by one.
        model = torch.export.unflatten(program)
    except Exception as error:
        raise GradcheckError(f"{path} is not a readable torch.export program: {error}") from error
    loaded = LoadedModel(model, f"the torch.export program in {path}", source_path=str(path))
    # The program was traced with example inputs and may be specialized to their shapes: reuse them.
    if getattr(program, "example_inputs", None) is not None:
        loaded.saved_inputs = program.example_inputs
    return loaded


def _unpickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location=None, weights_only=False)
    except RuntimeError as error:
        if "cuda" in str(error).lower():
            raise GradcheckError(
                f"{path} holds tensors on a CUDA device, which this machine does not have; save it from the CPU."
            ) from error
        raise GradcheckError(f"{path} could not be unpickled: {error}") from error
    except Exception as error:
        raise GradcheckError(f"{path} could not be unpickled: {type(error).__name__}: {error}") from error


def _not_a_model(path: Path, obj: Any) -> str:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return (
            f"{path} holds a state_dict ({len(obj)} tensors), not a model; write a model.py whose build_model() "
            "creates the model and loads it with model.load_state_dict(torch.load(...)), and scan that."
        )
    if isinstance(obj, dict) and "state_dict" in obj:
        return (
            f"{path} is a training checkpoint (a dict with a state_dict), not a model; write a model.py whose "
            "build_model() creates the model and loads checkpoint['state_dict'], and scan that."
        )
    return f"{path} holds a {type(obj).__name__}, not a model; save the nn.Module itself (TorchScript or torch.export)."
