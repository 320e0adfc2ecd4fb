"""The official annotation formats of each dataset scripts/build_lists.py reads, parsed into one structure
(:class:`Annotations`: class names, the rows of each split, what was dropped and why). See build_lists.py's
docstring for what each dataset's files are and how they become labels."""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple


# ---------------------------------------------------------------------------------------------------------------
# What the parsers return
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One annotated video of a split: where it is written, its name, label and where to look for it."""

    where: str                  # "file:line" (CSV / text) or "file:entry N" (JSON)
    name: str                   # the video as the annotation names it
    label: int
    candidates: Tuple[Tuple[str, str], ...]  # ("rel", path with ext) | ("noext", path without ext) | ("stem", s)


@dataclass
class Dropped:
    split: str
    where: str
    video: str
    reason: str

    def line(self) -> str:
        return "\t".join((self.split, self.where, self.video or "-", self.reason))


@dataclass
class Annotations:
    classes: List[str]
    splits: Dict[str, List[Row]]
    dropped: List[Dropped] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    sep: str = " "

    def drop(self, split: str, where: str, video: str, reason: str) -> None:
        self.dropped.append(Dropped(split, where, video, reason))


def _where(path: str, line_no) -> str:
    return f"{os.path.basename(path)}:{line_no}"


def need_file(path: Optional[str], flag: str) -> str:
    if not path:
        raise SystemExit(f"error: {flag} is required")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {flag} {path}: file not found")
    return path


def _int(s: str) -> Optional[int]:
    s = s.strip()
    try:
        v = float(s)
    except ValueError:
        return None
    return int(v) if v == int(v) else None


def _read_csv(path: str):
    """The rows of an annotation CSV and its header in lower case; an empty file is an error."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise SystemExit(f"error: {path}: empty annotation file")
    return rows, [h.strip().lower() for h in rows[0]]


def _csv_records(rows, path: str, split: str, ann: Annotations, detail: str = ""):
    """``(where, row)`` of each non-blank data row; a row without the header's column count is dropped."""
    n = len(rows[0])
    for line_no, r in enumerate(rows[1:], start=2):
        if not any(x.strip() for x in r):
            continue
        where = _where(path, line_no)
        if len(r) != n:
            ann.drop(split, where, "", f"malformed row: {len(r)} columns, the header has {n}{detail}")
            continue
        yield where, r


def read_class_map(path: str) -> List[str]:
    """A ``labels.txt``: one class name per line, line k = label k; blank lines and duplicates are errors."""
    names = []
    with open(path, encoding="utf-8-sig") as f:
        for i, line in enumerate(f, 1):
            name = line.rstrip("\r\n")
            if not name.strip():
                raise SystemExit(f"error: {path}:{i}: empty class name")
            if name in names:
                raise SystemExit(f"error: {path}:{i}: class {name!r} listed twice")
            names.append(name)
    if not names:
        raise SystemExit(f"error: {path}: no classes")
    return names


# ---------------------------------------------------------------------------------------------------------------
# Kinetics-400 / 600 / 700
# ---------------------------------------------------------------------------------------------------------------
def _kinetics_rows(path: str, split: str, ann: Annotations):
    """(class name, Row without label) of each good row of a Kinetics CSV; bad rows go to ``ann.dropped``."""
    out = []
    rows, header = _read_csv(path)
    need = ("youtube_id", "time_start", "time_end")
    missing = [c for c in need if c not in header]
    if missing:
        raise SystemExit(f"error: {path}:1: not a Kinetics annotation CSV (no column {', '.join(missing)} in the "
                         f"header {rows[0]})")
    if "label" not in header:
        raise SystemExit(f"error: {path}:1: no label column (the Kinetics-600/700 test CSVs are unlabelled): leave "
                         f"--test out to list the validation set as the test set, the usual practice")
    col = {c: header.index(c) for c in ("label", *need)}
    for where, r in _csv_records(rows, path, split, ann, f" ({','.join(rows[0])})"):
        label, yid = r[col["label"]].strip(), r[col["youtube_id"]].strip()
        t0, t1 = _int(r[col["time_start"]]), _int(r[col["time_end"]])
        if not label or not yid or t0 is None or t1 is None:
            ann.drop(split, where, yid, "malformed row: empty label / youtube_id or non-integer time_start / "
                                        f"time_end ({','.join(r)})")
            continue
        name = f"{yid}_{t0:06d}_{t1:06d}"
        out.append((label, Row(where, name, -1, (("stem", name), ("stem", yid)))))
    return out


