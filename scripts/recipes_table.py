#!/usr/bin/env python
"""Every exp/k400, ssv2, imagenet, pretrain, breakfast, coin and lvu recipe against the VideoMamba script it reproduces.

    python scripts/recipes_table.py            # write exp/RECIPES.md
    python scripts/recipes_table.py --check    # exit 1 if exp/RECIPES.md is stale or a recipe drifted

Each recipe is run with DRY_RUN=1 and a stand-in python that records its command line and GPU count; the command
line is parsed by the entry point's own parser (so defaults are the ones a real run gets). Its values are compared
with the upstream row of exp/upstream/videomamba_recipes.csv (empty cells: upstream's defaults, below). A
difference is drift unless ``INTENDED`` gives the reason; tests/test_recipes_upstream.py runs the same check.
The masked-pretraining recipes (exp/pretrain) are compared by scripts/_recipes_pretrain.py, the long-video ones
(exp/breakfast, exp/coin, exp/lvu) by scripts/_recipes_long.py with the rows of exp/upstream/videomamba_long_recipes.csv.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import stat
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from scripts import _recipes_long as lg  # noqa: E402
from scripts import _recipes_pretrain as pt  # noqa: E402

EXP = os.path.join(ROOT, "exp")
UPSTREAM_CSV = os.path.join(EXP, "upstream", "videomamba_recipes.csv")
RECIPES_MD = os.path.join(EXP, "RECIPES.md")
SIZES = ("tiny", "small", "middle")
_LETTER = {"tiny": "t", "small": "s", "middle": "m"}

# Upstream defaults for the flags a script does not pass (exp/upstream/README.md).
UPSTREAM_VIDEO_DEFAULTS = dict(update_freq=1, num_sample=2, layer_decay=0.75, min_lr=1e-6, warmup_lr=1e-6,
                               aa="rand-m7-n4-mstd0.5-inc1", reprob=0.25, mixup=0.8, cutmix=1.0, smoothing=0.1,
                               clip_grad=None, test_num_segment=5, test_num_crop=3, short_side_size=224,
                               model_ema=False, orig_t_size=8)
UPSTREAM_IMAGE_DEFAULTS = dict(update_freq=1, epochs=300, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5,
                               aa="rand-m9-mstd0.5-inc1", smoothing=0.1, reprob=0.25, mixup=0.8, cutmix=1.0,
                               clip_grad=None, input_size=224)
# What "upstream" means for the switches that reproduce its effective behaviour (compared like any value).
UPSTREAM_VIDEO_SWITCHES = dict(layer_decay_mode="videomamba", weight_decay_ssm=True, lr_scale_rule="linear256",
                               init="videomamba", sampling="sparse (TSN)", resize_mode="videomamba")
UPSTREAM_IMAGE_SWITCHES = dict(lr_scale_rule="deit512", init="videomamba")

VIDEO_FIELDS = ("size", "gpus", "batch_size", "update_freq", "num_sample", "epochs", "warmup_epochs", "lr", "min_lr",
                "warmup_lr", "drop_path", "weight_decay", "layer_decay", "num_frames", "orig_t_size", "input_size",
                "short_side_size", "test_num_segment", "test_num_crop", "aa", "reprob", "mixup", "cutmix",
                "smoothing", "clip_grad", "opt_betas", "model_ema", "start") + tuple(UPSTREAM_VIDEO_SWITCHES)
IMAGE_FIELDS = ("size", "gpus", "batch_size", "update_freq", "epochs", "warmup_epochs", "lr", "min_lr", "warmup_lr",
                "drop_path", "weight_decay", "input_size", "aa", "reprob", "mixup", "cutmix", "smoothing",
                "clip_grad", "model_ema", "repeated_aug", "teacher", "distill_style", "start") + tuple(
                    UPSTREAM_IMAGE_SWITCHES)


def upstream_script(rel: str):
    """exp/<rel> -> the upstream script (the ``script`` column of the CSV) it reproduces; None: ours, none upstream."""
    ds, name = rel.split("/")
    if ds == "pretrain":
        return pt.upstream_script(rel)
    if lg.is_long(rel):
        return lg.upstream_script(rel)
    size = next(s for s in SIZES if f"_{s}_" in name)
    if ds == "imagenet":
        return ("image_sm/exp_distill/videomamba_middle/run224.sh" if size == "middle"
                else f"image_sm/exp/videomamba_{size}/run224.sh")
    frames = int(name.split("_f")[1].split("_")[0])
    res = int(name.split("_res")[1].split(".")[0])
    stage = f"f{frames}x224" + ("" if res == 224 else f"to{res}")
    mask = "_mask" if "_mask_" in name else ""  # started from masked pretraining (VideoMamba's *MASK* rows)
    return f"video_sm/exp/{ds}/videomamba_{size}{mask}/run_{stage}.sh"


# (recipe, field) -> why we differ on purpose. Everything else must equal upstream.
INTENDED = {}
for _s in SIZES:
    INTENDED[(f"k400/videomambapro_{_s}_f64_res384.sh", "start")] = (
        "VideoMambaPro's own 64x224 stage (upstream starts VideoMamba's 384 stage from VideoMamba's 64x224 model)")
    INTENDED[(f"ssv2/videomambapro_{_s}_f16_res288.sh", "start")] = (
        "VideoMambaPro's own SSV2 16x224 stage (upstream starts from VideoMamba's)")
INTENDED[("k400/videomambapro_tiny_f64_res384.sh", "size")] = (
    "upstream's Ti script names --model videomamba_small with the Ti checkpoint (a slip that cannot load)")
INTENDED[("ssv2/videomambapro_tiny_f16_res288.sh", "size")] = (
    "upstream's Ti 288 script names --model videomamba_small (a slip; the published row is Ti)")
INTENDED[("ssv2/videomambapro_tiny_f16_res288.sh", "num_frames")] = (
    "upstream's Ti 288 script says 64 frames, but the published Ti 288 row (66.2) is 16x3x4 from the 16x224 model")
INTENDED[("ssv2/videomambapro_tiny_f16_res288.sh", "orig_t_size")] = "16: the 16x224 stage (see num_frames)"
INTENDED[("ssv2/videomambapro_middle_f16_res288.sh", "orig_t_size")] = (
    "upstream leaves its default 8, a no-op there (the 16-frame checkpoint's embedding is interpolated to 16)")
for _f in (8, 16):
    INTENDED[(f"ssv2/videomambapro_middle_mask_f{_f}_res224.sh", "start")] = (
        "upstream passes --finetune twice, the SSV2 mask-pretrained file then ${MODEL_PATH} (it wins; unset, the "
        "command fails); ours starts from that file")
INTENDED.update(pt.INTENDED)
INTENDED.update(lg.INTENDED)


def _shim(folder: str) -> str:
    path = os.path.join(folder, "python_shim")
    with open(path, "w") as f:
        f.write('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGV_OUT"\nprintf "%s" "$GPUS" > "$ARGV_OUT.gpus"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


def capture(recipe: str, extra=(), env=None) -> tuple:
    """(argv after the interpreter, GPUS) of ``bash recipe extra...`` under DRY_RUN=1, nothing run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "argv")
        e = {k: v for k, v in os.environ.items() if k not in ("GPUS", "NNODES", "FINETUNE", "DRY_RUN")}
        e.update(DRY_RUN="1", PYTHON=_shim(tmp), ARGV_OUT=out, **(env or {}))
        res = subprocess.run(["bash", recipe, *extra], env=e, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"{recipe} failed under DRY_RUN=1: {res.stderr}")
        with open(out, "rb") as f:
            argv = f.read().decode().split("\0")[:-1]
        with open(out + ".gpus") as f:
            gpus = int(f.read() or 0)
    return argv, gpus


