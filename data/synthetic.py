"""A small, deterministic, learnable image-classification set generated in memory.

Each class is a smooth random pattern; a sample is its class pattern at a random contrast,
shifted by up to two pixels, plus pixel noise. A small CNN learns it in a few epochs, yet
it is not linearly trivial (contrast and shift vary), and nothing is read from disk.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ImageDataModule


class SyntheticDataModule(ImageDataModule):
    name = "synthetic"
    mean = (0.5,)
    std = (0.25,)

    def __init__(self, num_classes: int = 4, image_size: int = 16, in_channels: int = 3,
                 train_size: int = 1024, test_size: int = 256, noise: float = 0.3,
                 data_seed: int = 0, val_size: int = 256, **kwargs):
        super().__init__(val_size=val_size, **kwargs)
        self.num_classes, self.image_size, self.in_channels = num_classes, image_size, in_channels
        self.mean, self.std = self.mean * in_channels, self.std * in_channels
        self.train_size, self.test_size, self.noise, self.data_seed = train_size, test_size, noise, data_seed

    def _generate(self, n: int, g: torch.Generator, patterns: torch.Tensor):
        y = torch.randint(0, self.num_classes, (n,), generator=g)
        contrast = 0.5 + torch.rand(n, 1, 1, 1, generator=g)
        x = patterns[y] * contrast
        shifts = torch.randint(-2, 3, (n, 2), generator=g)
        x = torch.stack([torch.roll(img, tuple(s.tolist()), dims=(1, 2)) for img, s in zip(x, shifts)])
        x = x + self.noise * torch.randn(x.shape, generator=g)
        return (x * 0.25 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8), y

    def load(self):
        g = torch.Generator().manual_seed(self.data_seed)
        coarse = torch.randn(self.num_classes, self.in_channels, 4, 4, generator=g)
        patterns = F.interpolate(coarse, size=self.image_size, mode="bilinear", align_corners=False)
        patterns = patterns / patterns.flatten(1).std(1).view(-1, 1, 1, 1)
        train_x, train_y = self._generate(self.train_size + self.val_size, g, patterns)
        test_x, test_y = self._generate(self.test_size, g, patterns)
        return train_x, train_y, test_x, test_y
