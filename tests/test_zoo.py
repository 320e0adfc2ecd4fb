"""VideoMamba's released checkpoints by name: every MODEL_ZOO.md checkpoint of the Ti / S / M models is a timm
pretrained tag with the Hub repo, file, frames, size, classes and published top-1; its file (written here in the
released format, key by key from VideoMamba's architecture: tests/zoo_utils.py) loads by tag with no missing or
unexpected keys. No network: files go into a local Hugging Face Hub cache and HF_HUB_OFFLINE is on."""
import csv
import os

import pytest
import timm
import torch

import models  # noqa: F401  (registers the models)
from models.checkpoint import load_pretrained
from models.videomambapro import checkpoint_filter_fn
from models.zoo import HUB_REPO, ZOO, resolve_weights, zoo_entry
from tests.zoo_utils import populate_hub_cache, released_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO_CSV = os.path.join(ROOT, "exp", "upstream", "videomamba_model_zoo.csv")
TINY_SUBSET = ("videomamba_tiny_image.in1k", "videomamba_tiny.in1k", "videomamba_tiny.k400_f8_res224",
               "videomamba_tiny.ssv2_f16_res288")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hub cache, offline: hf_hub_download finds what populate_hub_cache writes and nothing else."""
    import huggingface_hub.constants as C

    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def test_zoo_covers_every_published_ti_s_m_checkpoint():
    """Each Ti/S/M row of VideoMamba's MODEL_ZOO.md (ImageNet, 448/576, masked pretraining, K400, SSV2, Breakfast,
    COIN) has a tag
    whose file and top-1 are the row's; the known slips of upstream's links are noted on the tags."""
    with open(ZOO_CSV, newline="") as f:
        rows = [r for r in csv.DictReader(f) if "-B" not in r["model"]]
    files = {e.file for e in ZOO.values()}
    by_file = {}
    for e in ZOO.values():
        by_file.setdefault(e.file, e)
    for r in rows:
        cells = [c.strip() for c in r["cells"].split(";")]
        if "*MASK*" in r["cells"] and "16x" in r["cells"]:
            # upstream's table names the ImageNet-start file here; the masked fine-tuned file is the row's checkpoint
            want = r["file"].replace("_k400_f16", "_k400_mask_ft_f16").replace("_ssv2_f16", "_ssv2_mask_ft_f16")
        else:
            want = r["file"]
        assert want in files, (r["model"], r["cells"], want)
        top1 = {"ImageNet-1K pretrained (224x224)": 0, "Large resolution fine-tuning": 1}.get(r["section"], 3)
        if r["section"] != "Masked Pretraining":
            assert by_file[want].top1 == float(cells[top1]), (want, cells)
    assert len({e.file for e in ZOO.values()}) == len(rows)
    e = zoo_entry("videomamba_tiny_image.in1k_res448")
    assert e.file == "videomamba_t16_in1k_res224to448.pth" and "M file" in e.note
    # Breakfast / COIN: the table's views (frames x crops x segments), classes and upstream's starting checkpoint
    for r in rows:
        if r["section"] in ("Breakfast", "COIN"):
            e = by_file[r["file"]]
            _, size, views, _ = [c.strip() for c in r["cells"].split(";")]
            frames, crops, segments = (int(x) for x in views.split("x"))
            assert (e.num_frames, e.img_size, e.test_views) == (frames, int(size), (segments, crops))
            assert e.num_classes == {"Breakfast": 10, "COIN": 180}[r["section"]] and e.dataset == r["section"]
            assert e.start == ("videomamba_m16_k400_mask_ft_f{}_res224.pth" if "MASK" in r["cells"] else
                               "videomamba_{}16_k400_f{{}}_res224.pth".format(e.file[11])).format(
                                   32 if e.file.startswith("videomamba_t16") else frames)


def test_every_tag_in_timm_with_hub_file_and_metadata():
    names = set(timm.list_pretrained("videomamba_*"))
    for name, e in ZOO.items():
        assert name in names
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        assert cfg["hf_hub_id"] == HUB_REPO and cfg["hf_hub_filename"] == e.file
        assert cfg["num_classes"] == e.num_classes and cfg["input_size"] == (3, e.img_size, e.img_size)
        assert f"published_top1={e.top1}" in cfg["notes"]
        # the weights' license as the model card's text gives it, not its apache-2.0 metadata tag
        assert cfg["license"] == "non-commercial" and any("Non-commercial license" in n for n in cfg["notes"])
        assert (f"frames={e.num_frames}" if e.num_frames else "image") in cfg["notes"]
    assert zoo_entry("videomamba_tiny.k400_f8_res224").top1 == 76.9


# Breakfast / COIN tags differ from the K400 ones only in classes and frames: two of each in the default suite
LONG_VIDEO_DEFAULT = ("videomamba_tiny.breakfast_f32_res224", "videomamba_middle.breakfast_mask_ft_f64_res224",
                      "videomamba_small.coin_f64_res224", "videomamba_middle.coin_mask_ft_f32_res224")
ALL_TAGS = [n if ZOO[n].dataset not in ("Breakfast", "COIN") or n in LONG_VIDEO_DEFAULT
            else pytest.param(n, marks=pytest.mark.slow) for n in sorted(ZOO)]


@pytest.mark.parametrize("name", ALL_TAGS)
def test_every_released_file_fits_its_tag(name):
    """Shapes only (meta device): the released state dict of every tag, after the checkpoint filter, has exactly
    the model's keys and shapes (the model built by tag: frames, size and classes from the zoo)."""
    e = ZOO[name]
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    assert model.num_classes == e.num_classes and model.patch_embed.img_size == (e.img_size, e.img_size)
    if e.num_frames:
        assert model.num_frames == e.num_frames
    sd = checkpoint_filter_fn(released_checkpoint(e, device="meta"), model, log=None)
    own = model.state_dict()
    assert set(sd) == set(own), (sorted(set(own) - set(sd)), sorted(set(sd) - set(own)))
    bad = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items() if v.shape != own[k].shape}
    assert not bad


