"""Reading a saved model: a torch.export program, a TorchScript archive, or (with ``--trust-pickle``) a pickled
module, told apart by their contents; a state dict or training checkpoint is refused with the way out.
Nothing is unpickled without ``trust_pickle``, whatever the file is named (issue 21)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.errors import GradcheckError, describe_exception, quoted
from gradcheck_cli.load.export_hazards import export_hazard
from gradcheck_cli.load.loaded_model import LoadedModel
from gradcheck_cli.load.quiet_torch import quiet_torch
from gradcheck_cli.measure.torch_compat import EXPORT_ARCHIVE

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
        with quiet_torch():
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
        with quiet_torch():
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
        hazard = export_hazard(data)
        if hazard:
            raise GradcheckError(
                f"{path} is a torch.export archive that holds {hazard}, and loading it can run code from the file, "
                "so gradcheck loads it only with --trust-pickle (use it for files you trust)."
            )
    try:
        with quiet_torch():
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


def _unpickle(path: Path) -> Any:
    try:
        with quiet_torch():
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
