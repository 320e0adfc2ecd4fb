"""Atomic checkpoint writes, weights_only loading, truncated-file detection, RNG round trip."""
import argparse
import os
import random

import numpy as np
import pytest
import torch

from utils.checkpoint_io import (
    CheckpointError,
    atomic_save,
    find_resume_checkpoint,
    is_complete_checkpoint,
    load_checkpoint,
    rng_state,
    set_rng_state,
    to_plain,
)


def _ckpt(epoch):
    return {"model": {"w": torch.full((3,), float(epoch))}, "epoch": epoch,
            "args": to_plain(argparse.Namespace(lr=0.1, betas=(0.9, 0.99), dtype=torch.float32)), "rng": rng_state()}


def test_saved_checkpoint_loads_with_weights_only(tmp_path):
    p = tmp_path / "checkpoint-latest.pth"
    atomic_save(_ckpt(3), str(p))
    d = torch.load(p, weights_only=True)
    assert d["epoch"] == 3 and d["args"]["betas"] == [0.9, 0.99] and d["args"]["dtype"] == "torch.float32"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_rng_state_round_trip():
    st = rng_state()
    a = (torch.rand(2), np.random.rand(2), random.random())
    set_rng_state(torch.load(_save_tmp(st), weights_only=True))
    b = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def _save_tmp(obj):
    import tempfile

    p = tempfile.mktemp(suffix=".pth")
    atomic_save(obj, p)
    return p


def test_truncated_checkpoint_detected_and_skipped(tmp_path):
    good, bad = tmp_path / "checkpoint-1.pth", tmp_path / "checkpoint-2.pth"
    atomic_save(_ckpt(1), str(good))
    atomic_save(_ckpt(2), str(bad))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert is_complete_checkpoint(str(good)) and not is_complete_checkpoint(str(bad))
    with pytest.raises(CheckpointError, match="checkpoint-2.pth"):
        load_checkpoint(str(bad))
    msgs = []
    path, ck = find_resume_checkpoint(str(tmp_path), log=msgs.append)
    assert path == str(good) and ck["epoch"] == 1
    assert any("checkpoint-2.pth" in m and "skipping" in m for m in msgs)


def test_newest_complete_checkpoint_of_any_kind_wins(tmp_path):
    atomic_save(_ckpt(2), str(tmp_path / "checkpoint-best.pth"))
    atomic_save(_ckpt(1), str(tmp_path / "checkpoint-1.pth"))
    atomic_save(_ckpt(2), str(tmp_path / "checkpoint-latest.pth"))
    path, ck = find_resume_checkpoint(str(tmp_path))
    assert path.endswith("checkpoint-latest.pth") and ck["epoch"] == 2  # same epoch: latest before best
    (tmp_path / "checkpoint-latest.pth").write_bytes(b"PK\x03\x04 truncated")
    msgs = []
    path, ck = find_resume_checkpoint(str(tmp_path), log=msgs.append)
    assert path.endswith("checkpoint-best.pth") and ck["epoch"] == 2  # a corrupt latest falls back to best
    assert any("checkpoint-latest.pth" in m and "truncated or corrupt" in m for m in msgs)


def test_every_checkpoint_broken_stops_instead_of_starting_over(tmp_path):
    for n in ("checkpoint-latest.pth", "checkpoint-best.pth", "checkpoint-3.pth"):
        (tmp_path / n).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"refusing to start over(.|\n)*checkpoint-3.pth(.|\n)*--no_auto_resume"):
        find_resume_checkpoint(str(tmp_path), log=lambda m: None)
    assert find_resume_checkpoint(str(tmp_path / "empty")) == (None, None)


class _Custom:
    pass


def test_file_needing_full_unpickling_is_refused_unless_trusted(tmp_path):
    p = tmp_path / "ckpt.pth"
    torch.save({"model": {}, "obj": _Custom()}, p)
    with pytest.raises(CheckpointError, match="trust_checkpoint"):
        load_checkpoint(str(p))
    assert isinstance(load_checkpoint(str(p), trust_checkpoint=True)["obj"], _Custom)


def test_videomae_style_namespace_args_load_as_data_but_other_objects_do_not(tmp_path):
    import argparse

    p = tmp_path / "upstream.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1e-3, model="videomamba_tiny")}, p)
    ck = load_checkpoint(str(p))
    assert ck["args"].model == "videomamba_tiny" and torch.equal(ck["model"]["w"], torch.ones(2))
    torch.save({"model": {}, "args": argparse.Namespace(obj=_Custom())}, p)
    with pytest.raises(CheckpointError, match="trust_checkpoint"):
        load_checkpoint(str(p))
