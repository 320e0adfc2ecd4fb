"""VideoMambaPro and its backbone VideoMamba (METHOD.md section 1), video and image, timm-registered.

Layout (timm style): blocks -> ``VideoMambaPro`` -> ``checkpoint_filter_fn`` -> ``_cfg``/``default_cfgs``
-> ``_create_videomambapro`` -> ``@register_model`` entries. ``videomamba_*`` is the same network with
the two VideoMambaPro changes off (``bwd_mask=False, residual_start='none'``); the state dicts are
identical, so released VideoMamba weights load into either.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from einops import rearrange
from timm.layers import DropPath, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

import mamba

if not getattr(mamba, "IS_VIDEOMAMBAPRO_MAMBA", False):  # pragma: no cover - environment check
    raise ImportError(
        f"the imported 'mamba' package ({getattr(mamba, '__file__', '?')}) is not VideoMambaPro's own mamba/ "
        "package; run from the repository root (or put it first on PYTHONPATH) and do not install another "
        "package under the name 'mamba'"
    )

from mamba.modules.bimamba import RESIDUAL_START, BiMamba  # noqa: E402
from mamba.ops.backend import validate_backend  # noqa: E402
from mamba.ops.rms_norm import RMSNorm, rms_norm_fn  # noqa: E402

from ._common import (  # noqa: E402  (MODEL_SIZES, PRO_OPTIONS, PatchEmbed: re-exported, their home is _common)
    MODEL_SIZES,
    PRO_OPTIONS,
    VIDEOMAMBA_OPTIONS,
    ClassifierMixin,
    PatchEmbed,
    _cfg,
    embed_group_matcher,
    linear_dpr,
    run_blocks,
    small_cfgs,
    small_input_defaults,
)
from .checkpoint import video_filter_fn  # noqa: E402
from .zoo import HUB_REPO, WEIGHTS_LICENSE_NOTE, ZOO  # noqa: E402

__all__ = ["VideoMambaPro", "Block", "PatchEmbed", "checkpoint_filter_fn", "MODEL_SIZES", "PRO_OPTIONS"]


class Block(nn.Module):
    """Add -> RMSNorm -> BiMamba, with the residual stream in fp32 (mamba_ssm's Block layout)."""

    def __init__(self, dim, mixer_kwargs=None, drop_path=0.0, norm_eps=1e-5, residual_in_fp32=True):
        super().__init__()
        self.mixer = BiMamba(dim, **(mixer_kwargs or {}))  # its scan_backend is the block's (the norm follows it)
        self.norm = RMSNorm(dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, hidden_states, residual=None):
        if residual is not None:
            hidden_states = self.drop_path(hidden_states)
        hidden_states, residual = rms_norm_fn(
            hidden_states, self.norm.weight, self.norm.eps, residual=residual, prenorm=True,
            residual_in_fp32=self.residual_in_fp32, backend=self.mixer.scan_backend,
        )
        return self.mixer(hidden_states), residual


class VideoMambaPro(ClassifierMixin, nn.Module):
    """VideoMamba backbone with the VideoMambaPro options (see ``BiMamba``).

    Video input ``(B, 3, T, H, W)`` (T = ``num_frames``), or ``(B, 3, H, W)`` with ``image=True``.
    ``use_checkpoint``: activation checkpointing of the first ``checkpoint_num`` blocks (all blocks
    when ``checkpoint_num <= 0``, so the flag is never silently a no-op).
    ``init_mode``: ``'default'`` (ours) or ``'videomamba'`` (VideoMamba's from-scratch initialisation, see
    ``init_weights``).
    ``scan_backend``: the model's scan backend (``mamba.ops.backend.BACKENDS``), followed by every block's scan,
    causal conv and norm; None follows the global switch (``set_scan_backend`` / ``VMP_SCAN_BACKEND``) at each
    call. Stored as ``self.scan_backend``; ``resolved_scan_backend(device_type)`` is what runs there.
    """

    def __init__(
        self, img_size=224, patch_size=16, in_chans=3, num_classes=400, embed_dim=192, depth=24,
        num_frames=16, tubelet_size=1, image=False, drop_path_rate=0.0, fc_drop_rate=0.0,
        use_checkpoint=False, checkpoint_num=0, d_state=16, d_conv=4, expand=2, norm_eps=1e-5,
        residual_in_fp32=True, bwd_mask=True, residual_start="both", mask_drops_D=False, gate=True,
        divide_out=False, init_mode="default", scan_backend=None,
    ):
        super().__init__()
        if residual_start not in RESIDUAL_START:
            raise ValueError(f"residual_start must be one of {sorted(RESIDUAL_START)}, got {residual_start!r}")
        if not image and num_frames % tubelet_size:
            raise ValueError(f"num_frames={num_frames} is not a multiple of tubelet_size={tubelet_size}")
        self.num_classes, self.embed_dim, self.num_features, self.depth = num_classes, embed_dim, embed_dim, depth
        self.image, self.num_frames, self.tubelet_size = image, (1 if image else num_frames), tubelet_size
        self.use_checkpoint, self.checkpoint_num = use_checkpoint, checkpoint_num
        self.residual_in_fp32 = residual_in_fp32
        self.scan_backend = validate_backend(scan_backend)
        self.options = dict(bwd_mask=bwd_mask, residual_start=residual_start, mask_drops_D=mask_drops_D,
                            gate=gate, divide_out=divide_out)

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, tubelet_size, image)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        if not image:
            self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, num_frames // tubelet_size, embed_dim))
        dpr = linear_dpr(drop_path_rate, depth)  # linear 0 .. drop_path
        inter_dpr = [0.0] + dpr  # block i drops the previous block's mixer output
        mixer_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=self.scan_backend,
                            **self.options)
        self.layers = nn.ModuleList(
            [Block(embed_dim, mixer_kwargs, inter_dpr[i], norm_eps, residual_in_fp32) for i in range(depth)]
        )
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm_f = RMSNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(fc_drop_rate) if fc_drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(init_mode)

    @torch.no_grad()
    def init_weights(self, mode: str = "default"):
        """``default``: pos_embed / cls_token trunc_normal(0.02); Linear weights trunc_normal(0.02) and biases 0
        except the dt projections (Mamba's dt init, both directions); out_proj scaled by 1 / sqrt(depth).

        ``videomamba``: what VideoMamba's model does from scratch: every Linear weight (dt projections included)
        trunc_normal(0.02), every Linear bias 0 except the forward dt bias (the backward ``dt_proj_b.bias`` is
        zeroed: upstream marks only the forward one ``_no_reinit``), ``out_proj`` kaiming_uniform(a=sqrt(5)) /
        sqrt(depth), pos_embed trunc_normal(0.02), cls_token and temporal embedding 0."""
        if mode == "videomamba":
            return self._init_videomamba()
        if mode != "default":
            raise ValueError(f"init_mode must be 'default' or 'videomamba', got {mode!r}")
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if not getattr(m.weight, "_no_reinit", False):
                    trunc_normal_(m.weight, std=0.02)
                if m.bias is not None and not getattr(m.bias, "_no_reinit", False):
                    nn.init.zeros_(m.bias)
        for layer in self.layers:  # GPT-2 / mamba_ssm prenorm-residual rescale
            layer.mixer.out_proj.weight.div_(math.sqrt(self.depth))

    def _init_videomamba(self):
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.zeros_(self.cls_token)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for layer in self.layers:
            mixer = layer.mixer
            mixer._init_dt_proj_bias(mixer.dt_proj)  # the forward dt bias keeps Mamba's init (upstream _no_reinit)
            nn.init.kaiming_uniform_(mixer.out_proj.weight, a=math.sqrt(5))
            mixer.out_proj.weight.div_(math.sqrt(self.depth))

    # --- timm / training-engine interface -------------------------------------------------------
    def resolved_scan_backend(self, device_type: str) -> str:
        """The backend this model's scan runs on for tensors on ``device_type`` (its own choice or the switch)."""
        from mamba.ops.backend import resolve_backend

        return resolve_backend(device_type, self.scan_backend)

    @torch.jit.ignore
    def group_matcher(self, coarse=False):
        return embed_group_matcher("layers")

    def no_weight_decay(self):
        names = {"pos_embed", "cls_token", "temporal_pos_embedding"}
        names |= {n for n, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}
        return names

    def get_num_layers(self):
        return self.depth

    def set_mixer_recompute(self, mode: str = "inner"):
        """What every block's mixer recomputes in the backward instead of keeping (``mamba.modules.RECOMPUTE``:
        none / inner / all); values and gradients do not change, only memory and time."""
        from mamba.modules.bimamba import RECOMPUTE

        if mode not in RECOMPUTE:
            raise ValueError(f"mixer recompute must be one of {RECOMPUTE}, got {mode!r}")
        for layer in self.layers:
            layer.mixer.recompute = mode

    # --- forward --------------------------------------------------------------------------------
    def embed(self, x):
        """Patch embedding + position embeddings -> tokens ``(B, 1 + T'n, d)``, frame-major."""
        x = self.patch_embed(x)
        B, d = x.shape[:2]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
        if self.image:
            x = rearrange(x, "b d h w -> b (h w) d") + self.pos_embed[:, 1:]
        else:
            T = x.shape[2]
            if T != self.temporal_pos_embedding.shape[1]:
                raise ValueError(f"clip has {T * self.tubelet_size} frames; the model was built for "
                                 f"num_frames={self.num_frames} (tubelet {self.tubelet_size})")
            x = rearrange(x, "b d t h w -> b t (h w) d")
            x = x + self.pos_embed[:, None, 1:] + self.temporal_pos_embedding[:, :, None]
            x = rearrange(x, "b t n d -> b (t n) d")
        return torch.cat([cls.to(x.dtype), x], dim=1)

    def forward_features(self, x):
        """Normalised tokens ``(B, L, d)`` (token 0 is the cls token)."""
        hidden, residual = run_blocks(self, self.layers, (self.embed(x), None))
        return rms_norm_fn(self.drop_path(hidden), self.norm_f.weight, self.norm_f.eps, residual=residual,
                           prenorm=False, residual_in_fp32=self.residual_in_fp32, backend=self.scan_backend)


