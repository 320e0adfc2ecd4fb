"""Every exp/ recipe runs with DRY_RUN=1: the script's python command line is captured by a shim,
then parsed by the entry point's own parser and dry-run in-process (model built on the meta device,
optimizer built, no training). So a flag a recipe passes that the parser does not accept fails here.
The masked-pretraining recipes (exp/pretrain) are parsed by run_videomamba_pretraining.py's parser; their
model-build dry run joins test_recipe_dry_run once the pretraining students are registered in models/."""
import glob
import os
import stat
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(p for p in glob.glob(os.path.join(ROOT, "exp", "*", "*.sh"))
                 if all(os.sep + d + os.sep not in p for d in ("demo", "slurm", "pretrain")))
PRETRAIN_RECIPES = sorted(glob.glob(os.path.join(ROOT, "exp", "pretrain", "*.sh")))


def _shim(tmp_path):
    shim = tmp_path / "python_shim"
    shim.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGV_OUT"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return str(shim)


def _capture(cmd, tmp_path, **env):
    out = tmp_path / "argv"
    e = dict(os.environ, DRY_RUN="1", PYTHON=_shim(tmp_path), ARGV_OUT=str(out), OUTPUT_DIR=str(tmp_path / "out"),
             **env)
    for k in ("GPUS", "NNODES", "FINETUNE"):
        if k not in env:
            e.pop(k, None)
    res = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return out.read_bytes().decode().split("\0")[:-1]


def _dry_run(argv):
    entry, flags = os.path.basename(argv[0]), argv[1:]
    if entry == "run_class_finetuning.py":
        import run_class_finetuning as mod
    elif entry == "run_pretrain_imagenet.py":
        import run_pretrain_imagenet as mod
    else:
        raise AssertionError(f"unexpected entry point {entry}")
    from engines.runner import run
    from utils.config import parse_with_config

    args = parse_with_config(mod.get_args_parser(), flags)
    assert args.dry_run
    res = run(args, mod.wiring())
    assert res["dry_run"] and res["n_parameters"] > 0
    return args


def test_recipes_exist_for_every_dataset():
    names = {os.path.relpath(p, os.path.join(ROOT, "exp")) for p in RECIPES}
    for size in ("tiny", "small", "middle"):
        for f in (8, 16, 32, 64):
            assert f"k400/videomambapro_{size}_f{f}_res224.sh" in names
        assert f"k400/videomambapro_{size}_f64_res384.sh" in names
        for r in ("f8_res224", "f16_res224", "f16_res288"):
            assert f"ssv2/videomambapro_{size}_{r}.sh" in names
        assert f"ucf101/videomambapro_{size}_f16_res224.sh" in names
        assert f"hmdb51/videomambapro_{size}_f16_res224.sh" in names
        assert f"imagenet/videomambapro_{size}_res224.sh" in names
    for f in (8, 16, 32, 64):  # VideoMamba's *MASK* rows: VideoMambaPro-M from masked pretraining
        assert f"k400/videomambapro_middle_mask_f{f}_res224.sh" in names
    for f in (8, 16):
        assert f"ssv2/videomambapro_middle_mask_f{f}_res224.sh" in names
    for ds in ("breakfast", "coin"):  # VideoMamba's long-video scripts (32 and 64 frames, from K400 models)
        for f in (32, 64):
            for size in ("tiny", "small", "middle", "middle_mask"):
                assert f"{ds}/videomambapro_{size}_f{f}_res224.sh" in names
            assert f"{ds}/videomamba_middle_mask_f{f}_res224.sh" in names
    assert {"breakfast/videomambapro_middle_f32_res224_trimmed.sh", "lvu/videomamba_tiny_f32_res224_trimmed.sh",
            "lvu/videomambapro_tiny_f32_res224_trimmed.sh"} <= names
    pretrain = {os.path.relpath(p, os.path.join(ROOT, "exp")) for p in PRETRAIN_RECIPES}
    assert pretrain == {f"pretrain/{m}_middle_mask_pt_{ds}.sh" for m in ("videomamba", "videomambapro")
                        for ds in ("k400", "ssv2")} | {"pretrain/videomambapro_middle_maskfeat_k400.sh"}


