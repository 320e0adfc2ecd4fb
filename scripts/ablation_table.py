#!/usr/bin/env python
"""One comparison table from several run_class_finetuning.py output folders (e.g. exp/demo/ablation_grid.sh).

    python scripts/ablation_table.py output/ablation/videomamba output/ablation/mask_only ... [--csv table.csv]

Per run it reads OUTPUT_DIR/log.txt (JSON lines: per-epoch stats, then the "Final top-1" line), the model
options from OUTPUT_DIR/args.yaml or the checkpoint's ``model_cfg``, and the wall time from
OUTPUT_DIR/demo_summary.json (written by run_demo.py) or, failing that, the time between args.yaml and the
last log.txt write. A folder without a readable log.txt is an error naming it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from run_demo import read_log  # noqa: E402  (log.txt summary, shared with the demo)

COLUMNS = ("run", "model", "bwd_mask", "residual_start", "params_M", "epochs", "best_val_top1", "final_top1",
           "final_top5", "time_min")


def _model_options(output_dir: str) -> dict:
    """model / bwd_mask / residual_start of a run: checkpoint model_cfg (resolved options) first, then args.yaml."""
    opts = {}
    y = os.path.join(output_dir, "args.yaml")
    if os.path.isfile(y):
        import yaml

        with open(y) as f:
            a = yaml.safe_load(f) or {}
        opts.update({k: a.get(k) for k in ("model", "bwd_mask", "residual_start")})
    for name in ("checkpoint-latest.pth", "checkpoint-best.pth"):
        p = os.path.join(output_dir, name)
        if os.path.isfile(p):
            try:
                from models.checkpoint import load_checkpoint_file

                cfg = load_checkpoint_file(p).get("model_cfg") or {}
            except RuntimeError as e:
                print(f"warning: {e}")
                continue
            opts.update({k: cfg[k] for k in ("model", "bwd_mask", "residual_start") if cfg.get(k) is not None})
            break
    return opts


def _wall_time(output_dir: str) -> Optional[float]:
    s = os.path.join(output_dir, "demo_summary.json")
    if os.path.isfile(s):
        with open(s) as f:
            w = json.load(f).get("wall_s")
        if w is not None:
            return float(w)
    y, log = os.path.join(output_dir, "args.yaml"), os.path.join(output_dir, "log.txt")
    if os.path.isfile(y) and os.path.isfile(log):
        return max(os.path.getmtime(log) - os.path.getmtime(y), 0.0)
    return None


def collect(run_dirs: List[str]) -> List[dict]:
    rows = []
    for d in run_dirs:
        s = read_log(d)
        o = _model_options(d)
        w = _wall_time(d)
        rows.append({"run": os.path.basename(os.path.normpath(d)), "model": o.get("model"),
                     "bwd_mask": o.get("bwd_mask"), "residual_start": o.get("residual_start"),
                     "params_M": None if s["n_parameters"] is None else s["n_parameters"] / 1e6,
                     "epochs": s["epochs"], "best_val_top1": s["best_val_acc1"], "final_top1": s["top1"],
                     "final_top5": s["top5"], "time_min": None if w is None else w / 60})
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def format_table(rows: List[dict], columns: Optional[List[str]] = None) -> str:
    """A Markdown table of ``columns`` (default: this table's) (readable as plain text too)."""
    columns = list(COLUMNS if columns is None else columns)
    cells = [[_fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = lambda xs: "| " + " | ".join(x.ljust(w) for x, w in zip(xs, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(x) for x in cells])


def main(argv=None) -> List[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="output folders of the runs to compare")
    p.add_argument("--csv", default=None, help="also write the table as CSV")
    a = p.parse_args(argv)
    rows = collect(a.run_dirs)
    print(format_table(rows))
    if a.csv:
        import csv

        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
