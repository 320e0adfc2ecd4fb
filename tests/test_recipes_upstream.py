"""Every exp/k400, ssv2, imagenet, pretrain, breakfast, coin and lvu recipe equals the VideoMamba script it reproduces
(exp/upstream/videomamba_recipes.csv; the long-video ones exp/upstream/videomamba_long_recipes.csv), except where scripts/recipes_table.py's INTENDED says why; exp/RECIPES.md is
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
    # 27 from ImageNet, 6 from masked pretraining (_mask), 5 masked pretraining, 23 long-video (Breakfast, COIN, LVU)
    assert len(results) == 61
    assert sum(rel.startswith("pretrain/") for rel in results) == 5
    assert sum(rt.lg.is_long(rel) for rel in results) == 23
    for rel in results:
        if rel in rt.pt.OURS:  # ours, no upstream script: listed with its source, not skipped
            assert rt.upstream_script(rel) is None and results[rel]["script"] is None, rel
            assert rt.pt.NO_UPSTREAM in rt.render(results) and rt.pt.OURS[rel] in rt.render(results)
            continue
        assert rt.upstream_script(rel) in rows, rel
    assert set(rt.pt.OURS) == {"pretrain/videomambapro_middle_maskfeat_k400.sh"}


def test_every_upstream_pretraining_script_has_recipes(results):
    """Each of VideoMamba's run_mask_pretrain.sh rows is reproduced with its own student and with VideoMambaPro's,
    and has its pretraining-only values (mask, --clip_*) in the supplement csv."""
    rows = rt.upstream_rows()
    extra = rt.pt.pretrain_rows(rt.EXP)
    pretrain = sorted(s for s in rows if s.endswith("/run_mask_pretrain.sh"))
    assert pretrain == ["video_sm/exp/k400/videomamba_middle_mask/run_mask_pretrain.sh",
                        "video_sm/exp/ssv2/videomamba_middle_mask/run_mask_pretrain.sh"]
    assert sorted(extra) == pretrain
    for script in pretrain:
        models = sorted(r["ours"]["model"] for r in results.values() if r["script"] == script)
        assert models == ["videomamba_middle_pretrain", "videomambapro_middle_pretrain"], script
    # every upstream _mask fine-tuning script at 224 has a VideoMambaPro-M recipe
    mask_ft = {s for s in rows if "_mask/run_f" in s and s.endswith("x224.sh")}
    assert mask_ft == {r["script"] for rel, r in results.items() if "_mask_f" in rel}


def test_videomamba_pretraining_recipes_equal_upstream(results):
    """The two VideoMamba-M pretraining recipes have no difference at all, the VideoMambaPro ones only the model."""
    for ds in ("k400", "ssv2"):
        assert results[f"pretrain/videomamba_middle_mask_pt_{ds}.sh"]["diffs"] == []
        diffs = results[f"pretrain/videomambapro_middle_mask_pt_{ds}.sh"]["diffs"]
        assert [(f, o, u) for f, o, u, _ in diffs] == [
            ("model", "videomambapro_middle_pretrain", "videomamba_middle_pretrain")]
    me = results["pretrain/videomamba_middle_mask_pt_k400.sh"]["ours"]
    assert (me["gpus"], me["batch_size"], me["epochs"], me["mask_type"], me["mask_ratio"], me["sampling"],
            me["opt_betas"], me["clip_decoder_embed_dim"], me["flip"]) == \
        (32, 64, 801, "attention", 0.8, "sparse (TSN)", (0.9, 0.95), 576, True)
    a = me["args"]
    assert (a.train_list, a.objective, a.data_root) == ("your_k400_metadata_path/train.csv", "clip", "your_k400_path")
    mf = results["pretrain/videomambapro_middle_maskfeat_k400.sh"]["ours"]
    assert (mf["objective"], mf["mask_type"], mf["mask_ratio"], mf["epochs"], mf["warmup_epochs"], mf["opt_betas"],
            mf["num_frames"], mf["sampling"]) == ("maskfeat", "tube", 0.4, 300, 30, (0.9, 0.999), 16, "dense, rate 4")
    assert mf["lr"] * mf["gpus"] * mf["batch_size"] / 256 == pytest.approx(8e-4)  # MaskFeat: 8e-4 for 2048


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


def test_pretraining_drift_is_detected(tmp_path, monkeypatch):
    """A pretraining recipe whose mask ratio, mask type or teacher width moved from VideoMamba's is reported."""
    name = "videomamba_middle_mask_pt_k400.sh"
    fake_exp = tmp_path / "exp"
    (fake_exp / "pretrain").mkdir(parents=True)
    (fake_exp / "upstream").mkdir()
    for f in ("launch.sh", os.path.join("upstream", rt.pt.PRETRAIN_CSV_NAME)):
        (fake_exp / f).write_text(open(os.path.join(rt.EXP, f)).read())
    src = open(os.path.join(rt.EXP, "pretrain", name)).read()
    monkeypatch.setattr(rt, "EXP", str(fake_exp))
    cases = [("--mask_ratio 0.8 ", "--mask_ratio 0.75 ", ("mask_ratio", 0.75, 0.8)),
             ("--mask_type attention ", "--mask_type tube ", ("mask_type", "tube", "attention")),
             ("--clip_output_dim 512 ", "--clip_output_dim 768 ", ("clip_output_dim", 768, 512)),
             ("--num_segments 8 ", "--num_segments 1 ", ("sampling", "dense, rate 1", "sparse (TSN)"))]
    for old, new, expected in cases:
        assert old in src, old
        (fake_exp / "pretrain" / name).write_text(src.replace(old, new))
        res = rt.compare(f"pretrain/{name}")
        assert [(f, o, u) for f, o, u, why in res["diffs"] if not why] == [expected]



