"""ImageNet-style image classification: a class-folder tree (root/<class>/<image>) or a list file.

List rows: ``relative/image/path label`` (VideoMamba's format), or ``frame_folder_path total_frames label``
(an image folder treated as frames: train takes a random frame, eval the middle one). Items: (img, label)
with img float (3, H, W) from a timm transform. An unreadable image raises an error naming the file.
"""
from __future__ import annotations

import os
import random
from typing import List, Optional, Tuple

from PIL import Image
from torch.utils.data import Dataset

from utils.errors import ListError, MissingDataError

from .lists import Sample, read_list, split_row

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def scan_class_folders(root: str) -> Tuple[List[Sample], List[str]]:
    """(samples, class_names) of a ``root/<class>/<image>`` tree; classes sorted by name."""
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    if not classes:
        raise ListError(f"no class folders under {root}")
    samples = []
    for label, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(os.path.join(root, name), followlinks=True)):
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    p = os.path.join(dirpath, f)
                    samples.append(Sample(path=p, rel_path=os.path.relpath(p, root), label=label))
    if not samples:
        raise ListError(f"no images ({', '.join(IMG_EXTENSIONS)}) found under {root}")
    return samples, classes


def detect_list_kind(list_file: str, sep: str = " ") -> str:
    """'rawframe' when the first row has 3 columns with an integer middle one, else 'image'."""
    if not os.path.isfile(list_file):
        raise MissingDataError(f"data list not found: {list_file}")
    with open(list_file, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                fields = split_row(line, sep, 3)
                if fields is not None and fields[1].lstrip("+-").isdigit() and fields[2].lstrip("+-").isdigit():
                    return "rawframe"
                return "image"
    return "image"


class ImageNetDataset(Dataset):
    """Either ``folder`` (class-folder tree) or ``list_file`` (+ ``data_root``) must be given."""

    def __init__(self, folder: Optional[str] = None, list_file: Optional[str] = None, transform=None, *,
                 is_train: bool = True, data_root: str = "", split: str = " ", nb_classes: Optional[int] = None,
                 filename_tmpl: str = "img_{:05}.jpg", start_idx: int = 1, list_flag: str = ""):
        if (folder is None) == (list_file is None):
            raise ValueError("give exactly one of folder= (class-folder tree) or list_file=")
        self.transform = transform
        self.is_train = is_train
        self.filename_tmpl, self.start_idx = filename_tmpl, int(start_idx)
        self.classes: Optional[List[str]] = None
        if folder is not None:
            self.source = folder
            self.kind = "image"
            self.samples, self.classes = scan_class_folders(folder)
            if nb_classes is not None and len(self.classes) > nb_classes:
                raise ListError(f"{folder} has {len(self.classes)} class folders but nb_classes is {nb_classes}")
        else:
            self.source = list_file
            self.kind = detect_list_kind(list_file, split)
            self.samples = read_list(list_file, self.kind, sep=split, data_root=data_root, nb_classes=nb_classes,
                                     flag=list_flag)

    def __len__(self) -> int:
        return len(self.samples)

    def _image_path(self, s: Sample) -> str:
        if self.kind != "rawframe":
            return s.path
        i = random.randrange(s.total_frames) if self.is_train else s.total_frames // 2
        return os.path.join(s.path, self.filename_tmpl.format(self.start_idx + i))

    def __getitem__(self, index: int):
        s = self.samples[index]
        path = self._image_path(s)
        try:
            with open(path, "rb") as f:
                img = Image.open(f).convert("RGB")
        except (OSError, ValueError) as e:
            raise RuntimeError(f"cannot read image {path} ({self.source}): {type(e).__name__}: {e}") from e
        if self.transform is not None:
            img = self.transform(img)
        return img, s.label
