"""Video transforms: every random parameter is drawn once per clip and applied to all frames.

Input: uint8 RGB frames (T, H, W, 3) as a numpy array. Output: float32 (3, T, S, S), ImageNet-normalised.

Train: random resized crop (scale 0.08-1, ratio 3/4-4/3) -> horizontal flip p=0.5 (off for SSv2) ->
RandAugment from an '--aa' string (timm ops; one op sequence and magnitude per clip) -> normalise ->
random erasing (timm RandomErasing on the (3*T, S, S) view, so the box is shared by all frames).
Val: short side to ``short_side_size``, centre crop ``input_size``.
Test: short side to ``short_side_size``, then ``num_crop`` square ``input_size`` crops evenly spaced
along the long side (centred on the short side); crop ``split_nb`` is returned.
"""
from __future__ import annotations

import math
import random
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, rand_augment_transform
from timm.data import auto_augment as _timm_aa
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import str_to_pil_interp


def _posterize(img, bits_to_keep, **__):
    """timm's posterize with the 0-bit case PIL >= 11 rejects: a RandAugment magnitude at its upper bound (10, drawn
    about 2% of the time by rand-m9-mstd0.5, the ImageNet recipes' policy) makes PosterizeIncreasing keep 0 bits,
    and ``ImageOps.posterize(img, 0)`` now raises "bits must be between or equal to 1 and 8" inside a loader
    worker, ending the run. Keeping 0 bits is what older PIL computed (every pixel & 0: a black image), i.e. what
    DeiT / VideoMamba trained with."""
    bits = int(bits_to_keep)
    if bits >= 8:
        return img
    if bits <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits)


# timm's ops are looked up by name when a policy is built (ImageNet's create_transform and our video RandAugment):
# every posterize variant gets the 0-bit-safe op.
for _name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
    if _name in _timm_aa.NAME_TO_OP:
        _timm_aa.NAME_TO_OP[_name] = _posterize


def random_resized_crop_params(height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                               rng: Optional[random.Random] = None) -> Tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop of area fraction in ``scale`` and aspect in ``ratio``
    (10 tries, then the largest centred crop within ``ratio``), as in Inception-style training."""
    r = rng or random
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * r.uniform(*scale)
        aspect = math.exp(r.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return r.randint(0, height - h), r.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def to_pil_frames(frames: np.ndarray) -> List[Image.Image]:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    return [Image.fromarray(np.ascontiguousarray(f)) for f in frames]


def apply_consistently(fn, frames: Sequence[Image.Image]) -> List[Image.Image]:
    """Apply a random PIL transform with the same random draws to every frame: python's ``random`` and
    numpy's global state are rewound to the same point before each frame (timm's RandAugment draws its
    op choice from numpy and its probabilities/magnitudes from ``random``)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    out = []
    for f in frames:
        random.setstate(py_state)
        np.random.set_state(np_state)
        out.append(fn(f))
    return out


def build_rand_augment(aa: Optional[str], input_size: int, interpolation: str = "bicubic",
                       mean: Sequence[float] = IMAGENET_DEFAULT_MEAN):
    """timm RandAugment from a 'rand-m7-n4-mstd0.5-inc1' string, or None when ``aa`` is empty/'none'."""
    if not aa or str(aa).lower() == "none":
        return None
    if not str(aa).startswith("rand"):
        raise ValueError(f"--aa {aa!r}: only RandAugment strings 'rand-m?-n?-...' are supported for video")
    hparams = dict(translate_const=int(input_size * 0.45), img_mean=tuple(min(255, round(255 * x)) for x in mean),
                   interpolation=str_to_pil_interp(interpolation))
    return rand_augment_transform(aa, hparams)


def frames_to_tensor(frames: Sequence[Image.Image], mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD
                     ) -> torch.Tensor:
    """PIL frames -> normalised float32 (3, T, H, W)."""
    arr = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])  # T H W 3
    x = torch.from_numpy(arr).permute(3, 0, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
    return x.sub_(m).div_(s).contiguous()


class VideoTrainTransform:
    """Train-time clip augmentation; call on uint8 (T, H, W, 3) frames -> float32 (3, T, S, S)."""

    def __init__(self, input_size: int = 224, aa: Optional[str] = "rand-m7-n4-mstd0.5-inc1", reprob: float = 0.25,
                 remode: str = "pixel", recount: int = 1, flip: bool = True, interpolation: str = "bicubic",
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
        self.input_size = int(input_size)
        self.flip = flip
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.interp = str_to_pil_interp(interpolation)
        self.mean, self.std = tuple(mean), tuple(std)
        self.rand_augment = build_rand_augment(aa, self.input_size, interpolation, mean)
        self.erase = (RandomErasing(reprob, mode=remode, max_count=recount, num_splits=0, device="cpu")
                      if reprob and reprob > 0 else None)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        imgs = to_pil_frames(frames)
        w0, h0 = imgs[0].size
        top, left, h, w = random_resized_crop_params(h0, w0, self.scale, self.ratio)
        size = (self.input_size, self.input_size)
        box = (left, top, left + w, top + h)
        imgs = [im.resize(size, self.interp, box=box) for im in imgs]
        if self.flip and random.random() < 0.5:
            imgs = [im.transpose(Image.FLIP_LEFT_RIGHT) for im in imgs]
        if self.rand_augment is not None:
            imgs = apply_consistently(self.rand_augment, imgs)
        x = frames_to_tensor(imgs, self.mean, self.std)
        if self.erase is not None:
            c, t, hh, ww = x.shape
            self.erase(x.view(c * t, hh, ww))  # in place; one box for every frame and channel
        return x


def short_side_resize(imgs: Sequence[Image.Image], short_side: int, interp=Image.BILINEAR) -> List[Image.Image]:
    w, h = imgs[0].size
    if min(w, h) == short_side:
        return list(imgs)
    if w <= h:
        size = (short_side, max(1, int(round(h * short_side / w))))
    else:
        size = (max(1, int(round(w * short_side / h))), short_side)
    return [im.resize(size, interp) for im in imgs]


def crop_box(width: int, height: int, size: int, index: int = 0, num_crops: int = 1) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) of square crop ``index`` of ``num_crops`` spaced evenly along the long side,
    centred on the short side; one crop is the centre crop."""
    if size > min(width, height):
        raise ValueError(f"crop {size} larger than the resized frame {width}x{height}; "
                         f"use --short_side_size >= --input_size")
    if not 0 <= index < num_crops:
        raise ValueError(f"crop index {index} not in [0, {num_crops})")
    def pos(length: int) -> int:
        slack = length - size
        return slack // 2 if num_crops == 1 else int(round(index * slack / (num_crops - 1)))
    if width >= height:
        left, top = pos(width), (height - size) // 2
    else:
        left, top = (width - size) // 2, pos(height)
    return left, top, left + size, top + size


def video_eval_transform(frames: np.ndarray, short_side_size: int, input_size: int, crop_index: int = 0,
                         num_crops: int = 1, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD) -> torch.Tensor:
    """Val (``num_crops=1``: centre crop) and test (crop ``crop_index`` of ``num_crops``) transform."""
    imgs = short_side_resize(to_pil_frames(frames), short_side_size)
    box = crop_box(imgs[0].size[0], imgs[0].size[1], input_size, crop_index, num_crops)
    return frames_to_tensor([im.crop(box) for im in imgs], mean, std)
