"""models/maskfeat.py: MaskFeat on VideoMambaPro / TimeSformer: shapes, the mask token hides the masked pixels,
overfitting two clips, and the checkpoint -> --finetune contract."""
import numpy as np
import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import models
from datasets.masking import MaskGenerator
from datasets.synthetic import make_clip
from models.checkpoint import load_pretrained

NAMES = ["videomambapro_test_maskfeat", "timesformer_test_maskfeat"]
PRETRAIN_KEYS = ["mask_token", "maskfeat_head.bias", "maskfeat_head.weight"]


def _clips(n=2, frames=4, size=32, seed=0):
    """``n`` normalised synthetic clips (B, 3, T, H, W) float32."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(np.stack([make_clip(i % 4, rng, frames=frames, size=size) for i in range(n)]))
    x = x.permute(0, 4, 1, 2, 3).float() / 255
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def _masks(model, n, mask_type="random", ratio=0.5, seed=0):
    grid = (model.num_frames // model.tubelet_size, *model.patch_embed.grid_size)
    gen, rng = MaskGenerator(mask_type, grid, ratio), np.random.default_rng(seed)
    return torch.from_numpy(np.stack([gen(rng) for _ in range(n)]))


def test_registered():
    names = set(models.registered_models("*_maskfeat"))
    for arch, sizes in (("videomambapro", ("tiny", "small", "middle")), ("videomamba", ("tiny", "small", "middle")),
                        ("timesformer", ("tiny", "small", "base"))):
        for s in sizes + ("test", "demo"):
            assert f"{arch}_{s}_maskfeat" in names
    assert len(names) == 15


@pytest.mark.parametrize("name", NAMES + ["videomamba_test_maskfeat"])
def test_shapes_state_dict_and_interface(name):
    m = timm.create_model(name)
    enc = timm.create_model(name.replace("_maskfeat", ""), num_classes=0)
    assert set(m.state_dict()) == set(enc.state_dict()) | set(PRETRAIN_KEYS)
    x, mask = _clips(), _masks(m, 2, "tube", 0.75)
    pred = m(x, mask)
    M = int(mask[0].sum())
    assert pred.shape == (2, M, 108) and m.target(x, mask).shape == (2, M, 108)
    loss = m.loss(pred, x, mask)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert m.mask_token.grad is not None and m.mask_token.grad.abs().sum() > 0
    assert "mask_token" in m.no_weight_decay() and "pos_embed" in m.no_weight_decay()
    assert m.get_num_layers() == enc.get_num_layers()
    from timm.models import group_parameters

    groups = group_parameters(m, m.group_matcher())
    first = next(iter(groups.values()))
    assert "mask_token" in first and "patch_embed.proj.weight" in first
    assert m(x, torch.zeros_like(mask)).shape == (2, 0, 108)  # nothing masked


def test_bad_masks():
    m = timm.create_model(NAMES[0])
    x = _clips()
    with pytest.raises(ValueError, match="mask must be"):
        m(x, torch.zeros(2, 5, dtype=torch.bool))
    mask = _masks(m, 2)
    mask[0, ~mask[0]] = True
    with pytest.raises(ValueError, match="same number"):
        m(x, mask)


def _pixel_mask(m, mask):
    """Token mask (B, T'hw) -> pixel mask (B, 1, T, H, W) of the masked patches (tubelet 1)."""
    T, (h, w), p = m.num_frames, m.patch_embed.grid_size, m.patch_embed.patch_size[0]
    pm = mask.view(-1, T, h, w).repeat_interleave(p, 2).repeat_interleave(p, 3)
    return pm[:, None]


@pytest.mark.parametrize("name", NAMES)
def test_predictions_do_not_see_masked_pixels(name):
    torch.manual_seed(0)
    m = timm.create_model(name).eval()
    x, mask = _clips(), _masks(m, 2, "random", 0.5)
    pm = _pixel_mask(m, mask)
    x2 = torch.where(pm, torch.randn_like(x) * 3, x)  # other content in every masked patch
    assert not torch.equal(x, x2)
    with torch.no_grad():
        p1, p2 = m(x, mask), m(x2, mask)
        assert torch.equal(p1, p2)
        x3 = torch.where(pm, x, torch.randn_like(x))  # visible content changes: predictions change
        assert (m(x3, mask) - p1).abs().max() > 1e-4
    assert not torch.allclose(m.target(x, mask), m.target(x2, mask))  # only the target sees them


@pytest.mark.parametrize("name", NAMES)
def test_overfits_two_clips(name):
    torch.manual_seed(0)
    m = timm.create_model(name)
    x, mask = _clips(), _masks(m, 2, "random", 0.5)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(60):
        loss = m.loss(m(x, mask), x, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_finetunes_into_classifier(name, tmp_path):
    pre = timm.create_model(name)
    path = tmp_path / "checkpoint-latest.pth"
    torch.save({"model": pre.state_dict(), "epoch": 1}, path)
    cls = timm.create_model(name.replace("_maskfeat", ""), num_classes=4)
    report = load_pretrained(cls, str(path), log=None)
    assert sorted(report["dropped"]) == PRETRAIN_KEYS
    assert any("mask_token" in a for a in report["actions"]) and any("maskfeat_head" in a for a in report["actions"])
    assert report["unexpected"] == [] and report["missing"] == []
    assert report["initialised"] == ["head.bias", "head.weight"]  # no head in a pretraining checkpoint: kept fresh
    own = cls.state_dict()
    for k, v in pre.state_dict().items():
        if k not in PRETRAIN_KEYS:
            assert torch.equal(own[k], v), k
    back = timm.create_model(name)  # and a MaskFeat checkpoint resumes into the MaskFeat model unchanged
    report = load_pretrained(back, str(path), log=None)
    assert report["missing"] == [] and not report.get("dropped")