def checkpoint_filter_fn(state_dict, model, orig_t_size=None, log=print, report=None, inflate="center",
                         final_norm="drop"):
    """Convert a VideoMamba / VideoMambaPro state dict (any known wrapping) for ``model``.

    Unwraps ``model``/``module``/``state_dict``; strips ``module.``/``_orig_mod.``/``backbone.``/
    ``encoder.`` (and keeps only ``student.*`` of a distillation wrapper); inflates a 2-D patch kernel
    (``inflate='center'`` as VideoMamba's ``inflate_weight``, or ``'average'``); drops VideoMamba's
    ``distill_head`` / ``clip_decoder``; resizes ``pos_embed`` (bicubic) and ``temporal_pos_embedding``
    (linear); zero-fills a missing temporal embedding (image checkpoint); drops a masked-pretraining encoder's
    final ``norm.weight`` as VideoMamba's fine-tuning does (``final_norm='rename'``: loaded as ``norm_f``); drops a
    head whose shape does not
    fit. Actions are logged and appended to ``report['actions']`` (``report['head_dropped']`` is set).
    The steps are ``models.checkpoint``'s (``prepare_state_dict`` + ``video_surgery``), shared with the baselines.
    """
    return video_filter_fn(state_dict, model, orig_t_size=orig_t_size, log=log, report=report, inflate=inflate,
                           final_norm=final_norm)


