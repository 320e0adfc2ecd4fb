#!/usr/bin/env python
"""From a dataset's official annotation files to our data lists, a class map and a report of what was dropped.

    python scripts/build_lists.py kinetics --train kinetics400/train.csv --val kinetics400/validate.csv \\
        --videos /data/k400/videos --out /data/k400/lists
    python scripts/build_lists.py ssv2 --labels something-something-v2-labels.json \\
        --train something-something-v2-train.json --val something-something-v2-validation.json \\
        --videos /data/ssv2/videos --out /data/ssv2/lists          # or --frames /data/ssv2/rawframes
    python scripts/build_lists.py ucf101 --splits_dir ucfTrainTestlist --split_id 1 --videos /data/UCF-101 --out L
    python scripts/build_lists.py hmdb51 --splits_dir testTrainMulti_7030_splits --split_id 1 --videos /data/hmdb51 --out L
    python scripts/build_lists.py breakfast --train Breakfast/train.csv --test Breakfast/test.csv --videos V --out L
    python scripts/build_lists.py breakfast ... --with_duration   # video_path,label,duration (seconds) rows
    python scripts/build_lists.py coin --annotations COIN.json --videos /data/coin/videos --out L

Writes into ``--out``: ``train.csv``, ``val.csv``, ``test.csv`` (``video_path label`` rows, paths relative to
``--videos``, or ``frame_folder total_frames label`` rows for SSV2 ``--frames``), ``labels.txt`` (class names, line
k = label k) and ``build_report.txt`` (one line per dropped row or video: split, annotation file:line, video,
reason). Train with ``--data_path OUT --data_root VIDEOS --split SEP`` (the command is printed at the end).

What each dataset's files are and how they become labels:

- Kinetics-400/600/700: the CSVs with a header ``label,youtube_id,time_start,time_end,split[,is_cc]``; the video of
  a row is ``<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>`` (or ``<youtube_id>.<ext>``) anywhere under
  ``--videos`` (class folders or flat). Labels: the sorted class names of the training CSV (the usual convention),
  or ``--classes labels.txt`` to keep an existing map. The test list is the validation set unless ``--test`` names
  a labelled CSV (the Kinetics-600/700 test CSVs have no labels).
- Something-Something V2: ``labels.json`` (class name -> id) and the train / validation JSON lists of
  ``{"id", "label", "template", "placeholders"}``; the class of an entry is its template without the brackets.
  Videos ``<id>.webm``, or raw frame folders ``<id>/img_00001.jpg ...`` with ``--frames``. Test = validation unless
  ``--test`` names a labelled JSON.
- UCF101: ``classInd.txt`` (1-based ids) and ``trainlist0N.txt`` / ``testlist0N.txt`` of split N; label = id - 1.
  HMDB51: ``<class>_test_splitN.txt`` files (``video.avi 1`` train, ``2`` test, ``0`` unused); labels are the
  sorted class names. Both have no validation split: val = test, as in VideoMAE / VideoMamba.
- Breakfast: ViS4mer's ``train.csv`` / ``test.csv`` (``file_name,duration,action,class_id``; VideoMamba's data
  preparation follows ViS4mer), video ``P03/cam01/P03_cereals.<ext>`` for ``P03-cam01-P03_cereals``; COIN:
  ``COIN.json`` (``database``: id -> ``recipe_type`` (label), ``class``, ``subset`` training / testing), video
  ``<id>.<ext>`` anywhere under ``--videos``. VideoMamba trains both as ``Kinetics_sparse`` lists
  (``path,label``); val = test. ``--with_duration`` adds a third column, the video's duration in seconds (frames /
  frame rate, from the probe), for the long-video windows (``--data_set Breakfast|COIN --trimmed 60 --time_stride
  16``, e.g. exp/breakfast/videomambapro_middle_f32_res224_trimmed.sh); not by default, because ``Kinetics_sparse``
  reads a three-column list as raw frames.

Every listed video is probed first, in parallel, the way the training loader opens it (datasets/video_io.py:
open, count frames, decode the first and last frame); a malformed row, an unknown class, a duplicate, a missing
or an unreadable video is left out and named in the report. The lists are written atomically and read back
through datasets/lists.py before the run ends; the same folder gives the same lists on every run.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from datasets.lists import read_list, split_row  # noqa: E402
from scripts.list_annotations import (  # noqa: E402  (scripts/list_annotations.py: the annotation parsers)
    Annotations,
    need_file,
    parse_breakfast,
    parse_coin,
    parse_hmdb51,
    parse_kinetics,
    parse_ssv2,
    parse_ucf101,
)
from utils.parallel import parallel_map  # noqa: E402

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp", ".ogv", ".wmv")
SPLITS = ("train", "val", "test")
REPORT = "build_report.txt"
_LONG_NAMES = {"breakfast": "Breakfast", "coin": "COIN"}
_WITH_DURATION = ("rows video_path,label,duration (seconds, from the probe) for --data_set Breakfast / COIN "
                  "--trimmed 60 --time_stride 16; without it path,label (the Kinetics_sparse lists upstream uses)")
LABELS = "labels.txt"



# ---------------------------------------------------------------------------------------------------------------
# Finding, probing and listing the videos
# ---------------------------------------------------------------------------------------------------------------
class VideoIndex:
    """Every video file under ``root`` by relative path, path without extension and file stem (exact, then
    case-insensitive), built once with a sorted walk so every lookup is deterministic."""

    KINDS = ("rel", "noext", "stem")

    def __init__(self, root: str, exts: Sequence[str] = VIDEO_EXTS):
        self.root = root
        self.exact = {k: {} for k in self.KINDS}
        self.folded = {k: {} for k in self.KINDS}
        exts = tuple(e.lower() for e in exts)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.startswith(".") or not fn.lower().endswith(exts):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/")
                noext = os.path.splitext(rel)[0]
                for kind, key in zip(self.KINDS, (rel, noext, os.path.basename(noext))):
                    self.exact[kind].setdefault(key, []).append(rel)
                    self.folded[kind].setdefault(key.lower(), []).append(rel)

    def find(self, candidates) -> Tuple[Optional[str], str]:
        """(relative path or None, note): the first candidate that names a file; a note when several match."""
        for table, fold in ((self.exact, False), (self.folded, True)):
            for kind, key in candidates:
                hits = table[kind].get(key.lower() if fold else key)
                if hits:
                    hits = sorted(set(hits))
                    note = f"{len(hits)} files match {key!r}; using the first" if len(hits) > 1 else ""
                    return hits[0], note
        return None, ""


def _quiet_decoders() -> None:
    """Worker initializer: decoder libraries log every broken file on stderr; the report names them instead."""
    try:
        import av

        av.logging.set_level(None)
    except Exception:  # pragma: no cover - logging control is optional
        pass
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover
        pass


def probe_job(job) -> tuple:
    """``(path, kind, reader, tmpl, start_idx[, with_duration])`` -> ("ok", frames, height, width[, seconds]) or
    ("bad", reason). The duration is frames / the frame rate the training loader reads (datasets/video_io.py)."""
    from datasets.video_io import VideoReadError, error_text, open_video, probe_rawframes, probe_video

    path, kind, reader, tmpl, start_idx = job[:5]
    try:
        p = probe_rawframes(path, tmpl, start_idx) if kind == "rawframe" else probe_video(path, reader)
        if len(job) > 5 and job[5]:
            fps = float(getattr(open_video(path, reader), "fps", 0.0) or 0.0)
            if not fps > 0:
                return ("bad", "no frame rate in the file: its duration is unknown (--with_duration)")
            return ("ok", p.frames, p.height, p.width, p.frames / fps)
        return ("ok", p.frames, p.height, p.width)
    except VideoReadError as e:
        return ("bad", e.reason)
    except Exception as e:  # a decoder crash is a bad file too, named with its type
        return ("bad", error_text(e))


def _duration_text(seconds: float) -> str:
    return f"{seconds:.3f}"


def _line(rel: str, label: int, frames: Optional[int], sep: str, duration: Optional[float] = None) -> str:
    if duration is not None:  # long_video: video_path label duration
        cols = [rel, str(label), _duration_text(duration)]
    else:
        cols = [rel, str(frames), str(label)] if frames is not None else [rel, str(label)]
    return sep.join(cols) if sep.strip() else " ".join(cols)


def _listable(rel: str, line: str, sep: str, ncols: int) -> bool:
    """Does ``line`` parse back (datasets/lists.split_row) into exactly this path?"""
    if "\n" in rel or "\r" in rel:
        return False
    fields = split_row(line, sep, ncols)
    return bool(fields) and fields[0] == rel


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_report(ann: Annotations, out: str, dataset: str, kind: str, videos: str, sep: str, probe: bool,
                  counts: dict, with_duration: bool = False) -> None:
    head = [f"# build_lists.py {dataset}: {len(ann.classes)} classes ({LABELS}), "
            f"{'frame folders' if kind == 'rawframe' else 'videos'} under {videos}, separator {sep!r}"
            + ("" if probe else ", NOT probed (--no_probe)")
            + (", rows video_path label duration (seconds)" if with_duration else "")]
    head += [f"# {s}: {counts[s][0]} listed, {counts[s][1]} dropped" for s in SPLITS]
    other = sum(d.split not in SPLITS for d in ann.dropped)
    if other:
        head.append(f"# {other} malformed entries of no known split dropped")
    head += [f"# note: {n}" for n in ann.notes]
    head.append("# dropped: split, annotation, video, reason")
    _write_atomic(os.path.join(out, REPORT), "\n".join(head + [d.line() for d in ann.dropped]) + "\n")


def build(ann: Annotations, videos: str, out: str, *, kind: str = "video", sep: Optional[str] = None,
          workers: int = 0, reader: str = "decord", probe: bool = True, filename_tmpl: str = "img_{:05}.jpg",
          start_idx: int = 1, dataset: str = "", with_duration: bool = False, log=print) -> dict:
    """Resolve, probe and list ``ann``'s rows; write the lists, labels.txt and the report into ``out``.
    ``with_duration``: videos only, rows ``video_path label duration`` (seconds, from the probe; datasets/lists.py's
    ``long_video`` kind).

    Returns {"lists": {split: path}, "counts": {split: (listed, dropped)}, "dropped": [Dropped], "labels": path,
    "report": path}."""
    sep = ann.sep if sep is None else sep
    if not os.path.isdir(videos):
        raise SystemExit(f"error: {'--frames' if kind == 'rawframe' else '--videos'} {videos}: folder not found")
    if not ann.classes:
        raise SystemExit("error: no classes in the annotations")
    if with_duration and kind != "video":
        raise SystemExit("error: --with_duration lists videos (video_path label duration), not frame folders")
    if with_duration and not probe:
        raise SystemExit("error: --with_duration measures each video's duration with the probe: drop --no_probe")
    os.makedirs(out, exist_ok=True)
    ncols = 3 if kind == "rawframe" or with_duration else 2
    list_kind = "long_video" if with_duration else kind
    index = VideoIndex(videos) if kind == "video" else None
    resolved: Dict[str, List[tuple]] = {}
    jobs = {}
    for split in SPLITS:
        seen: Dict[str, str] = {}
        resolved[split] = []
        for row in ann.splits.get(split, []):
            if kind == "video":
                rel, note = index.find(row.candidates)
                if note:
                    ann.notes.append(f"{split} {row.where}: {note} ({rel})")
            else:
                rel = row.candidates[0][1]
                rel = rel if os.path.isdir(os.path.join(videos, rel)) else None
            if rel is None:
                what = "frame folder" if kind == "rawframe" else "video file"
                ann.drop(split, row.where, row.name, f"missing: no {what} for {row.name!r} under {videos}")
                continue
            if rel in seen:
                ann.drop(split, row.where, rel, f"duplicate of {seen[rel]}")
                continue
            seen[rel] = row.where
            resolved[split].append((row, rel))
            jobs.setdefault(rel, (os.path.join(videos, rel), kind, reader, filename_tmpl, start_idx, with_duration))
    order = sorted(jobs)
    if probe:
        results = dict(zip(order, parallel_map(probe_job, [jobs[r] for r in order], workers=workers,
                                                desc=f"probe {len(order)} {'folders' if kind == 'rawframe' else 'videos'}",
                                                unit="file", initializer=_quiet_decoders)))
    elif kind == "rawframe":
        from datasets.video_io import count_rawframes

        results = {r: ("ok", count_rawframes(jobs[r][0], filename_tmpl, start_idx), 0, 0) for r in order}
        results = {r: v if v[1] > 0 else ("bad", "no frames") for r, v in results.items()}
    else:
        results = {r: ("ok", None, 0, 0) for r in order}
    texts, counts = {}, {}
    for split in SPLITS:
        lines, expect = [], []
        for row, rel in resolved[split]:
            res = results[rel]
            if res[0] != "ok":
                ann.drop(split, row.where, rel, f"unreadable: {res[1]}")
                continue
            frames = res[1] if kind == "rawframe" else None
            duration = res[4] if with_duration else None
            line = _line(rel, row.label, frames, sep, duration)
            if not _listable(rel, line, sep, ncols):
                ann.drop(split, row.where, rel, f"path cannot be written in a list separated by {sep!r}")
                continue
            lines.append(line + "\n")
            expect.append((rel, row.label, float(_duration_text(duration)) if with_duration else frames))
        texts[split] = ("".join(lines), expect)
    for split in SPLITS:
        counts[split] = (len(texts[split][1]), sum(d.split == split for d in ann.dropped))
    empty = [s for s in SPLITS if not counts[s][0]]
    _write_report(ann, out, dataset, kind, videos, sep, probe, counts, with_duration)
    if empty:
        raise SystemExit(f"error: no {' / '.join(empty)} video is left to list; nothing written but the report "
                         f"{os.path.join(out, REPORT)}, which names every dropped row")
    lists = {}
    for split in SPLITS:
        path = os.path.join(out, f"{split}.csv")
        _write_atomic(path, texts[split][0])
        back = [(s.rel_path, s.label, s.duration if with_duration else s.total_frames) for s in
                read_list(path, list_kind, sep=sep, data_root=videos, nb_classes=len(ann.classes))]
        if back != texts[split][1]:  # pragma: no cover - _listable makes every line parse back
            raise RuntimeError(f"{path} does not read back as written")
        lists[split] = path
    labels = os.path.join(out, LABELS)
    _write_atomic(labels, "".join(c + "\n" for c in ann.classes))
    report = os.path.join(out, REPORT)
    for s in SPLITS:
        log(f"[build_lists] {s}: {counts[s][0]} listed, {counts[s][1]} dropped -> {lists[s]}")
    for n in ann.notes:
        log(f"[build_lists] note: {n}")
    if ann.dropped:
        log(f"[build_lists] {len(ann.dropped)} dropped, each named in {report}:")
        for d in ann.dropped[:20]:
            log(f"  {d.line()}")
        if len(ann.dropped) > 20:
            log(f"  ... and {len(ann.dropped) - 20} more")
    flag_sep = sep if sep.strip() else " "
    log(f"[build_lists] {len(ann.classes)} classes -> {labels}; train with --data_path {out} --data_root {videos} "
        f"--split '{flag_sep}' --nb_classes {len(ann.classes)}"
        + (f" --data_set {_LONG_NAMES.get(dataset, 'LVU')} --trimmed 60 --time_stride 16 (durations listed)"
           if with_duration else ""))
    return {"lists": lists, "counts": counts, "dropped": list(ann.dropped), "labels": labels, "report": report}


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser, videos_required: bool = True) -> None:
    p.add_argument("--videos", required=videos_required, help="folder the videos are under (the --data_root of "
                   "the lists)")
    p.add_argument("--out", required=True, help="folder to write train.csv / val.csv / test.csv / labels.txt into")
    p.add_argument("--split", dest="sep", default=None, help="column separator of the written lists (default: the "
                   "one our recipes pass for the dataset: ',' Kinetics / Breakfast / COIN, ' ' SSV2 / UCF101 / HMDB51)")
    p.add_argument("--workers", type=int, default=0, help="probe processes (default: all CPUs)")
    p.add_argument("--video_reader", default="decord", choices=("decord", "pyav"),
                   help="the reader the training run will use (default decord, with PyAV as its fallback)")
    p.add_argument("--no_probe", action="store_true", help="list without opening the videos (fast, unchecked: the "
                   "report says so)")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__[__doc__.index("Writes into"):])
    sub = p.add_subparsers(dest="dataset", required=True)
    k = sub.add_parser("kinetics", help="Kinetics-400 / 600 / 700 CSVs")
    k.add_argument("--train", required=True)
    k.add_argument("--val", required=True)
    k.add_argument("--test", default=None, help="a labelled test CSV (default: the validation set)")
    k.add_argument("--classes", default=None, help="labels.txt to take the class ids from (default: sorted names)")
    _common(k)
    s = sub.add_parser("ssv2", help="Something-Something V2 JSON files")
    s.add_argument("--labels", required=True, help="something-something-v2-labels.json")
    s.add_argument("--train", required=True)
    s.add_argument("--val", required=True)
    s.add_argument("--test", default=None, help="a labelled test JSON (default: the validation set)")
    s.add_argument("--frames", default=None, help="raw frame folders <id>/img_00001.jpg instead of --videos")
    s.add_argument("--filename_tmpl", default="img_{:05}.jpg")
    s.add_argument("--start_idx", type=int, default=1)
    _common(s, videos_required=False)
    for name, what in (("ucf101", "ucfTrainTestlist (classInd.txt, trainlist0N.txt, testlist0N.txt)"),
                       ("hmdb51", "testTrainMulti_7030_splits (<class>_test_splitN.txt)")):
        u = sub.add_parser(name, help=f"{name.upper()} split files")
        u.add_argument("--splits_dir", required=True, help=what)
        u.add_argument("--split_id", type=int, default=1, choices=(1, 2, 3), help="official split 1, 2 or 3")
        _common(u)
    b = sub.add_parser("breakfast", help="ViS4mer's Breakfast train.csv / test.csv")
    b.add_argument("--with_duration", action="store_true", help=_WITH_DURATION)
    b.add_argument("--train", required=True)
    b.add_argument("--test", required=True)
    _common(b)
    c = sub.add_parser("coin", help="COIN.json")
    c.add_argument("--annotations", required=True, help="COIN.json")
    c.add_argument("--with_duration", action="store_true", help=_WITH_DURATION)
    _common(c)
    return p


def main(argv=None) -> int:
    a = get_parser().parse_args(argv)
    kind, root = "video", a.videos
    if a.dataset == "kinetics":
        for flag in ("train", "val", "test", "classes"):
            if getattr(a, flag):
                need_file(getattr(a, flag), f"--{flag}")
        ann = parse_kinetics(a.train, a.val, a.test, a.classes)
    elif a.dataset == "ssv2":
        if bool(a.videos) == bool(a.frames):
            raise SystemExit("error: pass one of --videos (webm files) and --frames (raw frame folders)")
        for flag in ("labels", "train", "val", "test"):
            if getattr(a, flag):
                need_file(getattr(a, flag), f"--{flag}")
        if a.frames:
            kind, root = "rawframe", a.frames
        ann = parse_ssv2(a.labels, a.train, a.val, a.test, frames=bool(a.frames))
    elif a.dataset == "ucf101":
        ann = parse_ucf101(a.splits_dir, a.split_id)
    elif a.dataset == "hmdb51":
        ann = parse_hmdb51(a.splits_dir, a.split_id)
    elif a.dataset == "breakfast":
        ann = parse_breakfast(need_file(a.train, "--train"), need_file(a.test, "--test"))
    else:
        ann = parse_coin(need_file(a.annotations, "--annotations"))
    extra = {}
    if kind == "rawframe":
        extra = dict(filename_tmpl=a.filename_tmpl, start_idx=a.start_idx)
    build(ann, root, a.out, kind=kind, sep=a.sep, workers=a.workers, reader=a.video_reader, probe=not a.no_probe,
          dataset=a.dataset, with_duration=getattr(a, "with_duration", False), **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
