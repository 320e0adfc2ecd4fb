#!/usr/bin/env python
"""Evaluate VideoMamba's released checkpoints on your lists with upstream's test views; published vs measured.

    python scripts/eval_zoo.py --list                                   # the tags (models/zoo.py)
    python scripts/eval_zoo.py videomamba_tiny.k400_f8_res224 videomamba_small.k400_f16_res224 \\
        --data_path /data/k400/lists --data_root /data/k400/videos --split ,
    python scripts/eval_zoo.py videomamba_middle.ssv2_f16_res224 --data_path /data/ssv2/lists \\
        --data_root /data/ssv2/rawframes -- --batch_size 4            # more run_class_finetuning.py flags after --

    python scripts/eval_zoo.py --merge PRED_DIR [--num_files 8]   # merge 0.txt .. N-1.txt written by VideoMamba's
                                                                 # final_test (or ours) and print top-1 / top-5

Each tag runs ``run_class_finetuning.py --eval`` with the checkpoint (fetched into the Hugging Face cache, or read
from it with HF_HUB_OFFLINE=1), its frames and input size, and the test views of VideoMamba's scripts (K400:
4 temporal x 3 spatial; SSV2: 2 x 3; Breakfast 4 x 3, COIN 10 x 3), sampled, resized and cropped as VideoMamba's
evaluation does (its Kinetics_sparse / SSV2 dataset classes: see the README's table); it prints that sampling
convention, then one table with it.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from models.zoo import ZOO  # noqa: E402

# Breakfast / COIN: upstream trains and tests them as Kinetics_sparse lists (path,label) with --nb_classes 10 / 180.
DATA_SETS = {"K400": ("Kinetics-400", 400), "SSV2": ("SSV2", 174), "Breakfast": ("Kinetics_sparse", 10),
             "COIN": ("Kinetics_sparse", 180)}


def evaluable(name: str) -> bool:
    e = ZOO.get(name)
    return e is not None and e.dataset in DATA_SETS and e.num_frames is not None


def build_argv(name: str, data_path: str, data_root: str = "", split: str = " ", output_dir: str = "",
               extra=()) -> list:
    """run_class_finetuning.py flags that evaluate ``name`` as VideoMamba's scripts test it."""
    e = ZOO[name]
    if not evaluable(name):
        raise SystemExit(f"error: {name} is not a K400 / SSV2 / Breakfast / COIN classifier checkpoint (see --list)")
    data_set, nb = DATA_SETS[e.dataset]
    segments, crops = e.test_views
    out = output_dir or os.path.join(ROOT, "work_dirs", "eval_zoo", name.replace(".", "_"))
    return ["--eval", "--model", e.model, "--finetune", name, "--defaults", "videomamba", "--num_frames",
            str(e.num_frames), "--tubelet_size", "1", "--input_size", str(e.img_size), "--short_side_size",
            str(e.img_size), "--test_num_segment", str(segments), "--test_num_crop", str(crops), "--data_set",
            data_set, "--nb_classes", str(nb), "--data_path", data_path, "--data_root", data_root, "--split", split,
            "--output_dir", out, "--no_auto_resume", *extra]


def list_table() -> str:
    rows = ["| tag | file | dataset | frames | size | classes | published top-1 | test views |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, e in ZOO.items():
        views = f"{e.test_views[0]} x {e.test_views[1]}" if e.test_views else "-"
        rows.append(f"| {name} | {e.file} | {e.dataset} | {e.num_frames or '-'} | {e.img_size} | {e.num_classes} | "
                    f"{e.top1 if e.top1 is not None else '-'} | {views} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("tags", nargs="*", help="zoo tags, e.g. videomamba_tiny.k400_f8_res224")
    p.add_argument("--list", action="store_true", help="print the released checkpoints and exit")
    p.add_argument("--data_path", default="", help="folder with test.csv (or pass --test_list after --)")
    p.add_argument("--data_root", "--prefix", dest="data_root", default="")
    p.add_argument("--split", default=" ")
    p.add_argument("--output_dir", default="", help="default work_dirs/eval_zoo/<tag>")
    p.add_argument("--merge", default="", metavar="PRED_DIR",
                   help="only merge the prediction files 0.txt .. N-1.txt in PRED_DIR (VideoMamba's final_test "
                        "output, with its accuracy line, or ours) and print top-1 / top-5")
    p.add_argument("--num_files", type=int, default=0, help="with --merge: N (default: every consecutive N.txt)")
    a = p.parse_args(argv)
    if a.merge:
        return merge_dir(a.merge, a.num_files)
    if a.list or not a.tags:
        print(list_table())
        return 0
    import run_class_finetuning as rcf
    from datasets.build import sampling_convention
    from utils.config import parse_with_config

    results = []
    for name in a.tags:
        out = os.path.join(a.output_dir, name.replace(".", "_")) if a.output_dir else ""
        flags = build_argv(name, a.data_path, a.data_root, a.split, out, extra)
        print("[eval_zoo] python run_class_finetuning.py " + " ".join(flags), flush=True)
        from engines.runner import run

        args = parse_with_config(rcf.get_args_parser(), flags)
        convention = sampling_convention(args, test_mode=True)
        print(f"[eval_zoo] {name}: sampling convention {convention}", flush=True)
        rcf.log_scan_backend(args)
        res = run(args, rcf.wiring())
        results.append((name, res, convention))
    print("\n| tag | published top-1 | measured top-1 | difference | videos | sampling |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, res, convention in results:
        e = ZOO[name]
        got = res.get("Final top-1")
        diff = f"{got - e.top1:+.2f}" if isinstance(got, (int, float)) and e.top1 is not None else "-"
        shown = f"{got:.2f}" if isinstance(got, (int, float)) else "-"
        print(f"| {name} | {e.top1} | {shown} | {diff} | {res.get('n_videos', '-')} | {convention.split(':')[0]} |")
    print("\nsampling: " + "; ".join(sorted({c for _, _, c in results})))
    return 0


def merge_dir(pred_dir: str, num_files: int = 0) -> int:
    """Merge the per-rank prediction files of ``pred_dir`` (upstream's or ours) and print the result."""
    from engines.evaluate import merge

    if num_files < 1:
        while os.path.isfile(os.path.join(pred_dir, f"{num_files}.txt")):
            num_files += 1
        if num_files == 0:
            raise SystemExit(f"error: no prediction file {os.path.join(pred_dir, '0.txt')}")
    res = merge(pred_dir, num_files)
    print(f"top-1 {res['top1']:.2f} top-5 {res['top5']:.2f} over {res['n_videos'] + res['n_unreadable']} videos "
          f"({res['n_views']} views)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