def parse(argv):
    """Parse a captured command line with its entry point's parser (the resolver's notes are silenced)."""
    entry, flags = os.path.basename(argv[0]), argv[1:]
    if entry == "run_class_finetuning.py":
        import run_class_finetuning as mod
    elif entry == "run_pretrain_imagenet.py":
        import run_pretrain_imagenet as mod
    elif entry == "run_videomamba_pretraining.py":
        import run_videomamba_pretraining as mod
    else:
        raise ValueError(f"unexpected entry point {entry}")
    with contextlib.redirect_stdout(io.StringIO()):
        return mod.get_args_parser().parse_args(flags)


def _num(v):
    if v is None or v == "":
        return None
    return float(v)


def _size_of(model: str) -> str:
    return next((s for s in SIZES if f"_{s}" in model), model)


def _start_ours(finetune: str) -> str:
    if not finetune:
        return "scratch"
    from models.zoo import zoo_entry

    e = zoo_entry(finetune)
    if e is not None:
        return e.file
    return "our run: " + os.path.relpath(os.path.dirname(finetune), ROOT) if os.path.isabs(finetune) else finetune


def ours(rel: str) -> dict:
    argv, gpus = capture(os.path.join(EXP, rel))
    a = parse(argv)
    image = rel.startswith("imagenet/")
    d = dict(size=_size_of(a.model), gpus=gpus, batch_size=a.batch_size, update_freq=a.update_freq,
             epochs=a.epochs, warmup_epochs=a.warmup_epochs, lr=a.lr, min_lr=a.min_lr, warmup_lr=a.warmup_lr,
             drop_path=a.drop_path, weight_decay=a.weight_decay, input_size=a.input_size, aa=a.aa, reprob=a.reprob,
             mixup=a.mixup, cutmix=a.cutmix, smoothing=a.smoothing, clip_grad=a.clip_grad, model_ema=a.model_ema,
             start=_start_ours(a.finetune), lr_scale_rule=a.lr_scale_rule, init=a.init, args=a)
    if image:
        d.update(repeated_aug=a.repeated_aug, teacher=_size_of(a.teacher_model) if a.teacher_model else None,
                 distill_style=a.distill_style if a.teacher_model else None)
    else:
        d.update(num_sample=a.num_sample, layer_decay=a.layer_decay, num_frames=a.num_frames,
                 orig_t_size=a.orig_t_size, short_side_size=a.short_side_size, test_num_segment=a.test_num_segment,
                 test_num_crop=a.test_num_crop, opt_betas=tuple(a.opt_betas) if a.opt_betas else None,
                 layer_decay_mode=a.layer_decay_mode, weight_decay_ssm=a.weight_decay_ssm,
                 sampling="sparse (TSN)" if not a.sampling_rate else f"dense, rate {a.sampling_rate}",
                 resize_mode=a.resize_mode)
    return d


