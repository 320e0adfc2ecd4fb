"""The masked-pretraining student (models.videomamba_pretrain) and the frozen teacher (models.clip_teacher)."""
import math
import time

import pytest
import timm
import torch
import torch.nn.functional as F

import models  # noqa: F401  (registers the models)
from mamba.ops import set_scan_backend
from models.checkpoint import load_pretrained
from models.clip_teacher import ClipTeacher, build_clip_teacher
from models.videomamba_pretrain import (
    VideoMambaProPretrain,
    checkpoint_filter_fn,
    pretrain_loss,
    select_visible,
    sinusoid_table,
)

T, S, N = 4, 32, 4  # the test size: 4 frames of 32x32, 2x2 patches per frame


@pytest.fixture(autouse=True)
def _reference_backend():
    set_scan_backend("reference")
    yield
    set_scan_backend(None)


def _quiet(*a, **k):
    pass


def _clip(b=2, seed=0):
    return torch.randn(b, 3, T, S, S, generator=torch.Generator().manual_seed(seed))


def _mask(b, ratio, seed=0):
    """(b, T*N) bool, True = masked, the same count in every row."""
    g = torch.Generator().manual_seed(seed)
    n_mask = int(T * N * ratio)
    mask = torch.zeros(b, T * N, dtype=torch.bool)
    for i in range(b):
        mask[i, torch.randperm(T * N, generator=g)[:n_mask]] = True
    return mask


def _student(name="videomambapro_test_pretrain", **kw):
    torch.manual_seed(0)
    return timm.create_model(name, **kw)


def _teacher(**kw):
    torch.manual_seed(0)
    args = dict(num_frames=T, img_size=S, return_layer=2, pretrained=False, log=_quiet)
    return build_clip_teacher("vit_tiny_patch16_224", **{**args, **kw})


def test_registered_and_kwargs():
    names = set(timm.list_models("*_pretrain"))
    for arch in ("videomambapro", "videomamba"):
        for size in ("tiny", "small", "middle", "test", "demo"):
            assert f"{arch}_{size}_pretrain" in names
    assert _student().options["bwd_mask"] and not _student("videomamba_test_pretrain").options["bwd_mask"]
    m = _student(clip_return_layer=2, clip_output_dim=64, drop_path_rate=0.1)
    assert isinstance(m, VideoMambaProPretrain) and m.return_index == [0, 1]  # depth 2: blocks 1 and 0, ascending
    with pytest.raises(ValueError, match="below block 0"):
        _student(clip_return_layer=2, clip_student_return_interval=2)
    with pytest.raises(ValueError, match="clip_decoder_embed_dim"):
        _student(clip_decoder_embed_dim=48)
    with pytest.raises(ValueError, match="clip_norm_type"):
        _student(clip_norm_type="l1")
    with pytest.raises(ValueError, match="num_classes"):
        _student(num_classes=10)
    with torch.device("meta"):
        m = timm.create_model("videomambapro_middle_pretrain", num_frames=8)
    assert m.get_num_layers() == 32 and m.return_index == [31]
    assert {"pos_embed", "cls_token", "temporal_pos_embedding"} <= m.no_weight_decay()
    assert m.group_matcher()["blocks"] == r"^layers\.(\d+)"


@pytest.mark.parametrize("ratio", [0.75, 0.8])
@pytest.mark.parametrize("norm_type", ["l2", "none"])
def test_output_shape_and_norm(ratio, norm_type):
    m = _student(clip_return_layer=2, clip_output_dim=24, clip_norm_type=norm_type).eval()
    mask = _mask(2, ratio)
    n_vis = T * N - int(T * N * ratio)
    y = m(_clip(), mask)
    assert y.shape == (2, 2, 1 + n_vis, 24)
    norms = y.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5) == (norm_type == "l2")


def test_unequal_mask_rows_and_bad_masks_are_errors():
    m = _student().eval()
    mask = _mask(2, 0.75)
    mask[1, (~mask[1]).nonzero()[0]] = True
    with pytest.raises(ValueError, match="same number"):
        m(_clip(), mask)
    with pytest.raises(ValueError, match="bool"):
        m(_clip(), _mask(2, 0.75).float())
    with pytest.raises(ValueError, match="bool"):
        m(_clip(), torch.cat([torch.zeros(2, 1, dtype=torch.bool), _mask(2, 0.75)], 1))  # a cls column: not ours


