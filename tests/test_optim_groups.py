"""Parameter groups (layer decay, no-weight-decay), schedules, lr scaling and optimizer flags."""
import argparse
import math

import numpy as np
import pytest
import torch

from tests.test_engine_common import TinyLayered
from utils.optim import create_optimizer, get_layer_id, param_groups_layer_decay
from utils.schedules import cosine_scheduler, scale_lrs


def _lookup(groups):
    out = {}
    for g in groups:
        for n in g["param_names"]:
            out[n] = (g["lr_scale"], g["weight_decay"])
    return out


def test_layer_decay_exact_scales_and_no_weight_decay():
    model = TinyLayered(depth=3)
    d = 0.75
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=d)
    table = _lookup(groups)
    assert set(table) == {n for n, _ in model.named_parameters()}
    L = 3
    # embeddings: layer 0 -> decay^(L+1)
    for n in ("cls_token", "pos_embed", "temporal_pos_embedding", "patch_embed.proj.weight", "patch_embed.proj.bias"):
        assert table[n][0] == pytest.approx(d ** (L + 1)), n
    # layers.{i} -> decay^(L - i): the decay really reaches the blocks
    for i in range(L):
        assert table[f"layers.{i}.1.weight"][0] == pytest.approx(d ** (L - i))
        assert table[f"layers.{i}.A_log"][0] == pytest.approx(d ** (L - i))
    for n in ("head.weight", "head.bias", "norm_f.weight"):
        assert table[n][0] == pytest.approx(1.0)
    # weight decay: matrices decay; 1-D, biases, embeddings, _no_weight_decay params do not
    assert table["layers.0.1.weight"][1] == 0.05
    assert table["head.weight"][1] == 0.05
    assert table["patch_embed.proj.weight"][1] == 0.05
    for n in ("layers.0.1.bias", "layers.1.0.weight", "layers.2.A_log", "cls_token", "pos_embed",
              "temporal_pos_embedding", "norm_f.weight", "head.bias"):
        assert table[n][1] == 0.0, n


def test_no_weight_decay_from_model_method_and_attribute():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.special = torch.nn.Parameter(torch.zeros(2, 2))
            self.marked = torch.nn.Parameter(torch.zeros(2, 2))
            self.marked._no_weight_decay = True
            self.plain = torch.nn.Parameter(torch.zeros(2, 2))

        def no_weight_decay(self):
            return {"special"}

    table = _lookup(param_groups_layer_decay(M(), 0.1, 1.0, num_layers=0))
    assert table["special"][1] == 0.0 and table["marked"][1] == 0.0 and table["plain"][1] == 0.1


def test_layer_id_with_wrapper_prefixes():
    assert get_layer_id("module.layers.5.mixer.A_log", 24) == 6
    assert get_layer_id("_orig_mod.cls_token", 24) == 0
    assert get_layer_id("head.weight", 24) == 25


def test_cosine_schedule_warmup_and_end():
    s = cosine_scheduler(1.0, 0.1, epochs=4, niter_per_ep=5, warmup_epochs=1, start_warmup_value=0.0)
    assert len(s) == 20
    np.testing.assert_allclose(s[:5], [0, 0.2, 0.4, 0.6, 0.8])
    assert s[5] == pytest.approx(1.0)
    assert s[-1] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 14 / 15)))
    assert all(np.diff(s[5:]) <= 0)
    s2 = cosine_scheduler(1.0, 0.0, epochs=2, niter_per_ep=5, warmup_epochs=1, warmup_steps=2)
    np.testing.assert_allclose(s2[:3], [0.0, 0.5, 1.0])


def test_lr_scaling_rule():
    args = argparse.Namespace(lr=1e-3, min_lr=0.0, warmup_lr=0.0, batch_size=64, update_freq=2, num_sample=2)
    assert scale_lrs(args, 8)["lr"] == pytest.approx(1e-3 * 64 * 2 * 8 * 2 / 256)


def test_create_optimizer_honours_betas_eps_and_rejects_unknown():
    model = TinyLayered()
    args = argparse.Namespace(opt="adamw", lr=0.1, weight_decay=0.05, opt_eps=1e-6, opt_betas=[0.8, 0.95],
                              momentum=0.9, layer_decay=0.5)
    opt = create_optimizer(args, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert all(g["betas"] == (0.8, 0.95) and g["eps"] == 1e-6 for g in opt.param_groups)
    assert {round(g["lr_scale"], 6) for g in opt.param_groups} == {round(0.5 ** k, 6) for k in range(5)}
    args.opt = "lamb_x"
    with pytest.raises(ValueError, match="lamb_x"):
        create_optimizer(args, model)
