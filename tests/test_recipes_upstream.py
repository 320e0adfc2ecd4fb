"""Every exp/k400, exp/ssv2 and exp/imagenet recipe equals the VideoMamba script it reproduces
(exp/upstream/videomamba_recipes.csv), except where scripts/recipes_table.py's INTENDED says why; exp/RECIPES.md is
the generated table. The recipes are captured with DRY_RUN=1 and parsed by their entry point (nothing is built)."""
import filecmp
import os

import pytest

from scripts import recipes_table as rt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def results():
    rows = rt.upstream_rows()
    return {rel: rt.compare(rel, rows) for rel in rt.recipes()}


def test_every_recipe_has_an_upstream_script(results):
    rows = rt.upstream_rows()
    assert len(results) == 27
    for rel in results:
        assert rt.upstream_script(rel) in rows, rel


def test_no_drift_from_upstream(results):
    drift = [f"{rel}: {f} = {o!r}, upstream {u!r}" for rel, r in results.items() for f, o, u, why in r["diffs"]
             if not why]
    assert not drift, "recipes differ from VideoMamba's scripts without a reason in INTENDED:\n  " + "\n  ".join(drift)


def test_every_intended_difference_is_real(results):
    """A reason in INTENDED for a value that now equals upstream's is stale."""
    real = {(rel, f) for rel, r in results.items() for f, *_ in r["diffs"]}
    stale = sorted(set(rt.INTENDED) - real)
    assert not stale, f"INTENDED lists differences that no longer exist: {stale}"


def test_drift_is_detected(tmp_path, monkeypatch):
    """The check is live: a recipe whose batch is halved (the old 8-GPU default) is reported."""
    src = os.path.join(rt.EXP, "k400", "videomambapro_tiny_f64_res224.sh")
    fake_exp = tmp_path / "exp"
    (fake_exp / "k400").mkdir(parents=True)
    (fake_exp / "launch.sh").write_text(open(os.path.join(rt.EXP, "launch.sh")).read())
    text = open(src).read().replace('GPUS="${GPUS:-16}"', 'GPUS="${GPUS:-8}"')
    (fake_exp / "k400" / "videomambapro_tiny_f64_res224.sh").write_text(text)
    monkeypatch.setattr(rt, "EXP", str(fake_exp))
    res = rt.compare("k400/videomambapro_tiny_f64_res224.sh")
    assert [(f, o, u) for f, o, u, why in res["diffs"]] == [("gpus", 8, 16)]
    # a recipe that resizes other than VideoMamba does is drift too
    text = open(src).read().replace("    --bf16 \\\n", "    --bf16 --resize_mode antialias \\\n")
    assert "--resize_mode antialias" in text
    (fake_exp / "k400" / "videomambapro_tiny_f64_res224.sh").write_text(text)
    res = rt.compare("k400/videomambapro_tiny_f64_res224.sh")
    assert [(f, o, u) for f, o, u, why in res["diffs"]] == [("resize_mode", "antialias", "videomamba")]


def test_key_upstream_values(results):
    """Spot checks straight from VideoMamba's scripts (the issue's list of drifts)."""
    def me(rel):
        return results[rel]["ours"]

    t64 = me("k400/videomambapro_tiny_f64_res224.sh")
    assert (t64["gpus"], t64["batch_size"], t64["num_sample"]) == (16, 16, 2)
    assert rt.effective_lr(t64, False) == (512, pytest.approx(2e-4 * 2))
    m16 = me("k400/videomambapro_middle_f16_res224.sh")
    assert (m16["gpus"], m16["lr"], m16["layer_decay"], m16["layer_decay_mode"]) == (16, 1e-4, 0.75, "videomamba")
    s384 = me("k400/videomambapro_small_f64_res384.sh")
    assert (s384["gpus"], s384["batch_size"], s384["update_freq"], s384["epochs"], s384["warmup_epochs"]) == \
        (32, 2, 2, 6, 1)
    assert me("ssv2/videomambapro_small_f16_res224.sh")["epochs"] == 30
    assert me("ssv2/videomambapro_tiny_f8_res224.sh")["test_num_segment"] == 2
    for rel in results:
        if not rel.startswith("imagenet/") and "_res224" in rel:
            assert results[rel]["ours"]["start"].endswith("_in1k_res224.pth"), rel  # ImageNet start by default
    ti = me("imagenet/videomambapro_tiny_res224.sh")
    assert (ti["aa"], ti["clip_grad"], ti["model_ema"], ti["repeated_aug"], ti["lr_scale_rule"]) == \
        ("v0", 5.0, False, False, "deit512")
    assert (ti["min_lr"], ti["warmup_lr"]) == (1e-5, 1e-6)
    s = me("imagenet/videomambapro_small_res224.sh")
    assert (s["repeated_aug"], s["clip_grad"]) == (True, None)
    m = me("imagenet/videomambapro_middle_res224.sh")
    assert (m["gpus"], m["warmup_epochs"], m["warmup_lr"], m["min_lr"], m["teacher"], m["distill_style"]) == \
        (16, 20, 5e-7, 5e-6, "small", "videomamba")


def test_recipes_md_is_generated(results):
    text = rt.render(results)
    with open(rt.RECIPES_MD) as f:
        assert f.read() == text, "exp/RECIPES.md is stale: run python scripts/recipes_table.py"


def test_upstream_copy_matches_shared():
    shared = os.path.join(ROOT, "..", "shared", "upstream")
    if not os.path.isdir(shared):
        pytest.skip("no shared/upstream next to this checkout")
    for name in ("videomamba_recipes.csv", "videomamba_model_zoo.csv"):
        assert filecmp.cmp(os.path.join(shared, name), os.path.join(rt.EXP, "upstream", name), shallow=False), name


def test_finetune_none_trains_from_scratch(tmp_path):
    argv, gpus = rt.capture(os.path.join(rt.EXP, "k400", "videomambapro_tiny_f8_res224.sh"), env={"FINETUNE": "none"})
    assert gpus == 8
    a = rt.parse(argv)
    assert a.finetune == ""
