"""Released VideoMamba checkpoints in their published format, written into a local Hugging Face Hub cache
through huggingface_hub's own cache layout helpers, so the zoo is tested without network.

The key names and shapes are written from VideoMamba's architecture (its models/videomamba.py, mamba_simple.py,
videomamba_distill.py and videomamba_pretrain.py), independently of our model classes:
image checkpoints are ``{'model': state_dict}``, video ones bare state dicts (as the maintainers describe them);
the M ImageNet file carries the student's ``distill_head``, the masked-pretraining files the ``clip_decoder`` and a
final ``norm`` instead of ``norm_f`` and no head.
"""
from __future__ import annotations

import math
import os

import torch

SIZES = {"tiny": (192, 24), "small": (384, 24), "middle": (576, 32)}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def released_shapes(entry) -> dict:
    """key -> shape of ``entry``'s file (models.zoo.ZooEntry), as VideoMamba writes it."""
    size = next(s for s in SIZES if entry.model.startswith(f"videomamba_{s}"))
    d, depth = SIZES[size]
    e, r, n = 2 * d, math.ceil(d / 16), 16
    image = entry.num_frames is None
    pretrain = entry.num_classes == 0
    g = entry.img_size // 16
    sh = {"patch_embed.proj.weight": (d, 3, 16, 16) if image else (d, 3, 1, 16, 16), "patch_embed.proj.bias": (d,),
          "cls_token": (1, 1, d), "pos_embed": (1, g * g + 1, d)}
    if not image:
        sh["temporal_pos_embedding"] = (1, entry.num_frames, d)
    for i in range(depth):
        p = f"layers.{i}.mixer."
        sh.update({p + "A_log": (e, n), p + "D": (e,), p + "A_b_log": (e, n), p + "D_b": (e,),
                   p + "in_proj.weight": (2 * e, d), p + "conv1d.weight": (e, 1, 4), p + "conv1d.bias": (e,),
                   p + "x_proj.weight": (r + 2 * n, e), p + "dt_proj.weight": (e, r), p + "dt_proj.bias": (e,),
                   p + "conv1d_b.weight": (e, 1, 4), p + "conv1d_b.bias": (e,), p + "x_proj_b.weight": (r + 2 * n, e),
                   p + "dt_proj_b.weight": (e, r), p + "dt_proj_b.bias": (e,), p + "out_proj.weight": (d, e),
                   f"layers.{i}.norm.weight": (d,)})
    if pretrain:  # videomamba_pretrain.py: final norm is 'norm', CLIP decoder (Linear 576 -> 512 + LayerNorm)
        sh.update({"norm.weight": (d,), "clip_decoder.0.head.weight": (512, d), "clip_decoder.0.head.bias": (512,),
                   "clip_decoder.0.norm.weight": (512,), "clip_decoder.0.norm.bias": (512,)})
    else:
        sh.update({"norm_f.weight": (d,), "head.weight": (entry.num_classes, d), "head.bias": (entry.num_classes,)})
    if image and size == "middle" and entry.tag == "in1k":  # the distilled student (videomamba_distill.py)
        sh.update({"distill_head.0.weight": (d,), "distill_head.1.weight": (384, d), "distill_head.1.bias": (384,)})
    return sh


def released_checkpoint(entry, device="cpu", seed=0) -> dict:
    """The file's content: random tensors of the released shapes, wrapped as VideoMamba wraps them."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in released_shapes(entry).items():
        if device == "meta":
            sd[k] = torch.empty(shape, device="meta")
        else:
            sd[k] = torch.randn(shape, generator=gen) * 0.02
    return {"model": sd} if entry.num_frames is None else sd


def populate_hub_cache(cache_dir, entries, repo_id="OpenGVLab/VideoMamba") -> dict:
    """Write each entry's file into ``cache_dir`` exactly where huggingface_hub's ``hf_hub_download`` finds it
    (``models--ORG--REPO/{blobs,snapshots/<commit>,refs/main}``), using huggingface_hub's own layout helpers.
    Returns {file name: the written content}."""
    from huggingface_hub.file_download import (
        _cache_commit_hash_for_specific_revision,
        _create_symlink,
        _get_pointer_path,
        repo_folder_name,
    )

    storage = os.path.join(str(cache_dir), repo_folder_name(repo_id=repo_id, repo_type="model"))
    os.makedirs(os.path.join(storage, "blobs"), exist_ok=True)
    _cache_commit_hash_for_specific_revision(storage, "main", COMMIT)
    written = {}
    for i, e in enumerate(entries):
        if e.file in written:
            continue
        ckpt = released_checkpoint(e, seed=i)
        blob = os.path.join(storage, "blobs", f"{i:040x}")
        torch.save(ckpt, blob)
        pointer = _get_pointer_path(storage, COMMIT, e.file)
        os.makedirs(os.path.dirname(pointer), exist_ok=True)
        _create_symlink(blob, pointer, new_blob=True)
        written[e.file] = ckpt
    return written
