"""Frame readers: decord (default), PyAV (fallback / ``--video_reader pyav``) and raw-frame folders.

Every failure (missing file, zero-byte or truncated mp4, no video stream, zero frames, unreadable JPEG)
becomes :class:`VideoReadError` carrying the file name and the reason, so the datasets can count, log and
replace (train) or report (val/test) it. decord and av are imported lazily. :func:`probe_video` and
:func:`probe_rawframes` check a file the same way before it is listed (scripts/build_lists.py, prepare_videos.py).
"""
from __future__ import annotations

import os
from typing import Callable, List, NamedTuple, Sequence, Tuple

import numpy as np


class VideoReadError(RuntimeError):
    """A video or frame folder could not be read. ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read {path}: {reason}")
        self.path = path
        self.reason = reason


def _import_decord():
    try:
        import decord
    except ImportError as e:
        raise ImportError("the decord video reader is not installed: pip install decord "
                          "(or pass --video_reader pyav)") from e
    return decord


def _import_av():
    try:
        import av
    except ImportError as e:
        raise ImportError("the PyAV video reader is not installed: pip install av") from e
    return av


def decord_available() -> bool:
    try:
        _import_decord()
        return True
    except ImportError:
        return False


def error_text(e: BaseException) -> str:
    """``Type: message`` of a decoder's exception, its message cut to 200 characters (for reports and errors)."""
    return f"{type(e).__name__}: {str(e).strip()[:200]}"


def _check_frames(path: str, frames: np.ndarray, n: int) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[0] != n or frames.shape[-1] != 3:
        raise VideoReadError(path, f"decoder returned frames of shape {tuple(frames.shape)}")
    return frames


class DecordVideo:
    """Open once, then ``len()`` and ``get(indices) -> uint8 (T, H, W, 3)``."""

    name = "decord"

    def __init__(self, path: str):
        decord = _import_decord()
        self.path = path
        try:
            self._vr = decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0))
            self._n = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())  # what VideoMamba's LVU turns window seconds into frames with
        except Exception as e:  # decord raises RuntimeError / DECORDError with long C++ messages
            raise VideoReadError(path, f"decord cannot open it ({error_text(e)})") from e

    def __len__(self) -> int:
        return self._n

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """Decoded frames; when decord fails on a file (e.g. its frame-size bug on some small widths) PyAV
        decodes it instead, provided it finds the same number of frames."""
        try:
            return _check_frames(self.path, self._vr.get_batch(list(indices)).asnumpy(), len(indices))
        except Exception as e:
            reason = f"decord cannot decode frames ({error_text(e)})"
        try:
            video = PyAVVideo(self.path)
        except VideoReadError as e:
            raise VideoReadError(self.path, f"{reason}; {e.reason}") from e
        if len(video) != self._n:
            raise VideoReadError(self.path, f"{reason}; PyAV finds {len(video)} of {self._n} frames")
        return video.get(indices)


class PyAVVideo:
    """Decodes all frames once (PyAV frame counts in headers are unreliable); fine for short clips."""

    name = "pyav"

    def __init__(self, path: str):
        av = _import_av()
        self.path = path
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise VideoReadError(path, "no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else 0.0
                # keep the decoded (yuv) frames; only the requested ones are converted to RGB in get()
                self._frames = list(container.decode(video=0))
        except VideoReadError:
            raise
        except Exception as e:  # av.error.FFmpegError subclasses, IndexError on empty containers, ...
            raise VideoReadError(path, f"PyAV cannot decode it ({error_text(e)})") from e

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        rgb = {i: self._frames[i].to_ndarray(format="rgb24") for i in set(indices)}
        return _check_frames(self.path, np.stack([rgb[i] for i in indices]), len(indices))


def open_video(path: str, reader: str = "decord"):
    """Open ``path`` with ``reader`` ('decord' or 'pyav'). decord falls back to PyAV when it is not installed
    or cannot open a file that PyAV can. Raises VideoReadError (with both reasons when both fail)."""
    if not os.path.isfile(path):
        raise VideoReadError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "zero-byte file")
    if reader not in ("decord", "pyav"):
        raise ValueError(f"unknown --video_reader {reader!r} (choose decord or pyav)")
    if reader == "decord" and decord_available():
        try:
            video = DecordVideo(path)
            if len(video) > 0:
                return video
            first = "decord found zero frames"
        except VideoReadError as e:
            first = e.reason
        try:
            video = PyAVVideo(path)
        except VideoReadError as e:
            raise VideoReadError(path, f"{first}; {e.reason}") from e
    else:
        video = PyAVVideo(path)
    if len(video) == 0:
        raise VideoReadError(path, "video has zero frames")
    return video