def upstream_rows() -> dict:
    """The rows of the shared csv, plus those of exp/upstream/videomamba_long_recipes.csv (scripts it lacks)."""
    with open(UPSTREAM_CSV, newline="") as f:
        rows = {r["script"]: r for r in csv.DictReader(f)}
    long_rows = lg.long_rows(EXP)
    both = sorted(set(rows) & set(long_rows))
    if both:
        raise ValueError(f"{lg.LONG_CSV_NAME} repeats scripts of {os.path.basename(UPSTREAM_CSV)}: {both}")
    rows.update(long_rows)
    return rows


def upstream(row: dict) -> dict:
    image = row["script"].startswith("image_sm/")
    defaults = UPSTREAM_IMAGE_DEFAULTS if image else UPSTREAM_VIDEO_DEFAULTS
    get = lambda k: row.get(k) or None  # noqa: E731
    d = {}
    for k in ("batch_size", "update_freq", "num_sample", "epochs", "warmup_epochs", "lr", "min_lr", "warmup_lr",
              "drop_path", "weight_decay", "layer_decay", "num_frames", "orig_t_size", "input_size",
              "short_side_size", "test_num_segment", "test_num_crop", "reprob", "mixup", "cutmix", "smoothing",
              "clip_grad"):
        v = get(k)
        d[k] = _num(v) if v is not None else defaults.get(k)
    d["aa"] = get("aa") or defaults["aa"]
    d["gpus"] = int(row["GPUS"])
    d["size"] = _size_of(row["model"])
    d["opt_betas"] = tuple(float(x) for x in row["opt_betas"].split()) if get("opt_betas") else None
    if image:
        d["model_ema"] = not get("no_model_ema")
        d["repeated_aug"] = not get("no_repeated_aug")
        d["teacher"] = _size_of(row["teacher_model"]) if get("teacher_model") else None
        d["distill_style"] = "videomamba" if d["teacher"] else None
        d["start"] = get("finetune") or "scratch"
        d.update(UPSTREAM_IMAGE_SWITCHES)
    else:
        d["model_ema"] = False
        size = d["size"]
        d["start"] = os.path.basename(get("finetune") or f"videomamba_{_LETTER.get(size, size)}16_in1k_res224.pth")
        d.update(UPSTREAM_VIDEO_SWITCHES)
    return d


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return abs(float(a) - float(b)) <= 1e-12 + 1e-9 * abs(float(b))
    return a == b


