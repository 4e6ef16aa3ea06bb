"""Small models for the studies, as factories (``funnelscope.studies.models:mlp`` on the command line).

Every factory takes keyword arguments only and builds the same architecture for the same arguments, so a
saved state_dict plus the factory spec reproduces a model (``funnelscope jacobian
funnelscope.studies.models:mlp --weights model.safetensors …``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from funnelscope.errors import FunnelscopeInputError

__all__ = ["ARCHITECTURES", "ResidualBlock", "build_model", "mlp", "resnet", "small_cnn"]


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
    *, in_channels: int = 1, width: int = 16, depth: int = 2, num_classes: int = 10, batch_norm: bool = False
) -> nn.Sequential:
    """``depth`` 3×3 convolutions (``width`` then ``2·width`` channels, ReLU), global average pooling, a linear head.

    Sized for 8×8 digits but works for any image size; ``depth=2`` is the original two-convolution net.
    """
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be positive, got {depth} and {width}")

    def block(cin: int, cout: int) -> list[nn.Module]:
        conv = [nn.Conv2d(cin, cout, 3, padding=1)]
        return conv + ([nn.BatchNorm2d(cout)] if batch_norm else []) + [nn.ReLU()]

    layers = block(in_channels, width)
    channels = width
    for _ in range(depth - 1):
        layers += block(channels, 2 * width)
        channels = 2 * width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


class ResidualBlock(nn.Module):
    """``relu(x + conv(relu(conv(x))))`` with 3×3 convolutions, each followed by BatchNorm if asked
    (He, Zhang, Ren & Sun, "Deep residual learning for image recognition", CVPR 2016, Fig. 2).

    Without BatchNorm the second convolution starts at a quarter of its default scale, so that a deep
    stack of blocks does not blow up at initialisation.
    """

    def __init__(self, channels: int, *, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.relu2 = nn.ReLU()
        if not batch_norm:
            with torch.no_grad():
                self.conv2.weight.mul_(0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


def resnet(
    *, in_channels: int = 1, width: int = 16, depth: int = 2, num_classes: int = 10, batch_norm: bool = True
) -> nn.Sequential:
    """A small residual net: a 3×3 stem to ``width`` channels, ``depth`` :class:`ResidualBlock` s, global
    average pooling and a linear head (for 8×8 digits; any image size works)."""
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be positive, got {depth} and {width}")
    stem = [nn.Conv2d(in_channels, width, 3, padding=1, bias=not batch_norm)]
    stem += [nn.BatchNorm2d(width)] if batch_norm else []
    blocks = [ResidualBlock(width, batch_norm=batch_norm) for _ in range(depth)]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*stem, nn.ReLU(), *blocks, *head)


#: Architecture name → (factory, whether it takes images).
ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], bool]] = {
    "mlp": (mlp, False),
    "cnn": (small_cnn, True),
    "resnet": (resnet, True),
}


def build_model(
    arch: str, *, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int, batch_norm: bool
) -> nn.Module:
    """Build ``mlp``, ``cnn`` or ``resnet`` for inputs of ``input_shape`` (one example's shape).

    Raises
    ------
    FunnelscopeInputError
        An unknown architecture, non-positive width or depth, or flat inputs for a convolutional net.
    """
    if arch not in ARCHITECTURES:
        raise FunnelscopeInputError(f"unknown architecture {arch!r} (choose from {', '.join(ARCHITECTURES)})")
    if width < 1 or depth < 1:
        raise FunnelscopeInputError(f"width and depth must be positive, got {width} and {depth}")
    factory, takes_images = ARCHITECTURES[arch]
    if not takes_images:
        dim = 1
        for size in input_shape:
            dim *= int(size)
        return mlp(input_dim=dim, width=width, depth=depth, num_classes=num_classes, batch_norm=batch_norm)
    if len(input_shape) != 3:
        raise FunnelscopeInputError(f"{arch} needs (C, H, W) image inputs, got examples of shape {input_shape}")
    return factory(in_channels=int(input_shape[0]), width=width, depth=depth, num_classes=num_classes,
                   batch_norm=batch_norm)
