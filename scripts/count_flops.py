#!/usr/bin/env python
"""Analytic parameter and FLOP counts of VideoMambaPro / VideoMamba (Ti/S/M) and the baselines (TimeSformer,
ViViT factorised encoder, VideoMambaOut) at given frames and size.

FLOPs are counted as multiply-accumulates (the fvcore convention used in the VideoMamba papers: one
MAC = one "FLOP"). ``proj`` counts the linear projections only (for Mamba in_proj, x_proj, dt_proj, out_proj;
for the transformers qkv, proj, MLP; for the gated CNN fc1, fc2; plus patch embedding and head); ``total`` adds
the token mixing that is not a linear layer: for Mamba the depthwise convs, the selective scans (9 E N per token
and direction, mamba_ssm's ``selective_scan_flop_jit`` count), the D skip, the gate, the VideoMambaPro mask
(B.C per token plus 2 E) and the RMSNorms; for the transformers the attention products (QK^T and AV); for the
gated CNN the depthwise 3-D convolution and the gate. The two VideoMambaPro changes add under 0.1% FLOPs.
The transformer counts match the papers: TimeSformer-B 8x224 196 G per view (reported as 0.59 TFLOPs for 3
views), ViViT-B FE 32x224 (tubelet 2) about 284 G.

    python scripts/count_flops.py --frames 8 16 32 64 --size 224
    python scripts/count_flops.py --models videomambapro_tiny timesformer_tiny vivit_tiny videomambaout_tiny
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models._common import MODEL_SIZES as SIZES  # noqa: E402  (VideoMamba's sizes: name -> (embed_dim, depth))


def count(size, frames, img, num_classes=400, tubelet=1, patch=16, d_state=16, d_conv=4, expand=2, pro=True):
    d, depth = SIZES[size]
    E, N, R = expand * d, d_state, math.ceil(d / 16)
    n = (img // patch) ** 2
    Tp = frames // tubelet
    L = 1 + n * Tp
    per_layer_params = (d * 2 * E + E * d + d  # in_proj, out_proj, norm
                        + 2 * (E * d_conv + E + E * (R + 2 * N) + R * E + E + E * N + E))
    params = depth * per_layer_params + 3 * tubelet * patch * patch * d + d + d + (n + 1) * d + Tp * d + d
    params += d * num_classes + num_classes
    patch_macs = n * Tp * 3 * tubelet * patch * patch * d
    proj_tok = d * 2 * E + 2 * (E * (R + 2 * N) + R * E) + E * d
    other_tok = 2 * (E * d_conv + 9 * E * N + E) + E + 2 * d  # convs, scans, D, gate, norm
    if pro:
        other_tok += N + 2 * E  # backward mask: sum_n B*C, then delta*u*(.)
    proj = depth * L * proj_tok + patch_macs + d * num_classes
    total = proj + depth * L * other_tok + 2 * L * d
    return dict(params=params, tokens=L, proj=proj, total=total)


def count_timesformer(d, depth, frames, img, num_classes=400, tubelet=1, patch=16, mlp_ratio=4):
    """TimeSformer (divided space-time): per block temporal attention over T' frames at each of n locations,
    spatial attention over 1 + n tokens in each frame (the cls token copied in), the MLP on 1 + T' n tokens."""
    n, Tp = (img // patch) ** 2, frames // tubelet
    L = 1 + n * Tp
    h = int(d * mlp_ratio)
    blk_params = 2 * (4 * d * d + 4 * d) + d * d + d + 3 * 2 * d + 2 * d * h + h + d
    params = depth * blk_params + 3 * tubelet * patch * patch * d + d + d + (n + 1) * d + Tp * d + 2 * d
    params += d * num_classes + num_classes
    proj_blk = (4 * d * d + d * d) * Tp * n + 4 * d * d * Tp * (n + 1) + 2 * d * h * L
    attn_blk = 2 * n * Tp * Tp * d + 2 * Tp * (n + 1) ** 2 * d
    patch_macs = n * Tp * 3 * tubelet * patch * patch * d
    proj = depth * proj_blk + patch_macs + d * num_classes
    return dict(params=params, tokens=L, proj=proj, total=proj + depth * attn_blk)


def count_vivit(d, depth, temporal_depth, frames, img, num_classes=400, tubelet=2, patch=16, mlp_ratio=4):
    """ViViT factorised encoder: ``depth`` blocks over the 1 + n tokens of each of T' tubelet frames, then
    ``temporal_depth`` blocks over 1 + T' frame tokens."""
    n, Tp = (img // patch) ** 2, frames // tubelet
    h = int(d * mlp_ratio)
    blk_params = 4 * d * d + 4 * d + 2 * d * h + h + d + 4 * d
    params = (depth + temporal_depth) * blk_params + 3 * tubelet * patch * patch * d + d + d + (n + 1) * d
    params += d + Tp * d + 4 * d + d * num_classes + num_classes
    s_tok, t_tok = Tp * (n + 1), Tp + 1
    proj = (depth * s_tok + temporal_depth * t_tok) * (4 * d * d + 2 * d * h)
    proj += n * Tp * 3 * tubelet * patch * patch * d + d * num_classes
    attn = depth * Tp * 2 * (n + 1) ** 2 * d + temporal_depth * 2 * t_tok ** 2 * d
    return dict(params=params, tokens=s_tok, proj=proj, total=proj + attn)


def count_videomambaout(d, depth, frames, img, num_classes=400, tubelet=1, patch=16, expansion=8 / 3,
                        kernel=(3, 7, 7)):
    """VideoMambaOut: per token and block fc1 (d -> 2h), fc2 (h -> d), a depthwise k_t x k_h x k_w conv on
    d channels and the gate; no cls token (mean-pooled head)."""
    n, Tp = (img // patch) ** 2, frames // tubelet
    L = n * Tp
    h = int(expansion * d)
    k = kernel[0] * kernel[1] * kernel[2]
    blk_params = 2 * d + d * 2 * h + 2 * h + d * k + d + h * d + d
    params = depth * blk_params + 3 * tubelet * patch * patch * d + d + n * d + Tp * d + 2 * d
    params += d * num_classes + num_classes
    proj = depth * L * 3 * h * d + L * 3 * tubelet * patch * patch * d + d * num_classes
    total = proj + depth * L * (d * k + h + d)  # conv, gate, norm
    return dict(params=params, tokens=L, proj=proj, total=total)


def count_model(name, frames, img, num_classes=400, tubelet=None):
    """Analytic counts of a registered model name (``videomambapro_tiny``, ``timesformer_base``, ...) or a bare
    VideoMamba size (``tiny``: VideoMambaPro). ``tubelet`` None: the model's usual one (ViViT 2, others 1)."""
    if name in SIZES:
        name = f"videomambapro_{name}"
    arch, _, size = name.partition("_")
    if arch in ("videomambapro", "videomamba") and size in SIZES:
        return count(size, frames, img, num_classes, tubelet or 1, pro=arch == "videomambapro")
    if arch == "timesformer":
        from models.timesformer import TIMESFORMER_SIZES

        d, depth, _ = TIMESFORMER_SIZES[size]
        return count_timesformer(d, depth, frames, img, num_classes, tubelet or 1)
    if arch == "vivit":
        from models.vivit import VIVIT_SIZES

        d, depth, t_depth, _ = VIVIT_SIZES[size]
        return count_vivit(d, depth, t_depth, frames, img, num_classes, tubelet or 2)
    if arch == "videomambaout":
        from models.videomambaout import MAMBAOUT_SIZES

        d, depth = MAMBAOUT_SIZES[size]
        return count_videomambaout(d, depth, frames, img, num_classes, tubelet or 1)
    raise ValueError(f"no analytic count for {name!r} (videomambapro_*, videomamba_*, timesformer_*, vivit_*, "
                     "videomambaout_*, or a VideoMamba size)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["tiny", "small", "middle"],
                   help="VideoMamba sizes (tiny small middle demo test: VideoMambaPro) or model names")
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64])
    p.add_argument("--size", type=int, default=224, help="input resolution")
    p.add_argument("--num_classes", type=int, default=400)
    p.add_argument("--tubelet_size", type=int, default=None, help="default: the model's usual (ViViT 2, others 1)")
    p.add_argument("--check_params", action="store_true", help="also build each model on the meta device "
                   "and check the analytic parameter count against it")
    args = p.parse_args(argv)
    width = max(8, *(len(m) for m in args.models))
    print(f"{'model':<{width}} {'frames':>6} {'size':>5} {'params(M)':>10} {'tokens':>7} {'proj GFLOPs':>12} "
          f"{'total GFLOPs':>13} {'mixing %':>8}")
    for m in args.models:
        for f in args.frames:
            c = count_model(m, f, args.size, args.num_classes, args.tubelet_size)
            print(f"{m:<{width}} {f:>6} {args.size:>5} {c['params'] / 1e6:>10.2f} {c['tokens']:>7} "
                  f"{c['proj'] / 1e9:>12.2f} {c['total'] / 1e9:>13.2f} {100 * (c['total'] - c['proj']) / c['total']:>7.1f}%")
            if args.check_params:
                import timm
                import torch

                import models  # noqa: F401
                name = f"videomambapro_{m}" if m in SIZES else m
                kw = dict(num_classes=args.num_classes, num_frames=f, img_size=args.size)
                if args.tubelet_size is not None:
                    kw["tubelet_size"] = args.tubelet_size
                elif name.startswith("vivit_"):
                    kw["tubelet_size"] = 2
                with torch.device("meta"):
                    net = timm.create_model(name, **kw)
                real = sum(q.numel() for q in net.parameters())
                if real != c["params"]:
                    raise SystemExit(f"analytic params {c['params']} != model params {real} for {m}")
    print("GFLOPs are multiply-accumulates (fvcore convention), per clip, one view. mixing %: the share of token "
          "mixing that is not a linear layer (scan + conv, attention products, depthwise conv).")


if __name__ == "__main__":
    main()
