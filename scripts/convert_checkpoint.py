#!/usr/bin/env python
"""Convert any known checkpoint layout to a clean ``{'model': state_dict}`` file, with a report.

Known layouts: bare state dict; ``model``/``module``/``state_dict``/``model_ema`` wrappers; DeepSpeed
``mp_rank_00_model_states.pt`` (or its checkpoint folder); ``module.``/``_orig_mod.``/``backbone.``/
``encoder.`` prefixes. With ``--model`` the weights are also converted for that model (inflation,
embedding resizing, head dropping as ``--finetune`` does) and verified by loading them into it.

    python scripts/convert_checkpoint.py --input ckpt.pth --output clean.pth
    python scripts/convert_checkpoint.py --input videomamba_t16_in1k.pth --output t8.pth \
        --model videomambapro_tiny --num_frames 8 --nb_classes 400
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="checkpoint file or DeepSpeed checkpoint folder")
    p.add_argument("--output", required=True)
    p.add_argument("--model_key", default="model|module")
    p.add_argument("--trust_checkpoint", action="store_true", help="allow full unpickling (trusted files only)")
    p.add_argument("--model", default=None, help="also convert for and verify against this timm model name")
    p.add_argument("--num_frames", type=int, default=16)
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--tubelet_size", type=int, default=1)
    p.add_argument("--nb_classes", type=int, default=None)
    p.add_argument("--orig_t_size", type=int, default=None)
    args = p.parse_args(argv)

    from models.checkpoint import load_checkpoint_file, strip_prefixes, unwrap_state_dict

    ckpt = load_checkpoint_file(args.input, trust_checkpoint=args.trust_checkpoint)
    sd, key = unwrap_state_dict(ckpt, args.model_key, log=None)
    sd, stripped = strip_prefixes(sd)
    print(f"input: {args.input}\n  wrapper key: {key or '(bare state dict)'}\n  prefixes stripped: {stripped or 'none'}")
    print(f"  tensors: {len(sd)}, parameters: {sum(v.numel() for v in sd.values() if torch.is_tensor(v)):,}")
    other = sorted(k for k in ckpt if k != key) if key else []
    if other:
        print(f"  other top-level entries left out: {other}")
    if args.model:
        import timm

        import models  # noqa: F401
        from models.checkpoint import load_pretrained
        from models.videomambapro import checkpoint_filter_fn

        kw = dict(img_size=args.input_size)
        if "image" not in args.model:
            kw.update(num_frames=args.num_frames, tubelet_size=args.tubelet_size)
        if args.nb_classes is not None:
            kw["num_classes"] = args.nb_classes
        model = timm.create_model(args.model, **kw)
        report = {}
        sd = checkpoint_filter_fn(sd, model, orig_t_size=args.orig_t_size, log=None, report=report)
        for a in report["actions"]:
            print(f"  {a}")
        heads = {k for k in model.state_dict() if k.startswith("head.")} if report["head_dropped"] else set()
        load_pretrained(model, sd, orig_t_size=args.orig_t_size, expected_missing=heads,
                        log=lambda m: print("  verify: " + m))
    tmp = args.output + ".tmp"
    torch.save({"model": sd}, tmp)
    os.replace(tmp, args.output)
    print(f"wrote {args.output} ({len(sd)} tensors)")


if __name__ == "__main__":
    main()
