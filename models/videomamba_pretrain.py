"""VideoMambaPro / VideoMamba student of the teacher-aligned masked pretraining (UMT style, VideoMamba's
``videomamba_*_pretrain``), timm-registered.

The student is ``VideoMambaPro`` (the same encoder, the same state-dict keys) that runs its blocks on the visible
tokens only, plus ``clip_decoder``: one ``head`` Linear + ``norm`` LayerNorm per aligned layer, mapping the
student's features to the teacher's (``models.clip_teacher``). ``pretrain_loss`` is the alignment loss.
Layout (timm style): ``ClipDecoder`` -> ``VideoMambaProPretrain`` -> ``pretrain_loss`` -> ``checkpoint_filter_fn``
-> ``default_cfgs`` -> ``@register_model`` entries ``videomambapro_{size}_pretrain`` / ``videomamba_{size}_pretrain``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from mamba.ops.rms_norm import rms_norm_fn

from ._common import SMALL_INPUT, VIDEOMAMBA_OPTIONS, _cfg, run_blocks, with_defaults
from .checkpoint import video_filter_fn
from .videomambapro import PRO_OPTIONS, VideoMambaPro, _args

__all__ = ["VideoMambaProPretrain", "ClipDecoder", "pretrain_loss", "checkpoint_filter_fn", "sinusoid_table",
           "CLIP_NORM_TYPES", "LOSS_TYPES"]

CLIP_NORM_TYPES = ("l2", "none")
LOSS_TYPES = ("l2", "mse", "smooth_l1")


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """The fixed sin-cos position table ``(n_position, dim)``: angle ``p / 10000^(2*(j//2)/dim)``, sin on even
    channels, cos on odd ones (the Transformer's, as VideoMamba's ``clip_pos_embed``)."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


class ClipDecoder(nn.Module):
    """``norm(head(x))`` (Linear ``embed_dim -> output_dim``, LayerNorm), then l2-normalised when ``norm_type='l2'``."""

    def __init__(self, embed_dim: int, output_dim: int = 512, norm_type: str = "l2"):
        super().__init__()
        if norm_type not in CLIP_NORM_TYPES:
            raise ValueError(f"clip_norm_type must be one of {CLIP_NORM_TYPES}, got {norm_type!r}")
        self.norm_type = norm_type
        self.head = nn.Linear(embed_dim, output_dim)
        self.norm = nn.LayerNorm(output_dim)
        nn.init.xavier_uniform_(self.head.weight)  # VideoMamba's decoder init
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        x = self.norm(self.head(x))
        return F.normalize(x, dim=-1) if self.norm_type == "l2" else x


class VideoMambaProPretrain(VideoMambaPro):
    """The masked-pretraining student: ``VideoMambaPro`` (no classifier) on the visible tokens + ``clip_decoder``.

    ``forward(x, mask)``: ``x (B, 3, T, H, W)``; ``mask (B, T'*N)`` bool, True = masked, patch tokens only in our
    frame-major (t, h, w) order, the same count masked in every row; the cls token is always visible. Only the
    ``1 + N_vis`` visible tokens enter the blocks (cost scales with 1 - mask ratio). Returns
    ``(K, B, 1 + N_vis, clip_output_dim)``, K = ``clip_return_layer``, in ascending block order (the teacher's
    order), aligned with the teacher's targets at the visible positions (``select_visible``).

    Returned layer features: the residual stream after block ``idx`` (idx in ``return_index``:
    ``depth - 1 - i * clip_student_return_interval``) normalised by ``norm_f``; for the last block that is the usual
    final ``norm_f(hidden + residual)``. Upstream returns the same for the other blocks but, for the last one, the
    un-normalised residual without the last block's mixer output (its ``x_clip_vis.append(residual)``); we do not.
    A fixed sin-cos table ``clip_pos_embed`` (a non-persistent buffer, not in the state dict) is added at the visible
    positions before the decoders. ``clip_decoder_embed_dim`` must equal ``embed_dim`` (None: embed_dim).
    """

    def __init__(self, clip_decoder_embed_dim=None, clip_output_dim=512, clip_norm_type="l2", clip_return_layer=1,
                 clip_student_return_interval=1, num_classes=0, **kwargs):
        if num_classes:
            raise ValueError(f"the pretraining student has no classifier: num_classes must be 0, got {num_classes}")
        if kwargs.get("image"):
            raise ValueError("the pretraining student is a video model: image=True is not supported")
        super().__init__(num_classes=0, **kwargs)
        if clip_decoder_embed_dim is None:
            clip_decoder_embed_dim = self.embed_dim
        if clip_decoder_embed_dim != self.embed_dim:
            raise ValueError(f"clip_decoder_embed_dim={clip_decoder_embed_dim} must equal the student's "
                             f"embed_dim={self.embed_dim} (the decoder reads the student's features directly)")
        if clip_norm_type not in CLIP_NORM_TYPES:
            raise ValueError(f"clip_norm_type must be one of {CLIP_NORM_TYPES}, got {clip_norm_type!r}")
        if clip_return_layer < 1 or clip_student_return_interval < 1:
            raise ValueError("clip_return_layer and clip_student_return_interval must be >= 1")
        index = [self.depth - 1 - i * clip_student_return_interval for i in range(clip_return_layer)]
        if index[-1] < 0:
            raise ValueError(f"clip_return_layer={clip_return_layer} x interval={clip_student_return_interval} "
                             f"reaches below block 0 of a depth-{self.depth} student")
        self.return_index = sorted(index)
        self.clip_norm_type, self.clip_output_dim = clip_norm_type, clip_output_dim
        self.clip_decoder = nn.ModuleList(
            [ClipDecoder(self.embed_dim, clip_output_dim, clip_norm_type) for _ in range(clip_return_layer)])
        n_tokens = 1 + self.patch_embed.num_patches * (self.num_frames // self.tubelet_size)
        self.register_buffer("clip_pos_embed", sinusoid_table(n_tokens, self.embed_dim), persistent=False)

    @staticmethod
    def visible_index(mask: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """``(B, 1 + N_vis)`` long: the positions (cls = 0, patch p = 1 + p) of the visible tokens, in order."""
        if mask.dtype != torch.bool or mask.dim() != 2 or mask.shape[1] != num_tokens:
            raise ValueError(f"mask must be bool (B, {num_tokens}) (True = masked, patch tokens only), got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        counts = mask.sum(1)
        if counts.numel() and not bool((counts == counts[0]).all()):
            raise ValueError(f"every mask row must mask the same number of tokens, got {sorted(set(counts.tolist()))}")
        B = mask.shape[0]
        vis = torch.nonzero(~mask)[:, 1].view(B, -1) + 1  # row-major: each row's positions in ascending order
        return torch.cat([vis.new_zeros(B, 1), vis], dim=1)

    def _normed(self, state, idx):
        """``norm_f`` of the residual stream after block ``idx`` (the drop path the next block would apply)."""
        hidden, residual = state
        drop = self.drop_path if idx == self.depth - 1 else self.layers[idx + 1].drop_path
        return rms_norm_fn(drop(hidden), self.norm_f.weight, self.norm_f.eps, residual=residual, prenorm=False,
                           residual_in_fp32=self.residual_in_fp32, backend=self.scan_backend)

    def forward_features(self, x, mask):
        """Features ``(K, B, 1 + N_vis, embed_dim)`` of the returned blocks (before ``clip_pos_embed``), and the
        visible positions ``(B, 1 + N_vis)``."""
        tokens = self.embed(x)
        B, L, d = tokens.shape
        index = self.visible_index(mask.to(tokens.device), L - 1)
        state, start, feats = (tokens.gather(1, index[..., None].expand(-1, -1, d)), None), 0, []
        for idx in self.return_index:
            state = run_blocks(self, self.layers[start:idx + 1], state, offset=start)
            feats.append(self._normed(state, idx))
            start = idx + 1
        return torch.stack(feats), index

    def forward(self, x, mask):
        feats, index = self.forward_features(x, mask)
        pos = self.clip_pos_embed.to(feats.dtype)[index]  # (B, 1 + N_vis, d)
        return torch.stack([dec(f + pos) for dec, f in zip(self.clip_decoder, feats)])


def select_visible(feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The teacher's targets at the student's visible positions: ``feats (K, B, 1 + N, C)`` (cls first) and
    ``mask (B, N)`` (True = masked) -> ``(K, B, 1 + N_vis, C)``; a teacher without cls (``(K, B, N, C)``) ->
    ``(K, B, N_vis, C)``."""
    K, B, L, C = feats.shape
    has_cls = L == mask.shape[1] + 1
    index = VideoMambaProPretrain.visible_index(mask.to(feats.device), L - 1 if has_cls else L)
    index = index if has_cls else index[:, 1:] - 1
    return feats.gather(2, index[None, ..., None].expand(K, -1, -1, C))


def pretrain_loss(student: torch.Tensor, target: torch.Tensor, loss_type: str = "l2") -> torch.Tensor:
    """Alignment loss of VideoMamba's pretraining: ``l2`` = ``mean(2 - 2 <s, t>)`` (l2-normalised features:
    2 - 2 cos), ``mse`` / ``smooth_l1`` = torch's mean losses."""
    if student.shape != target.shape:
        raise ValueError(f"student {tuple(student.shape)} and target {tuple(target.shape)} shapes differ")
    target = target.to(student.dtype)
    if loss_type == "l2":
        return (2 - 2 * (student * target).sum(-1)).mean()
    if loss_type == "mse":
        return F.mse_loss(student, target)
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(student, target)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def checkpoint_filter_fn(state_dict, model, orig_t_size=None, log=print, report=None, inflate="center"):
    """A VideoMamba ``*_mask_pt_*`` / our pretraining state dict (any known wrapping) for ``model``: unwraps
    ``model``/``module``, strips prefixes, renames the final ``norm.weight`` -> ``norm_f.weight`` and resizes the
    embeddings (``models.checkpoint.video_filter_fn``; the ``clip_decoder`` keys are kept, the model has them). The
    student's final norm is the same layer as upstream's ``norm``, so it is always renamed, never dropped."""
    return video_filter_fn(state_dict, model, orig_t_size=orig_t_size, log=log, report=report, inflate=inflate,
                           final_norm="rename")


default_cfgs = generate_default_cfgs({
    f"{arch}_{size}_pretrain": _cfg(num_classes=0, classifier=None,
                                    input_size=(3, SMALL_INPUT.get(size, (224,))[0], SMALL_INPUT.get(size, (224,))[0]))
    for arch in ("videomambapro", "videomamba") for size in ("tiny", "small", "middle", "test", "demo")
})


def _create_pretrain(variant, pretrained=False, model_args=None, **kwargs):
    """Build ``variant``: each of ``model_args`` (and of the VideoMambaPro options' defaults) fills a kwarg that is
    missing or None."""
    kwargs = with_defaults(kwargs, {**PRO_OPTIONS, **(model_args or {})})
    return build_model_with_cfg(VideoMambaProPretrain, variant, pretrained,
                                pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def videomambapro_tiny_pretrain(pretrained=False, **kwargs):
    model_args = _args("tiny")
    return _create_pretrain("videomambapro_tiny_pretrain", pretrained, model_args, **kwargs)


@register_model
def videomambapro_small_pretrain(pretrained=False, **kwargs):
    model_args = _args("small")
    return _create_pretrain("videomambapro_small_pretrain", pretrained, model_args, **kwargs)


@register_model
def videomambapro_middle_pretrain(pretrained=False, **kwargs):
    model_args = _args("middle")
    return _create_pretrain("videomambapro_middle_pretrain", pretrained, model_args, **kwargs)


@register_model
def videomambapro_test_pretrain(pretrained=False, **kwargs):
    model_args = _args("test")
    return _create_pretrain("videomambapro_test_pretrain", pretrained, model_args, **kwargs)


@register_model
def videomambapro_demo_pretrain(pretrained=False, **kwargs):
    model_args = _args("demo")
    return _create_pretrain("videomambapro_demo_pretrain", pretrained, model_args, **kwargs)


@register_model
def videomamba_tiny_pretrain(pretrained=False, **kwargs):
    model_args = _args("tiny", **VIDEOMAMBA_OPTIONS)
    return _create_pretrain("videomamba_tiny_pretrain", pretrained, model_args, **kwargs)


@register_model
def videomamba_small_pretrain(pretrained=False, **kwargs):
    model_args = _args("small", **VIDEOMAMBA_OPTIONS)
    return _create_pretrain("videomamba_small_pretrain", pretrained, model_args, **kwargs)


@register_model
def videomamba_middle_pretrain(pretrained=False, **kwargs):
    model_args = _args("middle", **VIDEOMAMBA_OPTIONS)
    return _create_pretrain("videomamba_middle_pretrain", pretrained, model_args, **kwargs)


@register_model
def videomamba_test_pretrain(pretrained=False, **kwargs):
    model_args = _args("test", **VIDEOMAMBA_OPTIONS)
    return _create_pretrain("videomamba_test_pretrain", pretrained, model_args, **kwargs)


@register_model
def videomamba_demo_pretrain(pretrained=False, **kwargs):
    model_args = _args("demo", **VIDEOMAMBA_OPTIONS)
    return _create_pretrain("videomamba_demo_pretrain", pretrained, model_args, **kwargs)
