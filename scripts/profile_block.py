"""What one training step of a model keeps for backward, what its scan launches, and whether each exp/ recipe's
per-GPU batch fits a GPU: measured on the CPU, no GPU needed.

    python scripts/profile_block.py                                  # Ti 64 x 224, batch 8, bf16, + recipes
    python scripts/profile_block.py --model videomambapro_small --num_frames 32 --no_recipes
    python scripts/profile_block.py --scan_backend triton            # the GPU path's host code, launches recorded
    python scripts/profile_block.py --mixer_recompute none --no_recipes   # keep every mixer intermediate

The Mamba models are profiled with the training default ``--mixer_recompute inner`` unless told otherwise (each
recipe with its own flag): the mixer keeps its in_proj input and output and recomputes the rest in the backward.

Saved bytes are counted with ``torch.autograd.graph.saved_tensors_hooks`` on each block of the real model,
deduplicated by storage, at a short clip (``--probe_frames``, batch 1) under bf16 autocast: what a block saves grows
linearly with the tokens (every saved tensor is (batch, tokens, ...), or a parameter or a cast of one, which are
counted apart, once per step), so bytes per token per block carry over to the full shape; the table shows the
tokens of both. (The triton scan's chunk-boundary states, one per 2,048 steps, weigh more per token at the probe's
length than at the full one: conservative.) The scan backend decides what the scan
saves: ``torch`` (the CPU default) or ``triton`` (the GPU default: the mixer as one fused node; its host code runs
as on a GPU with the Triton kernels replaced by launch recorders, so nothing is computed and no GPU is needed).
"kernels/block step" counts the aten operators one training step dispatches (forward and backward; views, aliases
and allocations left out) plus the recorded Triton launches, divided by the depth: the kernels one block step
launches on that path (eager; the torch path's count is a proxy, its ops are CPU kernels).
The recipe table predicts each recipe's activation memory per GPU: clips (batch x num_sample) x tokens x
(bytes per token per block of each block, checkpointed blocks keeping only their inputs) plus one block's
recompute, plus weights, gradients and AdamW states in fp32; against --gpu_gib (80).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from scripts import block_probes as probes  # noqa: E402  (scripts/block_probes.py: the counting and recording)


def recipe_rows(gpu_gib: float, dtype: str = "bf16", probe_frames: int = 2, cache=None, headroom: float = 0.85) -> list:
    """One row per exp/ video recipe: model, frames, size, clips per GPU, its checkpointing, predicted GiB, fits
    (under ``gpu_gib``), and the least checkpointing that fits ``headroom x gpu_gib`` (allocator slack, workspace
    and the transient tensors the count leaves out). Profiles are per (model, size) and reused across frames."""
    from scripts.recipes_table import capture, parse

    cache = {} if cache is None else cache
    rows = []
    for path in sorted(glob.glob(os.path.join(ROOT, "exp", "*", "*.sh"))):
        rel = os.path.relpath(path, os.path.join(ROOT, "exp"))
        if rel.split(os.sep)[0] in ("demo", "slurm", "imagenet", "upstream") or rel == "launch.sh":
            continue
        try:
            argv, _ = capture(path)
        except RuntimeError:
            continue
        if os.path.basename(argv[0]) != "run_class_finetuning.py":
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            a = parse(argv)
        mode = getattr(a, "mixer_recompute", None) or _default_recompute()
        key = (a.model, a.input_size, mode)
        if key not in cache:
            cache[key] = probes.profile_model(a.model, probe_frames, a.input_size, dtype, mode)
        prof = cache[key]
        tokens = probes.tokens_of(a.num_frames, a.input_size, a.tubelet_size or 1)
        clips = a.batch_size * max(1, a.num_sample)
        ck = a.checkpoint_num if a.use_checkpoint else None
        gib = probes.predict_gib(prof, clips, tokens, ck)
        least = probes.least_checkpointing(prof, clips, tokens, headroom * gpu_gib)
        rows.append(dict(recipe=rel, model=a.model, frames=a.num_frames, size=a.input_size, clips=clips,
                         tokens=tokens, checkpoint=_ck_name(ck), gib=gib, fits=gib <= gpu_gib,
                         least=_ck_name(least), least_gib=probes.predict_gib(prof, clips, tokens, least)))
    return rows


def _default_recompute() -> str:
    from run_class_finetuning import DEFAULT_MIXER_RECOMPUTE

    return DEFAULT_MIXER_RECOMPUTE


def _ck_name(ck) -> str:
    return "off" if ck is None else ("all" if ck <= 0 else str(ck))


def _table(header, rows) -> str:
    w = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in rows])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="videomambapro_tiny")
    p.add_argument("--compare", default="videomamba_tiny,timesformer_tiny",
                   help="comma-separated models profiled beside --model")
    p.add_argument("--num_frames", type=int, default=64)
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--probe_frames", type=int, default=2, help="frames of the measured clip (batch 1)")
    p.add_argument("--scan_backend", default=None,
                   help="torch (CPU default) or triton (the GPU path's host code, kernels recorded, not run)")
    p.add_argument("--mixer_recompute", choices=("none", "inner", "all"), default=None,
                   help="Mamba mixers' recompute mode (default: run_class_finetuning.py's, inner)")
    p.add_argument("--gpu_gib", type=float, default=80.0)
    p.add_argument("--headroom", type=float, default=0.85,
                   help="fraction of --gpu_gib the suggested checkpointing aims under (default 0.85)")
    p.add_argument("--no_recipes", action="store_true", help="skip the exp/ recipe memory table")
    p.add_argument("--step_split", action="store_true",
                   help="torch.profiler split of one block step at the full shape (scan, conv, norm, GEMMs, "
                        "copies/elementwise) on --split_device")
    p.add_argument("--split_device", default="cuda", help="cuda (the GPU figure) or cpu (a check of the code)")
    p.add_argument("--ptxas", action="store_true",
                   help="also compile the Triton kernels for sm_80 / sm_90 and print registers, spills, occupancy")
    args = p.parse_args(argv)
    if args.scan_backend:
        from mamba.ops.backend import set_scan_backend

        set_scan_backend(args.scan_backend)
    names = [args.model] + [m for m in args.compare.split(",") if m and m != args.model]
    tokens = probes.tokens_of(args.num_frames, args.input_size)
    rows, profs = [], {}
    mode = args.mixer_recompute or _default_recompute()
    for m in names:
        prof = profs[m] = probes.profile_model(m, args.probe_frames, args.input_size, args.dtype, mode)
        per, kept = prof["block_bytes_per_token"], prof["checkpointed_bytes_per_token"]
        rows.append([m, prof["probe_tokens"], f"{sum(per) / len(per):,.0f}", f"{sum(kept) / len(kept):,.0f}",
                     prof["ops_per_block_step"], f"{probes.predict_gib(prof, args.batch_size, tokens, None):.1f}",
                     f"{probes.predict_gib(prof, args.batch_size, tokens, 0):.1f}"])
    print(f"saved for backward per token per block ({args.dtype}, mixer recompute {mode}, measured at batch 1 x "
          f"{args.probe_frames} frames; "
          f"predicted GiB at batch {args.batch_size} x {args.num_frames} x {args.input_size} = {tokens:,} tokens)")
    print(_table(["model", "probe tokens", "B/token/block", "checkpointed", "kernels/block step", "GiB",
                  "GiB ckpt all"],
                 rows))
    out = dict(models=profs)
    main_prof = profs[args.model]
    if "mamba" in args.model:
        plan = probes.scan_row(main_prof, args.batch_size, tokens)
        out["scan"] = plan
        print(f"\nscan launches per block step at b={args.batch_size}, d_inner={2 * main_prof['embed_dim']}, "
              f"L={tokens:,}: {plan['launches']['fwd']} forward + {plan['launches']['bwd']} backward; "
              f"{plan['programs']:,} programs (grid {plan['grid']}), chunk {plan['chunk']}, "
              f"{plan['chunk_iterations']} sequential chunk iterations (both directions)")
        if main_prof["triton_launches_per_block_step"]:
            print(f"recorded on the triton path: {main_prof['scan_launches_per_block_step']:g} scan launches and "
                  f"{main_prof['triton_launches_per_block_step']:g} Triton launches in all per block step")
    if args.step_split:
        for m in names:
            sp = probes.step_split(m, args.num_frames, args.input_size, args.batch_size, args.split_device, mode, args.dtype)
            out.setdefault("split", {})[m] = sp
            print(f"\none block step of {m} on {sp['device']} (batch {sp['batch']} x {sp['tokens']:,} tokens, "
                  f"{args.dtype}): {sp['total_us'] / 1e3:.2f} ms, {sp['kernels']} kernels")
            print(_table(["category", "ms", "share", "kernels"],
                         [[r["category"], f"{r['us'] / 1e3:.2f}", f"{100 * r['share']:.0f}%", r["kernels"]]
                          for r in sp["rows"]]))
    if args.ptxas:
        out["ptxas"] = probes.ptxas_rows()
        print("\nptxas per kernel launch of one mixer layer (bf16 and fp32, VideoMambaPro and VideoMamba flags), "
              "compiled ahead of time")
        print(_table(["gpu", "kernel", "dtype", "warps", "registers", "spill st/ld B", "shared B", "warps/SM",
                      "limiter"],
                     [[r["gpu"], r["kernel"], r["job"].get("dtype", "bf16"), r["num_warps"], r["registers"],
                       f"{r['spill_stores']}/{r['spill_loads']}", r["shared"], r["warps_per_sm"], r["limiter"]]
                      for r in out["ptxas"]]))
    if not args.no_recipes:
        cache = {(m, args.input_size, mode): v for m, v in profs.items()}
        rr = recipe_rows(args.gpu_gib, args.dtype, args.probe_frames, cache, args.headroom)
        out["recipes"] = rr
        print(f"\npredicted activation + optimizer memory per GPU of each exp/ recipe (against {args.gpu_gib:g} GiB; "
              f"'least': the fewest checkpointed blocks under {args.headroom:g} x {args.gpu_gib:g} GiB)")
        print(_table(["recipe", "clips/GPU", "tokens", "act. ckpt", "GiB", "fits", "least", "GiB at least"],
                     [[r["recipe"], r["clips"], f"{r['tokens']:,}", r["checkpoint"], f"{r['gib']:.1f}",
                       "yes" if r["fits"] else "NO", r["least"], f"{r['least_gib']:.1f}"] for r in rr]))
    return out


if __name__ == "__main__":
    main()