def recipes() -> list:
    out = []
    for ds in ("k400", "ssv2", "imagenet"):
        folder = os.path.join(EXP, ds)
        out += sorted(f"{ds}/{n}" for n in os.listdir(folder) if n.endswith(".sh") and n.startswith("videomambapro_"))
    return out + pt.recipes(EXP) + lg.recipes(EXP)


def compare(rel: str, rows=None) -> dict:
    """{'ours', 'upstream', 'script', 'diffs': [(field, ours, upstream, reason or None)]}."""
    rows = rows if rows is not None else upstream_rows()
    if rel.startswith("pretrain/"):
        return pt.compare(rel, rows)
    if lg.is_long(rel):
        return lg.compare(rel, rows)
    script = upstream_script(rel)
    up = upstream(rows[script])
    me = ours(rel)
    fields = IMAGE_FIELDS if rel.startswith("imagenet/") else VIDEO_FIELDS
    diffs = []
    for f in fields:
        if f == "orig_t_size" and not rows[script].get("orig_t_size") and (rel, f) not in INTENDED:
            continue  # upstream's default 8 only matters with a temporal embedding to resize
        if not _same(me.get(f), up.get(f)):
            diffs.append((f, me.get(f), up.get(f), INTENDED.get((rel, f))))
    return {"ours": me, "upstream": up, "script": script, "diffs": diffs}


def effective_lr(d: dict, image: bool) -> tuple:
    if image:
        total = d["gpus"] * d["batch_size"] * d["update_freq"]
        return total, d["lr"] * d["gpus"] * d["batch_size"] / 512.0
    total = d["gpus"] * d["batch_size"] * d["update_freq"] * d["num_sample"]
    return total, d["lr"] * total / 256.0


def published_top1(rel: str):
    from models.zoo import zoo_entry

    ds, name = rel.split("/")
    size = _size_of(name)
    if ds == "imagenet":
        e = zoo_entry(f"videomamba_{size}_image.in1k")
    else:
        frames = int(name.split("_f")[1].split("_")[0])
        res = int(name.split("_res")[1].split(".")[0])
        mask = "_mask_ft" if "_mask_" in name else ""
        e = zoo_entry(f"videomamba_{size}.{ds}{mask}_f{frames}_res{res}")
    return (e.top1, e.file) if e else (None, "")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return " ".join(_fmt(x) for x in v)
    return str(v)


