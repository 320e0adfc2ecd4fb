"""Launch-environment parsing: torchrun, SLURM (with scontrol for MASTER_ADDR) and no launcher."""
import argparse
import os
import stat

import pytest

from utils import distributed as d


def test_read_launch_env_sources():
    assert d.read_launch_env({}) == {"source": "none", "rank": 0, "world_size": 1, "local_rank": 0}
    assert d.read_launch_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == {
        "source": "torchrun", "rank": 3, "world_size": 8, "local_rank": 1}
    assert d.read_launch_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5"}) == {
        "source": "slurm", "rank": 5, "world_size": 16, "local_rank": 5}
    # torchrun variables win when both are present (torchrun inside an allocation)
    assert d.read_launch_env({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "1", "SLURM_NTASKS": "4"})["source"] \
        == "torchrun"


def test_slurm_master_addr_from_scontrol(tmp_path, monkeypatch):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    sc = bin_ / "scontrol"
    sc.write_text('#!/usr/bin/env bash\n[ "$1 $2" = "show hostnames" ] && printf "node17\\nnode18\\n"\n')
    sc.chmod(sc.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[17-18]")
    assert d._slurm_master_addr() == "node17"
    monkeypatch.setenv("MASTER_ADDR", "10.1.2.3")
    assert d._slurm_master_addr() == "10.1.2.3"


def test_slurm_without_master_addr_or_nodelist_is_a_clear_error(monkeypatch):
    for k in ("MASTER_ADDR", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        d._slurm_master_addr()


def test_single_process_without_launcher_has_no_process_group(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    args = argparse.Namespace(device="cpu", enable_deepspeed=False)
    d.init_distributed_mode(args)
    assert args.distributed is False and args.rank == 0 and args.world_size == 1 and args.dist_backend == "cpu:gloo"
    assert not d.is_dist_avail_and_initialized()
