#!/usr/bin/env python
"""One comparison table of models trained by the same loop on the same data (e.g. exp/demo/baselines.sh):
per run its model, parameters, analytic GFLOPs per clip (scripts/count_flops.py at the run's frames, input size
and tubelet), epochs, best validation top-1, the multi-view test top-1 and the wall time in minutes.

    python scripts/baseline_table.py output/baselines/videomambapro_demo output/baselines/timesformer_demo ... \\
        [--csv table.csv] [--chance 25]

The runs are read by scripts/ablation_table.py's reader (log.txt, args.yaml / checkpoint model_cfg,
demo_summary.json for the time); a folder without a readable log.txt is an error naming it. ``--chance P``
adds a column saying whether each model's test top-1 beats P percent.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

from ablation_table import collect  # noqa: E402  (this folder)
from ablation_table import format_table as _format_table  # noqa: E402
from count_flops import count_model  # noqa: E402

COLUMNS = ("model", "params_M", "GFLOPs", "epochs", "best_val_top1", "test_top1", "time_min")


def _gflops(run_dir: str, model: str):
    y = os.path.join(run_dir, "args.yaml")
    if not model or not os.path.isfile(y):
        return None
    import yaml

    with open(y) as f:
        a = yaml.safe_load(f) or {}
    try:
        c = count_model(model, int(a["num_frames"]), int(a["input_size"]), int(a.get("nb_classes") or 400),
                        int(a.get("tubelet_size") or 1))
    except (KeyError, TypeError, ValueError):
        return None
    return c["total"] / 1e9


def rows_for(run_dirs: List[str], chance=None) -> List[dict]:
    rows = []
    for d, r in zip(run_dirs, collect(run_dirs)):
        row = {"model": r["model"] or r["run"], "params_M": r["params_M"], "GFLOPs": _gflops(d, r["model"]),
               "epochs": r["epochs"], "best_val_top1": r["best_val_top1"], "test_top1": r["final_top1"],
               "time_min": r["time_min"]}
        if chance is not None:
            row["beats_chance"] = None if r["final_top1"] is None else bool(r["final_top1"] > chance)
        rows.append(row)
    return rows


def format_table(rows: List[dict]) -> str:
    """A Markdown table (readable as plain text too): the ablation table's layout with this table's columns."""
    return _format_table(rows, list(rows[0]) if rows else list(COLUMNS))


def main(argv=None) -> List[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="output folders of the runs to compare")
    p.add_argument("--csv", default=None, help="also write the table as CSV")
    p.add_argument("--chance", type=float, default=None, help="chance top-1 in percent (adds beats_chance)")
    a = p.parse_args(argv)
    rows = rows_for(a.run_dirs, a.chance)
    print(format_table(rows))
    if a.csv:
        import csv

        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
