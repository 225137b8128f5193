"""The one sentence for an import of the user's code that failed beyond their own line (issue 22): which
package failed, where, the underlying error, and the way out (install, upgrade or reinstall a dependency)."""

from __future__ import annotations

import importlib.metadata
import sys
import traceback
from pathlib import Path

from gradcheck_cli.common.errors import describe_exception, quoted


def import_failure_beyond(error: ImportError, where: str, own_module: str, own_folder: Path) -> str | None:
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
