"""The loading contract: wrappers, prefixes, DeepSpeed files, inflation, resizing, head, errors."""
import argparse
import os

import pytest
import timm
import torch

import models  # noqa: F401
from mamba.ops import set_scan_backend
from models.checkpoint import load_checkpoint_file, load_pretrained


@pytest.fixture(autouse=True)
def _reference_backend():
    set_scan_backend("reference")
    yield
    set_scan_backend(None)


def _clip(t=2, s=32, b=1):
    return torch.randn(b, 3, t, s, s, generator=torch.Generator().manual_seed(0))


def _quiet(*a, **k):
    pass


def _pair(**kw):
    torch.manual_seed(0)
    src = timm.create_model("videomambapro_test", num_frames=2, **kw).eval()
    torch.manual_seed(1)
    dst = timm.create_model("videomambapro_test", num_frames=2, **kw).eval()
    return src, dst


@pytest.mark.parametrize("layout", ["bare", "model", "module", "state_dict", "module.", "backbone.", "encoder.",
                                    "_orig_mod.", "module._orig_mod.", "deepspeed_file", "deepspeed_dir"])
def test_round_trip_layouts(tmp_path, layout):
    src, dst = _pair()
    sd = src.state_dict()
    if layout == "bare":
        obj = sd
    elif layout in ("model", "module", "state_dict"):
        obj = {layout: sd, "epoch": 3, "args": {"lr": 1e-3}}
    elif layout.endswith("."):
        obj = {"model": {layout + k: v for k, v in sd.items()}}
    else:  # DeepSpeed: tag folder with mp_rank_00_model_states.pt holding 'module'
        tag = tmp_path / "checkpoint-5"
        tag.mkdir()
        torch.save({"module": sd, "global_steps": 10}, tag / "mp_rank_00_model_states.pt")
        (tmp_path / "latest").write_text("checkpoint-5")
        path = str(tag / "mp_rank_00_model_states.pt") if layout == "deepspeed_file" else str(tmp_path)
    if not layout.startswith("deepspeed"):
        path = str(tmp_path / "ckpt.pth")
        torch.save(obj, path)
    report = load_pretrained(dst, path, log=_quiet)
    assert report["missing"] == [] and report["unexpected"] == [] and not report["head_dropped"]
    for k, v in sd.items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_round_trip_same_outputs(tmp_path):
    src, dst = _pair()
    x = _clip()
    assert not torch.allclose(dst(x), src(x))
    torch.save({"model": src.state_dict()}, tmp_path / "c.pth")
    load_pretrained(dst, str(tmp_path / "c.pth"), log=_quiet)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_in_memory_state_dict_and_model_key():
    src, dst = _pair()
    load_pretrained(dst, {"model_ema": src.state_dict(), "model": {}}, model_key="model_ema", log=_quiet)
    torch.testing.assert_close(dst.state_dict()["pos_embed"], src.state_dict()["pos_embed"])


