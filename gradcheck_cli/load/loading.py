"""The loading layer: turn what the user pointed at into an ``nn.Module``, and say how it was found.

Targets: a Python file (``model.py``, ``model.py:NAME``), an importable object (``pkg.module:factory``),
or a saved model (TorchScript archive, ``torch.export`` program, or, with ``--trust-pickle``, a pickled
module). Every failure is a ``GradcheckError`` whose message names the problem and the way out.
``sys.path`` and ``sys.modules`` are restored after importing the user's code, and no bytecode is written
beside it. Nothing is unpickled without ``trust_pickle``, whatever the file is named (issue 21).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import io
import itertools
import json
import logging
import os
import re
import sys
import tokenize
import traceback
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common import stages
from gradcheck_cli.common.errors import GradcheckError, describe_exception, quoted
from gradcheck_cli.common.files import file_kind
from gradcheck_cli.measure.torch_compat import EXPORT_ARCHIVE, is_compiled_function, original_module

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
    if target.endswith(":") and len(target) > 2 and not Path(target).exists():  # "C:" is a drive, not a name
        raise GradcheckError(
            f"the name after ':' in {target} is empty; write {target}NAME to pick a model, or drop the ':'."
        )
    location, _, attribute = _split_target(target)
    if attribute and entry and attribute != entry:
        raise GradcheckError(f"{target} names {attribute!r} but --entry names {entry!r}; give only one of them.")
    entry = attribute or entry
    path = Path(location)
    suffix = path.suffix.lower()  # MODEL.PY is a Python file too
    if suffix == ".py" or path.exists():
        if not path.exists():
            raise GradcheckError(f"{location}: file not found; check the path (it is relative to {Path.cwd()}).")
        if path.is_dir():
            raise GradcheckError(f"{location} is a folder; point gradcheck at a model file (.py) or a saved model.")
        if not path.is_file():
            # Checked before anything opens it: reading a FIFO waits for a writer, /dev/zero never ends.
            raise GradcheckError(
                f"{location} is {file_kind(path.stat().st_mode)}, not a regular file; point gradcheck at a model file "
                "(.py) or a saved model."
            )
        if suffix in CHECKPOINT_SUFFIXES or (suffix != ".py" and zipfile.is_zipfile(path)):
            if entry:
                raise GradcheckError(f"{location} is a saved model, which has no names to pick; drop :{entry}.")
            return load_checkpoint(path, trust_pickle=trust_pickle)
        if suffix != ".py":
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
    modules the user's code imported from those folders afterwards, so nothing is left half-done. No
    __pycache__ is written into the user's folders meanwhile (issue 21): gradcheck was not asked to."""
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    saved_dont_write_bytecode = sys.dont_write_bytecode
    sys.path[:0] = [str(Path(p).resolve()) for p in paths] + [str(extra)]
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = saved_dont_write_bytecode
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
    # The loader named explicitly: spec_from_file_location picks one by suffix, and has none for MODEL.PY.
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise GradcheckError(f"{path}: cannot be imported as a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it executes
    with stages.user_code(stages.IMPORT):
        try:
            spec.loader.exec_module(module)
        except SyntaxError as error:
            raise GradcheckError(_syntax_error_message(error, path)) from error
        except ImportError as error:
            where = f"{path}{_line_in(error, path)}"
            missing = f"`{error.name}`" if getattr(error, "name", None) else "a module"
            raise GradcheckError(
                _import_failure_beyond(error, where, own_module=name, own_folder=path.resolve().parent)
                or f"{where} imports {missing}, which failed: {quoted(error)}. Install it, or add its folder with --path."
            ) from error
        except EOFError as error:
            raise GradcheckError(_input_message(error, f"{path}{_line_in(error, path)}", stages.IMPORT)) from error
        except Exception as error:
            raise GradcheckError(
                f"{path}{_line_in(error, path)} raised {type(error).__name__} while being imported: {quoted(error)}"
            ) from error
        finally:
            sys.modules.pop(name, None)
    return vars(module)


def _syntax_error_message(error: SyntaxError, path: Path | str) -> str:
    where = f"{error.filename or path}:{error.lineno}"
    if "codec can't decode" in str(error.msg):
        # PEP 263: a source file is UTF-8 unless a coding line on line 1 or 2 says otherwise.
        return f"{where}: the file is not UTF-8; add a coding line (# -*- coding: latin-1 -*-) or save it as UTF-8."
    return f"{where}: syntax error: {error.msg}; fix the file and rerun."


def _input_message(error: EOFError, where: str, stage: str) -> str:
    """input() at the end of stdin raises EOFError: the scan's stdin is empty (/dev/null in the CLI's worker)."""
    when = "while being imported" if stage == stages.IMPORT else "while building the model"
    if str(error) != "EOF when reading a line":
        return f"{where} raised EOFError {when}: {quoted(error)}"
    fix = (
        "move the prompt under `if __name__ == '__main__':`"
        if stage == stages.IMPORT
        else "take the value from a default or an environment variable instead"
    )
    return f"{where} asked for input {when} (input()), which a scan cannot give; {fix}."


def _line_in(error: BaseException, path: Path) -> str:
    """':LINE' of the deepest frame of the traceback that is in the user's file."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f":{frames[-1].lineno}" if frames else ""


def _import_failure_beyond(error: ImportError, where: str, own_module: str, own_folder: Path) -> str | None:
    """The sentence for an import that failed beyond the user's own line (issue 22): their file imports
    `transformers`, whose own import of `foo` fails, or a package raises ImportError with a message of its
    own. It names the package whose import failed, where, and the underlying error; for an installed package
    the way out is to install or upgrade a dependency, not --path. None when the user's own import failed
    (the module they named is missing): the caller's sentence says so. Code under ``own_folder`` (the
    model file's folder, or the working folder for package.module) is the user's, even if installed."""
    own = own_module.partition(".")[0]
    modules = [
        (frame.f_globals.get("__name__") or "", line, frame.f_code.co_filename)
        for frame, line in traceback.walk_tb(error.__traceback__)
        # importlib's machinery (and any other standard-library frame) is the way there, not the place
        if (frame.f_globals.get("__name__") or "").partition(".")[0] not in sys.stdlib_module_names
    ]
    own_frames = [i for i, (module, _, _) in enumerate(modules) if module.partition(".")[0] == own]
    beyond = modules[own_frames[-1] + 1 :] if own_frames else []
    if not beyond and (isinstance(error, ModuleNotFoundError) or not error.name):
        return None
    installed = _installed_packages()
    if not beyond:
        asked = error.name.partition(".")[0]
        if asked not in installed:
            return None
        # `from torch import nmae`: the module is there, the name is not; installing it is no way out.
        return (
            f"{where}: {quoted(error)}. `{asked}` is installed: check the name, or upgrade it: "
            f"pip install --upgrade {installed[asked][0]}."
        )
    imported = beyond[0][0].partition(".")[0]  # what the user's line imported
    failing, line, filename = beyond[-1]  # the module whose code raised
    package = failing.partition(".")[0]
    chain = f"`{imported}`" if imported == package else f"`{imported}`, which imports `{package}`"
    distributions = None if Path(filename).resolve().is_relative_to(own_folder) else installed.get(package)
    if not distributions:  # the user's own code beside the file: their folder or their install to fix
        missing = f"`{error.name}`" if error.name else "a module"
        return (
            f"{where} imports {chain}, whose import of {missing} failed in {failing}, line {line}: {quoted(error)}. "
            "Install it, or add its folder with --path."
        )
    distribution = distributions[0]
    chain_of_errors = _chain(error)
    # A package's own error often wraps the one that says which module is missing (transformers' lazy imports).
    not_found = next((e for e in reversed(chain_of_errors) if isinstance(e, ModuleNotFoundError) and e.name), None)
    needed = ((not_found or error).name or "").partition(".")[0]
    if not_found is not None and needed != package:
        way_out = (
            f"Install the package that provides `{needed}`, which {package} needs, or upgrade {package}: "
            f"pip install --upgrade {distribution}"
        )
    elif needed and needed != package:  # `from foo import name` where foo lacks the name: versions disagree
        way_out = (
            f"Its version of `{needed}` does not fit; upgrade both: pip install --upgrade {distribution} "
            f"{(installed.get(needed) or [needed])[0]}"
        )
    else:
        way_out = f"Do what the message asks, or reinstall {package}: pip install --force-reinstall {distribution}"
    # The first error of the chain is the underlying one: a package's own ImportError often wraps the OSError
    # of a shared library that would not load.
    detail = describe_exception(error)
    if len(chain_of_errors) > 1:
        detail += f" (from {describe_exception(chain_of_errors[-1])})"
    return f"{where} imports {chain}, which failed in {failing}, line {line}: {detail}. {way_out}."


def _installed_packages() -> dict[str, list[str]]:
    """Import name -> the distributions that install it (half a second: on an error path only). A broken
    distribution's metadata must not turn the user's import error into gradcheck's traceback."""
    try:
        return dict(importlib.metadata.packages_distributions())
    except Exception:
        return {}


def _chain(error: BaseException) -> list[BaseException]:
    """The error, the one it was raised from (or while handling), and so on to the first."""
    chain = [error]
    while True:
        last = chain[-1]
        cause = last.__cause__ or (None if last.__suppress_context__ else last.__context__)
        if cause is None or any(cause is seen for seen in chain):
            return chain
        chain.append(cause)


def _import_module(name: str) -> Any:
    with stages.user_code(stages.IMPORT):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name and name.startswith(error.name):
                raise GradcheckError(
                    f"cannot import {name}: no module named {error.name!r} on the path; run from the folder "
                    "that holds it or add that folder with --path."
                ) from error
            raise GradcheckError(
                _import_failure_beyond(error, name, own_module=name, own_folder=Path.cwd().resolve())
                or f"{name} imports `{error.name}`, which is not installed: {quoted(error)}. Install it, or add its "
                "folder with --path."
            ) from error
        except ImportError as error:
            raise GradcheckError(
                _import_failure_beyond(error, name, own_module=name, own_folder=Path.cwd().resolve())
                or f"importing {name} raised {describe_exception(error)}"
            ) from error
        except SyntaxError as error:
            raise GradcheckError(_syntax_error_message(error, name)) from error
        except EOFError as error:
            raise GradcheckError(_input_message(error, name, stages.IMPORT)) from error
        except Exception as error:
            raise GradcheckError(f"importing {name} raised {describe_exception(error)}") from error


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
            raise GradcheckError(_input_message(error, f"{name}() in {where}", stages.BUILD)) from error
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


_SAVE_ADVICE = (
    "save the model with torch.export.save(torch.export.export(model, example_inputs), ...), or save its "
    "state_dict and scan a model.py whose build_model() loads it"
)


def load_checkpoint(path: Path, *, trust_pickle: bool) -> LoadedModel:
    """Tell the saved formats apart by their archive contents, and refuse to unpickle without consent."""
    names = _archive_names(path)
    if path.suffix.lower() == ".pt2" or any(
        name.endswith(("archive_format", "serialized_exported_program.json")) for name in names
    ):
        return _load_export(path, trust_pickle=trust_pickle)
    if any(name.endswith("constants.pkl") for name in names):
        return _load_torchscript(path)
    if not _is_torch_save(path, names):
        raise GradcheckError(
            f"{path} is not a saved model gradcheck can read: {_SAVE_ADVICE}, or scan the .py file that builds it."
        )
    try:
        with _quiet_torch():
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "Weights only load failed" not in str(error):
            raise GradcheckError(f"{path} could not be read as a torch.save file: {quoted(error)}") from error
        if not trust_pickle:
            raise GradcheckError(
                f"{path} is a pickled Python object; unpickling runs arbitrary code from the file, so gradcheck "
                f"loads it only with --trust-pickle (use it for files you trust), or {_SAVE_ADVICE}."
            ) from error
        obj = _unpickle(path)
    if isinstance(obj, nn.Module):
        return LoadedModel(obj, f"the pickled module in {path}", source_path=str(path))
    raise GradcheckError(_not_a_model(path, obj))


@contextmanager
def _quiet_torch() -> Iterator[None]:
    """torch logs tracebacks (a truncated .pt2: 13 lines) and warns (FutureWarning, deprecations) while it
    reads a saved model; the user gets gradcheck's one sentence instead. Restored afterwards."""
    disabled = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)


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
        with _quiet_torch():
            model = torch.jit.load(str(path))
    except RuntimeError as error:
        if "cuda" in str(error).lower():
            raise GradcheckError(
                f"{path} was saved on a CUDA device, which this machine does not have; re-save it from the CPU "
                "(model.cpu()) or scan it where a GPU is."
            ) from error
        raise GradcheckError(f"{path} is not a readable TorchScript archive: {quoted(error)}") from error
    return LoadedModel(model, f"the TorchScript module in {path}", source_path=str(path))


