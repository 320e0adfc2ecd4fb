"""Two training back ends behind one small interface.

    backend.model            the module to call (DDP / DeepSpeed engine / plain)
    backend.model_without_ddp the bare nn.Module (for EMA, state dicts)
    backend.optimizer        has .param_groups (lr / weight decay are set per step by the engine loop)
    backend.autocast()       context manager for the forward pass
    cast_input(x, model)     the one input cast (device and dtype follow the model's parameters: bf16 under
                             DeepSpeed bf16, fp32 under native autocast), used by every path that calls a model
    backend.backward_step(loss, update: bool) -> grad norm (float) or None when no update happened
    backend.save(output_dir, epoch, client_state, names) / backend.load(...)
    backend.loss_scale()     current loss scale (or None)

NativeBackend: torch DDP (when a process group exists) + torch.amp (bf16 / fp16 with GradScaler / fp32).
DeepSpeedBackend: deepspeed.initialize with the generated config; its own accumulation, clipping and ZeRO.
"""
from __future__ import annotations

import contextlib
import os
import shutil

import torch
import torch.nn as nn

from utils.checkpoint_io import atomic_save, check_deepspeed_tag, deepspeed_loader, list_deepspeed_tags, to_plain
from utils.distributed import barrier, is_main_process


def amp_dtype(args) -> torch.dtype | None:
    """bf16 with --bf16; fp16 on CUDA by default; fp32 with --no_amp (or on CPU without --bf16)."""
    if getattr(args, "no_amp", False):
        return None
    if getattr(args, "bf16", False):
        return torch.bfloat16
    if str(args.device).startswith("cuda"):
        return torch.float16
    return None


