"""The real tiny model (videomambapro_test) on the synthetic motion videos through run_class_finetuning.main:
training lowers the loss, --eval on the saved checkpoint reproduces the reported top-1 exactly, and the
VideoMambaPro options / scan backend flags reach the model and its checkpoint."""
import json
import os

import pytest
import torch

from tests.data_utils import make_tiny_synthetic_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_synthetic_dataset(str(tmp_path_factory.mktemp("syn")), train_per_class=4, val_per_class=1,
                                       test_per_class=1, frames=8, size=32)


def _flags(data, out):
    return ["--model", "videomambapro_test", "--data_set", "video", "--data_path", data["root"], "--nb_classes", "4",
            "--num_frames", "4", "--input_size", "32", "--short_side_size", "32", "--test_num_segment", "2",
            "--test_num_crop", "2", "--batch_size", "4", "--num_workers", "0", "--device", "cpu", "--no_pin_mem",
            "--mixup", "0", "--cutmix", "0", "--smoothing", "0", "--reprob", "0", "--warmup_epochs", "0",
            "--drop_path", "0", "--output_dir", out, "--print_freq", "100", "--scan_backend", "torch"]


def _log(out):
    return [json.loads(x) for x in open(os.path.join(out, "log.txt"))]


def test_real_model_trains_and_eval_reproduces(data, tmp_path):
    import run_class_finetuning as r

    out = str(tmp_path / "train")
    res = r.main(_flags(data, out) + ["--epochs", "4", "--lr", "0.5", "--layer_decay", "0.9"])
    lines = _log(out)
    assert lines[-2]["train_loss"] < lines[0]["train_loss"], [ln.get("train_loss") for ln in lines]
    assert res["Final top-1"] == lines[-1]["Final top-1"] and res["n_videos"] == 4
    assert res["views_per_video"] == [4, 4]
    ev = r.main(_flags(data, str(tmp_path / "eval")) + ["--eval", "--resume", os.path.join(out, "checkpoint-latest.pth")])
    assert ev["Final top-1"] == res["Final top-1"] and ev["Final Top-5"] == res["Final Top-5"]


def test_pro_options_reach_model_and_checkpoint(data, tmp_path, capsys):
    import run_class_finetuning as r

    out = str(tmp_path / "opts")
    r.main(_flags(data, out) + ["--epochs", "1", "--lr", "0.1", "--no_bwd_mask", "--residual_start", "forward",
                                "--divide_out", "--no_test_at_end", "--disable_eval_during_finetuning"])
    assert "model options: {'bwd_mask': False, 'residual_start': 'forward'" in capsys.readouterr().out
    ck = torch.load(os.path.join(out, "checkpoint-latest.pth"), weights_only=True)
    cfg = ck["model_cfg"]
    assert cfg["bwd_mask"] is False and cfg["residual_start"] == "forward" and cfg["divide_out"] is True
    assert cfg["gate"] is True and cfg["mask_drops_D"] is False  # registered defaults where not given
    assert ck["args"]["scan_backend"] == "torch"


def test_run_log_names_the_scan_backend_resolved_and_requested(data, tmp_path, capsys, monkeypatch):
    import run_class_finetuning as r
    from mamba.ops.backend import set_scan_backend

    monkeypatch.delenv("VMP_SCAN_BACKEND", raising=False)
    flags = _flags(data, str(tmp_path / "auto"))
    flags = flags[:flags.index("--scan_backend")]  # not given: auto, which is torch on the CPU
    try:
        set_scan_backend(None)
        r.main(flags + ["--epochs", "1", "--no_test_at_end", "--disable_eval_during_finetuning"])
        out = capsys.readouterr().out.splitlines()
        assert [x for x in out if x.startswith("scan backend:")] == ["scan backend: torch (auto)"]
        r.main(_flags(data, str(tmp_path / "ref"))[:-1] + ["reference", "--dry_run"])
        out = capsys.readouterr().out.splitlines()
        assert [x for x in out if x.startswith("scan backend:")] == ["scan backend: reference (reference)"]
    finally:
        set_scan_backend(None)
