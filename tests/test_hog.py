"""models/hog.py: the batched HOG target against skimage.feature.hog, batching, dtypes, and the token layout."""
import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from datasets.synthetic import make_clip
from models.hog import HOGTarget

skimage_feature = pytest.importorskip("skimage.feature")
ATOL = 1e-5  # max abs difference on normalised cells (reached: ~1e-7, float32 vs skimage's float64)


def _skimage_cells(channel):
    out = skimage_feature.hog(channel.astype(np.float64), orientations=9, pixels_per_cell=(8, 8),
                              cells_per_block=(1, 1), block_norm="L2", feature_vector=False)
    return out[:, :, 0, 0]  # (H/8, W/8, 9)


def _shapes_frame(rng, h=64, w=96):
    """Smooth gradients + a rectangle + a disc + noise, in [0, 1] quantised to 8 bits, (h, w, 3) float32."""
    yy, xx = np.mgrid[0:h, 0:w] / 64.0
    img = np.empty((h, w, 3))
    for c in range(3):
        f = 0.4 + 0.2 * np.sin((3 + c) * xx + 2 * yy) + 0.1 * yy
        f[10:30, 20 + 5 * c:50] += 0.3
        f[(yy * 64 - 45) ** 2 + (xx * 64 - 60 + 3 * c) ** 2 < 15 ** 2] -= 0.25
        img[..., c] = f + rng.normal(0, 0.02, (h, w))
    return (np.round(np.clip(img, 0, 1) * 255) / 255).astype(np.float32)


def _frames():
    """Four (H, W, 3) float32 frames in [0, 1]: two of the synthetic video generator, two drawn shapes."""
    rng = np.random.default_rng(0)
    clip = make_clip(2, rng, frames=4, size=64).astype(np.float32) / 255
    return [clip[0], clip[3], _shapes_frame(rng), _shapes_frame(rng, 48, 80)]


def _normalise(video):
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1, 1)
    return (video - mean) / std


def test_cells_match_skimage():
    hog = HOGTarget()
    for frame in _frames():
        for c in range(3):
            ref = _skimage_cells(frame[..., c])
            out = hog.cells(torch.from_numpy(frame[..., c])[None])[0]
            assert out.dtype == torch.float32 and out.shape == ref.shape
            assert np.abs(out.double().numpy() - ref).max() < ATOL


@pytest.mark.parametrize("patch,tubelet", [(16, 1), (16, 2), (32, 1), (8, 1)])
def test_token_layout(patch, tubelet):
    """A token's feature is the skimage cells of its patch region, ordered (tubelet frame, channel, cell row,
    cell col, bin); tokens frame-major as the models."""
    frames = _frames()[:2]
    video = torch.from_numpy(np.stack(frames * 2)).permute(3, 0, 1, 2)[None]  # (1, 3, 4, 64, 64)
    hog = HOGTarget(patch, tubelet)
    out = hog(video)
    T, H, W = 4, 64, 64
    hp, wp, n = H // patch, W // patch, patch // 8
    assert out.shape == (1, T // tubelet * hp * wp, hog.feature_dim)
    assert hog.feature_dim == tubelet * 3 * 9 * n * n
    cells = np.stack([np.stack([_skimage_cells(video[0, c, t].numpy()) for c in range(3)]) for t in range(T)])
    for tok in [0, 1, hp * wp - 1, out.shape[1] - 1, out.shape[1] // 2 + 1]:
        t, rem = divmod(tok, hp * wp)
        h, w = divmod(rem, wp)
        ref = cells[t * tubelet:(t + 1) * tubelet, :, h * n:(h + 1) * n, w * n:(w + 1) * n]  # (u, c, cy, cx, 9)
        assert np.abs(out[0, tok].double().numpy() - ref.reshape(-1)).max() < ATOL


def test_dim_108_batch_equals_per_image_and_dtypes():
    fr = _frames()
    video = torch.from_numpy(np.stack([np.stack([fr[0], fr[1]]), np.stack([fr[1], fr[0]]),
                                       np.stack([fr[1], fr[1]])])).permute(0, 4, 1, 2, 3)  # (3, 3, 2, 64, 64)
    hog = HOGTarget()
    out = hog(video)
    assert out.shape == (3, 2 * 16, 108) and out.dtype == torch.float32 and not out.requires_grad
    for b in range(3):
        assert torch.allclose(out[b:b + 1], hog(video[b:b + 1]), atol=1e-6)
    assert torch.allclose(hog(video.double()), out, atol=1e-6)
    assert hog(video.bfloat16()).dtype == torch.float32
    assert len(hog.state_dict()) == 0
    if torch.cuda.is_available():
        assert torch.allclose(hog(video.cuda()).cpu(), out, atol=1e-4)


def test_normalised_input_equals_pixel_hog():
    """HOG of the normalised clip = HOG of the pixels (the per-channel scale cancels in the cell L2 norm)."""
    fr = _frames()
    video = torch.from_numpy(np.stack([fr[0], fr[1]])).permute(3, 0, 1, 2)[None]
    hog = HOGTarget()
    assert (hog(_normalise(video)) - hog(video)).abs().max() < 1e-3


def test_bad_shapes():
    with pytest.raises(ValueError, match="multiple"):
        HOGTarget(patch_size=12)
    with pytest.raises(ValueError, match="patches"):
        HOGTarget()(torch.zeros(1, 3, 2, 40, 48))
    with pytest.raises(ValueError, match="tubelet|patches"):
        HOGTarget(tubelet_size=2)(torch.zeros(1, 3, 3, 32, 32))
