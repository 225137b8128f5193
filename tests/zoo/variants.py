"""The same weights under other module names and other nesting (issue 22, "Done when": invariance).

Each variant takes a built model and returns a model that computes the same function with the same parameter
objects, only named or nested differently: a verdict that belongs to the network stays the same.
"""

from collections import OrderedDict

from torch import nn

# ResNet (torchvision): conv1, bn1, relu, maxpool, layer1 … layer4, avgpool, fc.


def _resnet_stem_and_blocks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    stem = [model.conv1, model.bn1, model.relu, model.maxpool]
    blocks = [block for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for block in stage]
    return stem, blocks


def resnet_sequential(model: nn.Module) -> nn.Module:
    """``nn.Sequential(*children)``, with the flatten that torchvision's forward does between pool and fc."""
    children = list(model.children())
    return nn.Sequential(*children[:-1], nn.Flatten(1), children[-1])


def resnet_flat_blocks(model: nn.Module) -> nn.Module:
    """Every block one level down, numbered 0 … 15 in one ``nn.Sequential``: no stages."""
    stem, blocks = _resnet_stem_and_blocks(model)
    return nn.Sequential(*stem, *blocks, model.avgpool, nn.Flatten(1), model.fc)


def resnet_renamed(model: nn.Module) -> nn.Module:
    """Stages and blocks under other names (``stem``, ``stage1_unit1`` …), nested as stages of named units."""
    stem, _ = _resnet_stem_and_blocks(model)
    stages = OrderedDict(stem=nn.Sequential(*stem))
    for index, stage in enumerate((model.layer1, model.layer2, model.layer3, model.layer4), start=1):
        units = OrderedDict((f"stage{index}_unit{unit}", block) for unit, block in enumerate(stage, start=1))
        stages[f"group{index}"] = nn.Sequential(units)
    stages["classifier"] = nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)
    return nn.Sequential(stages)


# A VGG with named stages (tests/zoo/designs.NamedStageVGG).


def vgg_sequential(model: nn.Module) -> nn.Module:
    """Every conv and ReLU in one flat ``nn.Sequential``, numbered: no stage names."""
    layers = [layer for stage in model.stages() for layer in stage]
    return nn.Sequential(*layers, model.pool, nn.Flatten(1), model.head)


def vgg_renamed(model: nn.Module) -> nn.Module:
    """The stages as ``block1`` … ``block5`` of a container, their layers named ``conv1``, ``act1`` …"""
    stages = OrderedDict()
    for index, stage in enumerate(model.stages(), start=1):
        named, count = OrderedDict(), 0
        for layer in stage:
            count += isinstance(layer, nn.Conv2d)
            kind = "conv" if isinstance(layer, nn.Conv2d) else "act" if isinstance(layer, nn.ReLU) else "pool"
            named[f"{kind}{count}"] = layer
        stages[f"block{index}"] = nn.Sequential(named)
    stages["classifier"] = nn.Sequential(model.pool, nn.Flatten(1), model.head)
    return nn.Sequential(stages)


# A Vision Transformer (timm): its blocks are numbered 0 … 11 in one nn.Sequential.


def vit_named_blocks(model: nn.Module) -> nn.Module:
    """The blocks named ``encoder_layer_0`` … as torchvision names its ViT's layers."""
    model.blocks = nn.Sequential(OrderedDict((f"encoder_layer_{i}", block) for i, block in enumerate(model.blocks)))
    return model


def vit_nested_blocks(model: nn.Module) -> nn.Module:
    """The blocks in pairs, each pair an ``nn.Sequential`` of its own."""
    blocks = list(model.blocks)
    model.blocks = nn.Sequential(*(nn.Sequential(*blocks[i : i + 2]) for i in range(0, len(blocks), 2)))
    return model


# Per architecture of the catalogue, its variants by name; each is compared with the model as built.
INVARIANCE = {
    "resnet50": {"sequential": resnet_sequential, "flat_blocks": resnet_flat_blocks, "renamed": resnet_renamed},
    "vgg_named_stages_default_init": {"sequential": vgg_sequential, "renamed": vgg_renamed},
    "timm_vit_tiny": {"named_blocks": vit_named_blocks, "nested_blocks": vit_nested_blocks},
}

# What today's gradcheck gets wrong, per (architecture, variant): tests/test_zoo.py marks them strict xfail.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}