def test_output_depends_only_on_visible_tokens():
    m = _student(clip_return_layer=2).eval()
    x, mask = _clip(), _mask(2, 0.75)
    y = m(x, mask)
    pix = mask.view(2, T, 2, 2)[:, None, :, :, None, :, None].expand(2, 3, T, 2, 16, 2, 16).reshape(2, 3, T, S, S)
    x2 = torch.where(pix, torch.randn_like(x) * 5, x)
    assert not torch.equal(x, x2)
    assert torch.allclose(m(x2, mask), y, atol=1e-6, rtol=0)
    x3 = torch.where(pix, x, x + 1.0)  # a visible patch changed: the output changes
    assert not torch.allclose(m(x3, mask), y, atol=1e-4)


def test_blocks_see_only_the_visible_tokens():
    m = _student().eval()
    seen = []
    m.layers[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    for ratio in (0.75, 0.5):
        m(_clip(), _mask(2, ratio))
        assert seen[-1] == 1 + T * N - int(T * N * ratio)


def test_features_match_the_encoder_and_the_pos_table():
    """Unmasked, the last returned feature is VideoMambaPro's forward_features; clip_pos_embed is the sin-cos table."""
    m = _student().eval()
    enc = timm.create_model("videomambapro_test", num_classes=0).eval()
    enc.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("clip_decoder")})
    x, none = _clip(), torch.zeros(2, T * N, dtype=torch.bool)
    feats, index = m.forward_features(x, none)
    assert torch.allclose(feats[-1], enc.forward_features(x), atol=1e-6)
    assert torch.equal(index[0], torch.arange(1 + T * N))
    tab = sinusoid_table(1 + T * N, 32)
    assert "clip_pos_embed" not in m.state_dict() and torch.equal(m.clip_pos_embed, tab)
    assert torch.allclose(tab[3, 4], torch.tensor(math.sin(3 / 10000 ** (4 / 32))).float())
    assert torch.allclose(tab[3, 5], torch.tensor(math.cos(3 / 10000 ** (4 / 32))).float())


def test_state_dict_keys_and_videomamba_checkpoint_loads():
    m = _student(clip_return_layer=2)
    enc_keys = set(timm.create_model("videomambapro_test", num_classes=0).state_dict())
    dec = {f"clip_decoder.{k}.{n}.{p}" for k in range(2) for n in ("head", "norm") for p in ("weight", "bias")}
    assert set(m.state_dict()) == enc_keys | dec
    # VideoMamba's *_mask_pt_* layout: final norm named 'norm', wrapped in {'model': ...}
    src = _student(clip_return_layer=2)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    upstream = {("norm.weight" if k == "norm_f.weight" else k): v for k, v in src.state_dict().items()}
    out = checkpoint_filter_fn({"model": upstream}, m, log=_quiet)
    assert set(out) == set(m.state_dict())
    m.load_state_dict(out, strict=True)
    dst = _student(clip_return_layer=2)
    rep = load_pretrained(dst, {"module": upstream}, log=_quiet)
    assert rep["missing"] == [] and rep["unexpected"] == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_pretrain_checkpoint_finetunes_into_the_classifier(tmp_path):
    """--finetune (engines.runner._model -> load_pretrained(model, path, model_key, orig_t_size, trust_checkpoint))
    of a pretraining checkpoint into videomambapro_test: only clip_decoder dropped, the head freshly initialised."""
    src = _student(clip_return_layer=2)
    path = tmp_path / "checkpoint-latest.pth"
    torch.save({"model": src.state_dict(), "epoch": 3}, path)
    dst = timm.create_model("videomambapro_test")
    msgs = []
    rep = load_pretrained(dst, str(path), model_key="model|module", orig_t_size=None, trust_checkpoint=False,
                          log=msgs.append)
    assert rep["unexpected"] == [] and rep["missing"] == [] and not rep["head_dropped"]
    assert any("dropped clip_decoder.*" in a for a in rep["actions"])
    assert rep["initialised"] == ["head.bias", "head.weight"]
    for k, v in src.state_dict().items():
        if not k.startswith("clip_decoder"):
            assert torch.equal(dst.state_dict()[k], v), k