@pytest.mark.parametrize("recipe", RECIPES, ids=[os.path.relpath(p, ROOT) for p in RECIPES])
def test_recipe_dry_run(recipe, tmp_path):
    argv = _capture(["bash", recipe, "--epochs", "1"], tmp_path)
    args = _dry_run(argv)
    rel = os.path.relpath(recipe, ROOT)
    assert args.epochs == 1  # extra flags are appended and win
    assert args.output_dir == str(tmp_path / "out")
    expected_classes = {"k400": 400, "ssv2": 174, "ucf101": 101, "hmdb51": 51, "imagenet": 1000, "breakfast": 10,
                        "coin": 180, "lvu": 10}[rel.split(os.sep)[1]]
    assert args.nb_classes == expected_classes
    if "_f" in rel:
        frames = int(rel.split("_f")[1].split("_")[0])
        assert args.num_frames == frames
        assert args.input_size == int(rel.split("_res")[1].split(".")[0].split("_")[0])
    if rel.endswith("_trimmed.sh"):  # long-video windows (VideoMamba's LVU sampling)
        assert (args.data_set in ("Breakfast", "COIN", "LVU"), args.trimmed, args.time_stride) == (True, 60, 16)


@pytest.mark.parametrize("recipe", PRETRAIN_RECIPES, ids=[os.path.relpath(p, ROOT) for p in PRETRAIN_RECIPES])
def test_pretrain_recipe_parses(recipe, tmp_path):
    """The command line a pretraining recipe launches is accepted, and its own rules pass, by the entry point's
    parser (nothing built: the *_pretrain / *_maskfeat students are not registered yet)."""
    import run_videomamba_pretraining as mod
    from utils.config import parse_with_config

    argv = _capture(["bash", recipe, "--epochs", "1"], tmp_path)
    assert os.path.basename(argv[0]) == "run_videomamba_pretraining.py"
    args = parse_with_config(mod.get_args_parser(), argv[1:])
    assert args.dry_run and args.epochs == 1 and args.output_dir == str(tmp_path / "out")
    assert args.objective == ("maskfeat" if args.model.endswith("_maskfeat") else "clip")
    assert args.train_list.endswith("/train.csv") and args.num_sample == 1 and args.flip is True
    name = os.path.basename(recipe)
    assert args.model == name.split("_mask")[0] + ("_maskfeat" if "_maskfeat" in name else "_pretrain")


