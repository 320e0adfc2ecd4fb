"""The exp/pretrain recipes against VideoMamba's masked-pretraining scripts (used by scripts/recipes_table.py).

Upstream values: the script's row of exp/upstream/videomamba_recipes.csv (the columns it shares with fine-tuning)
joined with its row of exp/upstream/videomamba_pretrain_recipes.csv (mask, sampling and --clip_* flags; a separate
file because videomamba_recipes.csv is a verbatim copy of shared/upstream/). Empty cells: the defaults of VideoMamba's
video_sm/run_videomamba_pretraining.py (``UPSTREAM_PRETRAIN_DEFAULTS``). A recipe without an upstream script (ours,
e.g. MaskFeat) is listed as such, with its values, never skipped.
"""
from __future__ import annotations

import csv
import os

PRETRAIN_CSV_NAME = "videomamba_pretrain_recipes.csv"
# video_sm/run_videomamba_pretraining.py's parser defaults (no --update_freq there: 1); its lr, min_lr and warmup_lr
# are scaled by total batch x num_sample / 256 (our linear256)
UPSTREAM_PRETRAIN_DEFAULTS = dict(
    update_freq=1, num_sample=1, epochs=800, warmup_epochs=40, lr=1.5e-4, min_lr=1e-5, warmup_lr=1e-6, drop_path=0.0,
    weight_decay=0.05, num_frames=16, input_size=224, tubelet_size=2, mask_type="tube", mask_ratio=0.75,
    sampling_rate=4, num_segments=1, flip=False, clip_teacher="clip_b16", clip_loss_ratio=1.0, clip_loss_type="l2",
    clip_decoder_embed_dim=512, clip_output_dim=768, clip_norm_type="l2", clip_return_layer=1, clip_return_interval=1,
    clip_student_return_interval=1, clip_return_cls=False, clip_return_attn=False)
# its effective behaviour for the VideoMamba student: linear lr scaling, A_log weight decay, its initialisation
UPSTREAM_PRETRAIN_SWITCHES = dict(lr_scale_rule="linear256", weight_decay_ssm=True, init="videomamba")
CLIP_FIELDS = ("clip_teacher", "clip_loss_ratio", "clip_loss_type", "clip_decoder_embed_dim", "clip_output_dim",
               "clip_norm_type", "clip_return_layer", "clip_return_interval", "clip_student_return_interval",
               "clip_return_cls", "clip_return_attn")
_NUMERIC = ("batch_size", "update_freq", "num_sample", "epochs", "warmup_epochs", "lr", "min_lr", "warmup_lr",
            "drop_path", "weight_decay", "num_frames", "input_size", "tubelet_size", "mask_ratio", "clip_loss_ratio",
            "clip_decoder_embed_dim", "clip_output_dim", "clip_return_layer", "clip_return_interval",
            "clip_student_return_interval")
PRETRAIN_FIELDS = ("size", "model", "gpus", "batch_size", "update_freq", "num_sample", "epochs", "warmup_epochs", "lr",
                   "min_lr", "warmup_lr", "drop_path", "weight_decay", "num_frames", "input_size", "tubelet_size",
                   "opt_betas", "objective", "mask_type", "mask_ratio", "sampling", "flip") + CLIP_FIELDS + tuple(
                       UPSTREAM_PRETRAIN_SWITCHES)
NO_UPSTREAM = "ours, no upstream script"

# (recipe, field) -> why we differ on purpose
INTENDED = {}
for _ds in ("k400", "ssv2"):
    INTENDED[(f"pretrain/videomambapro_middle_mask_pt_{_ds}.sh", "model")] = (
        "the VideoMambaPro student on VideoMamba's recipe: do the gains hold after masked pretraining?")
# recipes with no upstream script, and where their values come from (the recipe's header has the details)
OURS = {
    "pretrain/videomambapro_middle_maskfeat_k400.sh": (
        "MaskFeat (Wei et al., CVPR 2022) K400 settings: 300 epochs, lr 8e-4 per 2048, AdamW 0.9 0.999, wd 0.05, "
        "30 warmup, 16 x rate 4, 40% masked; tube masks instead of its cube blocks (ours)"),
}


def upstream_script(rel: str):
    """exp/pretrain/<name> -> upstream's run_mask_pretrain.sh it reproduces, or None (ours, no upstream script)."""
    if rel in OURS:
        return None
    name = os.path.basename(rel)
    ds = name.rsplit("_", 1)[1].split(".")[0]
    return f"video_sm/exp/{ds}/videomamba_middle_mask/run_mask_pretrain.sh"


def recipes(exp: str) -> list:
    return sorted(f"pretrain/{n}" for n in os.listdir(os.path.join(exp, "pretrain")) if n.endswith(".sh"))


def pretrain_rows(exp: str) -> dict:
    with open(os.path.join(exp, "upstream", PRETRAIN_CSV_NAME), newline="") as f:
        return {r["script"]: r for r in csv.DictReader(f)}


def _sampling(num_segments, sampling_rate) -> str:
    return "sparse (TSN)" if (num_segments or 1) > 1 or not sampling_rate else f"dense, rate {sampling_rate:g}"