@pytest.mark.parametrize("final_norm", [None, "drop", "rename"])
def test_videomamba_mask_pt_final_norm_into_the_classifier(final_norm):
    """VideoMamba's *_mask_pt_* file into a classifier: its final norm.weight is dropped and norm_f starts fresh, as
    upstream's non-strict fine-tuning load does (the default); --finetune_final_norm rename loads it as norm_f."""
    src = _student()
    with torch.no_grad():
        src.norm_f.weight.mul_(3.0)
    upstream = {("norm.weight" if k == "norm_f.weight" else k): v for k, v in src.state_dict().items()}
    dst = timm.create_model("videomamba_test")
    fresh = dst.norm_f.weight.detach().clone()
    rep = load_pretrained(dst, {"model": upstream}, log=_quiet, final_norm=final_norm)
    assert rep["unexpected"] == [] and rep["missing"] == []
    if final_norm == "rename":
        assert torch.equal(dst.norm_f.weight, upstream["norm.weight"]) and "norm.weight" not in rep.get("dropped", [])
    else:
        assert torch.equal(dst.norm_f.weight, fresh) and "norm.weight" in rep["dropped"]
        assert "norm_f.weight" in rep["initialised"]
    assert torch.equal(dst.layers[0].mixer.in_proj.weight, upstream["layers.0.mixer.in_proj.weight"])
    with pytest.raises(ValueError, match="final_norm"):
        load_pretrained(timm.create_model("videomamba_test"), {"model": upstream}, log=_quiet, final_norm="keep")


