"""build_dataset(is_train, test_mode, args) -> (dataset, nb_classes), the one entry point used by run_*.py."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Optional

from utils.errors import MissingDataError

from .imagenet import ImageNetDataset
from .sampling import LONG_VIDEO_DATA_SETS, TIME_STRIDE_DEFAULT, TRIMMED_DEFAULT, scheme_for
from .video import LongVideoClsDataset, RawFrameClsDataset, VideoClsDataset

logger = logging.getLogger(__name__)

# Fixed class counts; None = taken from --nb_classes (Kinetics-N falls back to N when it is unset).
DATASET_CLASSES = {
    "Kinetics-400": 400, "Kinetics-600": 600, "Kinetics-700": 700,
    "SSV2": 174, "UCF101": 101, "HMDB51": 51, "IMNET": 1000,
    "video": None, "rawframe": None,
    # VideoMamba's names (its video_sm/run_class_finetuning.py), meaning kept: Kinetics_sparse = Kinetics-N with
    # TSN segment sampling, Kinetics = dense clips at --sampling_rate (N from --nb_classes, upstream default 400);
    # mitv1_sparse / LVU: --nb_classes; COIN 180 and Breakfast 10 classes. LVU / COIN / Breakfast lists with a
    # duration column ('video_path label duration') are cut into --trimmed windows (upstream's LVU class); lists
    # without one are read as whole videos (kinetics_sparse, the formula LVU applies to an uncut video).
    "Kinetics_sparse": 400, "Kinetics": 400, "mitv1_sparse": None, "LVU": None, "COIN": 180, "Breakfast": 10,
}
# LVU: the task, and so the class count, is read from --data_path as upstream's build.py does (first match wins).
LVU_TASK_CLASSES = (("relation", 4), ("speak", 5), ("scene", 6), ("director", 10), ("genre", 4), ("writer", 10),
                    ("year", 9))
_FIXED = ("SSV2", "UCF101", "HMDB51", "IMNET", "COIN", "Breakfast")

# Every args attribute read here, with its default (the training engineer's argparse owns the flags).
DATA_ARG_DEFAULTS = dict(
    data_set="Kinetics-400", data_path="", data_root="", split=" ", train_list=None, val_list=None, test_list=None,
    nb_classes=None, use_rawframes=None, flip=None, num_frames=16, sampling_rate=0, tubelet_size=1, input_size=224,
    short_side_size=224, test_num_segment=5, test_num_crop=3, aa="rand-m7-n4-mstd0.5-inc1", reprob=0.25,
    remode="pixel", recount=1, num_sample=1, filename_tmpl="img_{:05}.jpg", start_idx=1, max_bad_samples=10,
    skip_bad_test=False, train_interpolation="bicubic", video_reader="decord", resize_mode="videomamba", mixup=0.8,
    cutmix=1.0, cutmix_minmax=None, mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch", smoothing=0.1, seed=0,
    trimmed=None, time_stride=None,  # None = not given: VideoMamba's 60 s / 16 s for LVU / COIN / Breakfast
)


def default_data_args(**overrides) -> argparse.Namespace:
    """A Namespace with every data attribute at its default, updated by ``overrides`` (tests, notebooks)."""
    unknown = set(overrides) - set(DATA_ARG_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown data args: {sorted(unknown)}")
    return argparse.Namespace(**{**DATA_ARG_DEFAULTS, **overrides})


def _get(args, name):
    if name == "data_root" and not getattr(args, "data_root", None) and getattr(args, "prefix", None):
        return args.prefix  # --prefix, VideoMAE's name for --data_root
    v = getattr(args, name, DATA_ARG_DEFAULTS[name])
    return DATA_ARG_DEFAULTS[name] if v is None and name in ("data_root", "split") else v


def resolve_nb_classes(args) -> Optional[int]:
    """The class count of ``args.data_set``: its fixed count, else ``--nb_classes``, else None (generic sets: the
    caller infers it from the labels)."""
    data_set = _get(args, "data_set")
    if data_set not in DATASET_CLASSES:
        raise ValueError(f"unknown --data_set {data_set!r}; choose one of {sorted(DATASET_CLASSES)}")
    fixed = DATASET_CLASSES[data_set]
    given = _get(args, "nb_classes")
    if data_set in _FIXED:
        if given is not None and int(given) != fixed:
            logger.warning("--data_set %s has %d classes; ignoring --nb_classes %s", data_set, fixed, given)
        return fixed
    if data_set == "LVU":
        path = (_get(args, "data_path") or "").lower()
        task = next(((t, n) for t, n in LVU_TASK_CLASSES if t in path), None)
        if task and given is None:
            logger.warning("--data_set LVU: %d classes for the %s task named in --data_path", task[1], task[0])
            return task[1]
        if task and int(given) != task[1]:
            raise ValueError(f"--data_set LVU --nb_classes {given}, but --data_path names the {task[0]} task, which "
                             f"has {task[1]} classes (upstream's build.py asserts they agree)")
    return int(given) if given is not None else fixed


def _first_row(list_file: str, sep: str) -> list:
    """The first non-empty row of ``list_file`` split into at most 3 fields; [] for a missing or empty list."""
    from .lists import split_row

    if not os.path.isfile(list_file):
        return []
    with open(list_file, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                return split_row(line, sep, 3) or []
    return []


def is_rawframe_list(list_file: str, sep: str = " ") -> bool:
    """True when the list's first row is ``folder total_frames label`` (two integer columns at the end), the
    raw-frame format; False for ``video_path label``. A missing or empty list counts as not raw frames."""
    from .lists import _INT_RE

    fields = _first_row(list_file, sep)
    return bool(fields) and all(_INT_RE.match(x) for x in fields[1:])


def is_long_video_list(list_file: str, sep: str = " ") -> bool:
    """True when the list's first row is ``video_path label duration`` (an integer label, then a number of
    seconds): VideoMamba's LVU / COIN / Breakfast format. A missing or empty list counts as not one."""
    from .lists import _INT_RE, _NUM_RE

    fields = _first_row(list_file, sep)
    return len(fields) == 3 and bool(_INT_RE.match(fields[1])) and bool(_NUM_RE.match(fields[2]))


