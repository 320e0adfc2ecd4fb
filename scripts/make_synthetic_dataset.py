"""Write the synthetic motion-direction video dataset (see datasets/synthetic.py for the layout).

    python scripts/make_synthetic_dataset.py --out data/synthetic [--seed 0 --num_classes 4
        --train_per_class 40 --val_per_class 10 --test_per_class 10 --frames 16 --size 64]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.synthetic import make_dataset  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_classes", type=int, default=4, help="1..4 (up, down, sideways, stay)")
    p.add_argument("--train_per_class", type=int, default=40)
    p.add_argument("--val_per_class", type=int, default=10)
    p.add_argument("--test_per_class", type=int, default=10)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="frame height and width (even)")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--codec", default=None, help="libx264 (default when available) or mpeg4")
    a = p.parse_args(argv)
    t0 = time.time()
    paths = make_dataset(a.out, seed=a.seed, num_classes=a.num_classes, train_per_class=a.train_per_class,
                         val_per_class=a.val_per_class, test_per_class=a.test_per_class, frames=a.frames,
                         size=a.size, fps=a.fps, codec=a.codec)
    n = {s: sum(1 for _ in open(paths[s])) for s in ("train", "val", "test")}
    print(f"wrote synthetic dataset to {a.out} in {time.time() - t0:.1f}s: "
          + ", ".join(f"{s} {k} videos" for s, k in n.items()) + f", {a.num_classes} classes")
    return paths


if __name__ == "__main__":
    main()
