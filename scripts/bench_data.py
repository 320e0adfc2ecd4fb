#!/usr/bin/env python
"""Training-loader throughput per worker at a recipe's settings, and the loader workers a GPU needs, in one table.

    # synthetic 720p videos, pre-resized to short side 320 and extracted to frames here, then timed
    python scripts/bench_data.py --synthetic work_dirs/bench_data --recipe exp/k400/videomambapro_tiny_f8_res224.sh \\
        --model_clips_per_s 51
    # your own data: any of the three sources, with their lists (video_path label / folder total_frames label)
    python scripts/bench_data.py --recipe exp/k400/videomambapro_tiny_f8_res224.sh \\
        --videos_list k400/lists/val.csv --videos_root k400/videos --split , \\
        --resized_list k400/videos_320/val.csv --resized_root k400/videos_320 \\
        --bench_model_output bench_model.txt          # the step rate from scripts/bench_model.py's table

Each row builds the training dataset exactly as ``run_class_finetuning.py`` would for the recipe (its frames,
input size, sampling, ``--num_sample`` repeated augmentation, RandAugment, random erasing, flip) with the source's
list, and times ``dataset[i]`` in this process with one torch thread, as one loader worker runs it (decode, sample,
augment; ``num_sample`` clips per video). ``clips/s/worker`` is the clips the model receives per second from one
worker; ``workers/GPU`` = ceil(model clips/s per GPU / clips/s per worker), the ``--num_workers`` that keeps a GPU
fed at the model's step rate (``--model_clips_per_s``, or the row of ``--bench_model_output`` for the recipe's
model and frames). Readers: decord and PyAV on videos, OpenCV JPEG decoding on frame folders.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DEFAULT_RECIPE = os.path.join(ROOT, "exp", "k400", "videomambapro_tiny_f8_res224.sh")


def recipe_args(recipe: str):
    """The recipe's run_class_finetuning.py flags, parsed by its own parser (scripts/recipes_table.py)."""
    from scripts.recipes_table import capture, parse

    argv, _ = capture(recipe)
    if os.path.basename(argv[0]) != "run_class_finetuning.py":
        raise SystemExit(f"error: {recipe} does not run run_class_finetuning.py (a video recipe is needed)")
    return parse(argv)


def model_rate_from_bench(path: str, model: str, frames: int) -> float:
    """clips/s of ``model`` at ``frames`` in a saved scripts/bench_model.py table."""
    seen = []
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            parts = [p.split() for p in line.split("|")]
            if len(parts) < 2 or len(parts[0]) < 2 or not parts[0][0].isdigit() or not parts[1]:
                continue
            seen.append(f"{parts[0][1]} at {parts[0][0]} frames")
            if parts[0][1] == model and int(parts[0][0]) == frames:
                return float(parts[1][0])
    raise SystemExit(f"error: {path} has no bench_model.py row for {model} at {frames} frames (rows: "
                     f"{', '.join(seen) or 'none'}); pass --bench_model_name or --model_clips_per_s")


def time_loader(args, list_file: str, root: str, reader: str, rawframes: bool, items: int, warmup: int) -> dict:
    """Build the recipe's training dataset on ``list_file`` and time ``items`` reads of it."""
    import torch

    from datasets import build_dataset

    a = argparse.Namespace(**vars(args))
    a.train_list, a.data_root, a.video_reader, a.use_rawframes = list_file, root, reader, rawframes
    a.max_bad_samples = 0
    torch.set_num_threads(1)
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()):
        ds, _ = build_dataset(True, False, a)
    n = len(ds)
    for i in range(warmup):
        ds[i % n]
    t0 = time.perf_counter()
    for i in range(items):
        item = ds[(warmup + i) % n]
    dt = time.perf_counter() - t0
    clip = item[0][0] if isinstance(item[0], list) else item[0]
    return {"videos_per_s": items / dt, "clips_per_s": items * ds.num_sample / dt, "clip_shape": tuple(clip.shape),
            "num_sample": ds.num_sample}


