"""Data-list parsing: ``video_path label``, ``frame_folder_path total_frames label`` and (LVU / COIN / Breakfast,
VideoMamba's long-video lists) ``video_path label duration`` rows, duration in seconds.

Every malformed row raises ``ValueError`` naming the file, the 1-based line number and the line itself;
nothing is skipped silently (blank lines excepted). Paths may contain the separator: the integer columns
are taken from the right. A row whose path part itself ends in an integer column is ambiguous (usually a
raw-frame list passed where a video list is expected) and is refused.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional

from utils.errors import ListError, MissingDataError

_INT_RE = re.compile(r"^[+-]?\d+$")
_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Sample:
    path: str            # resolved path (data_root / list dir joined in front of relative paths)
    rel_path: str        # the path exactly as written in the list
    label: int
    total_frames: Optional[int] = None  # raw-frame rows only
    line_no: int = 0
    duration: Optional[float] = None    # long-video rows only (seconds)


def _describe(file: str, line_no: int, line: str) -> str:
    return f"{file}:{line_no}: {line!r}"


def split_row(line: str, sep: str, ncols: int) -> Optional[List[str]]:
    """Split ``line`` into exactly ``ncols`` fields, the first (path) keeping any extra separators.

    Returns None when the row has too few columns or when it is ambiguous (the path part would end with
    an integer field, i.e. there are probably too many columns)."""
    line = line.strip()
    whitespace = sep.strip() == ""
    parts = line.split() if whitespace else [p.strip() for p in line.split(sep)]
    if len(parts) < ncols:
        return None
    if len(parts) == ncols:
        return parts
    # More fields than columns: the path contains the separator. Take the integer columns from the right.
    tail = parts[len(parts) - (ncols - 1):]
    if _INT_RE.match(parts[len(parts) - ncols]):
        return None  # e.g. "x 30 2" in a 2-column list: refuse rather than read path "x 30"
    if whitespace:
        m = re.match(r"^(.*\S)" + r"\s+(\S+)" * (ncols - 1) + r"$", line)
        head = m.group(1)
    else:
        head = sep.join(line.split(sep)[: len(parts) - (ncols - 1)]).strip()
    return [head] + tail


def resolve_path(rel: str, data_root: str, list_file: str) -> str:
    """Absolute paths stay; relative ones go under ``data_root``, or under the list's folder when it is ''."""
    if os.path.isabs(rel):
        return rel
    root = data_root if data_root else os.path.dirname(os.path.abspath(list_file))
    return os.path.join(root, rel)


def read_list(list_file: str, kind: str, sep: str = " ", data_root: str = "",
              nb_classes: Optional[int] = None, flag: str = "") -> List[Sample]:
    """Parse a data list. ``kind``: 'video' (path label), 'rawframe' (path total_frames label) or 'long_video'
    (path label duration: VideoMamba's LVU / COIN / Breakfast lists, duration in seconds).

    Errors: missing file -> FileNotFoundError, empty list -> ValueError, malformed row or label outside
    [0, nb_classes) -> ValueError naming file, line number and line."""
    if kind not in ("video", "rawframe", "image", "long_video"):
        raise ValueError(f"unknown list kind {kind!r}")
    if not os.path.isfile(list_file):
        hint = f" (set by {flag})" if flag else ""
        raise MissingDataError(f"data list not found: {list_file}{hint}")
    ncols = 3 if kind in ("rawframe", "long_video") else 2
    fmt = {"rawframe": "frame_folder_path total_frames label",
           "long_video": "video_path label duration"}.get(kind, f"{kind}_path label")
    label_col = 1 if kind == "long_video" else -1
    samples: List[Sample] = []
    with open(list_file, encoding="utf-8-sig") as f:
        for line_no, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = split_row(line, sep, ncols)
            where = _describe(list_file, line_no, line)
            if fields is None:
                raise ListError(f"{where}: malformed row, expected {ncols} columns '{fmt}' separated by "
                                 f"{sep!r} (see --split)")
            if kind == "long_video" and not _NUM_RE.match(fields[2]):
                raise ListError(f"{where}: duration {fields[2]!r} is not a number of seconds (expected '{fmt}')")
            if not _INT_RE.match(fields[label_col]):
                raise ListError(f"{where}: label {fields[label_col]!r} is not an integer (expected '{fmt}')")
            label = int(fields[label_col])
            if label < 0:
                raise ListError(f"{where}: negative label {label}")
            if nb_classes is not None and label >= nb_classes:
                raise ListError(f"{where}: label {label} out of range for {nb_classes} classes "
                                 f"(check --nb_classes / --data_set)")
            total = None
            if kind == "rawframe":
                if not _INT_RE.match(fields[1]):
                    raise ListError(f"{where}: total_frames {fields[1]!r} is not an integer (expected '{fmt}')")
                total = int(fields[1])
                if total < 1:
                    raise ListError(f"{where}: total_frames must be >= 1, got {total}")
            duration = float(fields[2]) if kind == "long_video" else None
            if duration is not None and duration < 0:
                raise ListError(f"{where}: negative duration {duration}")
            samples.append(Sample(path=resolve_path(fields[0], data_root, list_file), rel_path=fields[0],
                                  label=label, total_frames=total, line_no=line_no, duration=duration))
    if not samples:
        raise ListError(f"data list is empty: {list_file}")
    return samples
