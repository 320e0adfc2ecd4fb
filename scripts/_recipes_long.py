"""The exp/breakfast, exp/coin and exp/lvu recipes against VideoMamba's long-video scripts (used by
scripts/recipes_table.py).

Upstream values: the script's row of exp/upstream/videomamba_long_recipes.csv (ours: the shared csv has no
Breakfast / COIN / LVU rows; same columns plus ``nb_classes``, ``trimmed`` and ``time_stride``). Empty cells: the
defaults of VideoMamba's video_sm/run_class_finetuning.py, as for K400 (``recipes_table.UPSTREAM_VIDEO_DEFAULTS``).
Compared on the K400 fields plus the model, the class count, ``--data_set`` and the long-video windows.
"""
from __future__ import annotations

import csv
import os

LONG_CSV_NAME = "videomamba_long_recipes.csv"
DATASETS = ("breakfast", "coin", "lvu")
SIZES = ("tiny", "small", "middle")
LONG_DATA_SETS = ("LVU", "COIN", "Breakfast")  # the --data_set names that cut a listed video into windows
# upstream's --trimmed / --time_stride defaults (seconds), what its LVU dataset applies when they are not given
UPSTREAM_TRIM_DEFAULTS = dict(trimmed=60, time_stride=16)
EXTRA_FIELDS = ("model", "nb_classes", "data_set", "windows")
_MODEL_REASON = "the VideoMambaPro model on VideoMamba's recipe (append --model videomamba_{size} for VideoMamba's)"

# (recipe, field) -> why we differ on purpose
INTENDED = {}


def recipes(exp: str) -> list:
    out = []
    for ds in DATASETS:
        folder = os.path.join(exp, ds)
        if os.path.isdir(folder):
            out += sorted(f"{ds}/{n}" for n in os.listdir(folder) if n.endswith(".sh"))
    return out


def is_long(rel: str) -> bool:
    return rel.split("/")[0] in DATASETS


def upstream_script(rel: str) -> str:
    """exp/{breakfast,coin}/{family}_{size}[_mask]_f{F}_res224[_trimmed].sh -> video_sm/exp/{ds}/videomamba_{size}
    [_mask]/run_f{F}x224.sh; exp/lvu/* -> video_sm/exp/lvu/run_class_trim.sh (its only classification script with
    windows; run_class.sh differs only by the whole-video sampling)."""
    ds, name = rel.split("/")
    if ds == "lvu":
        return "video_sm/exp/lvu/run_class_trim.sh"
    size = next(s for s in SIZES if f"_{s}_" in name)
    frames = int(name.split("_f")[1].split("_")[0])
    mask = "_mask" if "_mask_" in name else ""
    return f"video_sm/exp/{ds}/videomamba_{size}{mask}/run_f{frames}x224.sh"


def long_rows(exp: str) -> dict:
    path = os.path.join(exp, "upstream", LONG_CSV_NAME)
    if not os.path.isfile(path):
        return {}
    with open(path, newline="") as f:
        return {r["script"]: r for r in csv.DictReader(f)}


def _windows(data_set: str, trimmed, time_stride) -> str:
    if data_set not in LONG_DATA_SETS:
        return "whole video"
    t = UPSTREAM_TRIM_DEFAULTS["trimmed"] if trimmed in (None, "") else int(float(trimmed))
    s = UPSTREAM_TRIM_DEFAULTS["time_stride"] if time_stride in (None, "") else int(float(time_stride))
    return f"{t} s every {s} s"


def ours(rel: str) -> dict:
    from scripts import recipes_table as rt

    d = rt.ours(rel)
    a = d["args"]
    d.update(model=a.model, nb_classes=a.nb_classes, data_set=a.data_set,
             windows=_windows(a.data_set, a.trimmed, a.time_stride))
    return d


def upstream(row: dict) -> dict:
    from scripts import recipes_table as rt

    d = rt.upstream(row)
    d.update(model=row["model"], nb_classes=int(row["nb_classes"]), data_set=row["data_set"],
             windows=_windows(row["data_set"], row.get("trimmed"), row.get("time_stride")))
    return d