def test_image_checkpoint_into_video_model(tmp_path):
    img = timm.create_model("videomamba_test_image", num_classes=4)
    sd = img.state_dict()
    torch.save({"model": sd}, tmp_path / "img.pth")
    for tubelet in (1, 2):
        vid = timm.create_model("videomambapro_test", num_frames=4, tubelet_size=tubelet)
        msgs = []
        report = load_pretrained(vid, str(tmp_path / "img.pth"), log=msgs.append)
        w = vid.patch_embed.proj.weight
        assert w.shape == (32, 3, tubelet, 16, 16)
        # 'center' inflation (as VideoMamba's inflate_weight): 2-D kernel in frame t // 2, zeros elsewhere
        torch.testing.assert_close(w[:, :, tubelet // 2], sd["patch_embed.proj.weight"])
        assert all(torch.all(w[:, :, i] == 0) for i in range(tubelet) if i != tubelet // 2)
        assert torch.all(vid.temporal_pos_embedding == 0)
        assert report["missing"] == [] and any("inflated" in a for a in report["actions"])
        assert any("zeros" in m for m in msgs)
        # a static clip then gives the image features (tubelet 1: each frame sees the image model's patches)
        if tubelet == 1:
            frame = torch.randn(1, 3, 32, 32)
            tok_v = vid.embed(frame[:, :, None].expand(1, 3, 4, 32, 32))
            tok_i = img.embed(frame)
            for f in range(4):  # 4 patches per 32x32 frame
                torch.testing.assert_close(tok_v[:, 1 + 4 * f:5 + 4 * f], tok_i[:, 1:])
        out = vid(_clip(4))
        assert torch.isfinite(out).all()


def test_8_frame_checkpoint_into_16_frame_model():
    src = timm.create_model("videomambapro_test", num_frames=8)
    with torch.no_grad():
        ramp = torch.linspace(0, 1, 8)[None, :, None]
        src.temporal_pos_embedding.copy_(ramp.expand(1, 8, 32))
    dst = timm.create_model("videomambapro_test", num_frames=16)
    report = load_pretrained(dst, src.state_dict(), orig_t_size=8, log=_quiet)
    temb = dst.temporal_pos_embedding[0, :, 0]
    assert temb.shape == (16,) and report["missing"] == []
    assert torch.all(temb[1:] >= temb[:-1]) and temb[0] == 0 and temb[-1] == 1  # linear resize of a ramp
    src_pos = ((torch.arange(16) + 0.5) * 8 / 16 - 0.5).clamp(0, 7)  # align_corners=False sampling points
    torch.testing.assert_close(temb, src_pos / 7)
    torch.testing.assert_close(dst.layers[1].mixer.A_b_log, src.layers[1].mixer.A_b_log)
    assert torch.isfinite(dst(_clip(16, b=1))).all()


def test_224_to_288_input():
    src = timm.create_model("videomambapro_test", num_frames=1, img_size=224)
    dst = timm.create_model("videomambapro_test", num_frames=1, img_size=288)
    report = load_pretrained(dst, src.state_dict(), log=_quiet)
    assert dst.pos_embed.shape == (1, 1 + 18 * 18, 32) and report["missing"] == []
    torch.testing.assert_close(dst.pos_embed[:, 0], src.pos_embed[:, 0])  # cls position kept
    # bicubic resize of a constant grid stays constant; the corners stay close to the originals
    g_src = src.pos_embed[0, 1:].reshape(14, 14, 32)
    g_dst = dst.pos_embed[0, 1:].reshape(18, 18, 32)
    assert (g_dst.mean() - g_src.mean()).abs() < 0.01
    assert torch.isfinite(dst(torch.randn(1, 3, 1, 288, 288))).all()
    # the small-variant grid works too (32 -> 48: 2x2 -> 3x3)
    small = timm.create_model("videomambapro_test", num_frames=2, img_size=48)
    load_pretrained(small, timm.create_model("videomambapro_test", num_frames=2).state_dict(), log=_quiet)
    assert small.pos_embed.shape == (1, 10, 32)


def test_mismatched_head_dropped_with_message_and_missing_set_asserted():
    src = timm.create_model("videomambapro_test", num_frames=2, num_classes=400)
    dst = timm.create_model("videomambapro_test", num_frames=2, num_classes=7)
    head_before = dst.head.weight.clone()
    msgs = []
    report = load_pretrained(dst, src.state_dict(), log=msgs.append)
    assert report["head_dropped"] and set(report["missing"]) == {"head.weight", "head.bias"}
    assert any("dropped the checkpoint's head" in m for m in msgs)
    assert torch.equal(dst.head.weight, head_before)
    # a checkpoint missing a backbone tensor is not silently accepted
    sd = src.state_dict()
    del sd["layers.1.mixer.D_b"]
    with pytest.raises(RuntimeError, match="layers.1.mixer.D_b"):
        load_pretrained(dst, sd, log=_quiet)
    load_pretrained(dst, sd, expected_missing={"layers.1.mixer.D_b"}, log=_quiet)  # declared: fine


def test_another_width_names_the_width_not_the_head():
    src = timm.create_model("videomambapro_test", num_frames=2, embed_dim=48)
    dst = timm.create_model("videomambapro_test", num_frames=2)
    msgs = []
    with pytest.raises(RuntimeError, match=r"width 48 \(embedding dim\).*width 32"):
        load_pretrained(dst, src.state_dict(), log=msgs.append)
    assert not any("head" in m for m in msgs)  # the classes match: no misleading head message first


def test_deeper_checkpoint_of_the_same_width_is_an_error_naming_the_depth():
    src = timm.create_model("videomambapro_test", num_frames=2, depth=4)
    dst = timm.create_model("videomambapro_test", num_frames=2)
    with pytest.raises(RuntimeError, match=r"checkpoint has 4 blocks, the model 2: a depth mismatch"):
        load_pretrained(dst, src.state_dict(), log=_quiet)


def test_truncated_file_clear_error(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": timm.create_model("videomambapro_test", num_frames=2).state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match=r"ckpt\.pth.*truncated or corrupt"):
        load_checkpoint_file(str(path))
    with pytest.raises(RuntimeError, match="truncated or corrupt"):
        load_pretrained(timm.create_model("videomambapro_test", num_frames=2), str(path), log=_quiet)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(RuntimeError, match="empty.pth"):
        load_checkpoint_file(str(tmp_path / "empty.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint_file(str(tmp_path / "nope.pth"))


class _Opaque:
    """A class of the training script's own: unpickling it means importing and running that script's code."""

    def __init__(self, lr):
        self.lr = lr


def test_code_carrying_checkpoint_needs_trust(tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "args": _Opaque(lr=0.1)}, path)
    with pytest.raises(RuntimeError, match="--trust_checkpoint"):
        load_checkpoint_file(str(path))
    ck = load_checkpoint_file(str(path), trust_checkpoint=True)
    assert ck["args"].lr == 0.1
    # VideoMAE-style argparse.Namespace args are an attribute bag: data, loaded without trust
    torch.save({"model": {"x": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, path)
    assert load_checkpoint_file(str(path))["args"].lr == 0.1


def test_timm_pretrained_file_path(tmp_path):
    """timm's own pretrained_file route uses checkpoint_filter_fn (image weights -> video model)."""
    img = timm.create_model("videomamba_test_image", num_classes=4)
    path = os.path.join(tmp_path, "img.pth")
    torch.save(img.state_dict(), path)
    vid = timm.create_model("videomambapro_test", pretrained=True, num_frames=2,
                            pretrained_cfg_overlay=dict(file=path, num_classes=4))
    torch.testing.assert_close(vid.patch_embed.proj.weight[:, :, 0], img.patch_embed.proj.weight)