def cast_input(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Move a batch to the model's device and floating dtype (the engine's dtype).

    Native AMP keeps fp32 weights and casts inside autocast, so inputs stay fp32; DeepSpeed bf16/fp16 holds the
    module in half precision and has no autocast, so its inputs must be cast. Following the parameters covers
    both, and an fp32 EMA copy evaluated beside a bf16 engine too. Integer tensors only move.
    """
    p = next((t for t in model.parameters() if t.is_floating_point()), None)
    if p is None:
        return x
    if x.is_floating_point():
        return x.to(device=p.device, dtype=p.dtype, non_blocking=True)
    return x.to(device=p.device, non_blocking=True)


def grad_norm_of(params) -> float:
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.nn.utils.get_total_norm(grads, 2.0).item())


class NativeBackend:
    name = "native"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, args):
        self.args = args
        self.model_without_ddp = model
        self.optimizer = optimizer
        self.update_freq = int(args.update_freq)
        self.clip_grad = args.clip_grad
        self.dtype = amp_dtype(args)
        self.device_type = "cuda" if str(args.device).startswith("cuda") else "cpu"
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        if getattr(args, "distributed", False):
            ids = [args.gpu] if self.device_type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)
        else:
            self.model = model

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def no_sync(self, update: bool):
        if not update and isinstance(self.model, nn.parallel.DistributedDataParallel):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def backward_step(self, loss: torch.Tensor, update: bool):
        loss = loss / self.update_freq
        with self.no_sync(update):
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        if not update:
            return None
        params = [p for p in self.model_without_ddp.parameters() if p.requires_grad]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip_grad is not None and self.clip_grad > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.clip_grad).item())
        else:
            norm = grad_norm_of(params)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def loss_scale(self):
        return self.scaler.get_scale() if self.scaler is not None else None

    def state_dict(self) -> dict:
        out = {"model": self.model_without_ddp.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.scaler is not None:
            out["scaler"] = self.scaler.state_dict()
        return out

    def save(self, output_dir: str, epoch: int, client_state: dict, names: list[str], tag: bool = True) -> list[str]:
        """Write each name (e.g. checkpoint-latest.pth) atomically on rank 0."""
        paths = []
        if is_main_process():
            obj = dict(self.state_dict(), **client_state, epoch=epoch)
            for n in names:
                p = os.path.join(output_dir, n)
                atomic_save(obj, p)
                paths.append(p)
        return paths

    def load(self, ckpt: dict, path: str, load_optimizer: bool = True, log=print) -> None:
        self.model_without_ddp.load_state_dict(ckpt.get("model", ckpt.get("module")))
        if load_optimizer:
            if "optimizer" not in ckpt:
                raise RuntimeError(f"{path}: has no optimizer state; it cannot be resumed (use --finetune to "
                                   f"start from its weights)")
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scaler is not None and "scaler" in ckpt:
                self.scaler.load_state_dict(ckpt["scaler"])


class DeepSpeedBackend:
    name = "deepspeed"

    def __init__(self, model: nn.Module, param_groups: list[dict], args):
        try:
            import deepspeed
        except ImportError as e:
            raise ImportError("--enable_deepspeed needs DeepSpeed: pip install 'deepspeed>=0.16,<0.20'") from e
        from utils.deepspeed_config import write_deepspeed_config

        self.args = args
        _, cfg = write_deepspeed_config(args)
        groups = [{k: v for k, v in g.items() if k != "param_names"} for g in param_groups]
        self.model, self.optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=cfg)
        # DeepSpeed reads its tag files with full unpickling; route every read through our weights-only reader
        self.model.checkpoint_engine.load = deepspeed_loader(getattr(args, "trust_checkpoint", False))
        self.model_without_ddp = self.model.module
        self.dtype = torch.bfloat16 if cfg.get("bf16", {}).get("enabled") else (
            torch.float16 if cfg.get("fp16", {}).get("enabled") else None)
        self.update_freq = int(args.update_freq)
        self.scaler = None

    def autocast(self):
        return contextlib.nullcontext()

    def backward_step(self, loss: torch.Tensor, update: bool):
        self.model.backward(loss)
        boundary = self.model.is_gradient_accumulation_boundary()
        own = None
        if boundary and self.args.zero_stage == 0:
            # stage 0 keeps full .grad tensors; DeepSpeed reports a norm only when it clips
            own = grad_norm_of(p for p in self.model_without_ddp.parameters() if p.requires_grad)
        self.model.step()
        if not boundary:
            return None
        norm = self.model.get_global_grad_norm()
        return float(norm) if norm is not None else own

    def loss_scale(self):
        if self.dtype != torch.float16:
            return None
        opt = self.optimizer
        return getattr(opt, "cur_scale", None) or getattr(opt, "loss_scale", None)

    def save(self, output_dir: str, epoch: int, client_state: dict, names: list[str], tag: bool = True) -> list[str]:
        """DeepSpeed tag folder checkpoint-{epoch}/ (all ranks; skipped with tag=False, e.g. for a mid-epoch
        emergency save or the best export) plus the plain {'model': ...} exports written atomically on rank 0.

        Retention matches the native engine: once the new tag is complete on every rank, older tags are deleted
        except those of epochs whose ``checkpoint-{epoch}.pth`` is kept (every --save_ckpt_freq epochs)."""
        paths = []
        if is_main_process():
            export = dict(client_state, model=self.model_without_ddp.state_dict(), epoch=epoch)
            for n in names:
                p = os.path.join(output_dir, n)
                atomic_save(export, p)
                paths.append(p)
        if tag:
            name = f"checkpoint-{epoch}"
            self.model.save_checkpoint(output_dir, tag=name, client_state=to_plain(dict(client_state, epoch=epoch)))
            paths.append(os.path.join(output_dir, name))
            barrier("DeepSpeed checkpoint save")
            if is_main_process():
                prune_deepspeed_tags(output_dir, keep=os.path.join(output_dir, name))
        return paths

    def load_tag(self, output_dir: str, tag: str) -> dict:
        path, client = self.model.load_checkpoint(output_dir, tag=tag)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load tag {tag!r} from {output_dir}")
        return client or {}

    def load(self, ckpt: dict, path: str, load_optimizer: bool = True, log=print) -> None:
        if load_optimizer:
            log(f"{path}: a plain export has no DeepSpeed optimizer state; loading the model weights only "
                f"(resume DeepSpeed runs from their checkpoint-N/ tag folder)")
        self.model_without_ddp.load_state_dict(ckpt.get("model", ckpt.get("module")))


def prune_deepspeed_tags(output_dir: str, keep: str) -> list[str]:
    """Delete tag folders older than ``keep`` (which must be complete) unless their epoch's
    ``checkpoint-{epoch}.pth`` export is kept. Returns the deleted folders."""
    if check_deepspeed_tag(keep) is not None:
        return []
    deleted = []
    for folder in list_deepspeed_tags(output_dir):
        if folder == keep or os.path.isfile(folder + ".pth"):
            continue
        if int(folder.rsplit("-", 1)[1]) > int(keep.rsplit("-", 1)[1]):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        deleted.append(folder)
    return deleted


def build_backend(args, model: nn.Module, param_groups: list[dict], optimizer_factory):
    """DeepSpeed with --enable_deepspeed, else native torch (DDP when a process group exists)."""
    if getattr(args, "enable_deepspeed", False):
        return DeepSpeedBackend(model, param_groups, args)
    return NativeBackend(model, optimizer_factory(param_groups), args)