def intended(rel: str, field: str, value=None):
    """The reason for a difference: INTENDED, else the rules every recipe of a kind shares (the ``_trimmed``
    Breakfast / COIN rule only for the value it names: another window or data set is drift)."""
    if (rel, field) in INTENDED:
        return INTENDED[(rel, field)]
    ds, name = rel.split("/")
    if field == "model" and name.startswith("videomambapro_") and value in tuple(f"videomambapro_{s}" for s in SIZES):
        return _MODEL_REASON
    if name.endswith("_trimmed.sh") and ds != "lvu":
        if field == "data_set" and value == {"breakfast": "Breakfast", "coin": "COIN"}[ds]:
            return "ours: the long-video sampling of VideoMamba's LVU scripts on this dataset (--data_set named)"
        if field == "windows" and value == _windows("LVU", None, None):
            return "ours: 60 s windows every 16 s (lists with durations) instead of upstream's whole-video sampling"
    return None


def compare(rel: str, rows: dict) -> dict:
    """As recipes_table.compare: {'ours', 'upstream', 'script', 'diffs': [(field, ours, upstream, reason)]}."""
    from scripts import recipes_table as rt

    script = upstream_script(rel)
    up = upstream(rows[script])
    me = ours(rel)
    diffs = [(f, me.get(f), up.get(f), intended(rel, f, me.get(f))) for f in rt.VIDEO_FIELDS + EXTRA_FIELDS
             if not rt._same(me.get(f), up.get(f))]
    return {"ours": me, "upstream": up, "script": script, "diffs": diffs}


def published_top1(rel: str):
    """VideoMamba's published top-1 for the script a recipe reproduces (the zoo's Breakfast / COIN rows)."""
    from models.zoo import zoo_entry

    ds, name = rel.split("/")
    if ds == "lvu":
        return None, ""
    size = next(s for s in SIZES if f"_{s}_" in name)
    frames = int(name.split("_f")[1].split("_")[0])
    e = zoo_entry(f"videomamba_{size}.{ds}{'_mask_ft' if '_mask_' in name else ''}_f{frames}_res224")
    return (e.top1, e.file) if e else (None, "")


def render(results: dict) -> list:
    """The long-video section of exp/RECIPES.md (lines)."""
    from scripts import recipes_table as rt

    lines = [
        "",
        "## Long videos (`exp/breakfast`, `exp/coin`, `exp/lvu`)",
        "",
        "Compared with VideoMamba's `video_sm/exp/{breakfast,coin}/*/run_f{32,64}x224.sh` and "
        f"`video_sm/exp/lvu/run_class_trim.sh` (`exp/upstream/{LONG_CSV_NAME}`; empty cells: upstream's defaults) on "
        f"the fields above plus {', '.join(EXTRA_FIELDS)}. Upstream trains Breakfast and COIN as `Kinetics_sparse` "
        "lists (the whole video, TSN) from its K400 fine-tuned models, kept in every recipe but the `_trimmed` "
        "Breakfast one, which shows the long-video windows of its LVU scripts (`--data_set Breakfast --trimmed 60 "
        "--time_stride 16`, lists `video_path,label,duration`: `scripts/build_lists.py breakfast ... "
        "--with_duration`). The `videomamba_` recipes reproduce VideoMamba's runs (M from masked pretraining only); "
        "every `videomambapro_` recipe runs VideoMamba's with `--model videomamba_{size}` appended.",
        "",
        "| recipe | upstream script | model | GPUs | total batch | lr (effective) | epochs (warmup) | start | sampling | "
        "published VideoMamba top-1 | differs on purpose |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rel, res in results.items():
        me = res["ours"]
        total, eff = rt.effective_lr(me, False)
        top1, file = published_top1(rel)
        why = "; ".join(f"{f}: {rt._fmt(o)} vs {rt._fmt(u)}" + ("" if r == _MODEL_REASON else f" ({r})")
                        for f, o, u, r in res["diffs"] if r) or "-"
        sampling = f"{me['data_set']}, {me['windows']}"
        lines.append(f"| `{rel}` | `{res['script']}` | `{me['model']}` | {me['gpus']} | {total} | {rt._fmt(me['lr'])} "
                     f"({eff:.3g}) | {me['epochs']} ({me['warmup_epochs']}) | {me['start']} | {sampling} | "
                     f"{rt._fmt(top1)}" + (f" (`{file}`)" if file else "") + f" | {why} |")
    lines += [
        "",
        f"`model: videomambapro_* vs videomamba_*`: {_MODEL_REASON}. Upstream's Ti 64-frame scripts start from the "
        "K400 32-frame Ti model with `--orig_t_size 64` (kept; the loader interpolates the 32-step temporal embedding "
        "and says so); its COIN M *MASK* 64-frame script tests 4 x 3 views where the others test 10 x 3 (kept). The "
        "LVU recipes are the director task (10 classes, the task `--data_path` names, as upstream).",
        "",
    ]
    return lines
