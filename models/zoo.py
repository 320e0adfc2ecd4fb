"""VideoMamba's released checkpoints by name: the model zoo table, and how a ``--finetune`` spec becomes a file.

Every checkpoint of VideoMamba's two MODEL_ZOO.md files for the Ti / S / M models is a timm pretrained tag
(``models.videomambapro.default_cfgs`` is generated from ``ZOO``)::

    timm.create_model("videomamba_tiny.k400_f8_res224", pretrained=True)      # 8 x 224, 400 classes
    timm.create_model("videomamba_middle_image.in1k_res448", pretrained=True)  # 448 image model
    --finetune videomamba_small.in1k   --finetune hf-hub:OpenGVLab/VideoMamba/videomamba_s16_in1k_res224.pth

Files come from the Hugging Face Hub model repo ``OpenGVLab/VideoMamba`` (gated: accept its terms on the Hub) through
``huggingface_hub``
(progress bar, the shared cache, ``HF_HUB_OFFLINE=1`` reads the cache only). Where upstream's tables link the
wrong file (the Ti 448 row names the M file; the K400 / SSV2 *MASK* 16-frame rows name the ImageNet-start
files) the tag points at the file the row is about.

License of the weights: the model card's text says "License: Non-commercial license" while its metadata tag says
apache-2.0 (the code's license); every tag's ``license`` is ``WEIGHTS_LICENSE`` and its notes quote the card.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

__all__ = ["HUB_REPO", "WEIGHTS_LICENSE", "WEIGHTS_LICENSE_NOTE", "ZooEntry", "ZOO", "zoo_entry", "imagenet_tag_for",
           "resolve_weights", "hub_download"]

HUB_REPO = "OpenGVLab/VideoMamba"
# What the model card of HUB_REPO says in its text ("- **License:** Non-commercial license"); its YAML metadata
# says apache-2.0, which is the license of the code on GitHub, not of these weights.
WEIGHTS_LICENSE = "non-commercial"
WEIGHTS_LICENSE_NOTE = ("license: the OpenGVLab/VideoMamba model card says 'Non-commercial license' (its metadata tag "
                        "apache-2.0 is the code's license)")
_LETTER = {"tiny": "t", "small": "s", "middle": "m"}


@dataclass(frozen=True)
class ZooEntry:
    model: str              # registered architecture (videomamba_tiny, videomamba_small_image, ...)
    tag: str                # pretrained tag: model.tag
    file: str               # file name in the Hub repo
    num_classes: int        # head size of the checkpoint (0: no head)
    img_size: int
    num_frames: Optional[int]  # None for image checkpoints
    top1: Optional[float]   # published top-1 (None: pretraining only)
    dataset: str            # IMNET, K400, SSV2, Breakfast, COIN, or the masked-pretraining set
    test_views: tuple = ()  # (test_num_segment, test_num_crop) of upstream's tables / scripts
    start: str = ""         # what upstream fine-tuned it from
    note: str = ""
    license: str = WEIGHTS_LICENSE

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"


def _build_zoo() -> dict:
    out = {}

    def add(e: ZooEntry):
        out[e.name] = e

    in1k = {"tiny": (76.9, 79.3, 79.6), "small": (81.2, 83.2, 83.5), "middle": (82.8, 83.8, 84.0)}
    k400 = {"tiny": (76.9, 78.1, 78.8, 79.6, 80.3), "small": (79.3, 80.8, 81.5, 81.8, 82.7),
            "middle": (80.6, 81.9, 82.4, 82.8, 83.3)}
    ssv2 = {"tiny": (65.1, 66.0, 66.2), "small": (66.6, 67.7, 68.1), "middle": (67.3, 68.3, 68.4)}
    for size, l in _LETTER.items():
        p = f"videomamba_{l}16"
        t224, t448, t576 = in1k[size]
        note_m = "distilled from VideoMamba-S (self-distillation)" if size == "middle" else ""
        for model in (f"videomamba_{size}_image", f"videomamba_{size}"):
            video = not model.endswith("_image")
            add(ZooEntry(model, "in1k", f"{p}_in1k_res224.pth", 1000, 224, None, t224, "IMNET",
                         note=("image weights, inflated to video on load" if video else note_m)))
        add(ZooEntry(f"videomamba_{size}_image", "in1k_res448", f"{p}_in1k_res224to448.pth", 1000, 448, None, t448,
                     "IMNET", start=f"{p}_in1k_res224.pth",
                     note="upstream's table links the M file for this row" if size == "tiny" else ""))
        add(ZooEntry(f"videomamba_{size}_image", "in1k_res576", f"{p}_in1k_res224to448to576.pth", 1000, 576, None,
                     t576, "IMNET", start=f"{p}_in1k_res224to448.pth"))
        for i, f in enumerate((8, 16, 32, 64)):
            add(ZooEntry(f"videomamba_{size}", f"k400_f{f}_res224", f"{p}_k400_f{f}_res224.pth", 400, 224, f,
                         k400[size][i], "K400", (4, 3), start=f"{p}_in1k_res224.pth"))
        add(ZooEntry(f"videomamba_{size}", "k400_f64_res384", f"{p}_k400_f64_res224to384.pth", 400, 384, 64,
                     k400[size][4], "K400", (4, 3), start=f"{p}_k400_f64_res224.pth"))
        for i, (f, r) in enumerate(((8, 224), (16, 224), (16, 288))):
            fname = f"{p}_ssv2_f{f}_res224.pth" if r == 224 else f"{p}_ssv2_f16_res224to288.pth"
            add(ZooEntry(f"videomamba_{size}", f"ssv2_f{f}_res{r}", fname, 174, r, f, ssv2[size][i], "SSV2", (2, 3),
                         start=f"{p}_in1k_res224.pth" if r == 224 else f"{p}_ssv2_f16_res224.pth"))
    m = "videomamba_m16"
    add(ZooEntry("videomamba_middle", "k400_mask_pt_f8_res224", f"{m}_k400_mask_pt_f8_res224.pth", 0, 224, 8, None,
                 "K400 masked pretraining (800 epochs)", note="encoder only: no head"))
    add(ZooEntry("videomamba_middle", "ssv2_mask_pt_f8_res224", f"{m}_ssv2_mask_pt_f8_res224.pth", 0, 224, 8, None,
                 "SSV2 masked pretraining (200 epochs)", note="encoder only: no head"))
    for f, top1 in ((8, 82.0), (16, 83.4), (32, 83.9), (64, 84.3)):
        add(ZooEntry("videomamba_middle", f"k400_mask_ft_f{f}_res224", f"{m}_k400_mask_ft_f{f}_res224.pth", 400, 224,
                     f, top1, "K400", (4, 3), start=f"{m}_k400_mask_pt_f8_res224.pth",
                     note="upstream's table links the ImageNet-start file for this row" if f == 16 else ""))
    add(ZooEntry("videomamba_middle", "k400_mask_ft_f64_res384", f"{m}_k400_mask_ft_f64_res224to384.pth", 400, 384,
                 64, 85.0, "K400", (4, 3), start=f"{m}_k400_mask_ft_f64_res224.pth"))
    for f, r, top1 in ((8, 224, 70.2), (16, 224, 71.0), (16, 288, 71.4)):
        fname = f"{m}_ssv2_mask_ft_f{f}_res224.pth" if r == 224 else f"{m}_ssv2_mask_ft_f16_res224to288.pth"
        add(ZooEntry("videomamba_middle", f"ssv2_mask_ft_f{f}_res{r}", fname, 174, r, f, top1, "SSV2", (2, 3),
                     start=f"{m}_ssv2_mask_pt_f8_res224.pth" if r == 224 else f"{m}_ssv2_mask_ft_f16_res224.pth",
                     note="upstream's table links the ImageNet-start file for this row" if (f, r) == (16, 224) else ""))
    # Breakfast (10 classes) and COIN (180): VideoMamba's long-video fine-tuning from its K400 models
    # (video_sm/exp/{breakfast,coin}/videomamba_*/run_f{32,64}x224.sh: --data_set Kinetics_sparse, 224 px).
    long_video = {"Breakfast": (10, (4, 3), {"tiny": (94.3, 94.3), "small": (95.3, 97.4), "middle": (94.8, 95.8),
                                             "mask": (97.9, 96.9)}),
                  "COIN": (180, (10, 3), {"tiny": (86.2, 87.0), "small": (88.4, 88.7), "middle": (88.3, 89.5),
                                          "mask": (89.6, 90.4)})}
    for ds, (classes, views, top1) in long_video.items():
        key = ds.lower()
        for size in (*_LETTER, "mask"):
            model = f"videomamba_{'middle' if size == 'mask' else size}"
            l = "m" if size == "mask" else _LETTER[size]
            mask = "_mask_ft" if size == "mask" else ""
            for i, f in enumerate((32, 64)):
                # upstream's Ti 64-frame scripts start from the Ti 32-frame K400 model; the others from the same frames
                src_f = 32 if size == "tiny" else f
                start = f"videomamba_{l}16_k400{mask}_f{src_f}_res224.pth"
                note = ""
                if size == "tiny" and f == 64:
                    note = "upstream's script starts it from the 32-frame K400 model"
                if ds == "COIN" and size == "mask" and f == 64:
                    note = "upstream's script tests with 4 x 3 views; the table's row says 3 x 10"
                add(ZooEntry(model, f"{key}{mask}_f{f}_res224", f"videomamba_{l}16_{key}{mask}_f{f}_res224.pth",
                             classes, 224, f, top1[size][i], ds, views, start=start, note=note))
    return out


ZOO: dict = _build_zoo()


def zoo_entry(name: str) -> Optional[ZooEntry]:
    """The entry of ``model.tag`` (``videomamba_tiny.k400_f8_res224``); None if it is not a released checkpoint."""
    return ZOO.get(name)


def imagenet_tag_for(model: str) -> Optional[str]:
    """The ImageNet-1K checkpoint a video model of this size starts from (VideoMamba's default start)."""
    for size in _LETTER:
        if model in (f"videomamba_{size}", f"videomambapro_{size}"):
            return f"videomamba_{size}.in1k"
    return None


def hub_download(filename: str, repo_id: str = HUB_REPO, log=print) -> str:
    """Download (or find in the cache) ``filename`` of ``repo_id`` with huggingface_hub; returns the local path."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - it is in requirements.txt
        raise RuntimeError("released checkpoints are fetched with huggingface_hub: pip install huggingface_hub") from e
    if log:
        log(f"checkpoint {repo_id}/{filename}: from the Hugging Face Hub cache or downloaded "
            f"(HF_HUB_OFFLINE=1: cache only)")
    try:
        return hf_hub_download(repo_id=repo_id, filename=filename)
    except Exception as e:  # LocalEntryNotFoundError, HTTP errors, ...: name the file and the way out
        raise RuntimeError(
            f"could not get {filename} from the Hugging Face Hub repo {repo_id} ({type(e).__name__}: {e}). "
            f"Without network, download it elsewhere (huggingface-cli download {repo_id} {filename}) and pass the "
            f"file, or fill the cache and set HF_HUB_OFFLINE=1") from e


def resolve_weights(spec, log=print):
    """``--finetune`` spec -> what ``load_pretrained`` reads: an existing path (or a state dict) as is; a zoo name
    ``model.tag`` (or a bare zoo file name) or ``hf-hub:ORG/REPO/FILE`` (also ``hf-hub:ORG/REPO:FILE``) is
    fetched with huggingface_hub. Anything else is returned unchanged (the loader then says it is missing)."""
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    s = os.fspath(spec)
    if os.path.exists(s):
        return s
    if s.startswith("hf-hub:"):
        rest = s[len("hf-hub:"):]
        if ":" in rest:
            repo, filename = rest.split(":", 1)
        else:
            parts = rest.split("/")
            if len(parts) < 3:
                raise ValueError(f"--finetune {s}: expected hf-hub:ORG/REPO/FILE")
            repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        return hub_download(filename, repo, log)
    entry = zoo_entry(s)
    if entry is None:
        by_file = [e for e in ZOO.values() if e.file == os.path.basename(s)]
        entry = by_file[0] if by_file and os.sep not in s and "/" not in s else None
    if entry is not None:
        if log:
            log(f"--finetune {s}: VideoMamba's {entry.file} ({entry.dataset}, published top-1 {entry.top1})")
        return hub_download(entry.file, HUB_REPO, log)
    return s
