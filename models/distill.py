"""VideoMamba-style self-distillation: a frozen smaller teacher guides a larger student (e.g. S -> M).

``build_distill_wrapper(student, teacher, loss_weight=1.0, teacher_checkpoint=None, log=print)``
returns a :class:`DistillWrapper` whose ``forward(x)`` returns ``(logits, distill_loss)``:

    t = normalize(teacher.forward_features(x))          (frozen, eval mode, no grad)
    s = normalize(proj(student.forward_features(x)))    (proj: Linear(d_student -> d_teacher))
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

__all__ = ["DistillWrapper", "build_distill_wrapper"]


class DistillWrapper(nn.Module):
    def __init__(self, student: nn.Module, teacher: nn.Module, loss_weight: float = 1.0):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.loss_weight = float(loss_weight)
        self.proj = nn.Linear(student.num_features, teacher.num_features)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

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
        s = F.normalize(self.proj(feats).float(), dim=-1)
        t = F.normalize(target.float(), dim=-1)
        loss = (1.0 - (s * t).sum(-1)).mean() * self.loss_weight
        return logits, loss


def build_distill_wrapper(student, teacher, loss_weight: float = 1.0, teacher_checkpoint=None,
                          trust_checkpoint: bool = False, log=print) -> DistillWrapper:
    """Wrap ``student`` with a frozen ``teacher`` (optionally loading ``teacher_checkpoint`` into it
    first; its head may be dropped: only features are used)."""
    if teacher_checkpoint is not None:
        _load_teacher(teacher, teacher_checkpoint, trust_checkpoint, log)
    return DistillWrapper(student, teacher, loss_weight)


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