_image = dict(num_classes=1000)


def _zoo_cfg(e):
    """The pretrained cfg of a released VideoMamba checkpoint (models.zoo.ZOO): Hub repo + file, classes, size;
    frames and the published top-1 are in ``notes`` (timm's cfg has no field for them) and in ``models.zoo``."""
    notes = [f"frames={e.num_frames}" if e.num_frames else "image", f"dataset={e.dataset}",
             f"published_top1={e.top1}"] + ([e.note] if e.note else []) + [WEIGHTS_LICENSE_NOTE]
    return _cfg(hf_hub_id=HUB_REPO, hf_hub_filename=e.file, num_classes=e.num_classes, license=e.license,
                input_size=(3, e.img_size, e.img_size), notes=tuple(notes),
                origin_url="https://github.com/OpenGVLab/VideoMamba", paper_ids="arXiv:2403.06977")


default_cfgs = generate_default_cfgs({
    **{name: _zoo_cfg(e) for name, e in ZOO.items()},
    **{f"{arch}_{size}": _cfg() for arch in ("videomambapro", "videomamba") for size in ("tiny", "small", "middle")},
    **{f"{arch}_{size}_image": _cfg(**_image)
       for arch in ("videomambapro", "videomamba") for size in ("tiny", "small", "middle")},
    **small_cfgs("videomambapro", "videomamba"),
    **{f"{arch}_test_image": _cfg(num_classes=10, input_size=(3, 32, 32)) for arch in ("videomambapro", "videomamba")},
})


def _args(size, **kw):
    """The ``model_args`` of one VideoMamba size: ``MODEL_SIZES``' width and depth (and the small variants' input
    size and frames), plus ``kw``."""
    embed_dim, depth = MODEL_SIZES[size]
    return dict(embed_dim=embed_dim, depth=depth, **small_input_defaults(size), **kw)


