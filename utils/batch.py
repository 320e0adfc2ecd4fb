"""The batch the engines consume, by name: ``Batch(clips, targets, ids, bad_files, ok, chunk, split)``.

The datasets' items (and so their collated batches) are positional, with a length that depends on the mode:
train ``(clip, label, index, bad)`` (``bad``: the unreadable files the item replaced, newline-joined, '' when
none), val ``(clip, label, id, ok)``, test ``(clip, label, id, chunk_nb, split_nb, ok)``, ImageNet
``(img, label)``. ``as_batch`` reads that contract in one place; the loops use the names.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

MODES = ("train", "val", "test")


class Batch(NamedTuple):
    clips: torch.Tensor  # (B, 3, T, H, W) or (B, 3, H, W)
    targets: torch.Tensor  # (B,) class indices
    ids: list | None = None  # per item: the dataset index (train) or the video id (val / test)
    bad_files: tuple = ()  # train: the unreadable files the batch's items replaced (each name once per item)
    ok: torch.Tensor | None = None  # val / test: (B,) bool, False for an unreadable video (counted as a miss)
    chunk: list | None = None  # test: the temporal view of each item
    split: list | None = None  # test: the spatial crop of each item

    def readable(self) -> torch.Tensor:
        """(B,) bool: the items that were read (all of them where the dataset reports none unreadable)."""
        return self.ok if self.ok is not None else torch.ones(len(self.targets), dtype=torch.bool)


def _list(x) -> list:
    return x.tolist() if isinstance(x, torch.Tensor) else list(x)


def _names(field) -> tuple:
    if isinstance(field, str):
        field = [field]
    return tuple(p for item in field if isinstance(item, str) and item for p in item.split("\n") if p)


def as_batch(batch: Any, mode: str) -> Batch:
    """A collated batch of ``mode`` ('train', 'val' or 'test') as a Batch (a Batch is returned as it is)."""
    if isinstance(batch, Batch):
        return batch
    if mode not in MODES:
        raise ValueError(f"batch mode {mode!r}: one of {MODES}")
    clips, targets, rest = batch[0], batch[1], list(batch[2:])
    ids = _list(rest[0]) if rest else None
    if mode == "train":
        return Batch(clips, targets, ids, bad_files=_names(rest[1]) if len(rest) > 1 else ())
    if mode == "val":
        ok = torch.as_tensor(rest[1], dtype=torch.bool) if len(rest) > 1 else None
        return Batch(clips, targets, ids, ok=ok)
    ok = torch.as_tensor(rest[3], dtype=torch.bool) if len(rest) > 3 else None
    return Batch(clips, targets, ids, ok=ok, chunk=_list(rest[1]), split=_list(rest[2]))


class BatchCollate:
    """A DataLoader ``collate_fn`` that returns Batch: ``collate`` (torch's default_collate, or a dataset's own,
    e.g. datasets.multiple_samples_collate) then ``as_batch``. Picklable, for loader workers."""

    def __init__(self, mode: str, collate=None):
        if mode not in MODES:
            raise ValueError(f"batch mode {mode!r}: one of {MODES}")
        self.mode, self.collate = mode, collate

    def __call__(self, items) -> Batch:
        from torch.utils.data import default_collate

        return as_batch((self.collate or default_collate)(items), self.mode)
