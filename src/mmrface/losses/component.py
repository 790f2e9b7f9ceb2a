"""Facial-component discriminators (GFPGAN style): small patch discriminators on eye / mouth crops.

The boxes come from the data set (`FaceFolderDataset` items `boxes`: (3, 4) x0, y0, x1, y1 in
output pixels, order left eye, right eye, mouth). Crops are taken with an affine sampling grid and
`grid_sample` (an roi-align-like bilinear crop, differentiable w.r.t. the image), so no torchvision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COMPONENTS = ("left_eye", "right_eye", "mouth")


def crop_boxes(images: Tensor, boxes: Tensor, out_size: int) -> Tensor:
    """Bilinear crops of boxes: images (B, C, H, W), boxes (B, K, 4) -> (B, K, C, out, out).

    Box coordinates follow the pixel-index convention ((0, 0) = centre of the top-left pixel), so
    the box [x0, x1] spans the normalised interval ((x0 + 0.5) / W * 2 - 1, (x1 + 0.5) / W * 2 - 1)
    of `grid_sample` with align_corners=False.
    """
    b, c, h, w = images.shape
    k = boxes.shape[1]
    bx = boxes.to(images.dtype).reshape(b * k, 4)
    cx = ((bx[:, 0] + bx[:, 2]) / 2 + 0.5) / w * 2 - 1
    cy = ((bx[:, 1] + bx[:, 3]) / 2 + 0.5) / h * 2 - 1
    sx = (bx[:, 2] - bx[:, 0]).clamp_min(1.0) / w
    sy = (bx[:, 3] - bx[:, 1]).clamp_min(1.0) / h
    theta = torch.zeros(b * k, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
    grid = F.affine_grid(theta, [b * k, c, out_size, out_size], align_corners=False)
    src = images.unsqueeze(1).expand(b, k, c, h, w).reshape(b * k, c, h, w)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, k, c, out_size, out_size)


class ComponentDiscriminator(nn.Module):
    """VGG-style patch discriminator: (B, 3, s, s) -> (B, 1, s/4, s/4) logits.

    conv3x3 -> [stride-2 conv3x3, conv3x3] x 2 -> conv3x3 to one channel, LeakyReLU(0.2).
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, 1, 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in ((c, 2 * c), (2 * c, 4 * c)):
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1), nn.LeakyReLU(0.2),
                       nn.Conv2d(c_out, c_out, 3, 1, 1), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(4 * c, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ComponentDiscriminators(nn.Module):
    """One `ComponentDiscriminator` per facial component, sized for faces of `size` px.

    Crops are `crop` px (default max(16, size // 8)); width `channels` (default max(16, min(64,
    size // 8))). `forward(images, boxes)` -> {component: logits (B, 1, crop/4, crop/4)}.
    """

    def __init__(self, size: int, channels: int | None = None, crop: int | None = None):
        super().__init__()
        self.crop = int(crop or max(16, size // 8))
        channels = int(channels or max(16, min(64, size // 8)))
        self.discs = nn.ModuleDict({name: ComponentDiscriminator(channels) for name in COMPONENTS})

    def crops(self, images: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        """{component: (B, 3, crop, crop)} from images (B, 3, S, S) and boxes (B, 3, 4)."""
        patches = crop_boxes(images, boxes, self.crop)
        return {name: patches[:, i] for i, name in enumerate(COMPONENTS)}

    def forward(self, images: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        return {name: self.discs[name](patch) for name, patch in self.crops(images, boxes).items()}
