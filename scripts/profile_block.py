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

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PATCH = 16
_SKIP_OPS = ("detach", "view", "_unsafe_view", "alias", "t.default", "expand", "as_strided", "unsqueeze", "squeeze",
             "transpose", "permute", "slice", "select", "split", "chunk", "unbind", "lift_fresh",
             # allocations launch nothing either (zeros / zero_ / fill_ do, and are counted)
             "empty.", "empty_strided", "empty_like", "new_empty")


class _CountOps(TorchDispatchMode):
    """Aten operators dispatched (views, aliases and allocations left out: they launch nothing), and which storages
    hold parameters or what ops on parameters alone made (autocast's bf16 weight copies, a concatenation of
    weights): fixed-size, not per token."""

    def __init__(self, params=()):
        super().__init__()
        self.n = 0
        self.params = {p.untyped_storage().data_ptr() for p in params}
        self.param_copy: dict = {}  # storage -> whether its latest writer was a cast of a parameter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if not any(name.startswith("aten." + s) for s in _SKIP_OPS):
            self.n += 1
        out = func(*args, **(kwargs or {}))
        # an op on parameters only (a cast, autocast's copy, a concatenation of weights) makes a fixed-size tensor
        ins = [t for t in tree_leaves(args) if isinstance(t, torch.Tensor)]
        fixed = bool(ins) and all(self.is_fixed(t.untyped_storage().data_ptr()) for t in ins)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.param_copy[t.untyped_storage().data_ptr()] = fixed
        return out

    def is_fixed(self, ptr) -> bool:
        return ptr in self.params or self.param_copy.get(ptr, False)


