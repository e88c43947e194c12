"""torchvision's VisionTransformer, sized for 28-32 px images, with every norm from norms.build."""
from __future__ import annotations

import math

from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from .common import NormFactory


class ViT(VisionTransformer):
    """torchvision's VisionTransformer, naming the parameters that are not weight-decayed."""

    def no_weight_decay(self) -> set[str]:
        """The position embedding and the class token: timm's rule for ViTs (decaying them
        pulls positions and the class token towards zero)."""
        return {"class_token", "encoder.pos_embedding"}


def vit(norm: NormFactory, in_channels: int, num_classes: int, image_size: int,
        patch_size: int = 4, num_layers: int = 6, num_heads: int = 3, hidden_dim: int = 192,
        mlp_dim: int = 768, dropout: float = 0.0, attention_dropout: float = 0.0, conv: str = "plain",
        skipinit: bool = False) -> nn.Module:
    if conv != "plain":  # its one convolution, the patch embedding, is not followed by a norm
        raise ValueError(f"model.conv={conv}: the ViT has no convolution followed by a norm (its patch embedding "
                         f"feeds the tokens); Weight Standardization (ws, sws) applies to the ResNets; valid for vit: plain")
    if skipinit:  # torchvision's encoder blocks add their branches inside; SkipInit is the ResNets'
        raise ValueError("model.skipinit=true: SkipInit scales the residual branches of NormLab's ResNets; the ViT "
                         "(torchvision's encoder blocks) does not take it; valid for vit: false")
    if image_size % patch_size:
        raise ValueError(f"ViT image_size {image_size} is not divisible by patch_size {patch_size}")
    if hidden_dim % num_heads:
        raise ValueError(f"ViT hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
    # torchvision applies norm_layer to (N, L, C) tokens: every site gets the nlc layout, and
    # none is followed by an activation (the MLP's GELU follows a Linear): act=False throughout.
    model = ViT(
        image_size=image_size, patch_size=patch_size, num_layers=num_layers, num_heads=num_heads,
        hidden_dim=hidden_dim, mlp_dim=mlp_dim, dropout=dropout, attention_dropout=attention_dropout,
        num_classes=num_classes, norm_layer=lambda c: norm(c, layout="nlc", act=False),
    )
    # torchvision fixes conv_proj's in_channels at 3; rebuild it for the data's channels,
    # with torchvision's own initialisation.
    model.conv_proj = nn.Conv2d(in_channels, hidden_dim, patch_size, patch_size)
    nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / (in_channels * patch_size**2)))
    nn.init.zeros_(model.conv_proj.bias)
    return model
