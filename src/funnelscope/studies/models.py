"""Small models for the studies, as factories (``funnelscope.studies.models:mlp`` on the command line).

Every factory takes keyword arguments only and builds the same architecture for the same arguments, so a
saved state_dict plus the factory spec reproduces a model (``funnelscope jacobian
funnelscope.studies.models:mlp --weights model.safetensors …``).
"""

from __future__ import annotations

from torch import nn

__all__ = ["mlp", "small_cnn"]


def mlp(
    *, input_dim: int = 64, width: int = 128, depth: int = 2, num_classes: int = 10, batch_norm: bool = False
) -> nn.Sequential:
    """A ReLU multilayer perceptron: ``depth`` hidden layers of ``width`` units (optionally with BatchNorm).

    Inputs of any shape are flattened first, so it takes digits as 64-vectors or 1×8×8 images.
    """
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be positive, got {depth} and {width}")
    layers: list[nn.Module] = [nn.Flatten()]
    features = input_dim
    for _ in range(depth):
        layers.append(nn.Linear(features, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def small_cnn(
    *, in_channels: int = 1, width: int = 16, num_classes: int = 10, batch_norm: bool = False
) -> nn.Sequential:
    """Two 3×3 convolutions (``width``, ``2·width`` channels, ReLU), global average pooling, a linear head.

    Sized for 8×8 digits but works for any image size.
    """
    def block(cin: int, cout: int) -> list[nn.Module]:
        conv = [nn.Conv2d(cin, cout, 3, padding=1)]
        return conv + ([nn.BatchNorm2d(cout)] if batch_norm else []) + [nn.ReLU()]

    return nn.Sequential(
        *block(in_channels, width),
        *block(width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )
