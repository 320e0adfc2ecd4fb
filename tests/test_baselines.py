"""The baselines (TimeSformer, ViViT factorised encoder, VideoMambaOut): registry, sizes and parameter counts
against the papers, shapes, gradients, activation checkpointing, layer decay, overfitting a few clips,
checkpoint round trips, and ImageNet initialisation from image weights through the one loading path (a
static clip then gives the image network's features, the way each paper inflates)."""
import os
import sys

import pytest
import timm
import torch
import torch.nn.functional as F

import models
from models.checkpoint import load_pretrained
from utils.optim import param_groups_layer_decay

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINES = ("timesformer", "vivit", "videomambaout")
SIZES = {"timesformer": ("tiny", "small", "base"), "vivit": ("tiny", "small", "base"),
         "videomambaout": ("tiny", "small", "middle")}


def _clip(b=2, t=4, s=32, seed=0):
    return torch.randn(b, 3, t, s, s, generator=torch.Generator().manual_seed(seed))


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


def _meta(name, **kw):
    with torch.device("meta"):
        return timm.create_model(name, **kw)


def test_registered_beside_videomambapro():
    ours = set(models.registered_models())
    for arch in BASELINES:
        for size in SIZES[arch] + ("test", "demo"):
            assert f"{arch}_{size}" in ours
    assert "videomambaout_tiny_image" in ours and "videomambapro_tiny" in ours
    assert "vit_tiny_patch16_224" not in ours  # timm's own models are not "ours"
    # the default pretrained tag of the ViT-based sizes points at timm's ImageNet-21k -> 1k ViT weights
    cfg = timm.models.get_pretrained_cfg("timesformer_base")
    assert cfg.hf_hub_id == "timm/vit_base_patch16_224.augreg_in21k_ft_in1k" and cfg.num_classes == 1000
    assert timm.models.get_pretrained_cfg("vivit_small").hf_hub_id == "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"


def test_timesformer_base_parameter_count_matches_the_paper():
    """TimeSformer paper, Table 1: divided space-time attention, ViT-B, K400: 121.4 M parameters."""
    m = _meta("timesformer_base", num_classes=400, num_frames=8)
    assert abs(_nparams(m) - 121.4e6) < 0.3e6, _nparams(m)
    assert m.get_num_layers() == 12 and m.embed_dim == 768 and m.blocks[0].attn.num_heads == 12
    for size, (d, heads) in {"tiny": (192, 3), "small": (384, 6)}.items():
        m = _meta(f"timesformer_{size}", num_classes=400)
        assert m.embed_dim == d and len(m.blocks) == 12 and m.blocks[0].attn.num_heads == heads


def test_vivit_base_is_vit_b_plus_a_four_layer_temporal_transformer():
    """ViViT-B/16x2 FE (the paper's Kinetics model): a ViT-B spatial encoder (timm's ViT-B, counted here),
    a 3-D tubelet kernel (2 x 16 x 16), and a 4-layer ViT-B temporal encoder with its cls token, position
    embedding and final norm."""
    T = 32
    m = _meta("vivit_base", num_classes=400, num_frames=T, tubelet_size=2)
    vit = _meta("vit_base_patch16_224", num_classes=400)
    d = 768
    block = _nparams(vit.blocks[0])
    expected = _nparams(vit) + 3 * 16 * 16 * d + 4 * block + d + (T // 2) * d + 2 * d
    assert _nparams(m) == expected and abs(_nparams(m) - 115.1e6) < 0.1e6
    assert m.get_num_layers() == 16 and len(m.spatial_blocks) == 12 and len(m.temporal_blocks) == 4


@pytest.mark.parametrize("size", ["tiny", "small", "middle"])
def test_videomambaout_has_videomamba_width_and_depth(size):
    vm = _meta(f"videomamba_{size}", num_classes=400)
    m = _meta(f"videomambaout_{size}", num_classes=400)
    assert (m.embed_dim, len(m.blocks)) == (vm.embed_dim, len(vm.layers))
    d = m.embed_dim
    blk = m.blocks[0]
    assert blk.fc1.out_features == 2 * int(8 / 3 * d) and blk.conv.weight.shape == (d, 1, 3, 7, 7)


@pytest.mark.parametrize("arch", BASELINES)
@pytest.mark.parametrize("tubelet", [1, 2])
def test_shapes_and_gradients(arch, tubelet):
    torch.manual_seed(0)
    m = timm.create_model(f"{arch}_test", num_classes=5, num_frames=4, img_size=32, tubelet_size=tubelet)
    x = _clip()
    feats = m.forward_features(x)
    n_tok = {"timesformer": 1 + 4 // tubelet * 4, "vivit": 1 + 4 // tubelet, "videomambaout": 4 // tubelet * 4}[arch]
    assert feats.shape == (2, n_tok, m.embed_dim)
    out = m(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([1, 3])).backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad
    # the zero-initialised temporal_fc still receives a gradient
    if arch == "timesformer":
        assert m.blocks[0].temporal_fc.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="frames"):
        m(_clip(1, 8))


@pytest.mark.parametrize("arch", BASELINES)
def test_activation_checkpointing_is_exact(arch):
    torch.manual_seed(0)
    m = timm.create_model(f"{arch}_test", num_classes=3)
    ck = timm.create_model(f"{arch}_test", num_classes=3, use_checkpoint=True, checkpoint_num=1)
    ck.load_state_dict(m.state_dict())
    x = _clip()
    ya, yb = m(x), ck(x)
    torch.testing.assert_close(ya, yb)
    ya.sum().backward(), yb.sum().backward()
    for (n, p), q in zip(m.named_parameters(), ck.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_vivit_layer_decay_numbers_both_stacks():
    m = timm.create_model("vivit_test")  # 2 spatial + 1 temporal blocks
    assert m.get_num_layers() == 3
    groups = param_groups_layer_decay(m, 0.05, 0.5)
    lid = {n: g["layer_id"] for g in groups for n in g["param_names"]}
    assert lid["patch_embed.proj.weight"] == 0 and lid["pos_embed"] == 0 and lid["cls_token"] == 0
    assert lid["blocks.0.attn.qkv.weight"] == 1 and lid["blocks.2.mlp.fc1.weight"] == 3  # the temporal block
    assert lid["head.weight"] == 4
    nwd = {n for g in groups if g["weight_decay"] == 0 for n in g["param_names"]}
    assert {"temporal_pos_embed", "temporal_cls_token", "pos_embed"} <= nwd


def test_videomambapro_options_are_refused():
    with pytest.raises(ValueError, match="no selective scan"):
        timm.create_model("timesformer_test", bwd_mask=True)


@pytest.mark.parametrize("arch", BASELINES)
def test_overfits_a_few_clips(arch):
    torch.manual_seed(0)
    m = timm.create_model(f"{arch}_test", num_classes=4)
    x, y = _clip(4, seed=1), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(60):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, loss.item()
    assert (m(x).argmax(-1) == y).all()


@pytest.mark.parametrize("arch", BASELINES)
def test_checkpoint_round_trip(arch, tmp_path):
    torch.manual_seed(0)
    m = timm.create_model(f"{arch}_test", num_classes=4).eval()
    path = tmp_path / "ck.pth"
    torch.save({"model": {f"module.{k}": v for k, v in m.state_dict().items()}, "epoch": 3}, path)
    m2 = timm.create_model(f"{arch}_test", num_classes=4).eval()
    rep = load_pretrained(m2, str(path), log=None)
    assert rep["missing"] == [] and rep["unexpected"] == [] and rep["prefixes_stripped"] == ["module."]
    x = _clip()
    torch.testing.assert_close(m2(x), m(x))
    # another frame count: the temporal embedding is resized, nothing else changes
    m8 = timm.create_model(f"{arch}_test", num_classes=4, num_frames=8)
    rep = load_pretrained(m8, str(path), log=None)
    assert rep["missing"] == [] and any("resized temporal" in a for a in rep["actions"])


def _fake_vit(width="tiny"):
    """A timm ViT state dict (random weights: no download), as timm's ImageNet checkpoints are laid out."""
    torch.manual_seed(1)
    vit = timm.create_model(f"vit_{width}_patch16_224", pretrained=False).eval()
    return vit, vit.state_dict()


def test_timesformer_from_vit_weights_is_the_vit_on_a_static_clip():
    vit, sd = _fake_vit()
    m = timm.create_model("timesformer_tiny", num_classes=7, num_frames=2).eval()
    rep = load_pretrained(m, sd, log=None)
    assert rep["missing"] == ["head.bias", "head.weight"] and rep["head_dropped"]  # 1000 -> 7 classes
    assert set(rep["initialised"]) == {f"blocks.{i}.temporal_fc.{p}" for i in range(12) for p in ("weight", "bias")}
    assert any("zeros" in a and "temporal_pos_embedding" in a for a in rep["actions"])
    torch.testing.assert_close(m.blocks[3].temporal_attn.qkv.weight, sd["blocks.3.attn.qkv.weight"])
    frame = torch.randn(1, 3, 224, 224)
    clip = frame[:, :, None].expand(-1, -1, 2, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(m.forward_features(clip)[:, 0], vit.forward_features(frame)[:, 0],
                                   rtol=1e-4, atol=1e-4)


def test_vivit_from_vit_weights_spatial_encoder_is_the_vit():
    vit, sd = _fake_vit()
    m = timm.create_model("vivit_tiny", num_classes=1000, num_frames=4, tubelet_size=2).eval()
    rep = load_pretrained(m, sd, log=None)
    assert rep["missing"] == [] and not rep["head_dropped"]
    temporal = {k for k in m.state_dict() if k.startswith(tuple(f"blocks.{i}." for i in range(12, 16)))}
    assert set(rep["initialised"]) == temporal | {"norm.weight", "norm.bias", "temporal_cls_token",
                                                  "temporal_pos_embed"}
    assert any("central" in a or "center" in a for a in rep["actions"])  # central-frame tubelet inflation
    frame = torch.randn(1, 3, 224, 224)
    clip = frame[:, :, None].expand(-1, -1, 4, -1, -1)
    with torch.no_grad():
        spatial = m.forward_spatial(clip)
        assert spatial.shape == (1, 2, 192)
        torch.testing.assert_close(spatial[:, 1], vit.forward_features(frame)[:, 0], rtol=1e-4, atol=1e-4)


def test_image_weights_with_a_block_missing_are_refused():
    _, sd = _fake_vit()
    del sd["blocks.5.mlp.fc1.weight"]
    for name in ("timesformer_tiny", "vivit_tiny"):
        m = timm.create_model(name, num_classes=4, num_frames=4)
        with pytest.raises(RuntimeError, match="blocks.5.mlp.fc1.weight"):
            load_pretrained(m, sd, log=None)


def test_videomambaout_image_weights_inflate_to_3d():
    torch.manual_seed(0)
    img = timm.create_model("videomambaout_test_image", num_classes=4).eval()
    vid = timm.create_model("videomambaout_test", num_classes=4, num_frames=4).eval()
    rep = load_pretrained(vid, {"model": img.state_dict()}, log=None)
    assert rep["missing"] == [] and any("2-D depthwise kernels to 3-D" in a for a in rep["actions"])
    frame = torch.randn(2, 3, 32, 32)
    clip = frame[:, :, None].expand(-1, -1, 4, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(vid(clip), img(frame), rtol=1e-4, atol=1e-5)


def test_timm_pretrained_path_uses_the_filter(tmp_path):
    """pretrained=True goes through timm's loader and our filter (a local file stands in for the Hub)."""
    _, sd = _fake_vit()
    path = tmp_path / "vit.pth"
    torch.save(sd, path)
    m = timm.create_model("timesformer_tiny", pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                          num_classes=1000, num_frames=2)
    torch.testing.assert_close(m.blocks[0].temporal_attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])
    assert m.blocks[0].temporal_fc.weight.abs().sum() == 0


def test_run_class_finetuning_accepts_any_of_our_models(tmp_path):
    sys.path.insert(0, ROOT)
    import run_class_finetuning as rcf
    from utils.config import parse_with_config

    flags = ["--num_frames", "4", "--input_size", "32", "--device", "cpu", "--nb_classes", "4",
             "--data_set", "video", "--output_dir", str(tmp_path)]
    for name in ("timesformer_test", "vivit_test", "videomambaout_test"):
        args = parse_with_config(rcf.get_args_parser(), flags + ["--model", name])
        m = rcf.build_model(args)
        assert m(_clip()).shape == (2, 4)
    args = parse_with_config(rcf.get_args_parser(), flags + ["--model", "vit_tiny_patch16_224"])
    with pytest.raises(SystemExit, match="not one of ours.*timesformer_tiny"):
        rcf.build_model(args)