def _create_videomambapro(variant, pretrained=False, model_args=None, **kwargs):
    """Build ``variant``: each of ``model_args`` (and of the VideoMambaPro options' defaults) fills a kwarg that
    is missing or None; a released checkpoint's tag gives its frames and input size unless given."""
    model_args = {**PRO_OPTIONS, "image": False, **(model_args or {})}
    image = model_args["image"]
    tag = kwargs.get("pretrained_cfg")
    entry = ZOO.get(f"{variant}.{tag}") if isinstance(tag, str) else None
    if entry is not None:  # a released checkpoint: its frames / size unless given
        if entry.num_frames and not image and kwargs.get("num_frames") is None:
            kwargs["num_frames"] = entry.num_frames
        if kwargs.get("img_size") is None:
            kwargs["img_size"] = entry.img_size
    for k, v in model_args.items():
        if kwargs.get(k) is None:
            kwargs[k] = v
    if image:
        kwargs.pop("num_frames", None)
    return build_model_with_cfg(
        VideoMambaPro, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs
    )


@register_model
def videomambapro_tiny(pretrained=False, **kwargs):
    model_args = _args("tiny")
    return _create_videomambapro("videomambapro_tiny", pretrained, model_args, **kwargs)


@register_model
def videomambapro_tiny_image(pretrained=False, **kwargs):
    model_args = _args("tiny", image=True)
    return _create_videomambapro("videomambapro_tiny_image", pretrained, model_args, **kwargs)


@register_model
def videomambapro_small(pretrained=False, **kwargs):
    model_args = _args("small")
    return _create_videomambapro("videomambapro_small", pretrained, model_args, **kwargs)


@register_model
def videomambapro_small_image(pretrained=False, **kwargs):
    model_args = _args("small", image=True)
    return _create_videomambapro("videomambapro_small_image", pretrained, model_args, **kwargs)


@register_model
def videomambapro_middle(pretrained=False, **kwargs):
    model_args = _args("middle")
    return _create_videomambapro("videomambapro_middle", pretrained, model_args, **kwargs)


@register_model
def videomambapro_middle_image(pretrained=False, **kwargs):
    model_args = _args("middle", image=True)
    return _create_videomambapro("videomambapro_middle_image", pretrained, model_args, **kwargs)


@register_model
def videomambapro_test(pretrained=False, **kwargs):
    model_args = _args("test")
    return _create_videomambapro("videomambapro_test", pretrained, model_args, **kwargs)


@register_model
def videomambapro_test_image(pretrained=False, **kwargs):
    model_args = _args("test", image=True)
    return _create_videomambapro("videomambapro_test_image", pretrained, model_args, **kwargs)


@register_model
def videomambapro_demo(pretrained=False, **kwargs):
    model_args = _args("demo")
    return _create_videomambapro("videomambapro_demo", pretrained, model_args, **kwargs)


@register_model
def videomamba_tiny(pretrained=False, **kwargs):
    model_args = _args("tiny", **VIDEOMAMBA_OPTIONS)
    return _create_videomambapro("videomamba_tiny", pretrained, model_args, **kwargs)


@register_model
def videomamba_tiny_image(pretrained=False, **kwargs):
    model_args = _args("tiny", **VIDEOMAMBA_OPTIONS, image=True)
    return _create_videomambapro("videomamba_tiny_image", pretrained, model_args, **kwargs)


@register_model
def videomamba_small(pretrained=False, **kwargs):
    model_args = _args("small", **VIDEOMAMBA_OPTIONS)
    return _create_videomambapro("videomamba_small", pretrained, model_args, **kwargs)


@register_model
def videomamba_small_image(pretrained=False, **kwargs):
    model_args = _args("small", **VIDEOMAMBA_OPTIONS, image=True)
    return _create_videomambapro("videomamba_small_image", pretrained, model_args, **kwargs)


@register_model
def videomamba_middle(pretrained=False, **kwargs):
    model_args = _args("middle", **VIDEOMAMBA_OPTIONS)
    return _create_videomambapro("videomamba_middle", pretrained, model_args, **kwargs)


@register_model
def videomamba_middle_image(pretrained=False, **kwargs):
    model_args = _args("middle", **VIDEOMAMBA_OPTIONS, image=True)
    return _create_videomambapro("videomamba_middle_image", pretrained, model_args, **kwargs)


@register_model
def videomamba_test(pretrained=False, **kwargs):
    model_args = _args("test", **VIDEOMAMBA_OPTIONS)
    return _create_videomambapro("videomamba_test", pretrained, model_args, **kwargs)


@register_model
def videomamba_test_image(pretrained=False, **kwargs):
    model_args = _args("test", **VIDEOMAMBA_OPTIONS, image=True)
    return _create_videomambapro("videomamba_test_image", pretrained, model_args, **kwargs)


@register_model
def videomamba_demo(pretrained=False, **kwargs):
    model_args = _args("demo", **VIDEOMAMBA_OPTIONS)
    return _create_videomambapro("videomamba_demo", pretrained, model_args, **kwargs)