def parse_kinetics(train: str, val: str, test: Optional[str] = None, classes_file: Optional[str] = None
                   ) -> Annotations:
    ann = Annotations([], {}, sep=",")
    per_split = {"train": _kinetics_rows(train, "train", ann), "val": _kinetics_rows(val, "val", ann)}
    if test:
        per_split["test"] = _kinetics_rows(test, "test", ann)
    if classes_file:
        ann.classes = read_class_map(classes_file)
        ann.notes.append(f"class map from {classes_file}")
    else:
        ann.classes = sorted({label for label, _ in per_split["train"]})
        ann.notes.append(f"class map: the {len(ann.classes)} sorted class names of {os.path.basename(train)}")
    index = {c: i for i, c in enumerate(ann.classes)}
    for split, rows in per_split.items():
        ann.splits[split] = []
        for label, row in rows:
            if label not in index:
                ann.drop(split, row.where, row.name, f"unknown class {label!r} (not in the class map)")
                continue
            row.label = index[label]
            ann.splits[split].append(row)
    if not test:
        ann.splits["test"] = list(ann.splits["val"])
        ann.notes.append("test = val (no --test)")
    return ann


# ---------------------------------------------------------------------------------------------------------------
# Something-Something V2
# ---------------------------------------------------------------------------------------------------------------
def _load_json(path: str):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from e


def parse_ssv2_labels(path: str) -> List[str]:
    d = _load_json(path)
    if not isinstance(d, dict) or not d:
        raise SystemExit(f"error: {path}: expected an object of class name -> id")
    by_id = {}
    for name, v in d.items():
        i = _int(str(v))
        if i is None or i < 0:
            raise SystemExit(f"error: {path}: class {name!r} has id {v!r}, not a non-negative integer")
        if i in by_id:
            raise SystemExit(f"error: {path}: id {i} given to both {by_id[i]!r} and {name!r}")
        by_id[i] = name
    gaps = sorted(set(range(len(by_id))) - set(by_id))
    if gaps:
        raise SystemExit(f"error: {path}: ids are not 0..{len(by_id) - 1} (missing {gaps[:5]})")
    return [by_id[i] for i in range(len(by_id))]


def _ssv2_rows(path: str, split: str, ann: Annotations, index: Dict[str, int], frames: bool) -> List[Row]:
    d = _load_json(path)
    if not isinstance(d, list):
        raise SystemExit(f"error: {path}: expected a list of {{id, label, template, placeholders}} entries")
    out = []
    for k, e in enumerate(d, start=1):
        where = f"{os.path.basename(path)}:entry {k}"
        if not isinstance(e, dict) or "id" not in e or not isinstance(e.get("template"), str):
            ann.drop(split, where, str(e.get("id", "")) if isinstance(e, dict) else "",
                     "malformed entry: needs 'id' and 'template'")
            continue
        vid = str(e["id"]).strip()
        name = e["template"].replace("[", "").replace("]", "")
        if name not in index:
            ann.drop(split, where, vid, f"unknown class {name!r} (not in the labels file)")
            continue
        cands = (("rel", vid),) if frames else (("rel", vid + ".webm"), ("stem", vid))
        out.append(Row(where, vid, index[name], cands))
    return out


def parse_ssv2(labels: str, train: str, val: str, test: Optional[str] = None, frames: bool = False) -> Annotations:
    ann = Annotations(parse_ssv2_labels(labels), {}, sep=" ")
    index = {c: i for i, c in enumerate(ann.classes)}
    ann.notes.append(f"class map: the ids of {os.path.basename(labels)}")
    ann.splits["train"] = _ssv2_rows(train, "train", ann, index, frames)
    ann.splits["val"] = _ssv2_rows(val, "val", ann, index, frames)
    if test:
        ann.splits["test"] = _ssv2_rows(test, "test", ann, index, frames)
    else:
        ann.splits["test"] = list(ann.splits["val"])
        ann.notes.append("test = val (no --test)")
    return ann


