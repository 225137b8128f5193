"""The zoo (issue 22): real architectures built with random init, each with the input it needs and the verdict
it should get when scanned with no flags.

Nothing is downloaded: torchvision and timm models are built with ``weights=None`` / ``pretrained=False``,
transformers models from their config classes. Models are kept small where their builder takes a size (few
layers, narrow widths) but keep their real structure; images are at the smallest size the model takes, at
its native size only where it requires one (Inception v3: 299 px).

``known_failures`` says, per check, what today's gradcheck gets wrong: the tests mark those checks
``xfail(strict=True)``, so a fix that makes one pass fails the suite until its mark is removed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import nn

from tests.zoo import designs
from tests.zoo.torchvision_import import define_missing_operators


class Family(str, Enum):
    VISION = "vision"
    LANGUAGE = "language"
    AUDIO = "audio"
    DETECTION = "detection"
    SEGMENTATION = "segmentation"
    VIDEO = "video"
    PATHOLOGICAL = "pathological"


class Expected(str, Enum):
    """The verdict a model should get (issue 22, "Done when")."""

    # HEALTHY, with no error finding and no vanishing or exploding finding of any severity: a healthy zoo
    # model at its default init gets no false alarm, and never "Exploding gradients" under a HEALTHY verdict.
    HEALTHY = "healthy"
    # A zero-initialized design (zero head, ReZero, Fixup, NF-ResNet): the same, once a copy is stepped
    # through its chain of zeros; the zeros themselves are a note (info).
    HEALTHY_AFTER_ZERO_INIT = "healthy after its zero-init chain"
    VANISHING = "vanishing"
    EXPLODING = "exploding"


class Check(str, Enum):
    """What tests/test_zoo.py checks per architecture; known failures are keyed by it."""

    VERDICT = "verdict"  # with its example inputs: the verdict expected, and no false alarm
    INFERS_INPUTS = "infers inputs"  # without example inputs: the scan finds inputs the model takes


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[], nn.Module]
    example_inputs: Callable[[], Any]  # one batch, drawn from the global RNG (the scan seeds it)
    expected: Expected
    why: str  # where the expected verdict comes from
    family: Family
    needs: tuple[str, ...] = ()  # packages beyond torch
    known_failures: dict[Check, str] = field(default_factory=dict)  # check -> "issue 22 (item): what goes wrong"
    check_inference: bool = False  # a model that says what input it takes: scanned without example inputs too
    needs_torchvision_ops: bool = False  # runs torchvision's C++ operators (nms) in training

    def unavailable(self) -> str | None:
        """Why the model cannot run here, if it cannot: a package missing, or torchvision's C++ operators."""
        missing = [name for name in self.needs if importlib.util.find_spec(name) is None]
        if missing:
            return f"needs {', '.join(missing)}: `make test-zoo` installs the [zoo] extra"
        if self.needs_torchvision_ops and not package("torchvision").extension._has_ops():
            return (
                "torchvision's C++ operators do not load beside the CPU torch here (tests/zoo/torchvision_import.py), "
                "and this model runs torchvision.ops.nms in training"
            )
        return None


def package(name: str) -> Any:
    """``torchvision``, ``timm`` or ``transformers``, imported once the operators torchvision's extension would
    have defined are there (tests/zoo/torchvision_import.py): each of the three imports torchvision."""
    define_missing_operators()
    return importlib.import_module(name)


def images(size: int, batch: int = 4) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(batch, 3, size, size)


def tokens(vocab: int, batch: int = 4, length: int = 16) -> Callable[[], torch.Tensor]:
    return lambda: torch.randint(0, vocab, (batch, length))


# Why a verdict is expected
BN_GROWTH = (
    "BatchNorm residual nets grow about x1.3 per block toward the input (inverted residuals more) and train at "
    "lr 0.1 (shared/GRADIENTS.md, 'Real architectures')"
)
AS_PUBLISHED = "trained from this init by its authors' recipe"
ZERO_HEAD = "its classifier starts at zero; one step unlocks it"
NORMED_EMBEDDINGS = "embeddings at std 0.02 before a norm: the raw signal rises toward them, the blocks are flat"
DETECTOR = "a detector in training mode returns a dict of 0-d losses; their sum is the loss"


