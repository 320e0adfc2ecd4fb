"""Video transforms: VideoMamba's clip pipeline; every random parameter is drawn once per clip.

Input: uint8 RGB frames (T, H, W, 3) as a numpy array. Output: float32 (3, T, S, S), ImageNet-normalised
(``x / 255`` then ``(x - mean) / std`` in float32, as upstream's ``ClipToTensor`` + ``Normalize``).

Train (upstream's ``_aug_frame``): RandAugment from an '--aa' string on the whole frames (timm ops, one op sequence
and magnitude per clip, grey fill 128 and --train_interpolation as upstream's ``create_random_augment``) ->
normalise -> random resized crop (scale 0.08-1, ratio 0.75-1.3333, upstream's ``_get_param_spatial_crop`` draws)
resized by bilinear interpolation of the normalised float clip (``torch.nn.functional.interpolate``, no
antialiasing) -> horizontal flip when ``np.random.uniform() < 0.5`` (off for SSV2) -> random erasing on the
(T, C, S, S) view (timm's RandomErasing with ``num_splits = recount``: a box per frame, as upstream).
Val (upstream's ``Resize`` + ``CenterCrop``): short side to ``short_side_size`` (long side
``int(short_side_size * long / short)``, OpenCV ``INTER_LINEAR``), centre crop ``input_size`` at
``int(round(slack / 2))`` on both sides.
Test (upstream's test ``__getitem__``): the same resize, then crop ``k`` of ``num_crop`` squares of
``short_side_size`` along the long side at ``int(k * slack / (num_crop - 1))`` (one crop: ``int(slack / 2)``), the
short side whole; when ``input_size < short_side_size`` (a size upstream's models cannot take) a centre crop of
``input_size`` follows.
``resize='antialias'`` (``--resize_mode antialias``, not VideoMamba's convention) keeps every size, crop and draw but
resizes with antialiasing: PIL bilinear for val / test, ``interpolate(antialias=True)`` for the train crop.
"""
from __future__ import annotations

import math
import random
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, rand_augment_transform
from timm.data import auto_augment as _timm_aa
from timm.data.random_erasing import RandomErasing


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


RESIZE_MODES = ("videomamba", "antialias")
# VideoMamba's random resized crop ranges (its _aug_frame: scale [0.08, 1.0], aspect [0.75, 1.3333]).
UPSTREAM_SCALE = (0.08, 1.0)
UPSTREAM_RATIO = (0.75, 1.3333)


def _check_resize(resize: str) -> str:
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {resize!r}")
    return resize


def random_resized_crop_params(height: int, width: int, scale=UPSTREAM_SCALE, ratio=UPSTREAM_RATIO,
                               rng: Optional[random.Random] = None) -> Tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop of area fraction in ``scale`` and aspect in ``ratio`` (log-uniform):
    10 tries, then the largest centred crop within ``ratio``. The draws (uniform area, uniform log-aspect, then
    randint top, randint left) are those of upstream's ``_get_param_spatial_crop``."""
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
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def to_pil_frames(frames: np.ndarray) -> List[Image.Image]:
    frames = _check_frames(frames)
    return [Image.fromarray(np.ascontiguousarray(f)) for f in frames]


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    return frames


def apply_consistently(fn, frames: Sequence[Image.Image]) -> List[Image.Image]:
    """Apply a random PIL transform with the same random draws to every frame: python's ``random`` and
    numpy's global state are rewound to the same point before each frame (timm's RandAugment draws its
    op choice from numpy and its probabilities/magnitudes from ``random``), as upstream's video RandAugment
    applies one draw to the whole clip."""
    py_state, np_state = random.getstate(), np.random.get_state()
    out = []
    for f in frames:
        random.setstate(py_state)
        np.random.set_state(np_state)
        out.append(fn(f))
    return out


def _pil_interp(name: str):
    """Upstream's interpolation names (video_transforms._pil_interp): bicubic / lanczos / hamming, else bilinear."""
    return {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS, "hamming": Image.HAMMING}.get(name, Image.BILINEAR)


def build_rand_augment(aa: Optional[str], input_size: int, interpolation: str = "bicubic"):
    """timm RandAugment from a 'rand-m7-n4-mstd0.5-inc1' string, or None when ``aa`` is empty/'none'. Hyper-parameters
    as upstream's ``create_random_augment``: ``translate_const = int(0.45 * input_size)``, the interpolation unless
    'random' (then bilinear or bicubic at random), timm's default grey fill (128, 128, 128)."""
    if not aa or str(aa).lower() == "none":
        return None
    if not str(aa).startswith("rand"):
        raise ValueError(f"--aa {aa!r}: only RandAugment strings 'rand-m?-n?-...' are supported for video")
    hparams = dict(translate_const=int(input_size * 0.45))
    if interpolation and interpolation != "random":
        hparams["interpolation"] = _pil_interp(interpolation)
    return rand_augment_transform(aa, hparams)


def normalize_clip(x: torch.Tensor, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD) -> torch.Tensor:
    """float32 (3, T, H, W) in [0, 1] -> ``(x - mean) / std`` per channel, in place."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
    return x.sub_(m).div_(s)


def clip_to_tensor(frames: np.ndarray, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> normalised float32 (3, T, H, W): ``x / 255`` then ``(x - mean) / std``."""
    arr = np.ascontiguousarray(_check_frames(frames))
    x = torch.from_numpy(arr).permute(3, 0, 1, 2).float().div_(255.0)
    return normalize_clip(x, mean, std).contiguous()


