"""Running the user's code: a model file executed as a module (``model.py``), or a module path imported
(``pkg.module``), each failure said in one sentence with the file and line.

``sys.path`` and ``sys.modules`` are restored after importing the user's code, and no bytecode is written
beside it (issue 21).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import itertools
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gradcheck_cli.common import stages
from gradcheck_cli.common.errors import GradcheckError, describe_exception, quoted
from gradcheck_cli.load.import_errors import import_failure_beyond

_module_counter = itertools.count()


@contextmanager
def importable(paths: list[str], extra: Path) -> Iterator[None]:
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


def exec_model_file(path: Path) -> dict[str, Any]:
    """The globals of the model file, executed as a fresh module that is not left in sys.modules."""
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
                import_failure_beyond(error, where, own_module=name, own_folder=path.resolve().parent)
                or f"{where} imports {missing}, which failed: {quoted(error)}. Install it, or add its folder with --path."
            ) from error
        except EOFError as error:
            raise GradcheckError(input_message(error, f"{path}{_line_in(error, path)}", stages.IMPORT)) from error
        except Exception as error:
            raise GradcheckError(
                f"{path}{_line_in(error, path)} raised {type(error).__name__} while being imported: {quoted(error)}"
            ) from error
        finally:
            sys.modules.pop(name, None)
    return vars(module)


def import_module_path(name: str) -> Any:
    """The module ``name`` (``pkg.module``), imported from the path as it stands."""
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
                import_failure_beyond(error, name, own_module=name, own_folder=Path.cwd().resolve())
                or f"{name} imports `{error.name}`, which is not installed: {quoted(error)}. Install it, or add its "
                "folder with --path."
            ) from error
        except ImportError as error:
            raise GradcheckError(
                import_failure_beyond(error, name, own_module=name, own_folder=Path.cwd().resolve())
                or f"importing {name} raised {describe_exception(error)}"
            ) from error
        except SyntaxError as error:
            raise GradcheckError(_syntax_error_message(error, name)) from error
        except EOFError as error:
            raise GradcheckError(input_message(error, name, stages.IMPORT)) from error
        except Exception as error:
            raise GradcheckError(f"importing {name} raised {describe_exception(error)}") from error


def _syntax_error_message(error: SyntaxError, path: Path | str) -> str:
    where = f"{error.filename or path}:{error.lineno}"
    if "codec can't decode" in str(error.msg):
        # PEP 263: a source file is UTF-8 unless a coding line on line 1 or 2 says otherwise.
        return f"{where}: the file is not UTF-8; add a coding line (# -*- coding: latin-1 -*-) or save it as UTF-8."
    return f"{where}: syntax error: {error.msg}; fix the file and rerun."


def input_message(error: EOFError, where: str, stage: str) -> str:
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
