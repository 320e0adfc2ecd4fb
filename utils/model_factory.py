"""From flags to a model: the create_model kwargs of the entry points' flags, the model build, the checks of the
model flags before any build, and the --finetune weights loader (a zoo tag, a Hub name or a file).

The entry points hand these to the engine (``engines.runner.Wiring``); the engine itself imports no model code.
"""
from __future__ import annotations

import torch

# VideoMambaPro options (models.videomambapro.PRO_OPTIONS: name -> default) whose flag is the negation: --no_gate.
# Every other option's flag has the option's name.
NEGATED_FLAGS = {"gate": "no_gate"}
PATCH_SIZE = 16  # every registered video / image model embeds 16 x 16 patches
DEFAULT_MIXER_RECOMPUTE = "inner"  # --mixer_recompute when not given (scripts/profile_block.py: Ti 3,444 B/token/block)


def pro_flags() -> tuple:
    """The flags (by dest) of the VideoMambaPro options, in the options' order (imports the models: call late)."""
    from models.videomambapro import PRO_OPTIONS

    return tuple(NEGATED_FLAGS.get(k, k) for k in PRO_OPTIONS)


def model_kwargs(args) -> dict:
    """create_model kwargs; VideoMambaPro options only when given (None = registered default)."""
    nb_classes = args.nb_classes
    if nb_classes is None:  # the lists were not read (a dry run without data): the dataset's fixed count
        from datasets.build import resolve_nb_classes

        nb_classes = resolve_nb_classes(args)
        if nb_classes is None:
            raise ValueError(f"--data_set {args.data_set} has no fixed class count and its lists were not read: "
                             "pass --nb_classes")
    from models.videomambapro import PRO_OPTIONS

    kw = dict(num_classes=nb_classes, num_frames=args.num_frames, img_size=args.input_size,
              tubelet_size=args.tubelet_size, drop_path_rate=args.drop_path, fc_drop_rate=args.fc_drop_rate,
              use_checkpoint=args.use_checkpoint, checkpoint_num=args.checkpoint_num)
    if getattr(args, "init", None) not in (None, "default"):
        kw["init_mode"] = args.init
    for k in PRO_OPTIONS:
        if k not in NEGATED_FLAGS and getattr(args, k) is not None:
            kw[k] = getattr(args, k)
    for k, flag in NEGATED_FLAGS.items():
        if getattr(args, flag):
            kw[k] = False
    return kw


def build_model(args, meta: bool = False, extra: dict | None = None):
    """``extra``: more create_model kwargs (stored in model_cfg like the others)."""
    import timm

    import models  # registers the architectures in timm

    kw = {**model_kwargs(args), **(extra or {})}
    args._model_cfg = dict(kw, model=args.model)
    if args.model not in models.registered_models():
        raise SystemExit(f"error: --model {args.model} is not one of ours (registered by models/: "
                         f"{', '.join(models.registered_models())})")
    from mamba.ops.backend import get_scan_backend

    # the run's scan backend, fixed in the model when it is built (as timm's use_fused_attn); not in model_cfg:
    # a checkpoint is not tied to the machine that wrote it
    kw["scan_backend"] = getattr(args, "scan_backend", None) or get_scan_backend()
    try:
        if meta:
            with torch.device("meta"):
                model = timm.create_model(args.model, pretrained=False, **kw)
        else:
            model = timm.create_model(args.model, pretrained=False, **kw)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise SystemExit(f"error: --model {args.model}: {e}") from e
        raise
    if hasattr(model, "set_mixer_recompute"):
        mode = args.mixer_recompute or DEFAULT_MIXER_RECOMPUTE
        model.set_mixer_recompute(mode)
        print(f"mixer recompute: {mode}{'' if args.mixer_recompute else ' (default)'}")
    options = getattr(model, "options", None)
    if isinstance(options, dict):  # the resolved VideoMambaPro options, stored in checkpoints as model_cfg
        args._model_cfg.update(options)
        print(f"model options: {options}")
    return model


def build_image_model(args, meta: bool = False):
    """run_pretrain_imagenet.py: an image model, wrapped for self-distillation when --teacher_model is given."""
    if not args.model.endswith("_image"):
        raise SystemExit(f"error: --model {args.model}: pre-training expects an image model (*_image)")
    student = build_model(args, meta=meta)
    if not args.teacher_model:
        if args.teacher_ckpt:
            raise SystemExit("error: --teacher_ckpt given without --teacher_model")
        return student
    import argparse

    from models.distill import build_distill_wrapper

    targs = argparse.Namespace(**vars(args))
    targs.model, targs.drop_path = args.teacher_model, 0.0
    teacher = build_model(targs, meta=meta)
    if not args.teacher_ckpt and not meta:
        print("warning: --teacher_model without --teacher_ckpt distils from random weights")
    return build_distill_wrapper(student, teacher, loss_weight=args.distill_weight,
                                 teacher_checkpoint=None if meta else args.teacher_ckpt,
                                 trust_checkpoint=args.trust_checkpoint, style=args.distill_style)


CLIP_MODEL_FLAGS = ("clip_decoder_embed_dim", "clip_output_dim", "clip_norm_type", "clip_return_layer",
                    "clip_student_return_interval")


def build_pretrain_model(args, meta: bool = False):
    """run_videomamba_pretraining.py: the student (``*_pretrain``: CLIP-aligned, ``*_maskfeat``: HOG targets), no
    classification head; the --clip_* shape flags go to the CLIP-aligned student."""
    import argparse

    margs = argparse.Namespace(**vars(args))
    margs.nb_classes = 0
    extra = {k: getattr(args, k) for k in CLIP_MODEL_FLAGS} if args.objective == "clip" else {}
    model = build_model(margs, meta=meta, extra=extra)
    args._model_cfg = margs._model_cfg
    return model


def check_args(args) -> list:
    """The model name and the input size, checked before any data is read (the engine's size checks run too)."""
    import difflib

    import models

    names = models.registered_models()
    if args.model not in names:
        close = difflib.get_close_matches(args.model, names, n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else f"see models/ ({len(names)} registered)"
        return [f"--model {args.model} is not a registered model; {hint}"]
    if args.input_size and args.input_size % PATCH_SIZE:
        return [f"--input_size {args.input_size}: must be a multiple of the patch size {PATCH_SIZE}"]
    if getattr(args, "mixer_recompute", None):
        import timm

        with torch.device("meta"):
            net = timm.create_model(args.model, pretrained=False)
        if not hasattr(net, "set_mixer_recompute"):
            return [f"--mixer_recompute {args.mixer_recompute}: --model {args.model} has no Mamba mixer (it applies "
                    f"to the videomamba / videomambapro models)"]
    return []



def load_weights(model, path, **kw):
    """--finetune: models.checkpoint.load_pretrained of a file, a zoo tag or an hf-hub: name."""
    from models.checkpoint import load_pretrained
    from models.zoo import resolve_weights

    return load_pretrained(model, resolve_weights(path, log=kw.get("log", print)), **kw)
