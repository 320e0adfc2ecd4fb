"""ImageNet dataset: class-folder tree, `path label` list, and `folder total_frames label` rows."""
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import ImageNetDataset, build_dataset, default_data_args


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imnet")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n02", "n01", "n03"):  # sorted -> n01=0, n02=1, n03=2
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    (root / split / "n01" / "notes.txt").write_text("not an image")
    return root


def test_class_folder_tree(tree):
    args = default_data_args(data_set="IMNET", data_path=str(tree), input_size=32)
    ds, n = build_dataset(True, False, args)
    assert n == 1000 and len(ds) == 6 and ds.classes == ["n01", "n02", "n03"]
    img, label = ds[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and label == 0
    assert sorted(s.label for s in ds.samples) == [0, 0, 1, 1, 2, 2]
    val, _ = build_dataset(False, False, args)
    x, y = val[5]
    assert x.shape == (3, 32, 32) and y == 2 and len(val) == 6  # notes.txt ignored


def test_image_list_and_frame_folder_rows(tree, tmp_path):
    (tmp_path / "train.csv").write_text("train/n01/0.png 5\ntrain/n03/1.png 7\n")
    args = default_data_args(data_set="IMNET", data_path=str(tmp_path), data_root=str(tree), input_size=32)
    ds, _ = build_dataset(True, False, args)
    assert ds.kind == "image" and [ds[i][1] for i in range(2)] == [5, 7]
    (tmp_path / "test.csv").write_text("val/n02/1.png 3\n")
    ds, _ = build_dataset(False, True, default_data_args(data_set="IMNET", data_path=str(tmp_path), input_size=32,
                                                         data_root=str(tree), test_list=str(tmp_path / "test.csv")))
    assert len(ds) == 1 and ds[0][1] == 3 and ds[0][0].shape == (3, 32, 32)
    # frame-folder rows: the images 0.png/1.png of a folder as frames
    (tmp_path / "frames.csv").write_text(f"{tree / 'val' / 'n02'} 2 4\n")
    ds = ImageNetDataset(list_file=str(tmp_path / "frames.csv"), is_train=False, filename_tmpl="{}.png", start_idx=0)
    assert ds.kind == "rawframe"
    img, label = ds[0]
    ref = Image.open(tree / "val" / "n02" / "1.png").convert("RGB")  # middle frame of 2 = index 1
    assert label == 4 and np.array_equal(np.asarray(img), np.asarray(ref))


def test_imagenet_errors(tree, tmp_path):
    (tmp_path / "train.csv").write_text("train/n01/0.png 5\nmissing.png 1\ntrain/n01/0.png 1000\n")
    with pytest.raises(ValueError, match=r"train.csv:3:.*out of range for 1000"):
        build_dataset(True, False, default_data_args(data_set="IMNET", data_path=str(tmp_path), data_root=str(tree)))
    (tmp_path / "train.csv").write_text("train/n01/0.png 5\nmissing.png 1\n")
    ds = ImageNetDataset(list_file=str(tmp_path / "train.csv"), data_root=str(tree))
    with pytest.raises(RuntimeError, match="missing.png"):
        ds[1]
    with pytest.raises(FileNotFoundError, match="neither a class-folder tree"):
        build_dataset(False, False, default_data_args(data_set="IMNET", data_path=str(tmp_path / "nowhere")))