LONG_SCRIPTS = sorted([f"video_sm/exp/{ds}/videomamba_{size}/run_f{f}x224.sh" for ds in ("breakfast", "coin")
                       for size in ("tiny", "small", "middle", "middle_mask") for f in (32, 64)]
                      + ["video_sm/exp/lvu/run_class_trim.sh"])


def test_every_upstream_long_video_script_has_recipes(results):
    """Each of VideoMamba's 16 Breakfast / COIN scripts (and LVU's run_class_trim.sh) has its row in the side csv and
    a VideoMambaPro recipe; the M *MASK* ones and LVU's also a VideoMamba one; one _trimmed Breakfast recipe is ours."""
    long_rows = rt.lg.long_rows(rt.EXP)
    assert sorted(long_rows) == LONG_SCRIPTS
    assert not set(long_rows) & set(rt.pt.pretrain_rows(rt.EXP))
    with open(rt.UPSTREAM_CSV) as f:  # the shared csv has none of them (else the side file would repeat it)
        assert not any(s in f.read() for s in LONG_SCRIPTS)
    by_script = {}
    for rel, r in results.items():
        if rt.lg.is_long(rel):
            by_script.setdefault(r["script"], []).append((r["ours"]["model"], rel.endswith("_trimmed.sh")))
    assert sorted(by_script) == LONG_SCRIPTS
    for script, models in by_script.items():
        up_model = long_rows[script]["model"]
        faithful = sorted(m for m, trimmed in models if not trimmed or "/lvu/" in script)
        if "_mask/" in script or "/lvu/" in script:
            assert faithful == sorted([up_model, up_model.replace("videomamba_", "videomambapro_")]), script
        else:
            assert faithful == [up_model.replace("videomamba_", "videomambapro_")], script
    assert sorted(rel for rel in results if rel.endswith("_trimmed.sh")) == [
        "breakfast/videomambapro_middle_f32_res224_trimmed.sh", "lvu/videomamba_tiny_f32_res224_trimmed.sh",
        "lvu/videomambapro_tiny_f32_res224_trimmed.sh"]