def _load_export(path: Path, *, trust_pickle: bool) -> LoadedModel:
    # Read once: what is inspected is what torch loads, and a buffer spares torch's warning about a
    # file not named .pt2 (the format is read from the content, issue 21).
    EXPORT_ARCHIVE.require("upgrade torch, or scan the .py file that builds the model")
    data = path.read_bytes()
    if not trust_pickle:
        hazard = _export_hazard(data)
        if hazard:
            raise GradcheckError(
                f"{path} is a torch.export archive that holds {hazard}, and loading it can run code from the file, "
                "so gradcheck loads it only with --trust-pickle (use it for files you trust)."
            )
    try:
        with _quiet_torch():
            program = torch.export.load(io.BytesIO(data))
            # unflatten restores the original module hierarchy, so layers can be hooked one by one.
            model = torch.export.unflatten(program)
    except Exception as error:
        raise GradcheckError(
            f"{path} is not a readable torch.export program ({quoted(error)}); re-save it with "
            "torch.export.save, or scan the .py file that builds the model."
        ) from error
    loaded = LoadedModel(model, f"the torch.export program in {path}", source_path=str(path))
    # The program was traced with example inputs and may be specialized to their shapes: reuse them.
    if getattr(program, "example_inputs", None) is not None:
        loaded.saved_inputs = program.example_inputs
    return loaded


