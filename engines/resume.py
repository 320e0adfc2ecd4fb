"""The resume policy: which checkpoint a run continues or evaluates, what it takes from it, and what a
checkpoint of a run holds besides the weights.

``--resume`` wins; ``--eval --finetune`` evaluates those weights; else ``--auto_resume`` takes the newest complete
checkpoint in output_dir. Architecture args come from the checkpoint (``apply_arch_args``); ``--eval`` also takes
how the run read its data (``apply_eval_data_args``). ``client_state`` is what every checkpoint stores beside the
model / optimizer, ``load_resume`` reads it back.
"""
from __future__ import annotations

import dataclasses
import os

import torch

from utils import distributed as dist_utils
from utils.checkpoint_io import (
    DEEPSPEED_MODEL_FILE,
    CheckpointError,
    best_record,
    check_deepspeed_tag,
    describe_state_dict,
    find_resume_checkpoint,
    load_checkpoint,
    rng_state,
    set_rng_state,
    to_plain,
)

# Arguments that define any network; on resume they come from the checkpoint. An entry point adds its models'
# own (``Wiring.arch_keys``: run_class_finetuning.py adds the VideoMambaPro option flags).
ARCH_KEYS = ("model", "nb_classes", "num_frames", "input_size", "tubelet_size")


@dataclasses.dataclass
class ResumeState:
    """Where a run starts: its resume checkpoint (path, contents; None for a fresh run), the epoch and micro-step,
    the best val top-1 so far and the unreadable training files already known."""
    path: str | None = None
    ckpt: dict | None = None
    epoch: int = 0
    iter: int = 0
    best: dict = dataclasses.field(default_factory=lambda: {"acc1": -1.0, "epoch": -1})
    bad_files: list = dataclasses.field(default_factory=list)


def resolve_resume(args, log=print):
    """Pick the checkpoint to resume/evaluate and say why. Returns (path, ckpt dict or None, reason).

    ``--resume`` wins; ``--eval --finetune`` evaluates those weights; else ``--auto_resume`` takes the newest
    complete checkpoint of any kind (DeepSpeed tag folders too, for a DeepSpeed run), skipping broken ones with a
    message, and stops when every candidate is broken.
    """
    ds = bool(getattr(args, "enable_deepspeed", False))
    path = ckpt = None
    try:
        if args.resume:
            if os.path.isdir(args.resume):
                problem = check_deepspeed_tag(args.resume)
                if problem:
                    raise SystemExit(f"error: --resume {args.resume}: {problem}")
                ckpt = load_checkpoint(os.path.join(args.resume, DEEPSPEED_MODEL_FILE), args.trust_checkpoint)
                return args.resume, ckpt, "explicit --resume (DeepSpeed tag folder)"
            return args.resume, load_checkpoint(args.resume, args.trust_checkpoint), "explicit --resume"
        if args.eval and args.finetune:
            return None, None, "--eval with --finetune: evaluating the --finetune weights, not auto-resuming"
        if args.auto_resume and args.output_dir:
            path, ckpt = find_resume_checkpoint(args.output_dir, log=log, trust_checkpoint=args.trust_checkpoint,
                                                deepspeed=ds)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from e
    if args.auto_resume and args.output_dir and path is not None:
        prev = (ckpt.get("args") or {}).get("finetune") if isinstance(ckpt, dict) else None
        if args.finetune and prev != args.finetune:
            raise SystemExit(
                f"error: --finetune {args.finetune} was given, but {args.output_dir} holds {path} from a run "
                f"started from {prev!r}; refusing to let the leftover checkpoint replace --finetune. Use a "
                f"new --output_dir, or --no_auto_resume to start over from --finetune.")
        return path, ckpt, "auto-resume: newest complete checkpoint in output_dir"
    return None, None, "no checkpoint to resume"