class SavedBytes:
    """Bytes saved for backward inside a region, each storage counted once; with a ``_CountOps`` tracker, the
    parameters and their casts apart (``fixed``: they do not grow with the tokens)."""

    def __init__(self, tracker=None):
        self.storages: dict = {}
        self.fixed: dict = {}
        self.tracker = tracker

    def pack(self, t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            st = t.untyped_storage()
            fixed = self.tracker is not None and self.tracker.is_fixed(st.data_ptr())
            (self.fixed if fixed else self.storages)[(st.data_ptr(), t.device)] = st.nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    @property
    def total(self) -> int:
        return sum(self.storages.values())

    @property
    def fixed_total(self) -> int:
        return sum(self.fixed.values())


def tokens_of(num_frames: int, input_size: int, tubelet: int = 1) -> int:
    return (num_frames // tubelet) * (input_size // PATCH) ** 2 + 1


def _build(model: str, frames: int, size: int):
    import timm

    import models  # noqa: F401  (registers the architectures)

    return timm.create_model(model, pretrained=False, num_frames=frames, img_size=size, num_classes=400)


def profile_model(model: str, probe_frames: int = 2, size: int = 224, dtype: str = "bf16",
                  mixer_recompute: str | None = None) -> dict:
    """Measure one training step of ``model`` at (1, 3, probe_frames, size, size): bytes saved for backward per
    token by each block and outside the blocks, each block's input bytes per token (all that a checkpointed block
    keeps), and aten ops per block step."""
    torch.manual_seed(0)
    net = _build(model, probe_frames, size)
    if mixer_recompute and hasattr(net, "set_mixer_recompute"):
        net.set_mixer_recompute(mixer_recompute)
    net.train()
    x = torch.randn(1, 3, probe_frames, size, size)
    L = tokens_of(probe_frames, size, getattr(net, "tubelet_size", 1))
    blocks = list(getattr(net, "layers", None) or net.blocks)
    counter = _CountOps(net.parameters())
    per_block, outer = [SavedBytes(counter) for _ in blocks], SavedBytes(counter)
    stack = []

    inputs = [SavedBytes(counter) for _ in blocks]  # what a checkpointed block keeps: its inputs

    def pre(i):
        def f(mod, inp):
            for t in inp:
                inputs[i].pack(t)
            ctx = per_block[i].hooks()
            ctx.__enter__()
            stack.append(ctx)
        return f

    def post(mod, inp, out):
        stack.pop().__exit__(None, None, None)

    handles = [b.register_forward_pre_hook(pre(i)) for i, b in enumerate(blocks)]
    handles += [b.register_forward_hook(post) for b in blocks]
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with _triton_recorder() as launches:
        try:
            with cast, outer.hooks(), counter:
                out = net(x)
                out.float().sum().backward()
        finally:
            for h in handles:
                h.remove()
    block_bytes = [b.total for b in per_block]
    outer_bytes = max(0, outer.total - sum(block_bytes))  # the outer hooks see the blocks' tensors too
    n_params = sum(p.numel() for p in net.parameters())
    names = [getattr(k, "fn", k).__name__ for k, *_ in launches]
    depth = len(blocks)
    return dict(model=model, probe_tokens=L, depth=depth, embed_dim=net.embed_dim, n_params=n_params,
                block_bytes_per_token=[b / L for b in block_bytes], outer_bytes_per_token=outer_bytes / L,
                checkpointed_bytes_per_token=[b.total / L for b in inputs],
                fixed_bytes=outer.fixed_total,
                ops_per_block_step=round((counter.n + len(launches)) / depth),
                triton_launches_per_block_step=round(len(launches) / depth, 2),
                scan_launches_per_block_step=round(sum(n.startswith("_scan") for n in names) / depth, 2))


@contextlib.contextmanager
def _triton_recorder():
    """With the triton scan backend: the Triton kernels replaced by launch recorders (the real host code runs, on
    CPU tensors, and nothing is launched: outputs are left unwritten), yielding the recorded launches."""
    from mamba.ops.backend import get_scan_backend

    if get_scan_backend() != "triton":
        yield []
        return
    from mamba.ops import conv_triton, rms_norm_triton, scan_triton, triton_aot

    with triton_aot.recording(scan_triton, conv_triton, rms_norm_triton) as calls:
        yield calls


def predict_gib(prof: dict, clips: int, tokens: int, checkpoint_num: int | None) -> float:
    """Predicted GiB per GPU for ``clips`` clips of ``tokens`` tokens; ``checkpoint_num``: None = no activation
    checkpointing, <= 0 = all blocks, else the first N blocks."""
    full = prof["block_bytes_per_token"]
    depth = len(full)
    n_ckpt = 0 if checkpoint_num is None else (depth if checkpoint_num <= 0 else min(depth, checkpoint_num))
    kept = prof["checkpointed_bytes_per_token"]
    per_token = sum(kept[:n_ckpt]) + sum(full[n_ckpt:]) + prof["outer_bytes_per_token"]
    if n_ckpt:
        per_token += max(full)  # one block recomputed at a time in the backward
    states = prof["n_params"] * 16  # fp32 weights, gradients, AdamW exp_avg and exp_avg_sq
    fixed = prof.get("fixed_bytes", 0)  # saved casts of the weights (autocast's bf16 copies), once per step
    return (clips * tokens * per_token + states + fixed) / 2 ** 30


def least_checkpointing(prof: dict, clips: int, tokens: int, budget_gib: float):
    """The fewest checkpointed blocks (first N) whose prediction fits ``budget_gib``: None when none are needed,
    0 (all blocks) when even all do not fit or all are needed."""
    depth = len(prof["block_bytes_per_token"])
    if predict_gib(prof, clips, tokens, None) <= budget_gib:
        return None
    for n in range(1, depth):
        if predict_gib(prof, clips, tokens, n) <= budget_gib:
            return n
    return 0


def scan_row(model_prof: dict, batch: int, tokens: int) -> dict:
    from mamba.ops.scan_triton import scan_launch_plan

    return scan_launch_plan(batch, 2 * model_prof["embed_dim"], tokens)


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
            cache[key] = profile_model(a.model, probe_frames, a.input_size, dtype, mode)
        prof = cache[key]
        tokens = tokens_of(a.num_frames, a.input_size, a.tubelet_size or 1)
        clips = a.batch_size * max(1, a.num_sample)
        ck = a.checkpoint_num if a.use_checkpoint else None
        gib = predict_gib(prof, clips, tokens, ck)
        least = least_checkpointing(prof, clips, tokens, headroom * gpu_gib)
        rows.append(dict(recipe=rel, model=a.model, frames=a.num_frames, size=a.input_size, clips=clips,
                         tokens=tokens, checkpoint=_ck_name(ck), gib=gib, fits=gib <= gpu_gib,
                         least=_ck_name(least), least_gib=predict_gib(prof, clips, tokens, least)))
    return rows


_PTXAS_CHILD = """
import json, sys
from mamba.ops import conv_triton, rms_norm_triton, scan_triton, triton_aot
json.dump(triton_aot.aot_report([scan_triton, conv_triton, rms_norm_triton], "default"), sys.stdout)
"""


def ptxas_rows() -> list:
    """``triton_aot.aot_report`` of the scan and conv kernels (the default job matrix, sm_80 and sm_90), in a fresh
    interpreter without ``TRITON_INTERPRET`` (under it triton builds interpreter-only kernels)."""
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _PTXAS_CHILD], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("ahead-of-time compilation failed:\n" + r.stderr[-4000:])
    return json.loads(r.stdout)


def _default_recompute() -> str:
    from run_class_finetuning import DEFAULT_MIXER_RECOMPUTE

    return DEFAULT_MIXER_RECOMPUTE


def _ck_name(ck) -> str:
    return "off" if ck is None else ("all" if ck <= 0 else str(ck))


def _table(header, rows) -> str:
    w = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in rows])


# kernel / operator name fragments per category of the step split (first match wins; the rest: copies/elementwise)
SPLIT_CATEGORIES = (
    ("scan", ("_scan_", "selective_scan")),
    ("conv", ("_conv_", "causal_conv1d", "conv1d", "convolution")),
    ("norm", ("_norm_", "rms_norm", "layer_norm")),
    ("GEMM", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
              "aten::linear", "aten::matmul")),
)