def ours(rel: str) -> dict:
    from scripts import recipes_table as rt

    argv, gpus = rt.capture(os.path.join(rt.EXP, rel))
    a = rt.parse(argv)
    d = {k: getattr(a, k) for k in _NUMERIC + ("mask_type", "objective", "flip", "clip_teacher", "clip_loss_type",
                                                "clip_norm_type", "clip_return_cls", "clip_return_attn")}
    d.update(size=rt._size_of(a.model), model=a.model, gpus=gpus,
             opt_betas=tuple(a.opt_betas) if a.opt_betas else None, sampling=_sampling(a.num_segments, a.sampling_rate),
             lr_scale_rule=a.lr_scale_rule, weight_decay_ssm=a.weight_decay_ssm, init=a.init, args=a)
    return d


def upstream(row: dict, extra: dict) -> dict:
    """The upstream values: the shared csv row plus its pretraining row (empty cells: upstream's defaults)."""
    from scripts import recipes_table as rt

    get = lambda k: row.get(k) or extra.get(k) or None  # noqa: E731
    d = {}
    for k in _NUMERIC:
        v = get(k)
        d[k] = rt._num(v) if v is not None else UPSTREAM_PRETRAIN_DEFAULTS.get(k)
    for k in ("mask_type", "clip_teacher", "clip_loss_type", "clip_norm_type"):
        d[k] = get(k) or UPSTREAM_PRETRAIN_DEFAULTS[k]
    for k in ("clip_return_cls", "clip_return_attn"):
        d[k] = bool(get(k)) or UPSTREAM_PRETRAIN_DEFAULTS[k]
    # upstream's --flip has no type: any value given (even "False") is a true string
    d["flip"] = bool(get("flip")) or UPSTREAM_PRETRAIN_DEFAULTS["flip"]
    segments = int(get("num_segments") or UPSTREAM_PRETRAIN_DEFAULTS["num_segments"])
    d["sampling"] = _sampling(segments, rt._num(get("sampling_rate")) or UPSTREAM_PRETRAIN_DEFAULTS["sampling_rate"])
    d.update(gpus=int(row["GPUS"]), model=row["model"], size=rt._size_of(row["model"]), objective="clip",
             opt_betas=tuple(float(x) for x in row["opt_betas"].split()) if get("opt_betas") else None,
             **UPSTREAM_PRETRAIN_SWITCHES)
    return d


def compare(rel: str, rows: dict) -> dict:
    """As recipes_table.compare: {'ours', 'upstream', 'script', 'diffs'}; script None (and upstream None, no diffs)
    for a recipe of ours without an upstream script."""
    from scripts import recipes_table as rt

    me = ours(rel)
    script = upstream_script(rel)
    if script is None:
        return {"ours": me, "upstream": None, "script": None, "diffs": [], "note": OURS[rel]}
    up = upstream(rows[script], pretrain_rows(rt.EXP).get(script, {}))
    diffs = [(f, me.get(f), up.get(f), INTENDED.get((rel, f))) for f in PRETRAIN_FIELDS
             if not rt._same(me.get(f), up.get(f))]
    return {"ours": me, "upstream": up, "script": script, "diffs": diffs}


def render(results: dict) -> list:
    """The masked-pretraining section of exp/RECIPES.md (lines)."""
    from scripts import recipes_table as rt

    lines = [
        "",
        "## Masked pretraining (`exp/pretrain`, `run_videomamba_pretraining.py`)",
        "",
        "Compared with VideoMamba's `run_mask_pretrain.sh` (`exp/upstream/videomamba_recipes.csv` joined with "
        f"`exp/upstream/{PRETRAIN_CSV_NAME}`; empty cells: the defaults of its `run_videomamba_pretraining.py`) on "
        f"{', '.join(PRETRAIN_FIELDS)}. Effective lr = `lr x total / 256` (also min_lr and warmup_lr), as upstream. "
        "The `videomamba_` recipes reproduce the released encoders; the `videomambapro_` ones change only the student.",
        "",
        "| recipe | upstream script | model | GPUs | total batch | lr (effective) | epochs (warmup) | mask | frames "
        "(sampling) | differs on purpose |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rel, res in results.items():
        me = res["ours"]
        total = me["gpus"] * me["batch_size"] * me["update_freq"] * me["num_sample"]
        eff = me["lr"] * total / 256.0
        script = f"`{res['script']}`" if res["script"] else f"{NO_UPSTREAM} ({res['note']})"
        why = "; ".join(f"{f}: {rt._fmt(o)} vs {rt._fmt(u)} ({r})" for f, o, u, r in res["diffs"] if r) or "-"
        lines.append(f"| `{rel}` | {script} | `{me['model']}` | {me['gpus']} | {total} | {rt._fmt(me['lr'])} "
                     f"({eff:.3g}) | {rt._fmt(me['epochs'])} ({rt._fmt(me['warmup_epochs'])}) | {me['mask_type']} "
                     f"{rt._fmt(me['mask_ratio'])} | {rt._fmt(me['num_frames'])} ({me['sampling']}) | {why} |")
    lines += [
        "",
        "VideoMamba's SSV2 script says `--epochs 801`, reproduced; its MODEL_ZOO lists the released SSV2 encoder as "
        "200e. The recipes need the pretraining students (`*_pretrain`, `*_maskfeat`) registered in `models/`.",
        "",
    ]
    return lines
