"""engines.masked_pretrain: the training steps of run_videomamba_pretraining.py, in process (no run around them)."""
import numpy as np
import pytest
import timm
import torch

from datasets.masking import MaskGenerator, num_masked
from engines.masked_pretrain import ClipDistillStep, MaskFeatStep
from models.clip_teacher import build_clip_teacher
from models.videomamba_pretrain import pretrain_loss, select_visible

T, S = 4, 32  # test-size clips: 4 frames x 32 px -> 4 x 2 x 2 = 16 patch tokens


def _clips(b=2, seed=0):
    return torch.randn(b, 3, T, S, S, generator=torch.Generator().manual_seed(seed))


def _masks(kind, b=2, ratio=0.5):
    gen = MaskGenerator(kind, (T, 2, 2), ratio)
    return torch.from_numpy(np.stack([gen(np.random.default_rng(i)) for i in range(b)]))


def _teacher(**kw):
    torch.manual_seed(0)
    return build_clip_teacher("vit_tiny_patch16_224", num_frames=T, img_size=S, pretrained=False, log=lambda *a: None,
                              **kw)


def _student():
    torch.manual_seed(1)
    return timm.create_model("videomambapro_test_pretrain", num_frames=T, img_size=S, clip_output_dim=192)


@pytest.mark.parametrize("return_cls", [True, False])
def test_clip_step_is_the_loss_on_the_visible_tokens(return_cls):
    teacher, student, x, mask = _teacher(return_cls=return_cls), _student(), _clips(), _masks("tube")
    step = ClipDistillStep(teacher, loss_type="l2", loss_ratio=0.5, mask_type="tube", mask_ratio=0.5,
                           return_cls=return_cls)
    loss = step(student, x, mask)
    with torch.no_grad():
        target = select_visible(teacher(x), mask)
        pred = student(x, mask)
        pred = pred if return_cls else pred[:, :, 1:]
    assert torch.allclose(loss, 0.5 * pretrain_loss(pred, target, "l2"), atol=1e-6)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())  # frozen, outside the optimizer
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert "CLIP distillation (l2 x 0.5" in repr(step)


def test_clip_step_attention_masks_from_the_teacher():
    teacher, student = _teacher(return_attn=True), _student()
    seen = {}
    real = student.forward

    def spy(x, mask):
        seen["mask"] = mask
        return real(x, mask)

    student.forward = spy
    step = ClipDistillStep(teacher, mask_type="attention", mask_ratio=0.75, return_cls=True)
    loss = step(student, _clips(), torch.zeros(2, 16, dtype=torch.bool))  # the loader's placeholder
    assert torch.isfinite(loss)
    assert seen["mask"].dtype == torch.bool and (seen["mask"].sum(1) == num_masked(0.75, 16)).all()
    with pytest.raises(RuntimeError, match="clip_return_attn"):
        ClipDistillStep(_teacher(), mask_type="attention", mask_ratio=0.75)(student, _clips(),
                                                                            torch.zeros(2, 16, dtype=torch.bool))


def test_clip_step_rejects_an_unknown_loss_type_at_build():
    with pytest.raises(ValueError):
        ClipDistillStep(_teacher(), loss_type="cosine")


def test_maskfeat_step_is_the_model_loss_and_needs_a_maskfeat_model():
    torch.manual_seed(0)
    model = timm.create_model("videomambapro_test_maskfeat", num_frames=T, img_size=S)
    x, mask = _clips(), _masks("random")
    step = MaskFeatStep(model)
    loss = step(model, x, mask)
    with torch.no_grad():
        assert torch.allclose(loss, model.loss(model(x, mask), x, mask))
    assert "108 features per token" in repr(step)
    with pytest.raises(SystemExit, match="maskfeat"):
        MaskFeatStep(_student())
