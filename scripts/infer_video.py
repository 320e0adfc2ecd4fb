#!/usr/bin/env python
"""Classify video files with a trained VideoMambaPro / VideoMamba checkpoint (multi-view test protocol).

    python scripts/infer_video.py --ckpt OUT/checkpoint-best.pth --label_map data/synthetic/labels.txt \\
        a.mp4 b.mp4 [--test_num_segment 2 --test_num_crop 1 --topk 3]

Each video is read like a test-set video (datasets.sampling.sample_indices in 'test' mode for every temporal
view, datasets.transforms.video_eval_transform for every spatial crop); the softmax of all
``test_num_segment x test_num_crop`` views is averaged and the top-k classes are printed.

The model and its input geometry (model name, classes, frames, input size, VideoMambaPro options, view counts)
come from the checkpoint's stored ``model_cfg`` / ``args`` when present; a flag given here wins. A checkpoint
without them (a bare state dict) needs --model, --num_frames, --input_size (and the options it was trained with).

Label map (--label_map): one class name per line (line i = class i), or ``id name`` per line.
An unreadable video stops with an error naming it, or with --skip_bad it is reported and counted.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # our datasets/ and models/ packages win over installed ones

import torch  # noqa: E402

from mamba.modules.bimamba import RESIDUAL_START  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# flags that fall back to the checkpoint's training args, then to these defaults
DATA_DEFAULTS = {"num_frames": None, "input_size": None, "short_side_size": None, "sampling_rate": 0,
                 "test_num_segment": 2, "test_num_crop": 1, "tubelet_size": 1}
MODEL_OPTIONS = ("bwd_mask", "residual_start", "mask_drops_D", "gate", "divide_out")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", help="video files (anything decord / PyAV can read)")
    p.add_argument("--ckpt", required=True, help="checkpoint (checkpoint-best.pth, a model/module/bare state dict)")
    p.add_argument("--model", default=None, help="default: the checkpoint's model")
    p.add_argument("--nb_classes", type=int, default=None, help="default: from the checkpoint")
    p.add_argument("--num_frames", type=int, default=None)
    p.add_argument("--input_size", type=int, default=None)
    p.add_argument("--short_side_size", type=int, default=None, help="default: the checkpoint's, else --input_size")
    p.add_argument("--tubelet_size", type=int, default=None)
    p.add_argument("--sampling_rate", type=int, default=None, help="0: sparse TSN sampling; >0 dense stride")
    p.add_argument("--test_num_segment", type=int, default=None, help="temporal views (default: checkpoint's, else 2)")
    p.add_argument("--test_num_crop", type=int, default=None, help="spatial crops (default: checkpoint's, else 1)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--label_map", default=None, help="class names: one per line, or 'id name' per line")
    g = p.add_argument_group("VideoMambaPro options (default: the checkpoint's, else the registered model's)")
    g.add_argument("--bwd_mask", dest="bwd_mask", action="store_true", default=None)
    g.add_argument("--no_bwd_mask", dest="bwd_mask", action="store_false")
    g.add_argument("--residual_start", choices=tuple(RESIDUAL_START), default=None)
    g.add_argument("--mask_drops_D", action="store_true", default=None)
    g.add_argument("--no_gate", dest="gate", action="store_false", default=None)
    g.add_argument("--divide_out", action="store_true", default=None)
    p.add_argument("--scan_backend", default=None, choices=("auto", "reference", "torch", "cuda", "triton"))
    p.add_argument("--video_reader", default="decord", choices=("decord", "pyav"))
    p.add_argument("--skip_bad", action="store_true", help="report and count unreadable videos instead of stopping")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch_size", type=int, default=8, help="views per forward pass")
    p.add_argument("--dtype", default="fp32", choices=tuple(DTYPES),
                   help="precision of the weights for inference (bf16/fp16 halve the memory on a GPU)")
    p.add_argument("--trust_checkpoint", action="store_true",
                   help="allow checkpoints that need full unpickling (can run code: only for trusted files)")
    p.add_argument("--json", default=None, help="also write the results as JSON lines to this file")
    return p


def read_label_map(path: str, nb_classes: Optional[int] = None) -> Dict[int, str]:
    """Class id -> name from ``path``: one name per line (line i is class i), or ``id name`` on every line.

    Blank lines are ignored in the ``id name`` form only; a malformed or duplicate entry raises ValueError
    naming the file and line."""
    with open(path, encoding="utf-8-sig") as f:
        lines = [ln.rstrip("\r\n") for ln in f]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"label map {path} is empty")
    pat = re.compile(r"^\s*(\d+)[\s,:]+(\S.*?)\s*$")
    with_ids = all(pat.match(ln) for ln in lines if ln.strip())
    names: Dict[int, str] = {}
    for no, ln in enumerate(lines, 1):
        if with_ids:
            if not ln.strip():
                continue
            m = pat.match(ln)
            i, name = int(m.group(1)), m.group(2)
            if i in names:
                raise ValueError(f"{path}:{no}: class id {i} given twice ({names[i]!r} and {name!r})")
        else:
            name = ln.strip()
            if not name:
                raise ValueError(f"{path}:{no}: empty class name (one name per line, line i = class i)")
            i = no - 1
        names[i] = name
    if nb_classes is not None:
        extra = [i for i in names if i >= nb_classes]
        if extra:
            raise ValueError(f"label map {path} names class {max(extra)} but the model has {nb_classes} classes")
        if len(names) < nb_classes:
            print(f"warning: label map {path} names {len(names)} of {nb_classes} classes; others print as class_<id>")
    return names


def _ckpt_config(ckpt: dict) -> dict:
    """Model / data settings stored by run_class_finetuning.py: ``model_cfg`` first, then ``args``."""
    cfg = {}
    args = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
    for k in ("model", "nb_classes", "num_frames", "input_size", "short_side_size", "tubelet_size", "sampling_rate",
              "test_num_segment", "test_num_crop", "bwd_mask", "residual_start", "mask_drops_D", "divide_out"):
        if args.get(k) is not None:
            cfg[k] = args[k]
    if args.get("no_gate"):
        cfg["gate"] = False
    mc = ckpt.get("model_cfg") if isinstance(ckpt.get("model_cfg"), dict) else {}
    rename = {"num_classes": "nb_classes", "img_size": "input_size"}
    for k, v in mc.items():
        if v is not None and (k in rename or k in ("model", "num_frames", "tubelet_size") or k in MODEL_OPTIONS):
            cfg[rename.get(k, k)] = v
    return cfg


def resolve_config(args, ckpt: dict, state_dict: dict) -> dict:
    """Merge: flags given here > checkpoint settings > defaults. Returns a plain dict."""
    stored = _ckpt_config(ckpt)
    cfg = {}
    for k in ("model", "nb_classes", *DATA_DEFAULTS, *MODEL_OPTIONS):
        v = getattr(args, k, None)
        cfg[k] = v if v is not None else stored.get(k, DATA_DEFAULTS.get(k))
    if cfg["nb_classes"] is None and "head.weight" in state_dict:
        cfg["nb_classes"] = int(state_dict["head.weight"].shape[0])
    missing = [k for k in ("model", "nb_classes") if cfg[k] is None]
    if missing:
        raise SystemExit(f"error: {args.ckpt} stores no training args; pass " + " ".join(f"--{k}" for k in missing))
    if cfg["short_side_size"] is None and cfg["input_size"] is not None:
        cfg["short_side_size"] = cfg["input_size"]
    return cfg


def load_model(args):
    """Build the model from the checkpoint (+ flags) and load its weights strictly. Returns (model, cfg)."""
    import timm

    import models  # noqa: F401  (registers the architectures)
    from models.checkpoint import load_checkpoint_file, strip_prefixes, unwrap_state_dict

    ckpt = load_checkpoint_file(args.ckpt, trust_checkpoint=args.trust_checkpoint)
    state, _ = unwrap_state_dict(ckpt, log=None)
    state, _ = strip_prefixes(state)
    cfg = resolve_config(args, ckpt, state)
    kw = dict(num_classes=cfg["nb_classes"], num_frames=cfg["num_frames"], img_size=cfg["input_size"],
              tubelet_size=cfg["tubelet_size"])
    kw = {k: v for k, v in kw.items() if v is not None}
    kw.update({k: cfg[k] for k in MODEL_OPTIONS if cfg[k] is not None})
    try:
        model = timm.create_model(cfg["model"], pretrained=False, **kw)
    except RuntimeError as e:
        raise SystemExit(f"error: --model {cfg['model']}: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise SystemExit(f"error: the weights in {args.ckpt} do not fit {cfg['model']} with {kw}; pass the flags it "
                         f"was trained with (--num_frames, --input_size, --nb_classes, ...).\n{e}") from e
    # the geometry actually built (registered defaults filled in for what was not given)
    pe = getattr(model, "patch_embed", None)
    if cfg["input_size"] is None and pe is not None and hasattr(pe, "img_size"):
        size = pe.img_size
        cfg["input_size"] = int(size[0] if isinstance(size, (tuple, list)) else size)
    if cfg["num_frames"] is None:
        cfg["num_frames"] = int(getattr(model, "num_frames", 0) or 0) or None
    if cfg["input_size"] is None or cfg["num_frames"] is None:
        raise SystemExit(f"error: cannot tell the input size / frames of {cfg['model']}; pass --input_size and "
                         f"--num_frames")
    if cfg["short_side_size"] is None:
        cfg["short_side_size"] = cfg["input_size"]
    if hasattr(model, "options") and isinstance(model.options, dict):
        cfg.update(model.options)
    model.to(device=args.device, dtype=DTYPES[args.dtype]).eval()
    return model, cfg


def video_views(path: str, cfg: dict, reader: str = "decord") -> torch.Tensor:
    """All test views of one video as (S*C, 3, T, H, W), in the test dataset's order (segment-major).

    Raises datasets.VideoReadError when the video cannot be read."""
    from datasets.sampling import sample_indices
    from datasets.transforms import video_eval_transform
    from datasets.video_io import open_video

    video = open_video(path, reader)
    total = len(video)
    S, C = int(cfg["test_num_segment"]), int(cfg["test_num_crop"])
    clips = []
    for seg in range(S):
        idx = sample_indices(total, cfg["num_frames"], cfg["sampling_rate"] or 0, "test", view=seg, num_views=S)
        frames = video.get(idx)
        for crop in range(C):
            clips.append(video_eval_transform(frames, cfg["short_side_size"], cfg["input_size"], crop, C))
    return torch.stack(clips)


@torch.no_grad()
def predict(model, clips: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Softmax averaged over the views ``clips`` (V, 3, T, H, W) -> (num_classes,) probabilities. Inputs go
    through the engines' one input cast (the model's device and dtype)."""
    from engines.backends import cast_input

    probs = []
    for i in range(0, clips.shape[0], max(1, batch_size)):
        logits = model(cast_input(clips[i:i + batch_size], model))
        probs.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(probs).mean(0)


