"""ViT tokens (N, L, C) through a norm written for channels first (N, C, *): the one adapter
every such token norm uses (bn, brn, in, gn): tokens play the role of pixels."""
from __future__ import annotations


class TokenLayout:
    """Mixed in before a channels-first norm: its forward takes (N, L, C) tokens and normalizes
    them as (N, C, L), so the norm's statistics are over the same axes as over a map's pixels."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)

    @staticmethod
    def given_shape(shape) -> tuple:
        """The shape of a channels-first view of tokens as the tokens came: (N, L, C)."""
        return (shape[0], shape[2], shape[1])