def split_category(name: str) -> str:
    low = name.lower()
    for cat, keys in SPLIT_CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "copies/elementwise"


class _Grabbed(Exception):
    pass


def step_split(model: str = "videomambapro_tiny", frames: int = 64, size: int = 224, batch: int = 8,
               device: str = "cuda", mixer_recompute: str | None = None, dtype: str = "bf16") -> dict:
    """``torch.profiler`` split of one training step of one block (the middle one) of ``model`` at the full shape:
    time per category (scan, conv, norm, GEMM, copies/elementwise) and kernels launched. On a GPU the CUDA kernels'
    self time; on the CPU (a check of this code, not a GPU figure) the aten operators' self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    net = _build(model, frames, size)
    if mixer_recompute and hasattr(net, "set_mixer_recompute"):
        net.set_mixer_recompute(mixer_recompute)
    net = net.to(device).train()
    blocks = list(getattr(net, "layers", None) or net.blocks)
    blk = blocks[len(blocks) // 2]
    L = tokens_of(frames, size, getattr(net, "tubelet_size", 1))
    cast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")
    cuda = device == "cuda"
    seen = {}

    def grab(mod, args, kwargs):  # the block's real inputs at the full shape (whatever its signature)
        seen.update(args=[a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args], kwargs=kwargs)
        raise _Grabbed

    hook = blk.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad(), cast:
            net(torch.randn(batch, 3, frames, size, size, device=device))
    except _Grabbed:
        pass
    finally:
        hook.remove()
    args = [a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in seen["args"]]

    def step():
        with cast:
            out = blk(*args, **seen["kwargs"])
            outs = out if isinstance(out, tuple) else (out,)
            sum(o.float().sum() for o in outs if isinstance(o, torch.Tensor)).backward()

    step()  # compiles the Triton kernels, warms the allocator
    if cuda:
        torch.cuda.synchronize()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    times, counts = {}, {}
    for e in prof.events():
        if cuda:
            if e.device_type != torch.autograd.DeviceType.CUDA:
                continue
            t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        else:
            if not e.name.startswith("aten::") or any(e.name == "aten::" + s.rstrip(".") for s in _SKIP_OPS) \
                    or e.cpu_parent is not None:
                continue
            t = e.cpu_time_total
        cat = split_category(e.name)
        times[cat] = times.get(cat, 0.0) + t
        counts[cat] = counts.get(cat, 0) + 1
    total = sum(times.values()) or 1.0
    rows = [dict(category=c, us=times.get(c, 0.0), share=times.get(c, 0.0) / total, kernels=counts.get(c, 0))
            for c in [c for c, _ in SPLIT_CATEGORIES] + ["copies/elementwise"]]
    return dict(model=model, device=device, tokens=L, batch=batch, rows=rows, total_us=total,
                kernels=sum(counts.values()))


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
    tokens = tokens_of(args.num_frames, args.input_size)
    rows, profs = [], {}
    mode = args.mixer_recompute or _default_recompute()
    for m in names:
        prof = profs[m] = profile_model(m, args.probe_frames, args.input_size, args.dtype, mode)
        per, kept = prof["block_bytes_per_token"], prof["checkpointed_bytes_per_token"]
        rows.append([m, prof["probe_tokens"], f"{sum(per) / len(per):,.0f}", f"{sum(kept) / len(kept):,.0f}",
                     prof["ops_per_block_step"], f"{predict_gib(prof, args.batch_size, tokens, None):.1f}",
                     f"{predict_gib(prof, args.batch_size, tokens, 0):.1f}"])
    print(f"saved for backward per token per block ({args.dtype}, mixer recompute {mode}, measured at batch 1 x "
          f"{args.probe_frames} frames; "
          f"predicted GiB at batch {args.batch_size} x {args.num_frames} x {args.input_size} = {tokens:,} tokens)")
    print(_table(["model", "probe tokens", "B/token/block", "checkpointed", "kernels/block step", "GiB",
                  "GiB ckpt all"],
                 rows))
    out = dict(models=profs)
    main_prof = profs[args.model]
    if "mamba" in args.model:
        plan = scan_row(main_prof, args.batch_size, tokens)
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
            sp = step_split(m, args.num_frames, args.input_size, args.batch_size, args.split_device, mode, args.dtype)
            out.setdefault("split", {})[m] = sp
            print(f"\none block step of {m} on {sp['device']} (batch {sp['batch']} x {sp['tokens']:,} tokens, "
                  f"{args.dtype}): {sp['total_us'] / 1e3:.2f} ms, {sp['kernels']} kernels")
            print(_table(["category", "ms", "share", "kernels"],
                         [[r["category"], f"{r['us'] / 1e3:.2f}", f"{100 * r['share']:.0f}%", r["kernels"]]
                          for r in sp["rows"]]))
    if args.ptxas:
        out["ptxas"] = ptxas_rows()
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