def read_video_frames(path: str, index_fn: Callable[[int], List[int]], reader: str = "decord"
                      ) -> Tuple[np.ndarray, List[int], int]:
    """Open a video, choose indices with ``index_fn(total_frames)``, return (uint8 (T,H,W,3), indices, total)."""
    video = open_video(path, reader)
    total = len(video)
    indices = index_fn(total)
    return video.get(indices), indices, total


def read_rawframes(folder: str, indices: Sequence[int], filename_tmpl: str = "img_{:05}.jpg",
                   start_idx: int = 1) -> np.ndarray:
    """Read frames ``start_idx + i`` (i in ``indices``) from ``folder`` as uint8 RGB (T, H, W, 3)."""
    import cv2

    if not os.path.isdir(folder):
        raise VideoReadError(folder, "frame folder not found")
    cache = {}
    out = []
    for i in indices:
        if i not in cache:
            name = os.path.join(folder, filename_tmpl.format(start_idx + i))
            img = cv2.imread(name, cv2.IMREAD_COLOR) if os.path.isfile(name) else None
            if img is None:
                why = "missing" if not os.path.isfile(name) else "undecodable"
                raise VideoReadError(folder, f"frame {os.path.basename(name)} {why}")
            cache[i] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        out.append(cache[i])
    shapes = {f.shape for f in out}
    if len(shapes) != 1:
        raise VideoReadError(folder, f"frames have different sizes {sorted(shapes)}")
    return np.stack(out)



class Probe(NamedTuple):
    """What a probe found in a readable video or frame folder."""

    frames: int
    height: int
    width: int


def probe_video(path: str, reader: str = "decord") -> Probe:
    """Open ``path`` as the training loader does (:func:`open_video`) and decode its first and last frame, which
    catches truncated files whose header still counts the lost frames. Raises VideoReadError with the reason."""
    video = open_video(path, reader)
    n = len(video)
    frames = video.get([0, n - 1] if n > 1 else [0])
    return Probe(n, int(frames.shape[1]), int(frames.shape[2]))


def count_rawframes(folder: str, filename_tmpl: str = "img_{:05}.jpg", start_idx: int = 1) -> int:
    """Number of consecutive frames ``filename_tmpl.format(start_idx + i)`` in ``folder`` from i = 0."""
    if not os.path.isdir(folder):
        raise VideoReadError(folder, "frame folder not found")
    names = set(os.listdir(folder))
    n = 0
    while filename_tmpl.format(start_idx + n) in names:
        n += 1
    return n


def probe_rawframes(folder: str, filename_tmpl: str = "img_{:05}.jpg", start_idx: int = 1) -> Probe:
    """Count a frame folder's consecutive frames and decode the first and last (:func:`read_rawframes`)."""
    n = count_rawframes(folder, filename_tmpl, start_idx)
    if n == 0:
        raise VideoReadError(folder, f"no frame {filename_tmpl.format(start_idx)}")
    frames = read_rawframes(folder, [0, n - 1] if n > 1 else [0], filename_tmpl, start_idx)
    return Probe(n, int(frames.shape[1]), int(frames.shape[2]))