# --- What loading a torch.export archive would run as code ---------------------------------------------
# torch.export.load (torch 2.13) unpickles the saved sample inputs, legacy weight and constant files and
# every payload marked use_pickle, falling back to weights_only=False; it pickle.loads custom and opaque
# objects; it loads AOTInductor shared libraries; and it evaluates every shape expression with
# sympy.sympify, which is Python's eval. Each is checked here, on the same bytes, before torch sees them.
# Call targets in the graph are checked by torch's own verifier as it loads (tests/test_hostile_loading.py).

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


def _export_hazard(data: bytes) -> str | None:
    """What in this torch.export archive loading would run as code, said for the user; None when it holds
    only what ``torch.load(weights_only=True)`` reads and shape formulas. Both formats torch.export.load
    tries are checked: the .pt2 archive, then the older zip format it falls back to."""
    return _pt2_hazard(data) or _legacy_export_hazard(data)


def _pt2_hazard(data: bytes) -> str | None:
    from torch.export.pt2_archive import PT2ArchiveReader
    from torch.export.pt2_archive import constants as pt2

    try:
        with _quiet_torch():
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
        with _quiet_torch():
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
                if key == "expr_str" and not (isinstance(value, str) and _is_formula(value)):
                    return str(value)
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _is_formula(text: str) -> bool:
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


def _unpickle(path: Path) -> Any:
    try:
        with _quiet_torch():
            return torch.load(path, map_location=None, weights_only=False)
    except RuntimeError as error:
        if "cuda" in str(error).lower():
            raise GradcheckError(
                f"{path} holds tensors on a CUDA device, which this machine does not have; save it from the CPU."
            ) from error
        raise GradcheckError(f"{path} could not be unpickled: {quoted(error)}") from error
    except Exception as error:
        raise GradcheckError(f"{path} could not be unpickled: {describe_exception(error)}") from error


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
    return f"{path} holds a {type(obj).__name__}, not a model; {_SAVE_ADVICE}."
