"""VideoMamba-style self-distillation: a frozen smaller teacher guides a larger student (e.g. S -> M).

``build_distill_wrapper(student, teacher, loss_weight=1.0, teacher_checkpoint=None, style="videomamba")``
returns a :class:`DistillWrapper` whose ``forward(x)`` returns ``(logits, distill_loss)``:

    t = normalize(teacher.forward_features(x))                   (frozen, eval mode, no grad)
    s = normalize(distill_head(student.forward_features(x)))
    style "videomamba" (VideoMamba's image_sm distillation; run_pretrain_imagenet.py's default):
        distill_head = Sequential(RMSNorm(d_student), Linear(d_student -> d_teacher))
        distill_loss = loss_weight * mean over tokens of 2 (1 - cos(s, t))      (= |s - t|^2 of unit vectors)
    style "cosine" (this function's default, our earlier variant): distill_head = Linear(d_student -> d_teacher),
        distill_loss = loss_weight * mean over tokens of (1 - cos(s, t))

``normalize`` is an L2 normalisation over channels of each token (after each model's final RMSNorm).
The student's logits come from its own head. Both models must produce the same number of tokens
(same patch size, frames and input size). In eval mode the loss is still computed (cheap to ignore);
use ``wrapper.student`` alone for plain inference. The training loss is ``task_loss + distill_loss``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mamba.ops.rms_norm import RMSNorm

__all__ = ["DistillWrapper", "build_distill_wrapper", "DISTILL_STYLES"]

DISTILL_STYLES = ("videomamba", "cosine")


class DistillWrapper(nn.Module):
    def __init__(self, student: nn.Module, teacher: nn.Module, loss_weight: float = 1.0, style: str = "cosine"):
        super().__init__()
        if style not in DISTILL_STYLES:
            raise ValueError(f"distillation style must be one of {DISTILL_STYLES}, got {style!r}")
        self.student = student
        self.teacher = teacher
        self.loss_weight = float(loss_weight)
        self.style = style
        proj = nn.Linear(student.num_features, teacher.num_features)
        nn.init.trunc_normal_(proj.weight, std=0.02)
        nn.init.zeros_(proj.bias)
        if style == "videomamba":
            self.distill_head = nn.Sequential(RMSNorm(student.num_features, eps=1e-5), proj)
        else:
            self.distill_head = proj
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    @property
    def proj(self) -> nn.Linear:
        """The Linear projection student -> teacher channels (the last layer of ``distill_head``)."""
        return self.distill_head[-1] if isinstance(self.distill_head, nn.Sequential) else self.distill_head

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher is frozen: never in training mode (dropout, drop path)
        return self

    def no_weight_decay(self):
        return {"student." + n for n in self.student.no_weight_decay()}

    def get_num_layers(self):
        return self.student.get_num_layers()

    def forward(self, x):
        feats = self.student.forward_features(x)
        logits = self.student.forward_head(feats)
        with torch.no_grad():
            target = self.teacher.forward_features(x)
        if target.shape[:2] != feats.shape[:2]:
            raise ValueError(f"teacher tokens {tuple(target.shape[:2])} != student tokens {tuple(feats.shape[:2])}: "
                             "teacher and student need the same patch size, frames and input size")
        s = F.normalize(self.distill_head(feats).float(), dim=-1)
        t = F.normalize(target.float(), dim=-1)
        scale = 2.0 if self.style == "videomamba" else 1.0
        loss = (scale * (1.0 - (s * t).sum(-1))).mean() * self.loss_weight
        return logits, loss


def build_distill_wrapper(student, teacher, loss_weight: float = 1.0, teacher_checkpoint=None,
                          trust_checkpoint: bool = False, log=print, style: str = "cosine") -> DistillWrapper:
    """Wrap ``student`` with a frozen ``teacher`` (optionally loading ``teacher_checkpoint`` into it
    first: a file, a zoo tag such as ``videomamba_small_image.in1k`` or an hf-hub: name; its head may be dropped:
    only features are used)."""
    if teacher_checkpoint is not None:
        from .zoo import resolve_weights

        _load_teacher(teacher, resolve_weights(teacher_checkpoint, log=log), trust_checkpoint, log)
    return DistillWrapper(student, teacher, loss_weight, style)


def _load_teacher(teacher, path, trust_checkpoint, log):
    from .checkpoint import load_pretrained

    try:
        return load_pretrained(teacher, path, trust_checkpoint=trust_checkpoint, log=log)
    except RuntimeError as e:
        if "missing keys" not in str(e):
            raise
        # a teacher checkpoint without a (fitting) head is fine: only its features are used
        heads = {k for k in teacher.state_dict() if k.startswith("head.")}
        return load_pretrained(teacher, path, expected_missing=heads, trust_checkpoint=trust_checkpoint, log=log)
