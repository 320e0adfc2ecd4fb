"""Flag checks of the entry points, run when the command line is parsed (a resolver of their parser): flags that
would be ignored on the chosen path, or counts and sizes that would otherwise fail deep in the model, the DataLoader
or after training started, stop the run before anything is built, with one line per flag."""
from __future__ import annotations


def check_flags(args, parser=None) -> None:
    """Parser resolver: raise SystemExit naming every bad flag; keep the harmless warnings in
    ``args._flag_warnings`` (the engine logs them once the run's log is set up)."""
    args._flag_warnings = validate_args(args)


def validate_args(args) -> list[str]:
    """Reject flags that would be ignored on the chosen path; return warnings for harmless ones."""
    warnings = []
    errors = []
    if not args.enable_deepspeed and args.zero_stage:
        errors.append(f"--zero_stage {args.zero_stage} only applies with --enable_deepspeed (native torch DDP has "
                      f"no ZeRO); add --enable_deepspeed or drop --zero_stage")
    if args.bf16 and args.no_amp:
        errors.append("--bf16 and --no_amp contradict each other: --bf16 asks for bf16 autocast, --no_amp for fp32")
    if args.enable_deepspeed and args.opt.lower() not in ("adamw", "adam"):
        errors.append(f"--enable_deepspeed builds its optimizer from the config and supports adamw/adam, "
                      f"not --opt {args.opt}")
    if args.enable_deepspeed and args.model_ema:
        warnings.append("--model_ema with DeepSpeed: the EMA copy is kept in fp32 outside the engine")
    if args.checkpoint_num and not args.use_checkpoint:
        errors.append("--checkpoint_num needs --use_checkpoint (activation checkpointing is off otherwise)")
    if args.update_freq < 1:
        errors.append("--update_freq must be >= 1")
    if args.model_ema_force_cpu and not args.model_ema:
        errors.append("--model_ema_force_cpu needs --model_ema")
    if getattr(args, "dist_timeout", 1.0) is not None and getattr(args, "dist_timeout", 1.0) <= 0:
        errors.append("--dist_timeout must be > 0 minutes")
    errors += _check_sizes(args)
    errors += _check_long_video(args, warnings)
    if errors:
        raise SystemExit("error: " + "\n  ".join(errors))
    return warnings


def _check_long_video(args, warnings: list) -> list[str]:
    """--trimmed / --time_stride: VideoMamba's long-video windows, meaningful for LVU / COIN / Breakfast only (whether
    the list has the duration column they need is checked when the dataset is built)."""
    from datasets.sampling import LONG_VIDEO_DATA_SETS

    errors = []
    data_set = getattr(args, "data_set", None)
    given = [f for f in ("trimmed", "time_stride") if getattr(args, f, None) is not None]
    for flag in given:
        if getattr(args, flag) < 1:
            errors.append(f"--{flag} {getattr(args, flag)}: must be >= 1 (seconds)")
    if given and data_set not in LONG_VIDEO_DATA_SETS:
        errors.append(f"{' / '.join('--' + f for f in given)} appl{'y' if len(given) > 1 else 'ies'} only to --data_set "
                      f"{' / '.join(LONG_VIDEO_DATA_SETS)} (VideoMamba's long-video windows); --data_set {data_set} "
                      f"samples whole videos: drop the flag")
    if data_set in LONG_VIDEO_DATA_SETS and (getattr(args, "sampling_rate", 0) or 0) > 0:
        warnings.append(f"--data_set {data_set}: lists with a duration column are sampled in --trimmed windows, one "
                        f"frame per segment, without --sampling_rate {args.sampling_rate} (as upstream's LVU class)")
    return errors


def _check_sizes(args) -> list[str]:
    """Counts and sizes that would otherwise fail deep in the model or the DataLoader (or after training started)."""
    errors = []

    def need(flag, ok, what):
        value = getattr(args, flag, None)
        if value is not None and not ok(value):
            errors.append(f"--{flag} {value}: must be {what}")

    need("batch_size", lambda v: v >= 1, ">= 1")
    need("num_workers", lambda v: v >= 0, ">= 0")
    need("num_frames", lambda v: v >= 1, ">= 1")
    need("tubelet_size", lambda v: v >= 1, ">= 1")
    need("input_size", lambda v: v >= 1, ">= 1")
    for flag in ("test_num_segment", "test_num_crop"):
        need(flag, lambda v: v >= 1, ">= 1 (views per test video)")
    if not getattr(args, "eval", False):
        need("epochs", lambda v: v >= 1, ">= 1")
        need("lr", lambda v: v > 0, "> 0")
    frames, tubelet = getattr(args, "num_frames", None), getattr(args, "tubelet_size", None)
    if frames and tubelet and frames >= 1 and tubelet >= 1 and frames % tubelet:
        errors.append(f"--num_frames {frames}: must be a multiple of --tubelet_size {tubelet}")
    return errors