def test_torchrun_is_the_default_launcher(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "torchrun").write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGV_OUT"\n')
    (fake / "torchrun").chmod(0o755)
    out = tmp_path / "argv"
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", ARGV_OUT=str(out), GPUS="4", NNODES="2",
               NODE_RANK="1", MASTER_ADDR="10.0.0.1", MASTER_PORT="29999", OUTPUT_DIR=str(tmp_path / "o"))
    env.pop("DRY_RUN", None)
    subprocess.run(["bash", os.path.join(ROOT, "exp/k400/videomambapro_tiny_f8_res224.sh")], env=env, check=True)
    argv = out.read_bytes().decode().split("\0")[:-1]
    # GPUS is the total over the nodes: 4 GPUs on 2 nodes = 2 processes per node
    assert argv[:5] == ["--nproc_per_node=2", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1",
                        "--master_port=29999"]
    assert argv[5].endswith("run_class_finetuning.py")
    env.pop("GPUS")
    env.pop("NNODES")
    subprocess.run(["bash", os.path.join(ROOT, "exp/k400/videomambapro_middle_f16_res224.sh")], env=env, check=True)
    argv = out.read_bytes().decode().split("\0")[:-1]
    assert argv[0] == "--nproc_per_node=16"  # the recipe's own GPU count (VideoMamba's), one node by default
    env.update(GPUS="6", NNODES="4")
    res = subprocess.run(["bash", os.path.join(ROOT, "exp/k400/videomambapro_tiny_f8_res224.sh")], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "not a multiple of NNODES" in res.stderr


def test_slurm_wrapper_runs_recipe_per_task(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    # fake srun: record its options, then run the command after them (like one task would)
    (fake / "srun").write_text('#!/usr/bin/env bash\nwhile [[ "$1" == -* ]]; do echo "$1" >> "$SRUN_LOG"; shift; done\n'
                               'exec "$@"\n')
    (fake / "srun").chmod(0o755)
    log = tmp_path / "srun.log"
    argv = _capture(["bash", os.path.join(ROOT, "exp/slurm/srun.sh"),
                     os.path.join(ROOT, "exp/ssv2/videomambapro_small_f16_res224.sh"), "--epochs", "2"], tmp_path,
                    PATH=f"{fake}:{os.environ['PATH']}", SRUN_LOG=str(log), GPUS="16", GPUS_PER_NODE="8")
    opts = log.read_text().split()
    assert "--ntasks=16" in opts and "--ntasks-per-node=8" in opts and "--kill-on-bad-exit=1" in opts
    args = _dry_run(argv)
    assert args.data_set == "SSV2" and args.epochs == 2
    # without GPUS the recipe's own count is used (VideoMamba ran K400 middle f16 on 16 GPUs)
    log.write_text("")
    _capture(["bash", os.path.join(ROOT, "exp/slurm/srun.sh"),
              os.path.join(ROOT, "exp/k400/videomambapro_middle_f16_res224.sh")], tmp_path,
             PATH=f"{fake}:{os.environ['PATH']}", SRUN_LOG=str(log), GPUS_PER_NODE="8")
    assert "--ntasks=16" in log.read_text().split()


def test_slurm_wrapper_asks_for_the_warning_signal_and_requeues_a_preempted_run(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    # fake srun: record its options, then exit as a preempted run does (75); fake scontrol: record the call
    (fake / "srun").write_text('#!/usr/bin/env bash\nwhile [[ "$1" == -* ]]; do echo "$1" >> "$SRUN_LOG"; shift; '
                               'done\nexit 75\n')
    (fake / "scontrol").write_text('#!/usr/bin/env bash\necho "$@" > "$SCONTROL_LOG"\n')
    for f in ("srun", "scontrol"):
        (fake / f).chmod(0o755)
    log, ctl = tmp_path / "srun.log", tmp_path / "scontrol.log"
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", SRUN_LOG=str(log), SCONTROL_LOG=str(ctl),
               SLURM_JOB_ID="4242")
    cmd = ["bash", os.path.join(ROOT, "exp/slurm/srun.sh"), os.path.join(ROOT, "exp/k400/videomambapro_tiny_f8_res224.sh")]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 75 and "requeueing job 4242" in res.stderr
    assert "--signal=USR1@300" in log.read_text().split()
    assert ctl.read_text().split() == ["requeue", "4242"]
    ctl.unlink()
    res = subprocess.run(cmd, env=dict(env, REQUEUE="0"), capture_output=True, text=True, timeout=60)
    assert res.returncode == 75 and not ctl.exists() and "rerun the same command" in res.stderr


def test_nb_classes_defaults_to_the_datasets_count(tmp_path):
    """--nb_classes is optional: Kinetics-600 builds a 600-way head even in a dry run with no lists; a generic
    set without lists and without --nb_classes is refused with the flag to pass."""
    import run_class_finetuning as mod
    from utils.config import parse_with_config

    flags = ["--model", "videomambapro_test", "--num_frames", "4", "--input_size", "32", "--device", "cpu",
             "--dry_run", "--output_dir", str(tmp_path), "--data_path", str(tmp_path / "nolists")]
    args = parse_with_config(mod.get_args_parser(), flags + ["--data_set", "Kinetics-600"])
    assert args.nb_classes is None
    assert mod.model_kwargs(args)["num_classes"] == 600
    args = parse_with_config(mod.get_args_parser(), flags + ["--data_set", "video"])
    with pytest.raises(ValueError, match="pass --nb_classes"):
        mod.model_kwargs(args)