def apply_arch_args(args, ckpt_args: dict, path: str, log=print, arch_keys=ARCH_KEYS) -> None:
    """Architecture args come from the checkpoint, unless the user set one explicitly to another value: then the
    run stops with one line naming the file, what it holds and what was asked for."""
    explicit = set(getattr(args, "_explicit", ()))
    conflicts = []
    for k in arch_keys:
        if k not in ckpt_args:
            continue
        cur, saved = getattr(args, k, None), ckpt_args[k]
        if cur == saved:
            continue
        if k in explicit and cur is not None:
            conflicts.append(f"--{k} {cur!r} (checkpoint: {saved!r})")
        else:
            if cur is not None:
                log(f"--{k}: using {saved!r} from {path} (default was {cur!r})")
            setattr(args, k, saved)
    if conflicts:
        held = ", ".join(f"{k} {ckpt_args[k]!r}" for k in ("model", "nb_classes", "num_frames", "input_size")
                         if k in ckpt_args)
        raise SystemExit(f"error: {path} holds a checkpoint of {held}, but {', '.join(conflicts)} was asked for; "
                         f"drop the flag to resume that run, or use --finetune to start a new run from its weights")


# what --eval takes from the checkpoint's stored args unless given: how the run read its data and tested
EVAL_DATA_KEYS = ("data_set", "sampling_rate", "short_side_size", "test_num_segment", "test_num_crop", "resize_mode")


def apply_eval_data_args(args, ckpt_args: dict, path: str, log=print) -> None:
    """``--eval`` scores what the run trained on: data and view settings from the checkpoint unless given; says
    where each came from."""
    explicit = set(getattr(args, "_explicit", ()))
    took, given = [], []
    for k in EVAL_DATA_KEYS:
        if k not in ckpt_args or not hasattr(args, k):
            continue
        if k in explicit:
            if getattr(args, k) != ckpt_args[k]:
                given.append(f"--{k} {getattr(args, k)!r} (given; the run used {ckpt_args[k]!r})")
        elif getattr(args, k) != ckpt_args[k]:
            took.append(f"--{k} {ckpt_args[k]!r}")
            setattr(args, k, ckpt_args[k])
    if took:
        log(f"--eval: data / view settings from {path}: {', '.join(took)}")
    if given:
        log(f"--eval: settings given on the command line: {', '.join(given)}")



