"""VideoMambaPro / VideoMamba models: registry, names and sizes, options, gradients, AMP, checkpointing."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

import models  # noqa: F401  (registers the models)
from mamba.ops import set_scan_backend
from models.distill import build_distill_wrapper


@pytest.fixture(autouse=True)
def _reference_backend():
    set_scan_backend("reference")
    yield
    set_scan_backend(None)


def _clip(b=2, t=4, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, t, s, s, generator=g)


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


def test_registered_names():
    names = set(timm.list_models("videomamba*"))
    for arch in ("videomambapro", "videomamba"):
        for size in ("tiny", "small", "middle"):
            assert f"{arch}_{size}" in names and f"{arch}_{size}_image" in names
        assert f"{arch}_test" in names and f"{arch}_demo" in names


def test_tiny_param_count_and_exact_keys():
    m = timm.create_model("videomambapro_tiny", num_classes=400, num_frames=8)
    sd = m.state_dict()
    assert len(sd) == 416
    assert abs(_nparams(m) - 7.03e6) < 0.01e6, _nparams(m)
    d, E, N, R = 192, 384, 16, 12
    top = {"cls_token": (1, 1, d), "pos_embed": (1, 197, d), "temporal_pos_embedding": (1, 8, d),
           "patch_embed.proj.weight": (d, 3, 1, 16, 16), "patch_embed.proj.bias": (d,),
           "head.weight": (400, d), "head.bias": (400,), "norm_f.weight": (d,)}
    layer = {"norm.weight": (d,), "mixer.A_log": (E, N), "mixer.D": (E,), "mixer.A_b_log": (E, N), "mixer.D_b": (E,),
             "mixer.in_proj.weight": (2 * E, d), "mixer.conv1d.weight": (E, 1, 4), "mixer.conv1d.bias": (E,),
             "mixer.x_proj.weight": (R + 2 * N, E), "mixer.dt_proj.weight": (E, R), "mixer.dt_proj.bias": (E,),
             "mixer.conv1d_b.weight": (E, 1, 4), "mixer.conv1d_b.bias": (E,), "mixer.x_proj_b.weight": (R + 2 * N, E),
             "mixer.dt_proj_b.weight": (E, R), "mixer.dt_proj_b.bias": (E,), "mixer.out_proj.weight": (d, E)}
    expected = dict(top)
    for i in range(24):
        expected.update({f"layers.{i}.{k}": v for k, v in layer.items()})
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    # the two changes add no parameters: VideoMamba has the same state dict
    vm = timm.create_model("videomamba_tiny", num_classes=400, num_frames=8)
    assert {k: v.shape for k, v in vm.state_dict().items()} == {k: v.shape for k, v in sd.items()}


@pytest.mark.parametrize("name,expected,depth", [("videomambapro_small", 25.6e6, 24), ("videomambapro_middle", 73.9e6, 32)])
def test_small_middle_param_counts_on_meta(name, expected, depth):
    with torch.device("meta"):
        m = timm.create_model(name, num_classes=400)
    assert abs(_nparams(m) - expected) < 0.1e6
    assert m.get_num_layers() == depth and len(m.layers) == depth


def test_image_variant():
    with torch.device("meta"):
        big = timm.create_model("videomambapro_tiny_image")
    assert big.num_classes == 1000 and len(big.state_dict()) == 415 and big.patch_embed.img_size == (224, 224)
    m = timm.create_model("videomambapro_test_image")
    assert "temporal_pos_embedding" not in m.state_dict() and m.patch_embed.proj.weight.dim() == 4
    out = m(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m(torch.randn(1, 3, 1, 32, 32))


def test_init_keeps_dt_bias_and_rescales_out_proj():
    m = timm.create_model("videomambapro_test", depth=4)
    for layer in m.layers:
        dt = F.softplus(layer.mixer.dt_proj.bias)
        assert dt.min() >= 9.9e-5 and dt.max() <= 0.1 + 1e-6 and dt.std() > 1e-3
        assert torch.all(layer.mixer.A_log[:, 3] == math.log(4)) and torch.all(layer.mixer.D == 1)
    w = torch.cat([layer.mixer.out_proj.weight.flatten() for layer in m.layers])
    assert 0.5 * 0.02 / 2 < w.std() < 1.5 * 0.02 / 2  # trunc-normal(0.02) / sqrt(depth=4)
    nwd = m.no_weight_decay()
    assert {"pos_embed", "cls_token", "temporal_pos_embedding", "layers.0.mixer.A_log", "layers.3.mixer.D_b"} <= nwd


def test_frame_major_token_order():
    m = timm.create_model("videomambapro_test", num_frames=2, img_size=32)
    x = _clip(1, 2, 32)
    tok = m.embed(x)
    n = 4
    assert tok.shape == (1, 1 + 2 * n, 32)
    patches = m.patch_embed(x)  # (1, d, 2, 2, 2)
    f, p = 1, 2  # frame 1, patch (1, 0)
    want = patches[0, :, f, p // 2, p % 2] + m.pos_embed[0, 1 + p] + m.temporal_pos_embedding[0, f]
    torch.testing.assert_close(tok[0, 1 + f * n + p], want)
    torch.testing.assert_close(tok[0, 0], m.cls_token[0, 0] + m.pos_embed[0, 0])


def test_videomamba_equals_pro_with_both_changes_off():
    torch.manual_seed(0)  # fixed weights and clip: the comparison's tolerance is for one draw, not any
    vm = timm.create_model("videomamba_test")
    with torch.no_grad():  # larger steps than the init's (dt <= 0.1) so the diagonal term is not negligible
        for layer in vm.layers:
            layer.mixer.dt_proj.bias.fill_(1.0), layer.mixer.dt_proj_b.bias.fill_(1.0)
            layer.mixer.out_proj.weight.mul_(10)
    assert vm.options["bwd_mask"] is False and vm.options["residual_start"] == "none"
    pro_off = timm.create_model("videomambapro_test", bwd_mask=False, residual_start="none")
    pro_off.load_state_dict(vm.state_dict())
    vm.eval(), pro_off.eval()
    x = _clip()
    torch.testing.assert_close(pro_off(x), vm(x))
    ref = vm.forward_features(x)  # O(1) normalised tokens: differences are not hidden by a tiny head init
    for kw in [dict(), dict(residual_start="none"), dict(bwd_mask=False), dict(mask_drops_D=True),
               dict(gate=False), dict(divide_out=True)]:
        m = timm.create_model("videomambapro_test", **kw).eval()
        m.load_state_dict(vm.state_dict())
        assert (m.forward_features(x) - ref).abs().max() > 1e-3, kw
    assert timm.create_model("videomambapro_test").options == dict(
        bwd_mask=True, residual_start="both", mask_drops_D=False, gate=True, divide_out=False)


def test_contract_kwargs():
    m = timm.create_model("videomambapro_test", num_classes=7, num_frames=8, img_size=48, tubelet_size=2,
                          drop_path_rate=0.1, fc_drop_rate=0.5, use_checkpoint=True, checkpoint_num=1,
                          bwd_mask=True, residual_start="forward", mask_drops_D=True, gate=False, divide_out=True)
    assert m.temporal_pos_embedding.shape[1] == 4 and m.patch_embed.proj.kernel_size == (2, 16, 16)
    assert m.layers[0].mixer.residual_start == "forward" and m.layers[1].mixer.divide_out
    # depth 2: rates 0, 0.1; block i drops block i-1's output, the final add uses the last rate
    assert isinstance(m.layers[1].drop_path, torch.nn.Identity) and m.drop_path.drop_prob == pytest.approx(0.1)
    assert isinstance(m.head_drop, torch.nn.Dropout) and m.head_drop.p == 0.5
    assert m(_clip(1, 8, 48)).shape == (1, 7)
    m.reset_classifier(3)
    assert m(_clip(1, 8, 48)).shape == (1, 3)
    with pytest.raises(ValueError, match="num_frames"):
        m(_clip(1, 6, 48))
    with pytest.raises(ValueError, match="residual_start"):
        timm.create_model("videomambapro_test", residual_start="first")
    with pytest.raises(TypeError):
        timm.create_model("videomambapro_test", not_an_option=1)


def test_gradients_reach_every_parameter():
    m = timm.create_model("videomambapro_test", num_frames=2)
    m(_clip(2, 2)).logsumexp(-1).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bf16_autocast_cpu_finite():
    m = timm.create_model("videomambapro_test", num_frames=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(_clip(2, 2))
        loss = F.cross_entropy(out.float(), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(out.float()).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("checkpoint_num", [0, 1])
def test_activation_checkpointing_same_gradients(checkpoint_num):
    torch.manual_seed(0)
    ref = timm.create_model("videomambapro_test", num_frames=2).double()
    ck = timm.create_model("videomambapro_test", num_frames=2, use_checkpoint=True,
                           checkpoint_num=checkpoint_num).double()
    ck.load_state_dict(ref.state_dict())
    x = _clip(2, 2).double()
    grads = []
    for m in (ref, ck):
        out = m(x)
        out.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], msg=n)
    ck.set_grad_checkpointing(False)
    assert not ck.use_checkpoint


def test_distill_wrapper():
    teacher = timm.create_model("videomambapro_test", num_frames=2, embed_dim=16)
    student = timm.create_model("videomambapro_test", num_frames=2, embed_dim=32)
    w = build_distill_wrapper(student, teacher, loss_weight=2.0)
    w.train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    logits, loss = w(_clip(2, 2))
    assert logits.shape == (2, 4) and loss.dim() == 0 and 0 < loss.item() < 4.0 + 1e-4
    loss.backward()
    assert w.proj.weight.grad.abs().sum() > 0 and student.layers[0].mixer.in_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="tokens"):
        build_distill_wrapper(timm.create_model("videomambapro_test", num_frames=4),
                              timm.create_model("videomambapro_test", num_frames=4, tubelet_size=2))(_clip(1, 4))


def test_models_package_has_no_import_cycle():
    """Every import between the files of models/ (module level or inside a function) goes one way."""
    import ast
    import os

    root = os.path.dirname(models.__file__)
    mods = {f[:-3] for f in os.listdir(root) if f.endswith(".py") and f != "__init__.py"}
    graph = {}
    for m in mods:
        deps = set()
        for node in ast.walk(ast.parse(open(os.path.join(root, m + ".py")).read())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("models."):
                deps.add(node.module.split(".")[1])
        graph[m] = deps & mods - {m}

    def reaches(a, b, seen=()):
        return any(d == b or (d not in seen and reaches(d, b, (*seen, d))) for d in graph[a])

    assert not [m for m in mods if reaches(m, m)], graph


def test_scan_backend_is_chosen_per_model(monkeypatch):
    """``create_model(..., scan_backend=...)``: stored as ``model.scan_backend`` and followed by every block's scan,
    whatever the global switch says (here 'reference'); None follows the switch; every registered model takes the
    kwarg, and an unknown name fails at build time."""
    from mamba.ops import selective_scan as ss
    from mamba.ops.backend import resolve_backend

    seen = []
    monkeypatch.setattr(ss, "resolve_backend", lambda dev, req=None: seen.append(resolve_backend(dev, req)) or seen[-1])
    torch.manual_seed(0)
    m = timm.create_model("videomambapro_test", num_classes=3, scan_backend="torch")
    assert m.scan_backend == "torch" and m.resolved_scan_backend("cpu") == "torch"
    assert {layer.mixer.scan_backend for layer in m.layers} == {"torch"}
    ref = timm.create_model("videomambapro_test", num_classes=3)
    assert ref.scan_backend is None and ref.resolved_scan_backend("cpu") == "reference"
    ref.load_state_dict(m.state_dict())
    x = _clip()
    got = m(x)
    assert seen == ["torch"] * len(m.layers)
    torch.testing.assert_close(got, ref(x))
    assert seen[len(m.layers):] == ["reference"] * len(m.layers)
    for name in models.registered_models("*_test"):
        assert timm.create_model(name, scan_backend="torch").scan_backend == "torch", name
    with pytest.raises(ValueError, match="unknown scan backend"):
        timm.create_model("videomambapro_test", scan_backend="fastest")


@pytest.mark.parametrize("name", ["videomambapro_test", "timesformer_test", "vivit_test", "videomambaout_test"])
def test_group_matcher_gives_timm_layer_decay_our_scales(name):
    """timm.optim.param_groups_layer_decay (the model's group_matcher) and utils.optim give every parameter the
    same lr scale; the forward_features / forward_head(pre_logits) pair of timm is on every model."""
    from timm.optim import param_groups_layer_decay as timm_groups

    from utils.optim import param_groups_layer_decay

    m = timm.create_model(name, num_classes=3)
    ours = {n: g["lr_scale"] for g in param_groups_layer_decay(m, 0.05, 0.75) for n in g["param_names"]}
    names = {id(p): n for n, p in m.named_parameters()}
    theirs = {names[id(p)]: g["lr_scale"] for g in timm_groups(m, 0.05, layer_decay=0.75) for p in g["params"]}
    assert theirs == pytest.approx(ours) and len(set(ours.values())) == m.get_num_layers() + 2
    x = _clip()
    feats = m.forward_features(x)
    torch.testing.assert_close(m.forward_head(feats), m(x))
    assert m.forward_head(feats, pre_logits=True).shape == (2, m.num_features)