# ---------------------------------------------------------------------------------------------------------------
# UCF101 / HMDB51
# ---------------------------------------------------------------------------------------------------------------
def _video_cands(rel: str) -> Tuple[Tuple[str, str], ...]:
    noext, _ = os.path.splitext(rel)
    return (("rel", rel), ("noext", noext), ("stem", os.path.basename(noext)))


def parse_ucf101(splits_dir: str, split_id: int) -> Annotations:
    class_ind = need_file(os.path.join(splits_dir, "classInd.txt"), "--splits_dir (classInd.txt)")
    ids = {}
    with open(class_ind, encoding="utf-8-sig") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or _int(parts[0]) is None:
                raise SystemExit(f"error: {class_ind}:{i}: expected 'id ClassName', got {line.rstrip()!r}")
            ids[int(parts[0])] = parts[1]
    if sorted(ids) != list(range(1, len(ids) + 1)):
        raise SystemExit(f"error: {class_ind}: class ids are not 1..{len(ids)}")
    ann = Annotations([ids[i] for i in range(1, len(ids) + 1)], {}, sep=" ")
    ann.notes.append("class map: classInd.txt (label = id - 1)")
    index = {c: i for i, c in enumerate(ann.classes)}
    lower = {c.lower(): i for c, i in index.items()}
    for split, fname in (("train", f"trainlist0{split_id}.txt"), ("test", f"testlist0{split_id}.txt")):
        path = need_file(os.path.join(splits_dir, fname), f"--splits_dir ({fname})")
        rows = []
        with open(path, encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where, parts = _where(path, line_no), line.split()
                if len(parts) > 2 or (len(parts) == 2 and _int(parts[1]) is None):
                    ann.drop(split, where, parts[0], f"malformed row {line.strip()!r}: expected 'Class/video.avi"
                                                     f"{' id' if split == 'train' else ''}'")
                    continue
                rel = parts[0].replace("\\", "/")
                folder = rel.split("/")[0] if "/" in rel else ""
                label = index.get(folder, lower.get(folder.lower()))
                if label is None:
                    ann.drop(split, where, rel, f"unknown class {folder!r} (not in classInd.txt)")
                    continue
                if len(parts) == 2 and int(parts[1]) - 1 != label:
                    ann.drop(split, where, rel, f"label {parts[1]} does not match the class folder {folder!r} "
                                                f"(id {label + 1} in classInd.txt)")
                    continue
                rows.append(Row(where, rel, label, _video_cands(rel)))
        ann.splits[split] = rows
    ann.splits["val"] = list(ann.splits["test"])
    ann.notes.append("val = test (UCF101 has no validation split)")
    return ann


_HMDB_RE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>\d+)\.txt$")