def test_long_video_recipes(results):
    """Spot checks straight from the upstream scripts; the faithful ones keep Kinetics_sparse (whole video)."""
    def me(rel):
        return results[rel]["ours"]

    for rel, r in results.items():
        if not rt.lg.is_long(rel):
            continue
        m = r["ours"]
        assert m["start"].startswith(f"videomamba_{rt._LETTER[m['size']]}16_k400_") and "_mask_pt_" not in m["start"]
        assert m["nb_classes"] == {"breakfast": 10, "coin": 180, "lvu": 10}[rel.split("/")[0]], rel
        assert m["orig_t_size"] == m["num_frames"] and m["args"].split == ","
        if rel.endswith("_trimmed.sh"):
            assert m["windows"] == "60 s every 16 s" and m["data_set"] in ("Breakfast", "LVU"), rel
        else:
            assert (m["data_set"], m["windows"]) == ("Kinetics_sparse", "whole video"), rel
        if rel.split("/")[1].startswith("videomamba_"):
            assert r["diffs"] == [], rel  # VideoMamba's own runs: no difference at all
    t64 = me("coin/videomambapro_tiny_f64_res224.sh")
    assert (t64["gpus"], t64["batch_size"], t64["epochs"], t64["test_num_segment"], t64["start"]) == \
        (16, 16, 40, 10, "videomamba_t16_k400_f32_res224.pth")  # upstream's Ti 64 starts from the 32-frame model
    assert me("coin/videomamba_middle_mask_f64_res224.sh")["test_num_segment"] == 4  # upstream's one 4 x 3 COIN run
    bm = me("breakfast/videomamba_middle_mask_f32_res224.sh")
    assert (bm["epochs"], bm["drop_path"], bm["layer_decay"], bm["start"]) == \
        (45, 0.4, 0.8, "videomamba_m16_k400_mask_ft_f32_res224.pth")
    assert rt.lg.published_top1("breakfast/videomamba_middle_mask_f32_res224.sh")[0] == 97.9
    lvu = me("lvu/videomamba_tiny_f32_res224_trimmed.sh")
    assert (lvu["lr"], lvu["drop_path"], lvu["epochs"], lvu["args"].trimmed, lvu["args"].time_stride) == \
        (4e-4, 0.15, 70, 60, 16)
    why = {f for f, _, _, r in results["breakfast/videomambapro_middle_f32_res224_trimmed.sh"]["diffs"] if r}
    assert why == {"model", "data_set", "windows"}


def test_long_video_drift_is_detected(tmp_path, monkeypatch):
    """A Breakfast / COIN recipe whose test views, class count or sampling moved from VideoMamba's is reported; the
    _trimmed recipe's reason covers its 60 s / 16 s windows only, not another stride."""
    fake_exp = tmp_path / "exp"
    for d in ("coin", "breakfast", "upstream"):
        (fake_exp / d).mkdir(parents=True)
    for f in ("launch.sh", os.path.join("upstream", rt.lg.LONG_CSV_NAME)):
        (fake_exp / f).write_text(open(os.path.join(rt.EXP, f)).read())
    monkeypatch.setattr(rt, "EXP", str(fake_exp))
    rows = rt.upstream_rows()
    cases = [("coin/videomambapro_small_f32_res224.sh", "--test_num_segment 10 ", "--test_num_segment 4 ",
              ("test_num_segment", 4, 10)),
             ("coin/videomamba_middle_mask_f64_res224.sh", "--nb_classes 180 ", "--nb_classes 10 ",
              ("nb_classes", 10, 180)),
             ("breakfast/videomambapro_tiny_f32_res224.sh", "--data_set 'Kinetics_sparse' ", "--data_set 'Breakfast' ",
              ("data_set", "Breakfast", "Kinetics_sparse")),
             ("breakfast/videomambapro_middle_f32_res224_trimmed.sh", "--time_stride 16 ", "--time_stride 8 ",
              ("windows", "60 s every 8 s", "whole video"))]
    for rel, old, new, expected in cases:
        src = open(os.path.join(ROOT, "exp", rel)).read()
        assert old in src, (rel, old)
        (fake_exp / rel).write_text(src.replace(old, new))
        res = rt.compare(rel, rows)
        drift = [(f, o, u) for f, o, u, why in res["diffs"] if not why]
        if expected[0] == "data_set":  # a Breakfast list read with durations: its windows move too
            assert drift == [expected, ("windows", "60 s every 16 s", "whole video")], rel
        else:
            assert drift == [expected], rel

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
        if rt.lg.is_long(rel):  # Breakfast / COIN / LVU start from K400 fine-tuned models: test_long_video_recipes
            continue
        if "_mask_f" in rel:  # VideoMamba-M's released masked-pretraining encoder of the same dataset by default
            assert results[rel]["ours"]["start"] == f"videomamba_m16_{rel.split('/')[0]}_mask_pt_f8_res224.pth", rel
        elif not rel.startswith(("imagenet/", "pretrain/")) and "_res224" in rel:
            assert results[rel]["ours"]["start"].endswith("_in1k_res224.pth"), rel  # ImageNet start by default
    km = me("k400/videomambapro_middle_mask_f16_res224.sh")
    assert (km["epochs"], km["lr"], km["layer_decay"], km["drop_path"], km["batch_size"]) == (45, 1e-4, 0.8, 0.4, 16)
    assert rt.published_top1("k400/videomambapro_middle_mask_f8_res224.sh")[0] == 82.0
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
