"""Masked-pretraining items: a training clip dataset's clips, each with its token mask.

``MaskedClips(dataset, generator)`` wraps a train-mode ``VideoClsDataset`` / ``RawFrameClsDataset`` (their reading,
sampling, augmentation, unreadable-file handling) and returns ``(clip, mask, index, bad)``: the label slot of the
fine-tuning item (``utils.batch``) carries the bool token mask ``(T'·H'·W',)``, True = masked, frame-major.
The mask is drawn from numpy's global RNG, which the training loader seeds per item from (seed, epoch, rank,
position) (``engines.preemption.SeededItems``): masks differ across ranks, workers and epochs and repeat on a rerun
or a resume. With ``--mask_type attention`` the mask is a placeholder: the training step draws it from the teacher.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset


class MaskedClips(Dataset):
    def __init__(self, dataset, generator):
        if getattr(dataset, "mode", "train") != "train":
            raise ValueError(f"masked pretraining reads a train-mode dataset, got mode {dataset.mode!r}")
        if getattr(dataset, "num_sample", 1) != 1:
            raise ValueError(f"masked pretraining takes one clip per video (--num_sample 1), got "
                             f"{dataset.num_sample}")
        self.dataset, self.generator = dataset, generator

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        clip, _label, index, bad = self.dataset[index]
        return clip, torch.from_numpy(self.generator()), index, bad

    def __getattr__(self, name):  # the wrapped dataset's samples, list_file, bad_samples, convention, ...
        if name in ("dataset", "generator"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"MaskedClips({len(self)} clips from {getattr(self.dataset, 'list_file', '?')}, {self.generator!r})"
