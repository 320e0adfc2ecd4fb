"""MaskFeat's HOG target (Wei et al., 2022), batched on the clip's device.

Per frame and colour channel, as ``skimage.feature.hog(channel, orientations=9, pixels_per_cell=(8, 8),
cells_per_block=(1, 1), block_norm='L2', feature_vector=False)``:

- gradients by central differences ``[-1, 0, 1]`` along rows and columns (a 3x3 convolution); as skimage's
  ``_hog_channel_gradient``, the row gradient is 0 on the first and last row, the column gradient on the first
  and last column;
- orientation ``atan2(g_row, g_col)`` in degrees mod 180 (unsigned), magnitude ``hypot(g_row, g_col)``;
- hard binning, no interpolation (skimage's ``_hoghistogram``): a pixel adds its magnitude to bin
  ``floor(orientation / (180 / 9))``; a cell's bin is the mean over its 8x8 pixels (an average pool);
- per-cell L2 normalisation over the 9 bins, ``h / sqrt(sum h^2 + eps^2)`` (eps = 1e-5).

Input: the normalised clip the model sees, not un-normalised (MaskFeat computes its HOG on the model input
too). Per-channel normalisation ``(x - mean) / std`` scales a channel's gradients by ``1 / std``, which the
per-channel, per-cell L2 normalisation removes, so this equals the HOG of the pixels up to eps.

Tokens: the model's order (frame-major, then patch rows, then columns). A token of patch size p and tubelet
tau holds ``tau * 3 * (p/8)^2`` cells of 9 bins, ordered ``(frame in tubelet, channel, cell row, cell col, bin)``:
``D = tau * 3 * 9 * (p/8)^2`` (108 for p = 16, tau = 1). Computed in float32 without autograd.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

__all__ = ["HOGTarget"]


class HOGTarget(nn.Module):
    """``HOGTarget(patch_size=16, tubelet_size=1)``; ``forward(video (B, C, T, H, W)) -> (B, T'N, D)`` float32.
    No parameters or buffers (nothing in a state dict)."""

    def __init__(self, patch_size: int = 16, tubelet_size: int = 1, orientations: int = 9, cell_size: int = 8,
                 eps: float = 1e-5, in_chans: int = 3):
        super().__init__()
        if patch_size % cell_size:
            raise ValueError(f"patch_size={patch_size} is not a multiple of the HOG cell size {cell_size}")
        self.patch_size, self.tubelet_size, self.orientations = patch_size, tubelet_size, orientations
        self.cell_size, self.eps, self.in_chans = cell_size, eps, in_chans
        self.feature_dim = tubelet_size * in_chans * orientations * (patch_size // cell_size) ** 2

    def extra_repr(self):
        return (f"patch_size={self.patch_size}, tubelet_size={self.tubelet_size}, orientations={self.orientations}, "
                f"cell_size={self.cell_size}, feature_dim={self.feature_dim}")

    def cells(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised cell histograms of single-channel images ``(N, H, W)`` -> ``(N, H/8, W/8, 9)`` float32
        (skimage's ``hog(..., feature_vector=False)[:, :, 0, 0]``)."""
        x = images.float().unsqueeze(1)
        k = x.new_zeros(2, 1, 3, 3)
        k[0, 0, 2, 1], k[0, 0, 0, 1] = 1.0, -1.0  # rows: x[i+1] - x[i-1]
        k[1, 0, 1, 2], k[1, 0, 1, 0] = 1.0, -1.0  # cols: x[j+1] - x[j-1]
        g = F.conv2d(x, k, padding=1)
        g_row, g_col = g[:, 0], g[:, 1]
        g_row[:, [0, -1], :] = 0  # as skimage: no row gradient on the first / last row,
        g_col[:, :, [0, -1]] = 0  # no column gradient on the first / last column
        mag = torch.hypot(g_row, g_col)
        ori = torch.rad2deg(torch.atan2(g_row, g_col)) % 180.0
        bins = torch.floor(ori / (180.0 / self.orientations)).clamp_(0, self.orientations - 1)
        c = self.cell_size
        hist = torch.stack([F.avg_pool2d((mag * (bins == i)).unsqueeze(1), c)[:, 0]
                            for i in range(self.orientations)], dim=-1)  # a loop over the 9 bins only
        return hist / torch.sqrt((hist * hist).sum(-1, keepdim=True) + self.eps ** 2)

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.dim() != 5:
            raise ValueError(f"expected (B, C, T, H, W) clips, got shape {tuple(video.shape)}")
        B, C, T, H, W = video.shape
        p, tau, c = self.patch_size, self.tubelet_size, self.cell_size
        if H % p or W % p or T % tau:
            raise ValueError(f"clip {tuple(video.shape)} does not split into {tau}x{p}x{p} patches")
        with torch.autocast(device_type=video.device.type, enabled=False):
            h = self.cells(rearrange(video, "b c t h w -> (b c t) h w"))
        n = p // c
        return rearrange(h, "(b c t u) (hp cy) (wp cx) o -> b (t hp wp) (u c cy cx o)", b=B, c=C,
                         u=tau, t=T // tau, cy=n, cx=n)

