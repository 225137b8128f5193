"""Import torchvision beside the CPU torch of the test environment (issue 22).

The torchvision wheel on the package index is a CUDA build: its C++ extension (``torchvision/_C.so``) cannot
load beside torch's CPU build, and ``import torchvision`` then fails registering fake kernels for
``torchvision::nms`` and ``torchvision::qnms``, operators only that extension defines. transformers, timm and
Lightning import torchvision whenever it is installed, so they fail with it. Defining the two operators'
schemas first lets the import finish: classification, segmentation and video models need no C++ operator.
Detection models that run non-maximum suppression in training (Faster R-CNN's region proposals) still cannot
run: ``torchvision.extension._has_ops()`` stays False and ``torchvision.ops.nms`` says so.
"""

import importlib.util
from pathlib import Path

import torch

# As torchvision's own C++ sources declare them (csrc/ops/nms.cpp, csrc/ops/quantized/cpu/qnms_kernel.cpp).
TORCHVISION_SCHEMAS = {
    "torchvision::nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "torchvision::qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def extension_loads() -> bool:
    """Whether torchvision's C++ extension loads here (it defines the operators itself when it does)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        for library in Path(folder).glob("_C*.so"):
            try:
                torch.ops.load_library(str(library))
            except (OSError, RuntimeError):
                return False
            return True
    return False


def define_missing_operators() -> None:
    """Define the operators that ``import torchvision`` needs and its extension would have defined; a
    no-op where the extension loads, or once done. Call it before anything imports torchvision, timm or
    transformers' models."""
    if importlib.util.find_spec("torchvision") is None or extension_loads():
        return
    for name, schema in TORCHVISION_SCHEMAS.items():
        namespace, op = name.split("::")
        if not hasattr(getattr(torch.ops, namespace), op):
            torch.library.define(name, schema)
