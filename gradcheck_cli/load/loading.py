"""The loading layer's entry: turn what the user pointed at into an ``nn.Module``, and say how it was found.

Targets: a Python file (``model.py``, ``model.py:NAME``), an importable object (``pkg.module:factory``),
or a saved model (TorchScript archive, ``torch.export`` program, or, with ``--trust-pickle``, a pickled
module). This module tells them apart and checks the path; importing.py runs the user's code,
discovery.py finds the model in it, saved_models.py reads a saved one. Every failure is a
``GradcheckError`` whose message names the problem and the way out.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.files import file_kind
from gradcheck_cli.common.options import CHECKPOINT_SUFFIXES, split_target
from gradcheck_cli.load.discovery import find_model
from gradcheck_cli.load.importing import exec_model_file, import_module_path, importable
from gradcheck_cli.load.loaded_model import LoadedModel
from gradcheck_cli.load.saved_models import load_checkpoint


def load_target(
    target: str, *, entry: str | None = None, paths: list[str] | None = None, trust_pickle: bool = False
) -> LoadedModel:
    """Resolve ``target`` to a model. ``entry`` picks a name in a file or module explicitly."""
    if target.endswith(":") and len(target) > 2 and not Path(target).exists():  # "C:" is a drive, not a name
        raise GradcheckError(
            f"the name after ':' in {target} is empty; write {target}NAME to pick a model, or drop the ':'."
        )
    location, _, attribute = split_target(target)
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
        with importable(paths or [], extra=path.resolve().parent):
            namespace = exec_model_file(path)
            return find_model(namespace, entry, where=str(location), module_name=namespace["__name__"])
    if "/" in location or location.endswith(CHECKPOINT_SUFFIXES):
        raise GradcheckError(f"{location}: file not found; check the path (it is relative to {Path.cwd()}).")
    if not attribute:
        raise GradcheckError(
            f"{target} is neither a file nor package.module:object; pass a model file such as model.py, or "
            "name the object, e.g. mypackage.models:build_model."
        )
    with importable(paths or [], extra=Path.cwd()):
        module = import_module_path(location)
        return find_model(vars(module), entry, where=location, module_name=module.__name__)