# ---------------------------------------------------------------------------------------------------------
# Vision: torchvision and timm classifiers


def torchvision_model(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: getattr(package("torchvision").models, name)(weights=None, **kwargs)


def timm_model(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: package("timm").create_model(name, pretrained=False, **kwargs)


def _vision() -> list[Architecture]:
    tv = functools.partial(Architecture, family=Family.VISION, needs=("torchvision",))
    timm = functools.partial(Architecture, family=Family.VISION, needs=("timm",))
    healthy = Expected.HEALTHY
    return [
        tv("resnet18", torchvision_model("resnet18"), images(64), healthy, BN_GROWTH),
        tv("resnet50", torchvision_model("resnet50"), images(64), healthy, BN_GROWTH),
        tv(
            "resnet18_zero_init_residual",
            torchvision_model("resnet18", zero_init_residual=True),
            images(64),
            Expected.HEALTHY_AFTER_ZERO_INIT,
            "each branch's last BatchNorm at zero (Goyal et al. 2017)",
        ),
        tv("vgg11", torchvision_model("vgg11"), images(64), healthy, AS_PUBLISHED),
        tv(
            "vgg16_bn",
            torchvision_model("vgg16_bn"),
            images(64),
            healthy,
            AS_PUBLISHED,
        ),
        tv(
            "densenet121",
            torchvision_model("densenet121"),
            images(64),
            healthy,
            "concatenation skips carry the signal around each layer: not 121 layers in series",
        ),
        tv(
            "efficientnet_b0",
            torchvision_model("efficientnet_b0"),
            images(64),
            healthy,
            BN_GROWTH,
        ),
        tv("mobilenet_v2", torchvision_model("mobilenet_v2"), images(64), healthy, BN_GROWTH),
        tv("mobilenet_v3_large", torchvision_model("mobilenet_v3_large"), images(64), healthy, BN_GROWTH),
        tv(
            "regnet_y_400mf",
            torchvision_model("regnet_y_400mf"),
            images(64),
            healthy,
            BN_GROWTH,
        ),
        tv(
            "inception_v3",
            torchvision_model("inception_v3", init_weights=True),
            images(299, batch=2),
            healthy,
            "Inception's branch sums under BatchNorm grow toward the stem and fall within three SGD steps at lr 0.1",
            check_inference=True,
        ),
        tv("googlenet", torchvision_model("googlenet", init_weights=True), images(64), healthy, AS_PUBLISHED),
        tv("squeezenet1_1", torchvision_model("squeezenet1_1"), images(64), healthy, AS_PUBLISHED),
        tv("shufflenet_v2_x0_5", torchvision_model("shufflenet_v2_x0_5"), images(64), healthy, BN_GROWTH),
        tv("convnext_tiny", torchvision_model("convnext_tiny"), images(64), healthy, AS_PUBLISHED),
        tv(
            "vit_b_16",
            torchvision_model("vit_b_16", image_size=64),
            images(64),
            Expected.HEALTHY_AFTER_ZERO_INIT,
            ZERO_HEAD,
            check_inference=True,
        ),
        tv("swin_t", torchvision_model("swin_t"), images(64), healthy, AS_PUBLISHED),
        timm(
            "timm_vit_tiny",
            timm_model("vit_tiny_patch16_224", img_size=64),
            images(64),
            healthy,
            AS_PUBLISHED,
            check_inference=True,
        ),
        timm(
            "timm_mixer_s16",
            timm_model("mixer_s16_224", img_size=64),
            images(64),
            Expected.HEALTHY_AFTER_ZERO_INIT,
            ZERO_HEAD,
            check_inference=True,
        ),
        timm(
            "timm_nf_resnet26",
            timm_model("nf_resnet26"),
            images(64),
            Expected.HEALTHY_AFTER_ZERO_INIT,
            "NF-ResNet: each branch's last conv has its gain at zero (Brock et al. 2021)",
        ),
    ]


# ---------------------------------------------------------------------------------------------------------
# Language and audio: transformers models from their configs, and PyTorch's own encoder


def transformers_model(config: str, model: str, **settings: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        library = package("transformers")
        return getattr(library, model)(getattr(library, config)(**settings))

    return build


def _seq2seq_inputs() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, 500, (4, 16)), "decoder_input_ids": torch.randint(0, 500, (4, 8))}


def _whisper_inputs() -> dict[str, torch.Tensor]:
    # 200 mel frames: twice max_source_positions, as Whisper's encoder requires
    return {"input_features": torch.randn(2, 80, 200), "decoder_input_ids": torch.randint(0, 500, (2, 8))}


def _language_and_audio() -> list[Architecture]:
    hf = functools.partial(
        Architecture, family=Family.LANGUAGE, needs=("transformers",), expected=Expected.HEALTHY, check_inference=True
    )
    small = {"vocab_size": 500}
    return [
        hf(
            "gpt2",
            transformers_model(
                "GPT2Config", "GPT2LMHeadModel", n_layer=4, n_embd=64, n_head=4, n_positions=64, **small
            ),
            tokens(500),
            why=NORMED_EMBEDDINGS,
        ),
        hf(
            "bert",
            transformers_model(
                "BertConfig",
                "BertForSequenceClassification",
                num_hidden_layers=4,
                hidden_size=64,
                num_attention_heads=4,
                intermediate_size=128,
                max_position_embeddings=64,
                **small,
            ),
            tokens(500),
            why=NORMED_EMBEDDINGS,
        ),
        hf(
            "t5",
            transformers_model(
                "T5Config",
                "T5ForConditionalGeneration",
                d_model=64,
                d_ff=128,
                d_kv=16,
                num_layers=2,
                num_decoder_layers=2,
                num_heads=4,
                decoder_start_token_id=0,
                **small,
            ),
            _seq2seq_inputs,
            why=AS_PUBLISHED,
        ),
        hf(
            "llama",
            transformers_model(
                "LlamaConfig",
                "LlamaForCausalLM",
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
                **small,
            ),
            tokens(500),
            why=NORMED_EMBEDDINGS,
        ),
        Architecture(
            "pytorch_transformer",
            designs.TokenTransformer,
            tokens(100),
            Expected.HEALTHY,
            "post-norm encoder at PyTorch's init: a LayerNorm after every residual sum keeps the signal flat",
            family=Family.LANGUAGE,
        ),
        hf(
            "wav2vec2",
            transformers_model(
                "Wav2Vec2Config",
                "Wav2Vec2ForCTC",
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                conv_dim=(32,) * 7,
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=4,
                vocab_size=32,
            ),
            lambda: torch.randn(4, 8000),
            why=AS_PUBLISHED,
            family=Family.AUDIO,
        ),
        hf(
            "whisper",
            transformers_model(
                "WhisperConfig",
                "WhisperForConditionalGeneration",
                d_model=64,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=128,
                decoder_ffn_dim=128,
                num_mel_bins=80,
                max_source_positions=100,
                max_target_positions=64,
                pad_token_id=0,
                bos_token_id=1,
                eos_token_id=2,
                decoder_start_token_id=1,
                **small,
            ),
            _whisper_inputs,
            why=AS_PUBLISHED,
            family=Family.AUDIO,
        ),
    ]


# ---------------------------------------------------------------------------------------------------------
# Detection, segmentation and video (torchvision)


def _detection_inputs(batch: int = 2, size: int = 128, boxes: int = 8) -> tuple[list, list]:
    """Images and their targets, as a detector takes them in training mode (it returns a dict of losses). Box
    sides are log-uniform from 5% to 90% of the image, so that anchors of every scale find a match: a scale
    without one gives its regression head no gradient in that batch."""
    pictures = [torch.rand(3, size, size) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        extent = size * torch.exp(torch.empty(boxes, 2).uniform_(math.log(0.05), math.log(0.9)))
        corner = torch.rand(boxes, 2) * (size - extent)
        targets.append({"boxes": torch.cat([corner, corner + extent], 1), "labels": torch.randint(1, 3, (boxes,))})
    return pictures, targets


def detector(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        model = getattr(package("torchvision").models.detection, name)
        return model(weights=None, weights_backbone=None, num_classes=3, **kwargs).train()

    return build


def segmenter(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(package("torchvision").models.segmentation, name)(
        weights=None, weights_backbone=None, num_classes=5
    )


def video_model(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(package("torchvision").models.video, name)(weights=None, num_classes=10)


def _clips() -> torch.Tensor:
    return torch.randn(4, 3, 4, 32, 32)  # 4 frames of 32 px: the smallest the two video ResNets take


def _detection_segmentation_video() -> list[Architecture]:
    tv = functools.partial(Architecture, needs=("torchvision",), expected=Expected.HEALTHY)
    return [
        tv(
            "retinanet_resnet50_fpn",
            detector("retinanet_resnet50_fpn", min_size=128, max_size=128),
            _detection_inputs,
            why=DETECTOR,
            family=Family.DETECTION,
        ),
        tv(
            "ssdlite320_mobilenet_v3",
            detector("ssdlite320_mobilenet_v3_large"),
            _detection_inputs,
            why=DETECTOR,
            family=Family.DETECTION,
        ),
        tv(
            "fasterrcnn_mobilenet_v3_fpn",
            detector("fasterrcnn_mobilenet_v3_large_320_fpn", min_size=128, max_size=128),
            _detection_inputs,
            why=DETECTOR,
            family=Family.DETECTION,
            needs_torchvision_ops=True,
        ),
        tv("fcn_resnet50", segmenter("fcn_resnet50"), images(64), why=BN_GROWTH, family=Family.SEGMENTATION),
        tv(
            "deeplabv3_mobilenet_v3",
            segmenter("deeplabv3_mobilenet_v3_large"),
            images(64),
            why=BN_GROWTH,
            family=Family.SEGMENTATION,
        ),
        tv("r3d_18", video_model("r3d_18"), _clips, why=BN_GROWTH, family=Family.VIDEO),
        tv("r2plus1d_18", video_model("r2plus1d_18"), _clips, why=BN_GROWTH, family=Family.VIDEO),
    ]


# ---------------------------------------------------------------------------------------------------------
# Pathological and zero-initialized designs, in plain PyTorch (tests/zoo/designs.py)


def _pathological() -> list[Architecture]:
    design = functools.partial(Architecture, family=Family.PATHOLOGICAL)
    return [
        design(
            "vgg_named_stages_default_init",
            designs.NamedStageVGG,
            images(32, batch=8),
            Expected.VANISHING,
            "15 plain convs at PyTorch's default init, weight variance 1/(3 fan_in): about half a decade lost per "
            "conv (test_zoo.py measures it with independent hooks)",
        ),
        design(
            "deep_sigmoid_mlp",
            designs.deep_sigmoid_mlp,
            lambda: torch.randn(8, 64),
            Expected.VANISHING,
            "sigmoid's derivative is at most 1/4 (Glorot and Bengio 2010)",
        ),
        design(
            "deep_relu_mlp_large_init",
            designs.deep_relu_mlp_large_init,
            lambda: torch.randn(8, 64),
            Expected.EXPLODING,
            "x1.7 per layer over 20 layers (He et al. 2015)",
        ),
        design(
            "stacked_lstm_8",
            designs.StackedLSTMClassifier,
            lambda: torch.randn(8, 16, 32),
            Expected.VANISHING,
            "each of the 8 stacked layers passes a fraction of the gradient to the one below (test_zoo.py "
            "measures it layer by layer)",
        ),
        design(
            "rezero_transformer",
            designs.ReZeroTransformer,
            tokens(100, batch=8),
            Expected.HEALTHY_AFTER_ZERO_INIT,
            "ReZero, alpha = 0 (Bachlechner et al. 2020): trains from it",
        ),
        design(
            "fixup_resnet20",
            designs.FixupResNet,
            images(32, batch=8),
            Expected.HEALTHY_AFTER_ZERO_INIT,
            "Fixup (Zhang et al. 2019): zero last conv per branch and zero head",
        ),
    ]


ARCHITECTURES: dict[str, Architecture] = {
    architecture.name: architecture
    for architecture in _vision() + _language_and_audio() + _detection_segmentation_video() + _pathological()
}
