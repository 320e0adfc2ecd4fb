"""The counting and recording machinery of scripts/profile_block.py: aten operators dispatched per step, bytes saved
for backward per token by each block (``saved_tensors_hooks``, one storage counted once), Triton launches recorded
instead of run, the memory a recipe is predicted to need, the scan's launch plan, ptxas figures of the kernels and a
``torch.profiler`` split of one block step. profile_block.py prints the tables; see its docstring for the method."""
from __future__ import annotations

import contextlib
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


