"""Video transforms are consistent across frames; eval crops; normalisation; mixup on 5-D clips."""
import random

import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from datasets import VideoTrainTransform, build_mixup_fn, default_data_args, video_eval_transform
from datasets.transforms import apply_consistently, build_rand_augment, random_resized_crop_params, to_pil_frames

MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1, 1)
STD = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1, 1)


def _textured_clip(t=6, h=48, w=64, seed=0):
    """Frame k = one random texture + 5k: any per-frame difference in crop/flip shows up spatially."""
    base = np.random.default_rng(seed).integers(20, 200, size=(h, w, 3))
    return np.stack([base + 5 * k for k in range(t)]).astype(np.uint8)


def _seed(s):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _upstream_train_reference(frames, size, ra=None):
    """VideoMamba's _aug_frame without erasing, from its formulas, drawing in its order: RandAugment on the whole
    frames (python / numpy draws), ToTensor + normalise, _get_param_spatial_crop (python random), bilinear
    interpolate (align_corners False), flip when np.random.uniform() < 0.5."""
    if ra is not None:
        frames = np.stack([np.asarray(im) for im in apply_consistently(ra, to_pil_frames(frames))])
    x = torch.from_numpy(frames).float() / 255.0  # T H W C
    x = ((x - torch.tensor(IMAGENET_DEFAULT_MEAN)) / torch.tensor(IMAGENET_DEFAULT_STD)).permute(3, 0, 1, 2)
    top, left, h, w = random_resized_crop_params(x.shape[2], x.shape[3], (0.08, 1.0), (0.75, 1.3333))
    x = torch.nn.functional.interpolate(x[:, :, top:top + h, left:left + w], size=(size, size), mode="bilinear",
                                        align_corners=False)
    flip = np.random.uniform() < 0.5
    return (x.flip(-1) if flip else x), flip


@pytest.mark.parametrize("aa", [None, "rand-m9-n2-mstd0.5-inc1"])
def test_train_clip_is_upstreams_given_the_draws(aa):
    frames = _textured_clip()
    tf = VideoTrainTransform(32, aa=aa, reprob=0.0, flip=True)
    assert (tf.scale, tf.ratio) == ((0.08, 1.0), (0.75, 1.3333))  # upstream's ranges
    flips = set()
    for s in range(12):
        _seed(s)
        x = tf(frames)
        assert x.shape == (3, 6, 32, 32) and x.dtype == torch.float32
        if aa is None:  # one crop and flip for every frame: frame k - frame 0 stays 5k everywhere
            d = ((x * STD + MEAN)[:, 1:] - (x * STD + MEAN)[:, :1]) * 255
            assert (d - 5 * torch.arange(1, 6).view(1, 5, 1, 1)).abs().max() < 1e-3
        _seed(s)
        ref, flip = _upstream_train_reference(frames, 32, build_rand_augment(aa, 32, "bicubic") if aa else None)
        assert torch.equal(x, ref), f"seed {s}: max diff {(x - ref).abs().max()}"
        flips.add(flip)
    assert flips == {True, False}  # both branches exercised
    tf_aa, differs = VideoTrainTransform(32, aa=aa, reprob=0.0, flip=True, resize="antialias"), 0
    for s in range(4):  # --resize_mode antialias: the same draws, other pixels wherever the crop is downscaled
        _seed(s)
        a = tf_aa(frames)
        _seed(s)
        differs += not torch.equal(a, tf(frames))
    assert differs >= 1
    with pytest.raises(ValueError, match="resize mode"):
        VideoTrainTransform(32, resize="pil")


def test_rand_augment_same_ops_on_every_frame():
    frame = _textured_clip(1)[0]
    frames = np.stack([frame] * 5)
    ra = build_rand_augment("rand-m9-n4-mstd0.5-inc1", 48)
    differs_without, changed = False, 0
    for s in range(8):
        _seed(s)
        out = [np.asarray(im) for im in apply_consistently(ra, to_pil_frames(frames))]
        assert all(np.array_equal(out[0], o) for o in out[1:])
        changed += not np.array_equal(out[0], frame)
        _seed(s)
        indep = [np.asarray(ra(im)) for im in to_pil_frames(frames)]
        differs_without |= not all(np.array_equal(indep[0], o) for o in indep[1:])
    assert changed >= 6  # RandAugment really changes the frames
    assert differs_without  # per-frame RandAugment would differ: the check above is meaningful
    tf = VideoTrainTransform(32, aa="rand-m9-n4-mstd0.5-inc1", reprob=0.0)
    for s in range(5):
        _seed(s)
        x = tf(frames)
        assert torch.equal(x[:, 0:1].expand_as(x), x)