class VideoTrainTransform:
    """Train-time clip augmentation (VideoMamba's ``_aug_frame``; see the module docstring); call on uint8
    (T, H, W, 3) frames -> float32 (3, T, S, S). ``interpolation`` is RandAugment's (upstream's
    --train_interpolation); the crop is always resized bilinearly (``resize`` says whether with antialiasing)."""

    def __init__(self, input_size: int = 224, aa: Optional[str] = "rand-m7-n4-mstd0.5-inc1", reprob: float = 0.25,
                 remode: str = "pixel", recount: int = 1, flip: bool = True, interpolation: str = "bicubic",
                 scale=UPSTREAM_SCALE, ratio=UPSTREAM_RATIO, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                 resize: str = "videomamba"):
        self.input_size = int(input_size)
        self.flip = flip
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.mean, self.std = tuple(mean), tuple(std)
        self.resize = _check_resize(resize)
        self.rand_augment = build_rand_augment(aa, self.input_size, interpolation)
        self.erase = (RandomErasing(reprob, mode=remode, max_count=recount, num_splits=recount, device="cpu")
                      if reprob and reprob > 0 else None)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        frames = _check_frames(frames)
        if self.rand_augment is not None:
            frames = np.stack([np.asarray(im) for im in apply_consistently(self.rand_augment, to_pil_frames(frames))])
        x = clip_to_tensor(frames, self.mean, self.std)  # 3 T H W
        top, left, h, w = random_resized_crop_params(x.shape[2], x.shape[3], self.scale, self.ratio)
        x = F.interpolate(x[:, :, top:top + h, left:left + w], size=(self.input_size, self.input_size),
                          mode="bilinear", align_corners=False, antialias=self.resize == "antialias")
        if self.flip and np.random.uniform() < 0.5:
            x = x.flip(-1)
        x = x.contiguous()
        if self.erase is not None:
            self.erase(x.permute(1, 0, 2, 3))  # (T, C, S, S) in place: timm erases each frame of the "batch"
        return x


def resized_size(height: int, width: int, short_side: int) -> Tuple[int, int]:
    """(h, w) after resizing the short side to ``short_side``: the long side becomes ``int(short_side * long /
    short)`` (upstream's ``get_resize_sizes``; a square goes to ``short_side`` x ``short_side``)."""
    if width < height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def resize_short_side(frames: np.ndarray, short_side: int, resize: str = "videomamba") -> np.ndarray:
    """uint8 (T, H, W, 3) with the short side resized to ``short_side`` (unchanged when it already is, as upstream's
    ``resize_clip``): OpenCV ``INTER_LINEAR`` (``resize='videomamba'``) or PIL bilinear with antialiasing."""
    frames = _check_frames(frames)
    _check_resize(resize)
    h, w = frames.shape[1:3]
    if (w <= h and w == short_side) or (h <= w and h == short_side):
        return frames
    new_h, new_w = resized_size(h, w, short_side)
    if resize == "videomamba":
        import cv2

        return np.stack([cv2.resize(np.ascontiguousarray(f), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
                         for f in frames])
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize((new_w, new_h), Image.BILINEAR))
                     for f in frames])


def center_crop_origin(height: int, width: int, size: int) -> Tuple[int, int]:
    """(top, left) of the centred ``size`` x ``size`` crop: ``int(round(slack / 2))`` (upstream's ``CenterCrop``;
    Python rounds halves to even)."""
    if size > min(width, height):
        raise ValueError(f"crop {size} larger than the resized frame {width}x{height}; "
                         f"use --short_side_size >= --input_size")
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def test_crop_start(length: int, size: int, index: int, num_crops: int) -> int:
    """Start of test crop ``index`` of ``num_crops`` (length ``size``) along a side of ``length``: upstream's
    ``int(index * slack / (num_crops - 1))``, one crop at ``int(slack / 2)``."""
    if not 0 <= index < num_crops:
        raise ValueError(f"crop index {index} not in [0, {num_crops})")
    if num_crops == 1:
        return int(1.0 * (length - size) / 2)
    return int(index * (1.0 * (length - size) / (num_crops - 1)))


def video_eval_transform(frames: np.ndarray, short_side_size: int, input_size: int, crop_index: int = 0,
                         num_crops: int = 1, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, *,
                         mode: str = "test", resize: str = "videomamba") -> torch.Tensor:
    """The validation (``mode='val'``: centre crop) or test (``mode='test'``: crop ``crop_index`` of ``num_crops``)
    clip of uint8 (T, H, W, 3) ``frames``; see the module docstring."""
    if mode not in ("val", "test"):
        raise ValueError(f"eval transform mode must be 'val' or 'test', got {mode!r}")
    if input_size > short_side_size:
        raise ValueError(f"crop {input_size} larger than the resized frame (short side {short_side_size}); "
                         f"use --short_side_size >= --input_size")
    frames = resize_short_side(frames, short_side_size, resize)
    h, w = frames.shape[1:3]
    if mode == "test":
        if h >= w:
            top = test_crop_start(h, short_side_size, crop_index, num_crops)
            frames = frames[:, top:top + short_side_size]
        else:
            left = test_crop_start(w, short_side_size, crop_index, num_crops)
            frames = frames[:, :, left:left + short_side_size]
        h, w = frames.shape[1:3]
    if mode == "val" or input_size < min(h, w):
        top, left = center_crop_origin(h, w, input_size)
        frames = frames[:, top:top + input_size, left:left + input_size]
    return clip_to_tensor(frames, mean, std)
