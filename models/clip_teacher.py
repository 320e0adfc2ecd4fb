"""The frozen image teacher of the teacher-aligned masked pretraining (UMT style; VideoMamba's ``clip_b16``): a timm
ViT applied frame by frame, returning its last layers' normalised features (and the cls->patch attention of its last
block for attention-guided masking).

``build_clip_teacher(...)`` -> ``ClipTeacher``. The ViT is timm's own (``forward_intermediates`` for the layers, a
hook on the last block's ``attn.qkv`` for the attention); nothing of the ViT is reimplemented here.
"""
from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

__all__ = ["ClipTeacher", "build_clip_teacher", "CLIP_TEACHERS"]

# our teacher names -> timm model (with pretrained tag); any other timm ViT name is accepted as is
CLIP_TEACHERS = {"clip_b16": "vit_base_patch16_clip_224.openai"}
NORM_TYPES = ("l2", "none")


class ClipTeacher(nn.Module):
    """A frozen timm ViT applied to each frame of a clip.

    ``forward(x)``: ``x (B, 3, T, H, W)`` (bicubic-resized to the ViT's input size when different), under no_grad.
    Returns ``feats (K, B, 1 + T*N, C_out)`` (cls first, averaged over frames) with ``return_cls``, else
    ``(K, B, T*N, C_out)``; patch tokens frame-major (t, h, w) as the student's. K = ``return_layer`` blocks
    ``depth - 1 - i * return_interval``, in ascending block order, each after the ViT's final norm and, when
    ``project`` (CLIP: its 768 -> 512 ``head``), the projection; then l2-normalised when ``norm_type='l2'``.
    With ``return_attn`` returns ``(feats, attn)``, ``attn (B, T, N)``: the last block's cls-query softmax
    probabilities over the patch keys (the softmax runs over all keys, cls included), heads averaged.
    Differs from upstream ``clip.py``: its ``clip_return_cls`` path skips the final norm (``ln_post``); here the final
    norm always applies. Outputs are float32; the ViT runs in ``dtype`` (None: bf16 on CUDA, fp32 on CPU).
    Parameters never require grad, and the module stays in eval mode (``train()`` is a no-op).
    """

    def __init__(self, vit: nn.Module, *, num_frames: int, return_layer: int = 1, return_interval: int = 1,
                 return_cls: bool = True, return_attn: bool = False, norm_type: str = "l2", project: bool = True,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
        depth = len(vit.blocks)
        index = [depth - 1 - i * return_interval for i in range(return_layer)]
        if return_layer < 1 or return_interval < 1 or index[-1] < 0:
            raise ValueError(f"return_layer={return_layer} x return_interval={return_interval} does not fit a "
                             f"depth-{depth} teacher")
        if getattr(vit, "num_prefix_tokens", 1) != 1 or not getattr(vit, "has_class_token", True):
            raise ValueError("the teacher ViT must have exactly one prefix token (a class token)")
        self.vit = vit
        self.num_frames, self.return_index = num_frames, sorted(index)
        self.return_cls, self.return_attn, self.norm_type = return_cls, return_attn, norm_type
        self.project, self.dtype = project, dtype
        self.img_size = tuple(vit.patch_embed.img_size)
        self.requires_grad_(False)
        super().train(False)

    @property
    def output_dim(self) -> int:
        """C_out: the projection's output dim when ``project``, else the ViT's width."""
        return self.vit.head.out_features if self.project else self.vit.num_features

    def train(self, mode: bool = True):
        return super().train(False)  # frozen teacher: always eval (no dropout / drop path)

    def _run_dtype(self, device: torch.device) -> torch.dtype:
        want = self.dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        if next(self.vit.parameters()).dtype != want:
            self.vit.to(want)
        return want

    def _cls_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """``(BT, N)``: heads-averaged softmax of the cls query over all keys, restricted to the patch keys."""
        attn = self.vit.blocks[-1].attn
        BT, L, _ = qkv.shape
        q, k, _ = qkv.reshape(BT, L, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q[:, :, :1]), attn.k_norm(k)
        logits = (q.float() * attn.scale) @ k.float().transpose(-2, -1)  # (BT, heads, 1, L)
        return logits.softmax(-1).mean(1)[:, 0, 1:]

    @torch.no_grad()
    def forward(self, x: torch.Tensor):
        if x.dim() != 5:
            raise ValueError(f"expected (B, 3, T, H, W) clips, got a tensor of shape {tuple(x.shape)}")
        B, _, T = x.shape[:3]
        if T != self.num_frames:
            raise ValueError(f"clip has {T} frames; the teacher was built for num_frames={self.num_frames}")
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        if tuple(frames.shape[-2:]) != self.img_size:
            frames = F.interpolate(frames.float(), size=self.img_size, mode="bicubic", align_corners=False)
        frames = frames.to(self._run_dtype(x.device))

        captured = []
        hook = None
        if self.return_attn:
            hook = self.vit.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            out = self.vit.forward_intermediates(frames, indices=self.return_index, norm=True, output_fmt="NLC",
                                                 intermediates_only=True, return_prefix_tokens=True)
        finally:
            if hook is not None:
                hook.remove()
        patches = torch.stack([p for p, _ in out])  # (K, BT, N, C)
        cls = torch.stack([c for _, c in out])  # (K, BT, 1, C)
        N = patches.shape[2]
        feats = rearrange(patches, "k (b t) n c -> k b (t n) c", b=B)
        if self.return_cls:
            cls = rearrange(cls, "k (b t) 1 c -> k b t c", b=B).mean(2, keepdim=True)  # mean over frames
            feats = torch.cat([cls, feats], dim=2)
        if self.project:
            feats = self.vit.head(feats)  # affine: projecting the frame-mean cls = the mean of the projections
        feats = feats.float()
        if self.norm_type == "l2":
            feats = F.normalize(feats, dim=-1)
        if not self.return_attn:
            return feats
        attn = self._cls_attention(captured[-1]).view(B, T, N)
        return feats, attn


def build_clip_teacher(name: str = "clip_b16", checkpoint: str | None = None, *, num_frames: int, img_size: int = 224,
                       return_layer: int = 1, return_interval: int = 1, return_cls: bool = True,
                       return_attn: bool = False, norm_type: str = "l2", pretrained: bool = True,
                       dtype: torch.dtype | None = None, log=print, **vit_kwargs) -> ClipTeacher:
    """The frozen teacher ``name``: ``clip_b16`` (timm ``vit_base_patch16_clip_224.openai``, CLIP's 512-d projection
    kept as its ``head``) or any timm ViT name (``vit_tiny_patch16_224``...: no projection, C_out = its width).

    Weights: ``checkpoint`` (a local file, loaded through timm's pretrained path and filter) when given, else the
    timm pretrained tag (the HF Hub cache) when ``pretrained``, else random (logged loudly: tests / demos only).
    ``vit_kwargs`` go to ``timm.create_model`` (e.g. ``patch_size``); ``img_size`` is the ViT's input size."""
    timm_name = CLIP_TEACHERS.get(name, name)
    project = "clip" in timm_name.split(".")[0]
    kw = dict(img_size=img_size, **vit_kwargs)
    if not project:
        kw["num_classes"] = 0  # a classifier head is not a feature projection: drop it
    if checkpoint is not None:
        vit = timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(checkpoint)), **kw)
        log(f"clip teacher: {name} ({timm_name}) weights from {checkpoint}")
    elif pretrained:
        vit = timm.create_model(timm_name, pretrained=True, **kw)
        log(f"clip teacher: {name} ({timm_name}) pretrained weights (timm tag)")
    else:
        vit = timm.create_model(timm_name, pretrained=False, **kw)
        log(f"WARNING: clip teacher {name} ({timm_name}) has RANDOM weights (pretrained=False): its targets are "
            "meaningless; use this for tests and demos only")
    teacher = ClipTeacher(vit, num_frames=num_frames, return_layer=return_layer, return_interval=return_interval,
                          return_cls=return_cls, return_attn=return_attn, norm_type=norm_type, project=project,
                          dtype=dtype)
    log(f"clip teacher: return blocks {teacher.return_index}, output dim {teacher.output_dim}, cls {return_cls}, "
        f"attn {return_attn}, norm {norm_type}")
    return teacher