def test_teacher_frozen_shapes_and_normalisation():
    t = _teacher(return_attn=True)
    assert isinstance(t, ClipTeacher) and t.output_dim == 192 and t.return_index == [10, 11]
    assert not any(p.requires_grad for p in t.parameters())
    t.train()
    assert not t.training and not t.vit.training
    feats, attn = t(_clip(seed=1))
    assert feats.shape == (2, 2, 1 + T * N, 192) and attn.shape == (2, T, N)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2, 2, 1 + T * N), atol=1e-5)
    assert (attn >= 0).all() and (attn.sum(-1) < 1).all()  # softmax over cls + patches, restricted to patches
    f2 = _teacher(return_cls=False, norm_type="none")(_clip(seed=1))
    assert f2.shape == (2, 2, T * N, 192) and not torch.allclose(f2.norm(dim=-1), torch.ones(2, 2, T * N))
    mask = _mask(2, 0.75)
    with_cls, no_cls = select_visible(feats, mask), select_visible(f2, mask)
    assert with_cls.shape == (2, 2, 1 + T * N // 4, 192) and no_cls.shape == (2, 2, T * N // 4, 192)
    vis = (~mask[0]).nonzero()[:, 0]
    assert torch.equal(with_cls[:, 0, 1:], feats[:, 0, 1 + vis]) and torch.equal(no_cls[:, 0], f2[:, 0, vis])
    # input resized to the teacher's size; per-frame: frame 0's tokens depend on frame 0 only
    x = _clip(seed=1)
    big = F.interpolate(x.transpose(1, 2).flatten(0, 1), size=(64, 64), mode="nearest").view(2, T, 3, 64, 64)
    assert t(big.transpose(1, 2))[0].shape == feats.shape
    x2 = x.clone()
    x2[:, :, 1:] += 1
    assert torch.allclose(t(x2)[0][:, :, 1:1 + N], feats[:, :, 1:1 + N], atol=1e-6)


def test_teacher_attention_is_the_last_block_softmax():
    t = _teacher(return_attn=True)
    vit, blk = t.vit, t.vit.blocks[-1]
    x = _clip(seed=2)
    store = []
    hook = blk.norm1.register_forward_hook(lambda m, i, o: store.append(o))
    vit.forward_features(x.transpose(1, 2).flatten(0, 1))
    hook.remove()
    a = blk.attn
    qkv = a.qkv(store[0]).reshape(2 * T, 1 + N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
    ref = ((qkv[0] * a.scale) @ qkv[1].transpose(-2, -1)).softmax(-1).mean(1)[:, 0, 1:]
    assert torch.allclose(t(x)[1], ref.view(2, T, N), atol=1e-6)


def test_clip_b16_projects_to_512_and_random_weights_are_logged():
    msgs = []
    t = build_clip_teacher("clip_b16", num_frames=2, img_size=32, pretrained=False, log=msgs.append)
    assert t.output_dim == 512 and any("RANDOM" in m for m in msgs)
    assert t(torch.randn(1, 3, 2, 32, 32)).shape == (1, 1, 1 + 2 * 4, 512)


def test_teacher_checkpoint_file(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", img_size=S, num_classes=0)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    t = build_clip_teacher("vit_tiny_patch16_224", str(tmp_path / "vit.pth"), num_frames=T, img_size=S, log=_quiet)
    for k, v in vit.state_dict().items():
        assert torch.equal(t.vit.state_dict()[k], v), k


def test_loss_types():
    s, t = F.normalize(torch.randn(2, 3, 5, 8), dim=-1), F.normalize(torch.randn(2, 3, 5, 8), dim=-1)
    assert torch.allclose(pretrain_loss(s, t, "l2"), (2 - 2 * F.cosine_similarity(s, t, dim=-1)).mean())
    assert torch.allclose(pretrain_loss(s, t, "l2"), ((s - t) ** 2).sum(-1).mean())  # unit vectors: |s-t|^2
    assert torch.allclose(pretrain_loss(s, t, "mse"), F.mse_loss(s, t))
    assert torch.allclose(pretrain_loss(s, t, "smooth_l1"), F.smooth_l1_loss(s, t))
    with pytest.raises(ValueError, match="loss_type"):
        pretrain_loss(s, t, "cos")
    with pytest.raises(ValueError, match="shapes"):
        pretrain_loss(s, t[:, :, :4])


def test_no_teacher_grads_and_loss_falls():
    """AdamW on 2 fixed clips against a fixed random-weight teacher: the l2 loss falls below 0.5x within 20 steps
    and below 0.1x by step 60 (about 2 s on CPU)."""
    torch.manual_seed(0)
    student = timm.create_model("videomambapro_test_pretrain", clip_return_layer=2, clip_output_dim=192)
    teacher = _teacher()
    x, mask = _clip(), _mask(2, 0.75)
    target = select_visible(teacher(x), mask)
    assert target.shape == (2, 2, 1 + T * N // 4, 192)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3, weight_decay=0.0)
    t0, losses = time.time(), []
    for _ in range(60):
        loss = pretrain_loss(student(x, mask), target, "l2")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is None for p in teacher.parameters())
    assert min(losses[:20]) < 0.5 * losses[0] and losses[-1] < 0.1 * losses[0], losses[::5]
    assert time.time() - t0 < 60


def test_activation_checkpointing_same_outputs_and_grads():
    """use_checkpoint runs the block segments between returned layers through run_blocks: same values and grads."""
    x, mask = _clip(), _mask(2, 0.75)
    outs = []
    for ckpt in (False, True):
        m = _student(clip_return_layer=2, use_checkpoint=ckpt, checkpoint_num=0)
        y = m(x, mask)
        y.sum().backward()
        outs.append((y.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-6)
    assert outs[0][1].keys() == outs[1][1].keys() == dict(m.named_parameters()).keys()  # every parameter learns
    for n, g in outs[0][1].items():
        assert torch.allclose(g, outs[1][1][n], atol=1e-5), n


def test_teacher_runs_fp32_on_cpu_unless_told():
    t = _teacher()
    assert t(_clip()).dtype == torch.float32 and next(t.vit.parameters()).dtype == torch.float32
    tb = _teacher(dtype=torch.bfloat16)
    f = tb(_clip())
    assert next(tb.vit.parameters()).dtype == torch.bfloat16 and f.dtype == torch.float32
    assert torch.allclose(f.norm(dim=-1), torch.ones(f.shape[:-1]), atol=1e-3)
