#!/usr/bin/env python
"""Fault injection, end to end on CPU: the audit of issue 12 replayed against the real entry point.

    python scripts/fault_check.py [--work DIR] [--only NAME ...] [--keep]

Every scenario starts `run_class_finetuning.py` (videomambapro_test on a small synthetic video set, 2 CPU ranks
under torchrun where a rank matters) as a user would, breaks something (kill -9 mid-epoch, a killed or stalled
rank, corrupt / truncated / code-carrying checkpoints of each kind, unreadable videos in train, val and test,
a non-finite loss), and checks what survived. One table at the end; exit 1 if any scenario failed.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, "scripts"), ROOT):  # ROOT ends first: our packages win
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

DEEPSPEED_MODEL_FILE = "mp_rank_00_model_states.pt"


class Payload:
    """Full unpickling of this creates a file: the stand-in for a checkpoint carrying code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Check:
    def __init__(self, work: str):
        self.work, self.rows = work, []
        self.data = os.path.join(work, "data")

    # -- plumbing --------------------------------------------------------------------------------------------
    def flags(self, out, *extra, epochs=2):
        return ["--model", "videomambapro_test", "--data_set", "video", "--nb_classes", "4", "--data_path", self.data,
                "--data_root", self.data, "--num_frames", "4", "--input_size", "32", "--short_side_size", "32",
                "--batch_size", "2", "--num_workers", "0", "--device", "cpu", "--no_pin_mem", "--epochs", str(epochs),
                "--warmup_epochs", "0", "--print_freq", "1", "--test_num_segment", "2", "--test_num_crop", "1",
                "--output_dir", out, "--seed", "0", *extra]

    def env(self, **kw):
        e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
        e.update(PYTHONPATH=ROOT, OMP_NUM_THREADS="1", **kw)
        return e

    def cmd(self, out, *extra, ranks=1, epochs=2):
        from utils.distributed import free_port

        entry = os.path.join(ROOT, "run_class_finetuning.py")
        if ranks == 1:
            return [sys.executable, entry, *self.flags(out, *extra, epochs=epochs)]
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--master_addr=127.0.0.1",
                f"--master_port={free_port()}", entry, *self.flags(out, *extra, "--dist_eval", epochs=epochs)]

    def run(self, out, *extra, ranks=1, epochs=2, timeout=600, env=None):
        r = subprocess.run(self.cmd(out, *extra, ranks=ranks, epochs=epochs), env=env or self.env(), cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout + r.stderr

    def run_killed(self, out, marker, *extra, ranks=1, kill_rank=None):
        """Start a run, SIGKILL it (the whole group, or one rank's process) when stdout shows ``marker``."""
        p = subprocess.Popen(self.cmd(out, *extra, ranks=ranks), env=self.env(), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
        seen = False
        try:
            for line in p.stdout:
                if line.startswith(marker):
                    seen = True
                    break
            if seen and kill_rank is not None:
                kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
                victim = sorted(int(k) for k in kids)[kill_rank]  # torchrun starts rank 0 first
                os.kill(victim, signal.SIGKILL)
                p.communicate(timeout=300)
            else:
                os.killpg(p.pid, signal.SIGKILL)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=60)
        return seen, p.returncode

    def record(self, name, expected, ok, observed, t0):
        self.rows.append((name, expected, "yes" if ok else "NO", observed, time.time() - t0))
        print(f"[fault_check] {name}: {'survived' if ok else 'FAILED'} ({observed})", flush=True)

    @staticmethod
    def weights(path, key="model"):
        return torch.load(path, weights_only=True, map_location="cpu")[key]

    @staticmethod
    def same(a, b):
        return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

    @staticmethod
    def log_epochs(out):
        path = os.path.join(out, "log.txt")
        if not os.path.isfile(path):
            return []
        return [json.loads(x).get("epoch") for x in open(path) if x.strip() and "epoch" in json.loads(x)]

    # -- scenarios -------------------------------------------------------------------------------------------
    def reference(self):
        """An uninterrupted run per setting, for the exact-resume comparisons."""
        self.ref1, self.ref2 = os.path.join(self.work, "ref1"), os.path.join(self.work, "ref2")
        rc1, o1 = self.run(self.ref1, "--no_test_at_end")
        rc2, o2 = self.run(self.ref2, "--no_test_at_end", ranks=2)
        if rc1 or rc2:
            raise SystemExit("reference runs failed:\n" + (o1 if rc1 else o2)[-3000:])

    def kill9_resume(self):
        t0, out = time.time(), os.path.join(self.work, "kill9")
        seen, _ = self.run_killed(out, "Epoch: [1] [2/", "--no_test_at_end")
        rc, o = self.run(out, "--no_test_at_end")
        ok = seen and rc == 0 and "start epoch 1" in o and self.same(
            self.weights(os.path.join(out, "checkpoint-latest.pth")),
            self.weights(os.path.join(self.ref1, "checkpoint-latest.pth")))
        self.record("kill -9 mid-epoch, auto-resume", "weights equal an uninterrupted run", ok,
                    "bitwise equal" if ok else f"rc {rc}", t0)

    def killed_rank(self):
        t0, out = time.time(), os.path.join(self.work, "killed_rank")
        seen, rc_kill = self.run_killed(out, "Epoch: [1] [1/", "--no_test_at_end", ranks=2, kill_rank=1)
        rc, o = self.run(out, "--no_test_at_end", ranks=2)
        ok = seen and rc_kill != 0 and rc == 0 and "start epoch 1" in o and self.same(
            self.weights(os.path.join(out, "checkpoint-latest.pth")),
            self.weights(os.path.join(self.ref2, "checkpoint-latest.pth")))
        self.record("rank 1 killed (2 ranks), resume", "run stops; resume equals uninterrupted", ok,
                    f"run exit {rc_kill}, resumed bitwise equal" if ok else f"exit {rc_kill}/{rc}", t0)

    def stalled_rank(self):
        t0, out = time.time(), os.path.join(self.work, "stalled")
        p = subprocess.Popen(self.cmd(out, "--no_test_at_end", "--dist_timeout", "0.2", ranks=2), env=self.env(),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        text = []
        try:
            for line in p.stdout:
                text.append(line)
                if line.startswith("Epoch: [0] [1/"):
                    kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
                    os.kill(sorted(int(k) for k in kids)[1], signal.SIGSTOP)
            p.wait(timeout=300)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        o = "".join(text)
        ok = p.returncode != 0 and "collective '" in o and "--dist_timeout 0.2 min" in o and time.time() - t0 < 240
        line = next((x.strip() for x in text if "collective '" in x), "")
        self.record("rank 1 stalled (SIGSTOP)", "others stop after --dist_timeout, naming the collective", ok,
                    line[line.find("collective"):][:70] if ok else f"exit {p.returncode}", t0)

    def corrupt_checkpoints(self):
        t0, out = time.time(), os.path.join(self.work, "corrupt")
        shutil.copytree(self.ref1, out)
        p = os.path.join(out, "checkpoint-latest.pth")
        open(p, "wb").write(open(p, "rb").read()[:1000])
        rc, o = self.run(out, "--no_test_at_end", epochs=3)
        ok = rc == 0 and "skipping checkpoint-latest.pth" in o and "start epoch 2" in o and \
            self.log_epochs(out) == [0, 1, 2]
        self.record("truncated checkpoint-latest.pth", "falls back to the newest complete one", ok,
                    "resumed from checkpoint-1.pth/best" if ok else f"rc {rc}", t0)
        t0, out = time.time(), os.path.join(self.work, "all_corrupt")
        shutil.copytree(self.ref1, out)
        files = sorted(glob.glob(os.path.join(out, "checkpoint-*.pth")))
        for f in files:
            open(f, "wb").write(b"PK\x03\x04 broken")
        before = {f: open(f, "rb").read() for f in files}
        rc, o = self.run(out, "--no_test_at_end", epochs=3)
        ok = rc != 0 and "refusing to start over" in o and before == {f: open(f, "rb").read() for f in files}
        self.record("every checkpoint corrupt", "stops naming them; nothing overwritten", ok,
                    f"exit {rc}, {len(files)} files untouched" if ok else f"rc {rc}", t0)

    def pickled_checkpoints(self):
        marker = os.path.join(self.work, "PWNED")
        cases = []
        evil = os.path.join(self.work, "evil.pth")
        sd = self.weights(os.path.join(self.ref1, "checkpoint-latest.pth"))
        torch.save({"model": sd, "epoch": 0, "x": Payload(marker)}, evil)
        cases.append(("pickled .pth via --resume", ["--resume", evil], None))
        cases.append(("pickled .pth via --finetune", ["--finetune", evil, "--no_auto_resume"], None))
        ds_out = os.path.join(self.work, "evil_ds")
        os.makedirs(os.path.join(ds_out, "checkpoint-0"))
        torch.save({"module": sd, "epoch": 0, "x": Payload(marker)},
                   os.path.join(ds_out, "checkpoint-0", DEEPSPEED_MODEL_FILE))
        cases.append(("pickled DeepSpeed tag, auto-resume", ["--enable_deepspeed"], ds_out))
        for name, extra, out in cases:
            t0 = time.time()
            rc, o = self.run(out or os.path.join(self.work, "evil_run"), "--no_test_at_end", *extra)
            ok = rc != 0 and "--trust_checkpoint" in o and not os.path.exists(marker)
            self.record(name, "refused, no code runs", ok, "refused" if ok else f"rc {rc}, marker "
                        f"{os.path.exists(marker)}", t0)

    def truncated_tag(self):
        t0, out = time.time(), os.path.join(self.work, "ds_trunc")
        rc, o = self.run(out, "--no_test_at_end", "--enable_deepspeed", "--zero_stage", "1", "--save_ckpt_freq", "1", epochs=2)
        if rc:
            self.record("truncated file in a DeepSpeed tag", "tag skipped, file named", False, f"setup rc {rc}", t0)
            return
        bad = sorted(glob.glob(os.path.join(out, "checkpoint-1", "*optim_states.pt")))[0]
        open(bad, "wb").write(open(bad, "rb").read()[:100])
        rc, o = self.run(out, "--no_test_at_end", "--enable_deepspeed", "--zero_stage", "1", "--save_ckpt_freq", "1", epochs=3)
        ok = rc == 0 and bad in o and "resumed DeepSpeed state from" in o and "checkpoint-0" in o
        self.record("truncated file in a DeepSpeed tag", "tag skipped naming the file; older tag resumed", ok,
                    "resumed checkpoint-0" if ok else f"rc {rc}", t0)

    def _bad_list(self, split, n_bad):
        d = os.path.join(self.work, f"bad_{split}")
        shutil.copytree(self.data, d)
        rows = open(os.path.join(d, f"{split}.csv")).read().splitlines()
        for k in range(n_bad):
            open(os.path.join(d, f"broken{k}.mp4"), "wb").write(b"garbage" * (k + 1))
        open(os.path.join(d, f"{split}.csv"), "w").write("\n".join(rows + [f"broken{k}.mp4 {k % 4}"
                                                                           for k in range(n_bad)]) + "\n")
        return d

    def bad_videos(self):
        t0 = time.time()
        d = self._bad_list("train", 2)
        out = os.path.join(self.work, "bad_train")
        flags = ["--data_path", d, "--data_root", d, "--no_test_at_end"]
        rc, o = self.run(out, *flags, "--max_bad_samples", "2", epochs=3)
        ok = rc == 0 and o.count("unreadable training file (replaced") == 2 and self.log_epochs(out) == [0, 1, 2]
        rc2, o2 = self.run(os.path.join(self.work, "bad_train_cap"), *flags, "--max_bad_samples", "1")
        stops = [x for x in o2.splitlines() if "stopping: " in x]  # may follow an unterminated FFmpeg log line
        ok = ok and rc2 == 1 and len(stops) == 1 and "Traceback" not in o2
        self.record("2 unreadable train videos, 3 epochs", "replaced, each named once; cap 1 stops in one line",
                    ok, "3 epochs; cap: one line" if ok else f"rc {rc}/{rc2}", t0)
        for split in ("val", "test"):
            t0 = time.time()
            d = self._bad_list(split, 1)
            out = os.path.join(self.work, f"bad_{split}_run")
            flags = ["--data_path", d, "--data_root", d]
            rc, o = self.run(out, *flags, epochs=1)
            kept = os.path.isfile(os.path.join(out, "checkpoint-latest.pth"))
            rc2, o2 = self.run(out + "_skip", *flags, "--skip_bad_test", epochs=1)
            final = json.loads(open(os.path.join(out + "_skip", "log.txt")).read().splitlines()[-1]) if rc2 == 0 else {}
            named = "broken0.mp4" in o2 and "count as misses" in o2
            n_total = len(open(os.path.join(d, f"{split}.csv")).read().splitlines())
            counted = (final.get("n_videos", 0) + final.get("n_unreadable", 0) == n_total) if split == "test" else \
                (json.loads(open(os.path.join(out + "_skip", "log.txt")).readline()).get("val_n") == n_total
                 if rc2 == 0 else False)
            ok = rc == 1 and kept and "stopping: cannot read" in o and rc2 == 0 and named and counted
            self.record(f"unreadable {split} video", "stops in one line, epoch kept; --skip_bad_test: named, counted "
                        "as a miss", ok, "as expected" if ok else f"rc {rc}/{rc2}, kept {kept}, named {named}", t0)

    def nonfinite(self):
        t0, out = time.time(), os.path.join(self.work, "nan")
        rc, o = self.run(out, "--no_test_at_end", "--lr", "1e30", "--warmup_epochs", "0", "--clip_grad", "0")
        ok = rc == 1 and "non-finite loss" in o and os.path.isfile(os.path.join(out, "checkpoint-nonfinite.pth"))
        self.record("non-finite loss (lr 1e30)", "stops all ranks, state before the step saved", ok,
                    "stopped, checkpoint-nonfinite.pth" if ok else f"rc {rc}", t0)

    def sigterm_resume(self):
        """SIGTERM to the whole process group mid-epoch (what a scheduler sends on preemption / time limit)."""
        t0, out = time.time(), os.path.join(self.work, "sigterm")
        p = subprocess.Popen(self.cmd(out, "--no_test_at_end"), env=self.env(), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
        text = []
        try:
            for line in p.stdout:
                text.append(line)
                if line.startswith("Epoch: [1] [1/"):
                    os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=300)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        o = "".join(text)
        rc, o2 = self.run(out, "--no_test_at_end")
        ok = p.returncode == 75 and "stopped by SIGTERM at epoch 1" in o and rc == 0 and "resuming epoch 1 at" in o2 \
            and self.same(self.weights(os.path.join(out, "checkpoint-latest.pth")),
                          self.weights(os.path.join(self.ref1, "checkpoint-latest.pth")))
        self.record("SIGTERM mid-epoch, auto-resume", "saves the step, exit 75; resume equals uninterrupted", ok,
                    "exit 75, resumed mid-epoch, bitwise equal" if ok else f"exit {p.returncode}/{rc}", t0)

    def busy_output_dir(self):
        t0, out = time.time(), os.path.join(self.work, "busy")
        os.makedirs(out, exist_ok=True)
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        try:
            with open(os.path.join(out, ".run.lock"), "w") as f:
                json.dump({"host": socket.gethostname(), "pid": holder.pid, "start": time.time()}, f)
            rc, o = self.run(out, "--no_test_at_end", timeout=120)
        finally:
            holder.kill()
            holder.wait()
        line = next((x for x in o.splitlines() if x.startswith("error:")), "")
        ok = rc != 0 and "is in use by another run" in line and str(holder.pid) in line and "Traceback" not in o
        self.record("second run into a busy --output_dir", "stops in one line naming the first run", ok,
                    line[:70] if ok else f"rc {rc}", t0)

    def bad_flags(self):
        t0, out = time.time(), os.path.join(self.work, "flags")
        cases = {"--batch_size 0": ["--batch_size", "0"], "--num_frames 0": ["--num_frames", "0"],
                 "--input_size 30": ["--input_size", "30"], "--model videomambapro_tiyn": ["--model",
                                                                                        "videomambapro_tiyn"]}
        bad = []
        for name, extra in cases.items():
            rc, o = self.run(out, "--no_test_at_end", *extra, timeout=120)
            if rc == 0 or "Traceback" in o or name.split()[0] not in o:
                bad.append(name)
        ok = not bad and not os.path.isdir(os.path.join(out, "predictions"))
        self.record("bad flags (batch 0, frames 0, size 30, model typo)", "one line each naming the flag, before "
                    "data", ok, "4 one-line errors" if ok else f"traceback or silent: {bad}", t0)

    def bom_list(self):
        t0, out = time.time(), os.path.join(self.work, "bom")
        lists = os.path.join(self.work, "bom_lists")
        os.makedirs(lists, exist_ok=True)
        for split in ("train", "val", "test"):
            with open(os.path.join(self.data, f"{split}.csv"), encoding="utf-8") as f:
                text = f.read()
            with open(os.path.join(lists, f"{split}.csv"), "w", encoding="utf-8-sig") as f:
                f.write(text)
        cmd = self.cmd(out, "--epochs", "1", epochs=1)
        cmd[cmd.index("--data_path") + 1] = lists
        r = subprocess.run(cmd, env=self.env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
        log = [json.loads(x) for x in open(os.path.join(out, "log.txt"))] if r.returncode == 0 else []
        ok = bool(log) and log[0].get("val_n_unreadable") == 0 and log[0].get("train_n_new_bad_files") == 0 \
            and log[-1].get("n_unreadable") == 0 and "Final top-1" in log[-1]
        self.record("lists saved with a UTF-8 BOM (Excel)", "read as written", ok,
                    "trained and tested, no unreadable rows" if ok else f"rc {r.returncode}", t0)

    def table(self) -> str:
        from ablation_table import format_table  # this folder: one Markdown table layout for the scripts

        head = ("scenario", "expected", "survived", "observed", "s")
        return format_table([dict(zip(head, (*r[:4], round(r[4])))) for r in self.rows], head)


SCENARIOS = ("kill9_resume", "killed_rank", "stalled_rank", "corrupt_checkpoints", "pickled_checkpoints",
             "truncated_tag", "bad_videos", "nonfinite", "sigterm_resume", "busy_output_dir", "bad_flags",
             "bom_list")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, default=None)
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    a = p.parse_args(argv)
    work = a.work or tempfile.mkdtemp(prefix="fault_check_")
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    c = Check(work)
    from datasets.synthetic import make_dataset

    make_dataset(c.data, seed=0, num_classes=4, train_per_class=3, val_per_class=1, test_per_class=1, frames=8,
                 size=32)
    c.reference()
    for name in a.only or SCENARIOS:
        try:
            getattr(c, name)()
        except Exception as e:  # a scenario that crashes is a failed scenario, the table still prints
            c.rows.append((name, "-", "NO", f"{type(e).__name__}: {str(e)[:80]}", 0.0))
    print("\n" + c.table())
    failed = sum(r[2] != "yes" for r in c.rows)
    print(f"\n{len(c.rows) - failed} of {len(c.rows)} scenarios survived in {time.time() - t0:.0f} s (work: {work})")
    if not a.keep and not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