def render(results: dict) -> str:
    lines = [
        "# Recipes vs VideoMamba's published scripts",
        "",
        "Generated by `python scripts/recipes_table.py` from the recipes themselves (each run with `DRY_RUN=1` and "
        "parsed by its entry point); `tests/test_recipes_upstream.py` fails when a recipe differs from VideoMamba's "
        "script (`exp/upstream/videomamba_recipes.csv`) without a reason listed below, or when this file is stale.",
        "",
        "Total batch = GPUs x batch_size x update_freq (x num_sample clips per video). Effective lr: video "
        "`lr x total / 256` (also min_lr and warmup_lr); ImageNet `lr x GPUs x batch_size / 512` (DeiT: min_lr, "
        "warmup_lr absolute). Each recipe sets VideoMamba's GPU count as `GPUS`; with fewer GPUs raise "
        "`--update_freq` by the same factor to keep the total batch. Video recipes start from VideoMamba's released "
        "ImageNet-1K weights by tag (`FINETUNE=none` trains from scratch) and use upstream's effective layer decay "
        "(`--layer_decay 0.75 --layer_decay_mode videomamba`), weight decay on `A_log` (`--weight_decay_ssm`), "
        "its initialisation (`--init videomamba`) and its test views; ImageNet recipes use the DeiT lr rule, no EMA "
        "(`--no_model_ema`) and, for M, upstream's distillation head and loss.",
        "",
        "| recipe | upstream script | GPUs | total batch | lr (effective) | epochs (warmup) | start | "
        "published VideoMamba top-1 | differs on purpose |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rel, res in results.items():
        if rel.startswith("pretrain/") or lg.is_long(rel):
            continue
        me = res["ours"]
        image = rel.startswith("imagenet/")
        total, eff = effective_lr(me, image)
        top1, file = published_top1(rel)
        why = "; ".join(f"{f}: {_fmt(o)} vs {_fmt(u)} ({r})" for f, o, u, r in res["diffs"] if r) or "-"
        lines.append(f"| `{rel}` | `{res['script']}` | {me['gpus']} | {total} | {_fmt(me['lr'])} ({eff:.3g}) | "
                     f"{me['epochs']} ({me['warmup_epochs']}) | {me['start']} | "
                     f"{_fmt(top1)} (`{file}`) | {why} |")
    lines += [
        "",
        "Not reproduced exactly, for all recipes: VideoMamba's ImageNet runs step timm's scheduler once per epoch "
        "(ours is per step, same warmup and cosine end points); the `_mask` recipes start from VideoMamba-M's released "
        "masked-pretraining encoder (or, with `FINETUNE`, from `exp/pretrain`'s output); the 384 / 288 `_mask` "
        "stages and the distillation-from-scratch B recipe have no VideoMambaPro counterpart here. The VideoMambaPro "
        "models differ "
        "from VideoMamba by the masked backward scan and the elemental residual (README, the method in short); "
        "the published top-1 is VideoMamba's, the number a VideoMambaPro run of the same recipe should reach or "
        "beat.",
    ]
    lines += pt.render({rel: r for rel, r in results.items() if rel.startswith("pretrain/")})
    lines += lg.render({rel: r for rel, r in results.items() if lg.is_long(rel)})
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a recipe drifted or exp/RECIPES.md is stale")
    a = p.parse_args(argv)
    rows = upstream_rows()
    results = {rel: compare(rel, rows) for rel in recipes()}
    drift = [(rel, d) for rel, r in results.items() for d in r["diffs"] if not d[3]]
    for rel, (f, o, u, _) in drift:
        print(f"DRIFT {rel}: {f} = {_fmt(o)}, upstream {_fmt(u)}")
    text = render(results)
    if a.check:
        with open(RECIPES_MD) as f:
            stale = f.read() != text
        if stale:
            print(f"{RECIPES_MD} is stale: run python scripts/recipes_table.py")
        return 1 if (stale or drift) else 0
    with open(RECIPES_MD, "w") as f:
        f.write(text)
    print(f"wrote {RECIPES_MD} ({len(results)} recipes, {len(drift)} unexplained differences)")
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main())
