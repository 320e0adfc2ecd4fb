#!/usr/bin/env python
"""Analytic parameter and FLOP counts of VideoMambaPro / VideoMamba (Ti/S/M) at given frames and size.

FLOPs are counted as multiply-accumulates (the fvcore convention used in the VideoMamba papers: one
MAC = one "FLOP"). ``proj`` counts the linear projections only (in_proj, x_proj, dt_proj, out_proj,
patch embedding, head); ``total`` adds the depthwise convs, the selective scans (9 E N per token and
direction, mamba_ssm's ``selective_scan_flop_jit`` count), the D skip, the gate, the VideoMambaPro mask
(B.C per token plus 2 E) and the RMSNorms. The two VideoMambaPro changes add under 0.1% FLOPs.

    python scripts/count_flops.py --frames 8 16 32 64 --size 224
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIZES = {"tiny": (192, 24), "small": (384, 24), "middle": (576, 32), "demo": (96, 6), "test": (32, 2)}


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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["tiny", "small", "middle"], choices=list(SIZES))
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64])
    p.add_argument("--size", type=int, default=224, help="input resolution")
    p.add_argument("--num_classes", type=int, default=400)
    p.add_argument("--tubelet_size", type=int, default=1)
    p.add_argument("--check_params", action="store_true", help="also build each model on the meta device "
                   "and check the analytic parameter count against it")
    args = p.parse_args(argv)
    print(f"{'model':<8} {'frames':>6} {'size':>5} {'params(M)':>10} {'tokens':>7} {'proj GFLOPs':>12} "
          f"{'total GFLOPs':>13} {'scan+conv %':>11}")
    for m in args.models:
        for f in args.frames:
            c = count(m, f, args.size, args.num_classes, args.tubelet_size)
            print(f"{m:<8} {f:>6} {args.size:>5} {c['params'] / 1e6:>10.2f} {c['tokens']:>7} {c['proj'] / 1e9:>12.2f} "
                  f"{c['total'] / 1e9:>13.2f} {100 * (c['total'] - c['proj']) / c['total']:>10.1f}%")
            if args.check_params:
                import timm
                import torch

                import models  # noqa: F401
                with torch.device("meta"):
                    net = timm.create_model(f"videomambapro_{m}", num_classes=args.num_classes, num_frames=f,
                                            img_size=args.size, tubelet_size=args.tubelet_size)
                real = sum(q.numel() for q in net.parameters())
                if real != c["params"]:
                    raise SystemExit(f"analytic params {c['params']} != model params {real} for {m}")
    print("GFLOPs are multiply-accumulates (fvcore convention), per clip, one view.")


if __name__ == "__main__":
    main()