def test_random_erasing_one_box_per_frame_as_upstream():
    """Upstream erases the (T, C, H, W) clip with timm's RandomErasing: each frame is an image of the batch and gets
    its own box (num_splits = recount = 1: every frame)."""
    frames = np.full((5, 40, 40, 3), 220, np.uint8)  # normalised values > 0 everywhere
    tf = VideoTrainTransform(32, aa=None, reprob=1.0, remode="const")
    differ = 0
    for s in range(6):
        _seed(s)
        x = tf(frames)
        boxes = set()
        for t in range(5):
            erased = x[:, t] == 0
            assert erased.any() and not erased.all()
            assert torch.equal(erased, erased[:1].expand_as(erased))  # the same pixels in every channel
            ys, xs = torch.nonzero(erased[0], as_tuple=True)
            assert erased[0, ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()  # one rectangle
            boxes.add((int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())))
        differ += len(boxes) > 1
    assert differ >= 5  # boxes drawn per frame


def test_eval_transform_normalises_and_crops_along_long_side():
    # 48x96 frame whose column j has value 2*j: crops are read back from their left column
    col = (2 * np.arange(96)).astype(np.uint8)
    frames = np.broadcast_to(col[None, None, :, None], (3, 48, 96, 3)).copy()
    lefts = []
    for k in range(3):
        x = video_eval_transform(frames, short_side_size=48, input_size=48, crop_index=k, num_crops=3)
        assert x.shape == (3, 3, 48, 48)
        px = (x * STD + MEAN) * 255
        lefts.append(round(float(px[0, 0, 0, 0]) / 2))
    assert lefts == [0, 24, 48]
    grey = np.full((2, 40, 60, 3), 128, np.uint8)
    x = video_eval_transform(grey, short_side_size=32, input_size=28)  # resize 40x60 -> 32x48, centre 28
    assert x.shape == (3, 2, 28, 28)
    expect = ((128 / 255 - MEAN) / STD).view(3)
    assert torch.allclose(x.mean(dim=(1, 2, 3)), expect, atol=1e-3)
    with pytest.raises(ValueError, match="short_side_size"):
        video_eval_transform(grey, short_side_size=24, input_size=28)


def test_mixup_5d_targets_and_shared_cutmix_box():
    args = default_data_args(mixup=0.0, cutmix=1.0, mixup_prob=1.0, smoothing=0.1)
    fn = build_mixup_fn(args, num_classes=5)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1, 1).expand(4, 3, 4, 16, 16).clone() + 1
    y = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    np.random.seed(0)
    out, soft = fn(x.clone(), y)
    assert out.shape == x.shape and soft.shape == (4, 5)
    assert torch.allclose(soft.sum(1), torch.ones(4))
    changed = out != x
    assert changed.any()
    assert torch.equal(changed, changed[:, :1, :1].expand_as(changed))  # one box for all channels and frames
    fn = build_mixup_fn(default_data_args(), num_classes=5)  # mixup 0.8 / cutmix 1.0 / smoothing 0.1
    assert fn.mixup_enabled and fn.mixup_alpha == 0.8 and fn.cutmix_alpha == 1.0  # timm attributes pass through
    for s in range(4):
        np.random.seed(s)
        out, soft = fn(torch.randn(4, 3, 2, 8, 8), y)
        assert out.shape == (4, 3, 2, 8, 8) and torch.allclose(soft.sum(1), torch.ones(4))
        assert (soft > 0).all()  # smoothing keeps every class above zero
    img, soft = fn(torch.randn(2, 3, 8, 8), y[:2])
    assert img.shape == (2, 3, 8, 8) and soft.shape == (2, 5)
    with pytest.raises(ValueError, match="even batch"):
        fn(torch.randn(3, 3, 2, 8, 8), torch.tensor([0, 1, 2]))
    assert build_mixup_fn(default_data_args(mixup=0, cutmix=0, smoothing=0), 5) is None
    assert build_mixup_fn(default_data_args(mixup=0, cutmix=0, smoothing=0.1), 5) is None  # engine smooths


def test_randaugment_at_its_magnitude_bound_does_not_crash_the_loader():
    """rand-m9-mstd0.5 (the ImageNet recipes) draws magnitude 10 about 2% of the time; PosterizeIncreasing then keeps
    0 bits, which PIL >= 11 rejects with a ValueError inside a loader worker. It must give the old result (black)."""
    import numpy as np
    from PIL import Image
    from timm.data import create_transform
    from timm.data.auto_augment import AugmentOp

    import datasets  # noqa: F401  (installs the 0-bit-safe posterize)

    img = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8"))
    assert np.asarray(AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)(img)).max() == 0
    assert np.asarray(AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=5)(img)).max() == 192  # 2 bits kept
    # the recipe's whole policy with the magnitude pinned at the bound (std 0 -> always 10): every op runs
    tf = create_transform(16, is_training=True, auto_augment="rand-m10-n15-inc1", re_prob=0.0)
    for _ in range(20):
        assert tf(img).shape == (3, 16, 16)