def use_rawframes(args, list_file: str) -> bool:
    """Raw frames or videos: ``--use_rawframes`` / ``--no_use_decord`` (True), ``--use_decord`` (False), else the
    list's columns decide (``--data_set rawframe`` is always raw frames; LVU / COIN / Breakfast lists are videos,
    their third column a duration, as upstream)."""
    if _get(args, "data_set") == "rawframe":
        return True
    forced = _get(args, "use_rawframes")
    if forced is not None:
        return bool(forced)
    if _get(args, "data_set") in LONG_VIDEO_DATA_SETS:
        return False
    return is_rawframe_list(list_file, _get(args, "split"))


def long_video_windows(args, list_file: str, rawframes: bool) -> bool:
    """Whether ``list_file`` is read as VideoMamba's trimmed long videos (LVU / COIN / Breakfast videos listed with
    their duration). Raises ValueError when --trimmed / --time_stride are given but cannot apply to this list."""
    data_set = _get(args, "data_set")
    if data_set not in LONG_VIDEO_DATA_SETS or rawframes:
        windows = False
    else:
        windows = is_long_video_list(list_file, _get(args, "split"))
    given = [f"--{k} {_get(args, k)}" for k in ("trimmed", "time_stride") if _get(args, k) is not None]
    if given and not windows:
        what = ("raw frames" if rawframes else f"{list_file} has no duration column (rows 'video_path label')") \
            if data_set in LONG_VIDEO_DATA_SETS else f"--data_set {data_set} is not LVU / COIN / Breakfast"
        raise ValueError(f"{' '.join(given)}: VideoMamba's long-video windows need --data_set LVU / COIN / Breakfast "
                         f"videos listed as 'video_path label duration' (seconds); {what}, so whole videos would be "
                         f"sampled. Add the duration column or drop the flag")
    return windows


def trim_args(args) -> tuple:
    """(--trimmed, --time_stride) in seconds, VideoMamba's 60 and 16 where not given."""
    t, s = _get(args, "trimmed"), _get(args, "time_stride")
    return (TRIMMED_DEFAULT if t is None else int(t)), (TIME_STRIDE_DEFAULT if s is None else int(s))


def _list_path(args, mode: str) -> tuple:
    explicit = _get(args, f"{mode}_list")
    if explicit:
        return explicit, f"--{mode}_list"
    return os.path.join(_get(args, "data_path") or "", f"{mode}.csv"), f"--data_path ({mode}.csv)"


def _build_imagenet(is_train: bool, test_mode: bool, args, nb_classes: int):
    from timm.data import create_transform

    input_size = int(_get(args, "input_size"))
    if is_train:
        transform = create_transform(input_size, is_training=True, auto_augment=_get(args, "aa") or None,
                                     interpolation=_get(args, "train_interpolation"), re_prob=_get(args, "reprob"),
                                     re_mode=_get(args, "remode"), re_count=_get(args, "recount"))
    else:
        transform = create_transform(input_size, is_training=False, interpolation="bicubic", crop_pct=224 / 256)
    mode = "train" if is_train else "val"  # ImageNet has no labelled test split: test_mode reads val data
    explicit = _get(args, "train_list") if is_train else (
        (_get(args, "test_list") if test_mode else None) or _get(args, "val_list"))
    folder = os.path.join(_get(args, "data_path") or "", mode)
    common = dict(is_train=is_train, nb_classes=nb_classes, filename_tmpl=_get(args, "filename_tmpl"),
                  start_idx=_get(args, "start_idx"))
    if explicit:
        ds = ImageNetDataset(list_file=explicit, transform=transform, data_root=_get(args, "data_root"),
                             split=_get(args, "split"), list_flag=f"--{mode}_list", **common)
    elif os.path.isdir(folder):
        ds = ImageNetDataset(folder=folder, transform=transform, **common)
    else:
        list_file = os.path.join(_get(args, "data_path") or "", f"{mode}.csv")
        if not os.path.isfile(list_file):
            raise MissingDataError(f"IMNET {mode} data not found: neither a class-folder tree {folder} nor a list "
                                    f"{list_file} exists (set --data_path or --{mode}_list)")
        ds = ImageNetDataset(list_file=list_file, transform=transform, data_root=_get(args, "data_root"),
                             split=_get(args, "split"), list_flag="--data_path", **common)
    return ds


