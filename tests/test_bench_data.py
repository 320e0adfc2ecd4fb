"""scripts/bench_data.py: on a tiny synthetic set (written, pre-resized and extracted to frames by the script) it
times the recipe's training dataset for decord / PyAV / raw frames on original and pre-resized data and prints one
table with the workers a GPU needs at the model's step rate (given, or read from a bench_model.py table)."""
import math

import pytest

from scripts import bench_data

BENCH_MODEL_TABLE = """device cuda, img 224, batch 8, scan backend triton, bf16 True, threads 16; ratios vs videomambapro_tiny
frames model              tokens   GFLOPs |  clips/s  x ref |      peak MiB  x ref
     8 videomambapro_tiny   1569     17.4 |    51.00   1.00 |          4710   1.00
     8 videomamba_tiny      1569     17.4 |    51.04   1.00 |          4710   1.00
    16 videomambapro_tiny   3137     34.8 |    27.80   1.00 |          8602   1.00
"""


def test_model_rate_from_a_bench_model_table(tmp_path):
    f = tmp_path / "bench.txt"
    f.write_text(BENCH_MODEL_TABLE)
    assert bench_data.model_rate_from_bench(str(f), "videomambapro_tiny", 16) == 27.8
    assert bench_data.model_rate_from_bench(str(f), "videomamba_tiny", 8) == 51.04
    with pytest.raises(SystemExit, match="no bench_model.py row for videomambapro_small at 8 frames"):
        bench_data.model_rate_from_bench(str(f), "videomambapro_small", 8)


def test_synthetic_table(tmp_path, capsys):
    bench = tmp_path / "bench.txt"
    bench.write_text(BENCH_MODEL_TABLE)
    assert bench_data.main(["--synthetic", str(tmp_path / "syn"), "--synthetic_videos", "2", "--synthetic_size",
                            "96x64", "--synthetic_frames", "10", "--short_side", "32", "--items", "2", "--warmup", "0",
                            "--workers", "1", "--bench_model_output", str(bench)]) == 0
    out = capsys.readouterr().out
    assert "model: 51 clips/s per GPU (bench.txt (videomambapro_tiny, 8 frames))" in out
    assert "videomambapro_tiny, 8 frames at 224, num_sample 2, sparse (TSN) sampling" in out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| original") or line.startswith("| pre-resized")]
    assert [(r[0], r[1]) for r in rows] == [("original", "decord"), ("original", "pyav"), ("pre-resized", "decord"),
                                            ("pre-resized", "pyav"), ("original", "frames"), ("pre-resized", "frames")]
    sizes = {(r[0], r[1]): r[2] for r in rows}
    assert sizes[("original", "decord")] == sizes[("original", "frames")] == "96x64, 10 frames"
    assert sizes[("pre-resized", "pyav")] == sizes[("pre-resized", "frames")] == "48x32, 10 frames"
    for r in rows:
        clips = float(r[3])
        assert clips > 0 and int(r[6]) == math.ceil(51.0 / clips)
        assert r[5] == "1.00" if r[0] == "original" else float(r[5]) > 0
