"""Masked video pretraining steps (run_videomamba_pretraining.py): the loss of one micro-batch, for the epoch loop of
fine-tuning (``engines.finetune.fit(step=...)``: same resume, preemption, DeepSpeed / DDP, bf16, logs).

- ``ClipDistillStep`` (``--objective clip``, VideoMamba / UMT): a frozen CLIP teacher (outside the optimizer, the
  DDP / DeepSpeed wrapper and the checkpoints) gives l2-normalised features of every token; the student scans only
  the visible tokens and is trained to match the teacher at the visible ones (``--clip_loss_type``). With
  ``--mask_type attention`` the mask is drawn here from the teacher's cls attention (most-attended tokens visible).
- ``MaskFeatStep`` (``--objective maskfeat``): the student sees every token, masked ones replaced by its learned
  mask token, and regresses the HOG features of the masked patches (MSE); no teacher.
"""
from __future__ import annotations

import torch


class ClipDistillStep:
    def __init__(self, teacher, *, loss_type: str = "l2", loss_ratio: float = 1.0, mask_type: str = "tube",
                 mask_ratio: float = 0.75, return_cls: bool = True):
        from datasets.masking import attention_mask
        from models.videomamba_pretrain import pretrain_loss, select_visible

        self.teacher, self.loss_type, self.loss_ratio = teacher, loss_type, float(loss_ratio)
        self.mask_type, self.mask_ratio, self.return_cls = mask_type, float(mask_ratio), bool(return_cls)
        self._attention_mask, self._loss, self._select = attention_mask, pretrain_loss, select_visible
        pretrain_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), loss_type)  # an unknown type fails here, not later

    def __call__(self, model, clips: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            dtype = next(self.teacher.parameters()).dtype
            out = self.teacher(clips.to(dtype))  # the student's input may be bf16 (DeepSpeed), the teacher fp32
            feats, attn = out if isinstance(out, tuple) else (out, None)
            if self.mask_type == "attention":
                if attn is None:
                    raise RuntimeError("--mask_type attention needs the teacher's attention (--clip_return_attn)")
                mask = self._attention_mask(attn.float(), self.mask_ratio)
            mask = mask.to(device=clips.device, dtype=torch.bool)
            target = self._select(feats, mask)
        pred = model(clips, mask)
        if not self.return_cls:  # the student's token 0 is its cls token; the teacher gave none
            pred = pred[:, :, 1:]
        return self.loss_ratio * self._loss(pred.float(), target.float(), self.loss_type)

    def __repr__(self) -> str:
        return (f"CLIP distillation ({self.loss_type} x {self.loss_ratio:g}, teacher "
                f"{getattr(self.teacher, 'name', type(self.teacher).__name__)}, {self.mask_type} masks at "
                f"{self.mask_ratio:g})")


def build_step(args, model):
    """The step of ``args.objective`` for ``model`` (the student, unwrapped), its teacher on ``args.device``."""
    device = torch.device(args.device)
    if args.objective == "maskfeat":
        return MaskFeatStep(model, device)
    from models.clip_teacher import build_clip_teacher

    ckpt = args.clip_teacher_ckpt or None
    random_weights = isinstance(ckpt, str) and ckpt.lower() == "random"
    teacher = build_clip_teacher(
        args.clip_teacher, None if random_weights else ckpt, num_frames=args.num_frames,
        img_size=args.clip_input_resolution, return_layer=args.clip_return_layer,
        return_interval=args.clip_return_interval, return_cls=args.clip_return_cls,
        return_attn=args.clip_return_attn, norm_type=args.clip_norm_type, pretrained=not random_weights,
        dtype=torch.bfloat16 if device.type == "cuda" and not args.no_amp else torch.float32)
    teacher.to(device)
    print(f"teacher: {args.clip_teacher} ({'RANDOM weights (--clip_teacher_ckpt random)' if random_weights else ckpt or 'pretrained by tag'}), "
          f"{sum(p.numel() for p in teacher.parameters()) / 1e6:.1f} M frozen parameters, output dim "
          f"{teacher.output_dim}")
    return ClipDistillStep(teacher, loss_type=args.clip_loss_type, loss_ratio=args.clip_loss_ratio,
                           mask_type=args.mask_type, mask_ratio=args.mask_ratio, return_cls=args.clip_return_cls)


class MaskFeatStep:
    """MSE between the student's predictions and the HOG features of the masked patches (``model.loss``: the HOG
    target is computed on the device, in float32, without gradient)."""

    def __init__(self, model, device=None):
        if not hasattr(model, "loss") or not hasattr(model, "hog"):
            raise SystemExit(f"error: --objective maskfeat needs a MaskFeat model (*_maskfeat), got "
                             f"{type(model).__name__}")
        self.module = model  # unwrapped: DDP / DeepSpeed wrap the forward, the loss is the module's own

    def __call__(self, model, clips, mask):
        mask = mask.to(device=clips.device, dtype=torch.bool)
        return self.module.loss(model(clips, mask), clips, mask)

    def __repr__(self) -> str:
        hog = self.module.hog
        return (f"MaskFeat (HOG of the masked patches, {getattr(hog, 'feature_dim', '?')} features per token, MSE; "
                f"{type(self.module).__name__})")
