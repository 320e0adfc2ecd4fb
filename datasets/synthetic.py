"""A small, learnable synthetic video dataset whose label is the motion direction of a square.

A bright square of random colour sits on a static, dim, slightly noisy textured background and, per class, moves with
constant speed: 0 = up, 1 = down, 2 = sideways (left or right, drawn per video), 3 = stays still. It wraps
around the frame edges (a torus) and starts at a uniform random position, so its position in any single
frame is uniform for every class: one frame is at chance, the label is only visible in the motion.
The classes are invariant under a horizontal flip, so the default training flip (p=0.5) keeps every label
true. Deterministic from ``seed``.

Layout written by :func:`make_dataset` (see CONVENTIONS / the synthetic-data contract)::

    DIR/videos/<name>.mp4                          (PyAV, libx264 yuv420p; mpeg4 if libx264 is missing)
    DIR/rawframes/<name>/img_00001.jpg ...         (same content as JPEGs)
    DIR/{train,val,test}.csv                       ("videos/<name>.mp4 label", relative to DIR)
    DIR/rawframes_{train,val,test}.csv             ("rawframes/<name> total_frames label")
    DIR/labels.txt                                 (class names, one per line)
    DIR/synthetic.json                             (generator version + parameters, written last)
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence

import numpy as np

CLASS_NAMES = ("move_up", "move_down", "move_sideways", "stay")
# Bumped whenever make_clip draws different videos for the same seed (2: dim background, patch-sized square).
GENERATOR_VERSION = 2
META_FILE = "synthetic.json"  # the generator version and parameters a dataset folder was written with
_DIRECTIONS = ((-1, 0), (1, 0), (0, None), (0, 0))  # (dy, dx) per class; None: dx = +-1 drawn per video


def _import_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a declared dependency
        raise ImportError("writing mp4 files needs PyAV: pip install av") from e
    return av


def write_mp4(path: str, frames: np.ndarray, fps: int = 8, codec: Optional[str] = None, crf: int = 18) -> str:
    """Write uint8 RGB ``frames`` (T, H, W, 3), H and W even, to an mp4 (yuv420p). Returns the codec used."""
    av = _import_av()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"yuv420p needs even height and width, got {frames.shape[1:3]}")
    if codec is None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        else:
            stream.bit_rate = 4_000_000
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return codec


def write_frames(folder: str, frames: np.ndarray, filename_tmpl: str = "img_{:05}.jpg", start_idx: int = 1,
                 quality: int = 95) -> None:
    """Write uint8 RGB ``frames`` (T, H, W, 3) as images named ``filename_tmpl.format(start_idx + t)``."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for t, f in enumerate(np.asarray(frames)):
        Image.fromarray(f).save(os.path.join(folder, filename_tmpl.format(start_idx + t)), quality=quality)