def main(argv=None) -> List[dict]:
    args = get_args_parser().parse_args(argv)
    if args.topk < 1:
        raise SystemExit("error: --topk must be >= 1")
    for k in ("test_num_segment", "test_num_crop"):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            raise SystemExit(f"error: --{k} must be >= 1")
    if args.scan_backend:
        from mamba.ops.backend import set_scan_backend

        set_scan_backend(args.scan_backend)
    from datasets.video_io import VideoReadError

    model, cfg = load_model(args)
    names = read_label_map(args.label_map, cfg["nb_classes"]) if args.label_map else {}
    k = min(args.topk, cfg["nb_classes"])
    print(f"{cfg['model']} from {args.ckpt}: {cfg['nb_classes']} classes, {cfg['num_frames']} frames x "
          f"{cfg['input_size']} px, {cfg['test_num_segment']} x {cfg['test_num_crop']} views (segments x crops)")
    results, skipped = [], []
    for path in args.videos:
        t0 = time.time()
        try:
            clips = video_views(path, cfg, args.video_reader)
        except VideoReadError as e:
            if not args.skip_bad:
                raise SystemExit(f"error: cannot read video {path}: {e.reason} (pass --skip_bad to report and skip "
                                 f"unreadable videos)") from e
            skipped.append({"video": path, "error": e.reason})
            print(f"{path}: SKIPPED, unreadable ({e.reason})")
            continue
        p = predict(model, clips, args.batch_size)
        top_p, top_i = p.topk(k)
        top = [{"id": int(i), "label": names.get(int(i), f"class_{int(i)}"), "prob": float(q)}
               for q, i in zip(top_p, top_i)]
        results.append({"video": path, "topk": top, "views": int(clips.shape[0]), "seconds": time.time() - t0})
        print(f"{path}: " + ", ".join(f"{t['label']} ({100 * t['prob']:.1f}%)" for t in top))
    if skipped:
        print(f"{len(skipped)} of {len(args.videos)} videos skipped as unreadable: "
              + ", ".join(s["video"] for s in skipped))
    if args.json:
        with open(args.json, "w") as f:
            for r in results + skipped:
                f.write(json.dumps(r) + "\n")
    return results + skipped


if __name__ == "__main__":
    main()