def parse_hmdb51(splits_dir: str, split_id: int) -> Annotations:
    if not os.path.isdir(splits_dir):
        raise SystemExit(f"error: --splits_dir {splits_dir}: folder not found")
    files = {}
    for fname in sorted(os.listdir(splits_dir)):
        m = _HMDB_RE.match(fname)
        if m and int(m.group("k")) == split_id:
            files[m.group("cls")] = os.path.join(splits_dir, fname)
    if not files:
        raise SystemExit(f"error: {splits_dir}: no <class>_test_split{split_id}.txt files")
    ann = Annotations(sorted(files), {"train": [], "test": []}, sep=" ")
    ann.notes.append(f"class map: the {len(files)} sorted class names of the *_test_split{split_id}.txt files")
    unused = 0
    for label, cls in enumerate(ann.classes):
        path = files[cls]
        with open(path, encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where, parts = _where(path, line_no), line.split()
                if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                    ann.drop("train/test", where, parts[0], f"malformed row {line.strip()!r}: expected 'video.avi "
                                                            f"0|1|2'")
                    continue
                if parts[1] == "0":
                    unused += 1
                    continue
                rel = f"{cls}/{parts[0]}"
                ann.splits["train" if parts[1] == "1" else "test"].append(Row(where, rel, label, _video_cands(rel)))
    ann.notes.append(f"{unused} videos marked 0 (not used by split {split_id})")
    ann.splits["val"] = list(ann.splits["test"])
    ann.notes.append("val = test (HMDB51 has no validation split)")
    return ann


# ---------------------------------------------------------------------------------------------------------------
# Breakfast / COIN (VideoMamba: ViS4mer's annotations, trained as Kinetics_sparse lists)
# ---------------------------------------------------------------------------------------------------------------
def _id_classes(named: Dict[int, str], ann: Annotations, source: str) -> List[str]:
    if not named:
        return []
    n = max(named) + 1
    gaps = [i for i in range(n) if i not in named]
    if gaps:
        ann.notes.append(f"class ids {gaps} have no rows in {source}: labels.txt names them '<unused k>'")
    return [named.get(i, f"<unused {i}>") for i in range(n)]


def _breakfast_cands(name: str) -> Tuple[Tuple[str, str], ...]:
    parts = name.split("-", 2)  # P03-cam01-P03_cereals -> P03/cam01/P03_cereals
    cands = [("noext", "/".join(parts))] if len(parts) == 3 else []
    return tuple(cands + [("stem", name)])


def parse_breakfast(train: str, test: str) -> Annotations:
    ann = Annotations([], {}, sep=",")
    named: Dict[int, Tuple[str, str]] = {}
    for split, path in (("train", train), ("test", test)):
        rows, header = _read_csv(path)
        need = ("file_name", "action", "class_id")
        if any(c not in header for c in need):
            raise SystemExit(f"error: {path}:1: not ViS4mer's Breakfast CSV (expected a header "
                             f"file_name,duration,action,class_id, got {rows[0]})")
        col = {c: header.index(c) for c in need}
        out = []
        for where, r in _csv_records(rows, path, split, ann):
            name, action, cid = r[col["file_name"]].strip(), r[col["action"]].strip(), _int(r[col["class_id"]])
            if not name or cid is None or cid < 0:
                ann.drop(split, where, name, f"malformed row: empty file_name or class_id {r[col['class_id']]!r}")
                continue
            if cid in named and named[cid][0] != action:
                ann.drop(split, where, name, f"class_id {cid} is {action!r} here but {named[cid][0]!r} at "
                                             f"{named[cid][1]}")
                continue
            named.setdefault(cid, (action, where))
            out.append(Row(where, name, cid, _breakfast_cands(name)))
        ann.splits[split] = out
    ann.classes = _id_classes({k: v[0] for k, v in named.items()}, ann, "the annotations")
    ann.notes.append("class map: the class_id / action columns")
    ann.splits["val"] = list(ann.splits["test"])
    ann.notes.append("val = test (ViS4mer's Breakfast split has no validation set)")
    return ann


def parse_coin(annotations: str) -> Annotations:
    d = _load_json(annotations)
    db = d.get("database") if isinstance(d, dict) else None
    if not isinstance(db, dict):
        raise SystemExit(f"error: {annotations}: expected COIN.json's {{'database': {{video id: ...}}}}")
    ann = Annotations([], {"train": [], "test": []}, sep=",")
    named: Dict[int, str] = {}
    subsets = {"training": "train", "testing": "test"}
    base = os.path.basename(annotations)
    for vid, e in db.items():
        where = f"{base}:{vid}"
        if not isinstance(e, dict):
            ann.drop("train/test", where, vid, "malformed entry: not an object")
            continue
        split = subsets.get(e.get("subset"))
        rt = e.get("recipe_type")
        if split is None or not isinstance(rt, int) or isinstance(rt, bool) or rt < 0:
            ann.drop(subsets.get(e.get("subset"), "train/test"), where, vid,
                f"malformed entry: subset {e.get('subset')!r} (training / testing), recipe_type {rt!r}")
            continue
        cls = e.get("class")
        if isinstance(cls, str) and cls:
            if rt in named and named[rt] != cls:
                ann.drop(split, where, vid, f"recipe_type {rt} is {cls!r} here but {named[rt]!r} elsewhere")
                continue
            named.setdefault(rt, cls)
        ann.splits[split].append(Row(where, vid, rt, (("stem", vid),)))
    ann.classes = _id_classes(named, ann, base)
    ann.notes.append("class map: recipe_type -> class of COIN.json")
    ann.splits["val"] = list(ann.splits["test"])
    ann.notes.append("val = test (COIN has no validation split)")
    return ann