def make_clip(label: int, rng: np.random.Generator, frames: int = 16, size: int = 64) -> np.ndarray:
    """One (frames, size, size, 3) uint8 clip of class ``label`` (0..3)."""
    if not 0 <= label < len(_DIRECTIONS):
        raise ValueError(f"label must be in [0, {len(_DIRECTIONS)}), got {label}")
    # Background: a dim blocky texture plus a little pixel noise, static over time. (A brighter, noisier
    # texture makes the task much slower to learn from scratch: with values up to 90 and noise 12 the demo
    # model sat at chance for ~300 steps longer; the label still lives only in the motion.)
    coarse = rng.integers(0, 31, size=(size // 8 + 1, size // 8 + 1, 3)).astype(np.float32)
    bg = np.kron(coarse, np.ones((8, 8, 1), np.float32))[:size, :size]
    bg += rng.normal(0.0, 4.0, size=bg.shape).astype(np.float32)
    side = max(size // 4, 2)  # one 16 px patch at 64 px
    speed = max(size // 20, 1)  # pixels per frame
    colour = rng.integers(170, 256, size=3).astype(np.float32)
    y0, x0 = rng.integers(0, size, size=2)
    dy, dx = _DIRECTIONS[label]
    if dx is None:
        dx = 1 if rng.random() < 0.5 else -1
    out = np.empty((frames, size, size, 3), np.uint8)
    rows = np.arange(side)
    for t in range(frames):
        img = bg.copy()
        ys = (y0 + dy * speed * t + rows) % size
        xs = (x0 + dx * speed * t + rows) % size
        img[np.ix_(ys, xs)] = colour
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def make_dataset(out: str, seed: int = 0, num_classes: int = 4, train_per_class: int = 40,
                 val_per_class: int = 10, test_per_class: int = 10, frames: int = 16, size: int = 64,
                 fps: int = 8, codec: Optional[str] = None, splits: Sequence[str] = ("train", "val", "test"),
                 ) -> Dict[str, str]:
    """Write the synthetic dataset under ``out``; returns a dict of paths.

    Keys: 'root', 'videos', 'rawframes', 'labels', 'meta', and for each split s: s (video list) and
    'rawframes_' + s (raw-frame list). ``DIR/synthetic.json`` records GENERATOR_VERSION and the parameters, so
    a reader can tell whether a folder holds the data it asks for (see :func:`dataset_meta`)."""
    if not 1 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in [1, {len(CLASS_NAMES)}], got {num_classes}")
    if size % 2:
        raise ValueError(f"size must be even (yuv420p), got {size}")
    rng = np.random.default_rng(seed)
    counts = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    paths: Dict[str, str] = {"root": out, "videos": os.path.join(out, "videos"),
                             "rawframes": os.path.join(out, "rawframes"), "labels": os.path.join(out, "labels.txt")}
    os.makedirs(paths["videos"], exist_ok=True)
    os.makedirs(paths["rawframes"], exist_ok=True)
    with open(paths["labels"], "w") as f:
        f.write("".join(n + "\n" for n in CLASS_NAMES[:num_classes]))
    for split in splits:
        video_rows, frame_rows = [], []
        for i in range(counts[split]):
            for label in range(num_classes):
                name = f"{split}_{label}_{i:04d}"
                clip = make_clip(label, rng, frames=frames, size=size)
                write_mp4(os.path.join(paths["videos"], name + ".mp4"), clip, fps=fps, codec=codec)
                write_frames(os.path.join(paths["rawframes"], name), clip)
                video_rows.append(f"videos/{name}.mp4 {label}\n")
                frame_rows.append(f"rawframes/{name} {frames} {label}\n")
        order = rng.permutation(len(video_rows))
        paths[split] = os.path.join(out, f"{split}.csv")
        paths["rawframes_" + split] = os.path.join(out, f"rawframes_{split}.csv")
        with open(paths[split], "w") as f:
            f.writelines(video_rows[j] for j in order)
        with open(paths["rawframes_" + split], "w") as f:
            f.writelines(frame_rows[j] for j in order)
    paths["meta"] = os.path.join(out, META_FILE)
    with open(paths["meta"], "w") as f:  # last: a folder with this file is complete
        json.dump(dataset_meta(seed, num_classes, train_per_class, val_per_class, test_per_class, frames, size,
                               fps, list(splits)), f, indent=1)
    return paths


def dataset_meta(seed: int = 0, num_classes: int = 4, train_per_class: int = 40, val_per_class: int = 10,
                 test_per_class: int = 10, frames: int = 16, size: int = 64, fps: int = 8,
                 splits: Sequence[str] = ("train", "val", "test")) -> dict:
    """What ``DIR/synthetic.json`` holds for a dataset written with these parameters by this generator."""
    return dict(generator_version=GENERATOR_VERSION, seed=seed, num_classes=num_classes,
                train_per_class=train_per_class, val_per_class=val_per_class, test_per_class=test_per_class,
                frames=frames, size=size, fps=fps, splits=list(splits))