def first_size(list_file: str, root: str, rawframes: bool, sep: str) -> str:
    from datasets.lists import read_list
    from datasets.video_io import probe_rawframes, probe_video

    s = read_list(list_file, "rawframe" if rawframes else "video", sep=sep, data_root=root)[0]
    p = probe_rawframes(s.path) if rawframes else probe_video(s.path)
    return f"{p.width}x{p.height}, {p.frames} frames"


def write_synthetic(out: str, num_videos: int, width: int, height: int, frames: int, fps: int, seed: int = 0) -> dict:
    """Videos of the synthetic motion classes at ``width x height`` (a 64 px clip scaled up, plus noise so the
    encoder has detail to code), H.264; returns the list and root. Existing files are kept (rerunnable)."""
    import av
    import cv2
    import numpy as np

    from datasets.synthetic import make_clip

    videos = os.path.join(out, "videos")
    os.makedirs(videos, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_videos):
        label = i % 4
        name = f"v{i:03d}_{label}.mp4"
        rows.append(f"{name} {label}\n")
        path = os.path.join(videos, name)
        if os.path.isfile(path):
            continue
        small = make_clip(label, rng, frames=frames, size=64)
        tmp = os.path.join(videos, f".{name}.part.mp4")
        with av.open(tmp, mode="w") as c:
            st = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
            st.width, st.height, st.pix_fmt = width, height, "yuv420p"
            for t in range(frames):
                img = cv2.resize(small[t], (width, height), interpolation=cv2.INTER_LINEAR)
                img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
                for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in st.encode():
                c.mux(p)
        os.replace(tmp, path)
    lst = os.path.join(out, "videos.csv")
    with open(lst, "w") as f:
        f.writelines(rows)
    return {"list": lst, "root": videos}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__[__doc__.index("Each row"):])
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help="an exp/*.sh video recipe (default: K400 Ti 8x224)")
    p.add_argument("--videos_list", help="list of the original videos (video_path label)")
    p.add_argument("--videos_root", default="")
    p.add_argument("--resized_list", help="list of the pre-resized videos")
    p.add_argument("--resized_root", default="")
    p.add_argument("--frames_list", help="3-column list of frame folders (original size)")
    p.add_argument("--frames_root", default="")
    p.add_argument("--resized_frames_list", help="3-column list of frame folders (pre-resized)")
    p.add_argument("--resized_frames_root", default="")
    p.add_argument("--split", dest="sep", default=" ", help="column separator of the lists")
    p.add_argument("--synthetic", metavar="DIR", help="write synthetic videos here, pre-resize and extract them with "
                   "scripts/prepare_videos.py, and time all six rows")
    p.add_argument("--synthetic_videos", type=int, default=6)
    p.add_argument("--synthetic_size", default="1280x720", help="WxH of the synthetic originals")
    p.add_argument("--synthetic_frames", type=int, default=250, help="frames per synthetic video (K400: 10 s x 25)")
    p.add_argument("--short_side", type=int, default=320, help="pre-resized short side (--synthetic)")
    p.add_argument("--readers", nargs="+", default=["decord", "pyav", "frames"], choices=("decord", "pyav", "frames"))
    p.add_argument("--items", type=int, default=12, help="videos timed per row")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--model_clips_per_s", type=float, default=None, help="the model's training clips/s per GPU")
    p.add_argument("--bench_model_output", default=None, help="a saved scripts/bench_model.py table")
    p.add_argument("--bench_model_name", default=None, help="its model row (default: the recipe's --model)")
    p.add_argument("--workers", type=int, default=0, help="processes for --synthetic preparation (0: all CPUs)")
    a = p.parse_args(argv)
    args = recipe_args(a.recipe)
    rate, rate_src = a.model_clips_per_s, "--model_clips_per_s"
    if a.bench_model_output:
        name = a.bench_model_name or args.model
        rate = model_rate_from_bench(a.bench_model_output, name, args.num_frames)
        rate_src = f"{os.path.basename(a.bench_model_output)} ({name}, {args.num_frames} frames)"
    sources = {}  # (source, kind) -> (list, root)
    if a.synthetic:
        from scripts.prepare_videos import prepare

        w, h = (int(x) for x in a.synthetic_size.lower().split("x"))
        t0 = time.time()
        syn = write_synthetic(a.synthetic, a.synthetic_videos, w, h, a.synthetic_frames, fps=25)
        quiet = lambda *x: None  # noqa: E731
        resized = os.path.join(a.synthetic, f"videos_{a.short_side}")
        need_frames = "frames" in a.readers
        prepare(syn["root"], lists=[syn["list"]], resize_out=resized,
                frames_out=os.path.join(a.synthetic, f"frames_{a.short_side}") if need_frames else None,
                short_side=a.short_side, workers=a.workers, log=quiet)
        if need_frames:
            prepare(syn["root"], lists=[syn["list"]], frames_out=os.path.join(a.synthetic, "frames"), short_side=0,
                    workers=a.workers, log=quiet)
        print(f"[bench_data] synthetic set in {a.synthetic} ({a.synthetic_videos} videos {w}x{h}, "
              f"{a.synthetic_frames} frames; prepared in {time.time() - t0:.0f} s)", flush=True)
        sources[("original", "video")] = (syn["list"], syn["root"])
        sources[("pre-resized", "video")] = (os.path.join(resized, "videos.csv"), resized)
        if need_frames:
            fr = os.path.join(a.synthetic, "frames")
            rfr = os.path.join(a.synthetic, f"frames_{a.short_side}")
            sources[("original", "frames")] = (os.path.join(fr, "videos.csv"), fr)
            sources[("pre-resized", "frames")] = (os.path.join(rfr, "videos.csv"), rfr)
        args.split = " "
    else:
        for src, kind, lst, root in (("original", "video", a.videos_list, a.videos_root),
                                     ("pre-resized", "video", a.resized_list, a.resized_root),
                                     ("original", "frames", a.frames_list, a.frames_root),
                                     ("pre-resized", "frames", a.resized_frames_list, a.resized_frames_root)):
            if lst:
                sources[(src, kind)] = (lst, root)
        if not sources:
            raise SystemExit("error: pass --synthetic DIR or at least one of --videos_list / --resized_list / "
                             "--frames_list / --resized_frames_list")
        args.split = a.sep
    rows = []
    for (src, kind), (lst, root) in sources.items():
        for reader in a.readers:
            if (reader == "frames") != (kind == "frames"):
                continue
            r = time_loader(args, lst, root, "decord" if reader == "frames" else reader, kind == "frames",
                            a.items, a.warmup)
            rows.append((src, reader, first_size(lst, root, kind == "frames", args.split), r))
            print(f"[bench_data] {src} / {reader}: {r['clips_per_s']:.2f} clips/s", flush=True)
    print(f"\nrecipe {os.path.relpath(a.recipe, ROOT) if a.recipe.startswith(ROOT) else a.recipe}: {args.model}, "
          f"{args.num_frames} frames at {args.input_size}, num_sample {args.num_sample}, "
          f"{'dense rate ' + str(args.sampling_rate) if args.sampling_rate else 'sparse (TSN)'} sampling, aa "
          f"{args.aa}; {a.items} videos per row, one torch thread")
    if rate:
        print(f"model: {rate:g} clips/s per GPU ({rate_src})")
    base = {}
    for src, reader, _, r in rows:
        if src == "original":
            base[reader] = r["clips_per_s"]
    head = "| source | reader | first video | clips/s/worker | ms/video | x original |"
    head += " workers/GPU |" if rate else ""
    print("\n" + head)
    print("| " + " | ".join(["---"] * (head.count("|") - 1)) + " |")
    for src, reader, size, r in rows:
        ratio = r["clips_per_s"] / base[reader] if reader in base else float("nan")
        line = (f"| {src} | {reader} | {size} | {r['clips_per_s']:.2f} | {1000 / r['videos_per_s']:.0f} | "
                f"{ratio:.2f} |")
        if rate:
            line += f" {math.ceil(rate / r['clips_per_s'])} |"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
