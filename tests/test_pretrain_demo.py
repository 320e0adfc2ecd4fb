"""run_pretrain_demo.py: the labelled subset it fine-tunes on, and (slow) a reduced run of the whole demo."""
import os

import pytest

import run_pretrain_demo as demo


def test_label_subset_is_balanced_deterministic_and_relative(tmp_path):
    rows = [f"videos/train_{c}_{i:04d}.mp4 {c}" for c in range(4) for i in range(15)]
    src = tmp_path / "train.csv"
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "sub.csv"
    assert demo.label_subset(str(src), 0.1, str(out)) == (8, 60)  # ceil(0.1 x 15) = 2 per class
    kept = out.read_text().splitlines()
    assert kept == [r for c in range(4) for r in rows[15 * c:15 * c + 2]]
    demo.label_subset(str(src), 0.1, str(tmp_path / "again.csv"))
    assert (tmp_path / "again.csv").read_text() == out.read_text()
    with pytest.raises(SystemExit, match="label_fraction"):
        demo.label_subset(str(src), 0.0, str(out))


def test_finetune_flags_read_the_subset_against_the_data_root():
    a = demo.get_args_parser().parse_args(["--data_path", "/d", "--output_dir", "/o"])
    flags = demo.finetune_flags(a, "/o/ft", "/o/sub.csv", "none")
    assert flags[flags.index("--train_list") + 1] == "/o/sub.csv" and flags[flags.index("--data_root") + 1] == "/d"


@pytest.mark.slow
def test_reduced_pretrain_demo_runs_end_to_end(tmp_path):
    res = demo.main(["--data_path", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"),
                     "--train_per_class", "40", "--val_per_class", "2", "--test_per_class", "2", "--frames", "8",
                     "--pretrain_epochs", "1", "--finetune_epochs", "1", "--label_fraction", "0.4"])
    assert len(res["losses"]) == 1 and res["losses"][0] > 0
    assert res["labels"] == (64, 160)
    for start in ("pretrained", "scratch"):
        assert res[start]["top1"] is not None and res[start]["epochs"] == 1
    assert os.path.isfile(tmp_path / "out" / "pretrain" / "checkpoint-latest.pth")