@pytest.mark.parametrize("name", TINY_SUBSET)
def test_load_by_tag_from_the_hub_cache(name, hub_cache):
    """timm.create_model(tag, pretrained=True) loads the released file from the cache, strictly, values intact."""
    e = ZOO[name]
    written = populate_hub_cache(hub_cache, [e])[e.file]
    model = timm.create_model(name, pretrained=True)
    assert model.num_classes == e.num_classes and model.patch_embed.img_size == (e.img_size, e.img_size)
    src = written["model"] if isinstance(written.get("model"), dict) else written
    own = model.state_dict()
    torch.testing.assert_close(own["layers.3.mixer.A_log"], src["layers.3.mixer.A_log"])
    torch.testing.assert_close(own["head.weight"], src["head.weight"])
    if e.num_frames is None and not e.model.endswith("_image"):  # the video model of an image file: inflated
        w = own["patch_embed.proj.weight"]
        assert w.dim() == 5 and torch.equal(w[:, :, w.shape[2] // 2], src["patch_embed.proj.weight"])


def test_finetune_by_tag_or_hf_hub_name(hub_cache):
    """--finetune accepts a zoo tag, a bare zoo file name or hf-hub:ORG/REPO/FILE; the loading contract holds
    (no missing, no unexpected keys), the ImageNet file is inflated for a video model of another frame count."""
    entries = [ZOO["videomamba_tiny.k400_f8_res224"], ZOO["videomamba_tiny.in1k"]]
    populate_hub_cache(hub_cache, entries)
    path = resolve_weights("videomamba_tiny.k400_f8_res224", log=None)
    assert os.path.isfile(path) and str(hub_cache) in path
    assert resolve_weights(f"hf-hub:{HUB_REPO}/videomamba_t16_k400_f8_res224.pth", log=None) == path
    assert resolve_weights(f"hf-hub:{HUB_REPO}:videomamba_t16_k400_f8_res224.pth", log=None) == path
    assert resolve_weights("videomamba_t16_k400_f8_res224.pth", log=None) == path
    model = timm.create_model("videomambapro_tiny", num_classes=400, num_frames=8)
    rep = load_pretrained(model, path, log=None)
    assert rep["missing"] == [] and rep["unexpected"] == []
    video = timm.create_model("videomambapro_tiny", num_classes=174, num_frames=16)
    rep = load_pretrained(video, resolve_weights("videomamba_tiny.in1k", log=None), log=None)
    assert rep["head_dropped"] and any("inflated" in a for a in rep["actions"])
    with pytest.raises(RuntimeError, match="huggingface-cli download"):
        resolve_weights("videomamba_small.k400_f8_res224", log=None)  # not in the cache, offline: says what to do


def test_default_tag_is_the_imagenet_start():
    """As upstream's videomamba_tiny(pretrained=True): the ImageNet-1K weights."""
    assert timm.models.get_pretrained_cfg("videomamba_tiny").hf_hub_filename == "videomamba_t16_in1k_res224.pth"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_load_every_tag_from_the_hub_cache(name, hub_cache):
    e = ZOO[name]
    populate_hub_cache(hub_cache, [e])
    model = timm.create_model(name, pretrained=True)  # strict: no missing / unexpected keys
    assert model.num_classes == e.num_classes


def test_eval_zoo_command_uses_upstream_views(tmp_path, capsys):
    import run_class_finetuning as rcf
    from scripts import eval_zoo
    from utils.config import parse_with_config

    flags = eval_zoo.build_argv("videomamba_small.ssv2_f16_res288", str(tmp_path), "/frames",
                                output_dir=str(tmp_path / "o"), extra=["--device", "cpu"])
    a = parse_with_config(rcf.get_args_parser(), flags)
    assert (a.eval, a.model, a.finetune, a.num_frames, a.input_size, a.short_side_size) == (
        True, "videomamba_small", "videomamba_small.ssv2_f16_res288", 16, 288, 288)
    assert (a.test_num_segment, a.test_num_crop, a.data_set, a.nb_classes, a.tubelet_size) == (2, 3, "SSV2", 174, 1)
    a = parse_with_config(rcf.get_args_parser(), eval_zoo.build_argv("videomamba_middle.k400_mask_ft_f64_res384", "L"))
    assert (a.test_num_segment, a.test_num_crop, a.num_frames, a.input_size) == (4, 3, 64, 384)
    a = parse_with_config(rcf.get_args_parser(), eval_zoo.build_argv("videomamba_tiny.coin_f64_res224", "L"))
    assert (a.data_set, a.nb_classes, a.test_num_segment, a.test_num_crop, a.num_frames) == (
        "Kinetics_sparse", 180, 10, 3, 64)  # as upstream's COIN scripts run it
    assert eval_zoo.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "videomamba_tiny.k400_f8_res224 | videomamba_t16_k400_f8_res224.pth | K400 | 8 | 224 | 400 | 76.9" in out
    with pytest.raises(SystemExit):
        eval_zoo.build_argv("videomamba_middle.k400_mask_pt_f8_res224", "L")  # no classifier to evaluate


def test_eval_zoo_states_its_sampling_convention_and_merges_upstream_files(tmp_path, capsys):
    import run_class_finetuning as rcf
    from datasets.build import sampling_convention
    from scripts import eval_zoo
    from utils.config import parse_with_config

    (tmp_path / "test.csv").write_text("something/78687 36 27\n")  # SSV2 raw frames
    conv = {}
    for tag in ("videomamba_tiny.k400_f8_res224", "videomamba_small.ssv2_f16_res288"):
        a = parse_with_config(rcf.get_args_parser(), eval_zoo.build_argv(tag, str(tmp_path)))
        conv[tag] = sampling_convention(a)
    assert conv["videomamba_tiny.k400_f8_res224"].startswith("VideoMamba kinetics_sparse: frames as "
                                                             "VideoClsDataset_sparse._get_seq_frames")
    assert conv["videomamba_small.ssv2_f16_res288"].startswith("VideoMamba ssv2_rawframes")
    assert all("OpenCV INTER_LINEAR" in c for c in conv.values())
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "0.txt").write_text("tensor(100., device='cuda:0'), tensor(100., device='cuda:0')\n"
                                "78687 [0.1, 2.0, -1.0] 1 0 0\n78687 [0.3, 1.0, 0.0] 1 1 0\n")
    (pred / "1.txt").write_text("tensor(0., device='cuda:0'), tensor(100., device='cuda:0')\n"
                                "1234 [3.0, 2.0, -1.0] 1 0 0\n1234 [0.3, 1.0, 0.0] 1 1 0\n")
    assert eval_zoo.main(["--merge", str(pred)]) == 0
    out = capsys.readouterr().out
    assert "4 views of 2 videos from 2 files" in out and "top-1 50.00 top-5 100.00 over 2 videos (4 views)" in out
