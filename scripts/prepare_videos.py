#!/usr/bin/env python
"""Re-encode videos to a short side (H.264 mp4) and/or extract raw frames, in parallel, resumable.

    # pre-resize Kinetics to short side 320 (VideoMAE's practice); lists rewritten beside the videos
    python scripts/prepare_videos.py --videos /data/k400/videos --lists /data/k400/lists/*.csv --split , \\
        --resize_out /data/k400/videos_320
    # SSV2 webm -> raw frames img_00001.jpg ... at short side 320, with the 3-column lists written beside
    python scripts/prepare_videos.py --videos /data/ssv2/videos --lists /data/ssv2/lists/*.csv \\
        --frames_out /data/ssv2/rawframes
    # both at once (one decode), every video under the folder (no lists)
    python scripts/prepare_videos.py --videos V --resize_out V320 --frames_out F --short_side 256

Each source (``--lists`` rows, or every video file under ``--videos``) is probed as the training loader opens it
(datasets/video_io.py), decoded with PyAV, scaled so its short side is ``--short_side`` (never up; width and
height even for yuv420p; ``0`` keeps the size), and written as ``<resize_out>/<path>.mp4`` (H.264: libx264, or the
best H.264 encoder this PyAV build has, else MPEG-4 with a message) and/or ``<frames_out>/<path without
extension>/img_00001.jpg ...`` (``--filename_tmpl`` / ``--start_idx``). Audio is not copied.

Every output is written under a temporary name (``.<name>.part...`` beside it), probed (frame count within one
frame of the source's, short side as asked) and only then renamed to its final name, so a killed run leaves no
half-written output under a final name; a rerun skips the outputs that exist and redoes the rest (leftover
``.part`` files are removed). For every ``--lists`` file the list of what was written goes beside the outputs
under the same file name (``video_path label`` in resize_out, ``frame_folder total_frames label`` in
frames_out); sources that failed are left out and named, with the reason, in ``prepare_report.txt`` there and in
the summary. Exit status 1 when any source failed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from fractions import Fraction
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from datasets.lists import read_list  # noqa: E402
from utils.parallel import parallel_map  # noqa: E402

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp", ".ogv", ".wmv")
REPORT = "prepare_report.txt"
# H.264 encoders in order of preference, then the fallback every FFmpeg build has.
H264_ENCODERS = ("libx264", "libopenh264", "h264_nvenc", "h264_qsv", "h264_vaapi", "h264_videotoolbox")
FALLBACK_ENCODER = "mpeg4"


def available_encoders() -> set:
    import av

    return set(av.codecs_available)


def pick_encoder(requested: str = "auto", log=print) -> str:
    """The video encoder to write with: ``requested``, or for 'auto' libx264, another H.264 encoder, else mpeg4."""
    have = available_encoders()
    if requested != "auto":
        if requested not in have:
            h264 = [c for c in H264_ENCODERS if c in have]
            raise SystemExit(f"error: --codec {requested} is not in this PyAV build (H.264 encoders here: "
                             f"{h264 or 'none'}; mpeg4 {'yes' if FALLBACK_ENCODER in have else 'no'})")
        return requested
    for c in H264_ENCODERS:
        if c in have:
            if c != "libx264" and log:
                log(f"[prepare] libx264 is not in this PyAV build; writing H.264 with {c}")
            return c
    if log:
        log(f"[prepare] warning: this PyAV build has no H.264 encoder (libx264 missing); writing MPEG-4 Part 2 "
            f"({FALLBACK_ENCODER}) mp4 files instead, which decode everywhere but are larger. A PyAV wheel from PyPI "
            f"ships libx264 (pip install --force-reinstall av)")
    return FALLBACK_ENCODER


def scaled_size(width: int, height: int, short_side: int) -> Tuple[int, int]:
    """(width, height) with the short side ``short_side`` (never enlarged; ``0`` keeps the size), both even."""
    if short_side and min(width, height) > short_side:
        if width <= height:
            w, h = short_side, height * short_side / width
        else:
            w, h = width * short_side / height, short_side
        w, h = int(round(w)), int(round(h))
    else:
        w, h = width, height
    w, h = max(w - w % 2, 2), max(h - h % 2, 2)
    return w, h


def _part(final: str, suffix: str = "") -> str:
    d, name = os.path.split(final)
    return os.path.join(d, f".{name}.part{suffix}")


def _clean_parts(final: str) -> None:
    d, name = os.path.split(final)
    if not os.path.isdir(d):
        return
    for fn in os.listdir(d):
        if fn.startswith(f".{name}.part"):
            p = os.path.join(d, fn)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def _frame_rate(stream) -> Fraction:
    for r in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if r is not None and 0 < float(r) <= 1000:
            return Fraction(r).limit_denominator(1001)
    return Fraction(25)


def process_job(job: dict) -> dict:
    """One source: decode, resize, write the missing outputs (temp name -> probe -> rename).

    ``job``: src, video_out (or None), frames_out (or None), short_side, codec, crf, preset, quality, tmpl,
    start_idx, reader. Returns {"status": "done" | "skipped" | "failed", "reason", "frames", "size"}."""
    import av
    import cv2

    from datasets.video_io import VideoReadError, count_rawframes, probe_rawframes, probe_video

    src, vout, fout = job["src"], job["video_out"], job["frames_out"]
    tmpl, start = job["tmpl"], job["start_idx"]
    todo_video = vout is not None and not os.path.isfile(vout)
    todo_frames = fout is not None and not os.path.isdir(fout)
    if not todo_video and not todo_frames:
        n = count_rawframes(fout, tmpl, start) if fout else None
        return {"status": "skipped", "reason": "", "frames": n}
    for final in (vout, fout):
        if final:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            _clean_parts(final)
    tmp_video = _part(vout, ".mp4") if todo_video else None
    tmp_frames = _part(fout) if todo_frames else None

    def fail(reason):
        for p in (tmp_video, tmp_frames):
            if p and os.path.isdir(p):
                shutil.rmtree(p)
            elif p and os.path.exists(p):
                os.remove(p)
        return {"status": "failed", "reason": reason, "frames": None}

    try:
        expected = probe_video(src, job["reader"]).frames
    except VideoReadError as e:
        return fail(f"unreadable source: {e.reason}")
    n, size = 0, None
    try:
        with av.open(src) as inp:
            if not inp.streams.video:
                return fail("unreadable source: no video stream")
            ist = inp.streams.video[0]
            ist.thread_type = "AUTO"
            ist.thread_count = 1
            rate = _frame_rate(ist)
            out = ost = None
            if tmp_frames:
                os.makedirs(tmp_frames)
            try:
                for frame in inp.decode(ist):
                    if size is None:
                        size = scaled_size(frame.width, frame.height, job["short_side"])
                        if tmp_video:
                            out = av.open(tmp_video, mode="w", format="mp4")
                            ost = out.add_stream(job["codec"], rate=rate)
                            ost.pix_fmt = "yuv420p"
                            if job["codec"] == "libx264":
                                ost.options = {"crf": str(job["crf"]), "preset": job["preset"], "threads": "1"}
                            else:
                                ost.bit_rate = 2_000_000
                                ost.thread_count = 1
                            ost.width, ost.height = size
                    w, h = size
                    if ost is not None:
                        yuv = frame.reformat(width=w, height=h, format="yuv420p", interpolation="BICUBIC",
                                             threads=1)
                        for packet in ost.encode(yuv):
                            out.mux(packet)
                    if tmp_frames:
                        bgr = frame.reformat(width=w, height=h, format="bgr24", interpolation="BICUBIC",
                                             threads=1).to_ndarray()
                        name = os.path.join(tmp_frames, tmpl.format(start + n))
                        if not cv2.imwrite(name, bgr, [cv2.IMWRITE_JPEG_QUALITY, int(job["quality"])]):
                            return fail(f"cannot write {name}")
                    n += 1
                if ost is not None:
                    for packet in ost.encode():
                        out.mux(packet)
            finally:
                if out is not None:
                    out.close()
    except Exception as e:  # av.error.FFmpegError (corrupt stream, unsupported codec), OSError (disk full), ...
        return fail(f"{type(e).__name__} while converting: {str(e).strip()[:200]}")
    if n == 0:
        return fail("the source decodes to zero frames")
    if abs(n - expected) > 1:
        return fail(f"PyAV decodes {n} frames, the probe counts {expected}: the source is damaged")
    short = min(size)
    try:
        if tmp_video:
            p = probe_video(tmp_video, job["reader"])
            if abs(p.frames - n) > 1 or min(p.width, p.height) != short:
                return fail(f"the written video has {p.frames} frames of {p.width}x{p.height}, expected {n} of "
                            f"{size[0]}x{size[1]}")
        if tmp_frames:
            p = probe_rawframes(tmp_frames, tmpl, start)
            if p.frames != n or min(p.width, p.height) != short:
                return fail(f"the written frames are {p.frames} of {p.width}x{p.height}, expected {n}")
    except VideoReadError as e:
        return fail(f"the written output does not read back: {e.reason}")
    if tmp_video:
        os.replace(tmp_video, vout)
    if tmp_frames:
        os.rename(tmp_frames, fout)
    frames = count_rawframes(fout, tmpl, start) if fout else None
    return {"status": "done", "reason": "", "frames": frames, "size": size}


def _quiet() -> None:
    try:
        import av

        av.logging.set_level(None)
    except Exception:  # pragma: no cover
        pass
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover
        pass


def _sources(videos: str, lists: List[str], sep: str) -> Tuple[List[str], Dict[str, list]]:
    """Relative source paths (sorted, unique) and, per list file, its (rel, label) rows."""
    per_list = {}
    if lists:
        rels = set()
        for lf in lists:
            rows = [(s.rel_path, s.label) for s in read_list(lf, "video", sep=sep, data_root=videos)]
            per_list[lf] = rows
            rels.update(r for r, _ in rows)
        bad = sorted(r for r in rels if os.path.isabs(r) or r.startswith(".."))
        if bad:
            raise SystemExit(f"error: list paths must be relative to --videos to mirror them; e.g. {bad[0]!r}")
        return sorted(rels), per_list
    rels = []
    for dirpath, dirnames, filenames in os.walk(videos, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.startswith(".") and fn.lower().endswith(VIDEO_EXTS):
                rels.append(os.path.relpath(os.path.join(dirpath, fn), videos).replace(os.sep, "/"))
    return sorted(rels), per_list


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _join(cols, sep):
    return sep.join(cols) if sep.strip() else " ".join(cols)


def prepare(videos: str, *, lists=(), sep: str = " ", resize_out: Optional[str] = None,
            frames_out: Optional[str] = None, short_side: int = 320, workers: int = 0, codec: str = "auto",
            crf: int = 23, preset: str = "veryfast", quality: int = 90, filename_tmpl: str = "img_{:05}.jpg",
            start_idx: int = 1, reader: str = "decord", log=print) -> dict:
    """Convert every source; write the lists beside the outputs and the reports. Returns
    {"results": {rel: result}, "lists": {(out dir, list file): written path}, "failed": [(rel, reason)]}."""
    if not resize_out and not frames_out:
        raise SystemExit("error: pass --resize_out and/or --frames_out")
    if not os.path.isdir(videos):
        raise SystemExit(f"error: --videos {videos}: folder not found")
    src_real = os.path.realpath(videos)
    for flag, d in (("--resize_out", resize_out), ("--frames_out", frames_out)):
        if d and os.path.realpath(d) == src_real:
            raise SystemExit(f"error: {flag} must not be the --videos folder (outputs would mix with the sources)")
    enc = pick_encoder(codec, log) if resize_out else None
    rels, per_list = _sources(videos, list(lists), sep)
    for out_dir in filter(None, (resize_out, frames_out)):
        for lf in per_list:
            if os.path.realpath(os.path.join(out_dir, os.path.basename(lf))) == os.path.realpath(lf):
                raise SystemExit(f"error: the list written beside the outputs would overwrite {lf}")
    targets: Dict[str, tuple] = {}
    for rel in rels:
        noext = os.path.splitext(rel)[0]
        vout = os.path.join(resize_out, noext + ".mp4") if resize_out else None
        fout = os.path.join(frames_out, noext) if frames_out else None
        targets[rel] = (vout, fout)
    clash: Dict[str, str] = {}
    for rel, (vout, fout) in targets.items():
        key = vout or fout
        if key in clash:
            raise SystemExit(f"error: {clash[key]!r} and {rel!r} would both be written to {key}")
        clash[key] = rel
    jobs = [dict(src=os.path.join(videos, rel), video_out=targets[rel][0], frames_out=targets[rel][1],
                 short_side=short_side, codec=enc, crf=crf, preset=preset, quality=quality, tmpl=filename_tmpl,
                 start_idx=start_idx, reader=reader) for rel in rels]
    what = " and ".join(filter(None, (f"{enc} mp4 at short side {short_side or 'kept'}" if resize_out else "",
                                      "raw frames" if frames_out else "")))
    log(f"[prepare] {len(jobs)} videos from {videos} -> {what}")
    results = dict(zip(rels, parallel_map(process_job, jobs, workers=workers, desc="prepare", unit="video",
                                          initializer=_quiet)))
    failed = [(rel, r["reason"]) for rel, r in results.items() if r["status"] == "failed"]
    written = {}
    for out_dir, kind in ((resize_out, "video"), (frames_out, "rawframe")):
        if not out_dir:
            continue
        os.makedirs(out_dir, exist_ok=True)
        for lf, rows in per_list.items():
            lines = []
            for rel, label in rows:
                r = results[rel]
                if r["status"] == "failed":
                    continue
                noext = os.path.splitext(rel)[0]
                cols = [noext + ".mp4", str(label)] if kind == "video" else [noext, str(r["frames"]), str(label)]
                lines.append(_join(cols, sep) + "\n")
            path = os.path.join(out_dir, os.path.basename(lf))
            if not lines:
                log(f"[prepare] {path}: nothing to list (every source of {lf} failed)")
                continue
            _write_atomic(path, "".join(lines))
            read_list(path, kind, sep=sep, data_root=out_dir)  # reads back through our parser
            written[(out_dir, lf)] = path
        head = [f"# prepare_videos.py: {len(rels)} sources under {videos}; {len(failed)} failed",
                "# failed: source, reason"]
        _write_atomic(os.path.join(out_dir, REPORT), "\n".join(head + [f"{r}\t{why}" for r, why in failed]) + "\n")
    n = {s: sum(r["status"] == s for r in results.values()) for s in ("done", "skipped", "failed")}
    log(f"[prepare] {n['done']} converted, {n['skipped']} already done (skipped), {n['failed']} failed")
    for rel, why in failed[:20]:
        log(f"  failed: {rel}: {why}")
    if len(failed) > 20:
        log(f"  ... and {len(failed) - 20} more in {REPORT}")
    for (_, lf), path in written.items():
        log(f"[prepare] list {lf} -> {path}")
    return {"results": results, "lists": written, "failed": failed}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__[__doc__.index("Each source"):])
    p.add_argument("--videos", required=True, help="source folder (the --data_root of --lists)")
    p.add_argument("--lists", nargs="*", default=[], help="video lists (video_path label) naming the sources; "
                   "default: every video file under --videos")
    p.add_argument("--split", dest="sep", default=" ", help="column separator of --lists (also used for the lists "
                   "written beside the outputs)")
    p.add_argument("--resize_out", default=None, help="write <path>.mp4 here (H.264)")
    p.add_argument("--frames_out", default=None, help="write <path>/img_00001.jpg ... here")
    p.add_argument("--short_side", type=int, default=320, help="short side in pixels, never enlarged (default 320, "
                   "VideoMAE's practice); 0 keeps the size")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all CPUs)")
    p.add_argument("--codec", default="auto", help="video encoder: auto (libx264, else another H.264 encoder, else "
                   "mpeg4 with a warning) or an FFmpeg encoder name")
    p.add_argument("--crf", type=int, default=23, help="libx264 quality (lower is better; default 23)")
    p.add_argument("--preset", default="veryfast", help="libx264 preset (default veryfast)")
    p.add_argument("--jpeg_quality", type=int, default=90)
    p.add_argument("--filename_tmpl", default="img_{:05}.jpg")
    p.add_argument("--start_idx", type=int, default=1)
    p.add_argument("--video_reader", default="decord", choices=("decord", "pyav"), help="the reader that probes "
                   "sources and outputs, as training will read them")
    return p


def main(argv=None) -> int:
    a = get_parser().parse_args(argv)
    if a.short_side < 0:
        raise SystemExit("error: --short_side must be >= 0")
    res = prepare(a.videos, lists=a.lists, sep=a.sep, resize_out=a.resize_out, frames_out=a.frames_out,
                  short_side=a.short_side, workers=a.workers, codec=a.codec, crf=a.crf, preset=a.preset,
                  quality=a.jpeg_quality, filename_tmpl=a.filename_tmpl, start_idx=a.start_idx, reader=a.video_reader)
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