def client_state(args, model_ema, best, bad_files, steps_per_epoch=None, epoch=None, resume_iter=None) -> dict:
    st = {"args": to_plain({k: v for k, v in vars(args).items() if not k.startswith("_")}), "best": dict(best),
          "bad_files": sorted(bad_files.files), "rng": rng_state(),
          "model_cfg": to_plain(getattr(args, "_model_cfg", {}))}
    if steps_per_epoch is not None and epoch is not None:
        st["global_step"] = int((epoch + 1) * steps_per_epoch)
    if resume_iter is not None:  # a mid-epoch (preemption) checkpoint: `epoch` is the epoch in progress
        st.update(resume_iter=int(resume_iter), world_size=dist_utils.get_world_size(),
                  global_step=int(epoch * steps_per_epoch + resume_iter // args.update_freq))
    if model_ema is not None:
        st["model_ema"] = model_ema.module.state_dict()
    return st


def check_fits(args, model, sd: dict, path: str) -> None:
    """A weights dict that does not fit the model: one line naming the file, what it holds, what was asked for."""
    own = model.state_dict()
    bad = [k for k, v in sd.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    extra = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd]
    if bad or extra or missing:
        first = bad[:1] or extra[:1] or missing[:1]
        raise SystemExit(f"error: {path} holds weights of {describe_state_dict(sd)}, but --model {args.model} is "
                         f"{describe_state_dict(own)} ({len(bad)} shape mismatches, {len(extra)} unexpected and "
                         f"{len(missing)} missing keys, e.g. {first[0]})")


def load_resume(args, backend, model_ema, path, ckpt, reason, log):
    """Load model/optimizer/scaler/EMA/RNG from the resume source; returns (start_epoch, best, bad files)."""
    if not isinstance(ckpt.get("model", ckpt.get("module")), dict):
        kind = "a bare state dict" if ckpt and all(torch.is_tensor(v) for v in ckpt.values()) else \
            f"a dict with keys {sorted(ckpt)[:8]}"
        what = f" of {describe_state_dict(ckpt)}" if kind == "a bare state dict" else ""
        raise SystemExit(f"error: --resume {path} holds {kind}{what}, not a training checkpoint (model, optimizer, "
                         f"epoch); to start from its weights use --finetune {path}")
    check_fits(args, backend.model_without_ddp, ckpt.get("model", ckpt.get("module")), path)
    load_opt = not args.eval
    if backend.name == "deepspeed" and not args.eval:
        if os.path.isdir(path):
            folder, tag = os.path.dirname(path.rstrip("/")), os.path.basename(path.rstrip("/"))
        else:
            folder = os.path.dirname(os.path.abspath(path))
            want = f"checkpoint-{ckpt.get('epoch')}"
            tag = want if os.path.isdir(os.path.join(folder, want)) and \
                check_deepspeed_tag(os.path.join(folder, want)) is None else None
        if tag is not None:
            try:
                client = backend.load_tag(folder, tag)
            except CheckpointError as e:
                raise SystemExit(f"error: {e}") from e
            log(f"resumed DeepSpeed state from {os.path.join(folder, tag)} ({reason})")
            ckpt = dict(client)
        else:
            log(f"warning: no complete DeepSpeed tag folder for epoch {ckpt.get('epoch')} beside {path}: resuming "
                f"the model weights only (the optimizer state is lost)")
            backend.load(ckpt, path, load_optimizer=False, log=log)
    else:
        if os.path.isdir(path) and not args.eval:
            raise SystemExit(f"error: {path} is a DeepSpeed tag folder; resume it with --enable_deepspeed")
        backend.load(ckpt, path, load_optimizer=load_opt, log=log)
    if model_ema is not None and "model_ema" in ckpt:
        model_ema.module.load_state_dict(ckpt["model_ema"])
    if "rng" in ckpt and not args.eval:
        set_rng_state(ckpt["rng"])
    epoch = ckpt.get("epoch")
    best = dict(ckpt.get("best") or {"acc1": -1.0, "epoch": -1})
    rec = best_record(args.output_dir, log) if args.output_dir and not args.eval else None
    if rec is not None and rec.get("acc1", -1.0) > best.get("acc1", -1.0):
        log(f"best so far: {rec['acc1']:.2f}% at epoch {rec.get('epoch')} (from checkpoint-best.pth); a later epoch "
            f"replaces it only with a higher accuracy")
        best = rec
    log(f"loaded {path} ({reason}); checkpoint epoch {epoch}")
    bad = list(ckpt.get("bad_files") or [])
    if args.eval or epoch is None:
        return args.start_epoch, best, bad, 0
    if ckpt.get("resume_iter"):  # saved mid-epoch on a stop signal: continue the same epoch
        return int(epoch), best, bad, int(ckpt["resume_iter"])
    return int(epoch) + 1, best, bad, 0


def check_resume_iter(args, ckpt, epoch, start_iter, steps_per_epoch, log) -> int:
    """A mid-epoch checkpoint continues at its step only with the batch layout it was cut in (world size, batch,
    update_freq, steps per epoch); otherwise the epoch restarts from its beginning, said in one line."""
    if not start_iter:
        return 0
    saved = (ckpt or {}).get("args") or {}
    now = {"world size": dist_utils.get_world_size(), "batch_size": args.batch_size, "update_freq": args.update_freq}
    then = {"world size": (ckpt or {}).get("world_size"), "batch_size": saved.get("batch_size"),
            "update_freq": saved.get("update_freq")}
    changed = [f"{k} {then[k]} -> {now[k]}" for k in now if then[k] is not None and then[k] != now[k]]
    if changed or start_iter >= steps_per_epoch * args.update_freq:
        why = ", ".join(changed) or f"step {start_iter} is past this epoch's {steps_per_epoch * args.update_freq}"
        log(f"warning: the checkpoint stopped epoch {epoch} part-way, but {why}: epoch {epoch} restarts from its "
            f"first step (its first part is trained again)")
        return 0
    log(f"resuming epoch {epoch} at optimizer step {start_iter // args.update_freq} of {steps_per_epoch} (the "
        f"run was stopped by a signal there; the samples before it are skipped)")
    return start_iter