def sampling_convention(args, test_mode: bool = True) -> str:
    """The line ``build_dataset`` logs for the video dataset ``args`` selects (its list decides raw frames vs
    videos), without reading the list further: which of VideoMamba's sampling functions, resize and crops."""
    from .sampling import describe_convention

    list_file, _ = _list_path(args, "test" if test_mode else "val")
    rate = _get(args, "sampling_rate")
    rawframes = use_rawframes(args, list_file)
    windows = long_video_windows(args, list_file, rawframes)
    scheme = scheme_for(_get(args, "data_set"), rawframes, rate, windows)
    return describe_convention(scheme, _get(args, "resize_mode"), rate, *trim_args(args))


def build_dataset(is_train: bool, test_mode: bool, args):
    """Returns (dataset, nb_classes). Mode: train if is_train, else test if test_mode, else validation.

    Reads the args listed in DATA_ARG_DEFAULTS (missing attributes take those defaults). Relative paths in
    lists go under --data_root, or under the list file's folder when --data_root is empty."""
    data_set = _get(args, "data_set")
    nb_classes = resolve_nb_classes(args)
    mode = "train" if is_train else ("test" if test_mode else "validation")
    if data_set == "IMNET":
        ds = _build_imagenet(is_train, test_mode, args, nb_classes)
        source = ds.source
    else:
        list_file, flag = _list_path(args, {"train": "train", "validation": "val", "test": "test"}[mode])
        rawframes = use_rawframes(args, list_file)
        windows = long_video_windows(args, list_file, rawframes)
        common = dict(
            data_root=_get(args, "data_root"), split=_get(args, "split"), nb_classes=nb_classes,
            num_frames=_get(args, "num_frames"), sampling_rate=_get(args, "sampling_rate"),
            input_size=_get(args, "input_size"), short_side_size=_get(args, "short_side_size"),
            test_num_segment=_get(args, "test_num_segment"), test_num_crop=_get(args, "test_num_crop"),
            aa=_get(args, "aa"), reprob=_get(args, "reprob"), remode=_get(args, "remode"),
            recount=_get(args, "recount"), num_sample=_get(args, "num_sample") if is_train else 1,
            flip=(data_set != "SSV2") if _get(args, "flip") is None else bool(_get(args, "flip")),
            scheme=scheme_for(data_set, rawframes, _get(args, "sampling_rate"), windows),
            resize_mode=_get(args, "resize_mode"),
            train_interpolation=_get(args, "train_interpolation"),
            max_bad_samples=_get(args, "max_bad_samples"), skip_bad_test=_get(args, "skip_bad_test"),
            list_flag=flag)
        if windows:
            trimmed, time_stride = trim_args(args)
            ds = LongVideoClsDataset(list_file, mode, video_reader=_get(args, "video_reader"), trimmed=trimmed,
                                     time_stride=time_stride, **common)
        elif rawframes:
            ds = RawFrameClsDataset(list_file, mode, filename_tmpl=_get(args, "filename_tmpl"),
                                    start_idx=_get(args, "start_idx"), **common)
        else:
            ds = VideoClsDataset(list_file, mode, video_reader=_get(args, "video_reader"), **common)
        source = list_file
    if nb_classes is None:  # generic video/rawframe without --nb_classes: infer from the labels
        nb_classes = max(s.label for s in ds.samples) + 1
        logger.warning("--nb_classes not set for --data_set %s: using %d from the labels of %s",
                       data_set, nb_classes, source)
    n_labels = len({s.label for s in ds.samples})
    cut = (f" (windows of {len(getattr(ds, 'videos', ()))} videos: --trimmed {ds.trimmed} s, --time_stride "
           f"{ds.time_stride} s)" if isinstance(ds, LongVideoClsDataset) else "")
    msg = (f"[{data_set} {mode}] {len(ds.samples)} samples{cut}, {n_labels} distinct labels of {nb_classes} classes "
           f"from {source}" + (f" ({len(ds)} views)" if mode == "test" else ""))
    print(msg)
    if data_set != "IMNET":
        print(f"[{data_set} {mode}] sampling: {ds.convention}")
    return ds, nb_classes
