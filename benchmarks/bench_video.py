"""Video decode + encode speed and memory on CPU, for a 10-minute video.

Writes a 10-minute H.264 video of changing scenes (the built-in shapes, a new scene
every 5 seconds, with a moving overlay so frames differ), then measures
``retrieval.video.encode_video`` at 1 frame per second: frames decoded per second,
sampled frames encoded per second, and the peak memory (RSS) it added.

    python benchmarks/bench_video.py --model runs/demo/model
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish, rss_bytes  # noqa: E402


def make_video(path: Path, minutes: float, fps: int = 25, size: int = 224) -> int:
    import av

    from crossmodal.data.synthetic import render_scene

    rng = random.Random(0)
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width = s.height = size
    s.pix_fmt = "yuv420p"
    s.options = {"preset": "ultrafast"}
    n = int(minutes * 60 * fps)
    scene = None
    for i in range(n):
        if i % (5 * fps) == 0:
            scene = np.asarray(render_scene(rng, size)[0])
        frame = scene.copy()
        x = (i * 3) % (size - 20)
        frame[5:15, x:x + 20] = 255 - frame[5:15, x:x + 20]
        for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a trained model folder (default: untrained default encoders)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fps", type=float, default=1.0, help="sampling rate")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()

    from crossmodal import create_model
    from crossmodal.model import CrossModalHasher
    from crossmodal.video import sample_frames
    from retrieval.video import encode_video

    model = CrossModalHasher.from_pretrained(args.model) if args.model else create_model()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "ten_minutes.mp4"
        t = time.time()
        n_frames = make_video(video, args.minutes)
        print(f"wrote {video.stat().st_size / 1e6:.1f} MB, {n_frames} frames in {time.time() - t:.0f}s")
        t = time.time()
        n_sampled = sum(1 for _ in sample_frames(video, fps=args.fps))
        decode_s = time.time() - t
        base = rss_bytes()
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t = time.time()
        kept, sampled = encode_video(model, str(video), 64, fps=args.fps)
        total_s = time.time() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    added_peak = max(0, peak - max(base, peak_before))
    print(f"decode only: {n_frames / decode_s:.0f} frames/s decoded ({n_sampled} sampled)")
    print(f"decode + encode at {args.fps} fps: {total_s:.1f}s for {sampled} sampled frames = "
          f"{sampled / total_s:.1f} sampled frames/s ({n_frames / total_s:.0f} video frames/s); kept {len(kept)} "
          f"after de-duplication; peak RSS added {added_peak / 1e6:.0f} MB (process RSS before {base / 1e6:.0f} MB)")
    if args.no_write:
        return
    body = [f"A {args.minutes:g}-minute 224x224 H.264 video at 25 fps ({n_frames:,} frames, a new scene every 5 s), "
            f"sampled at {args.fps:g} frame/s, {model.config.image_encoder.name} on {os.cpu_count()} CPU cores:", "",
            "| step | rate |", "|---|---|",
            f"| decode only (PyAV, streaming) | {n_frames / decode_s:,.0f} video frames/s |",
            f"| decode + encode + de-duplicate | {sampled / total_s:.1f} sampled frames/s "
            f"({total_s:.0f} s for the whole video, {args.minutes * 60 / total_s:.1f}x real time) |",
            "", f"Frames kept after de-duplication: {len(kept)} of {sampled}. Peak memory added while processing the "
            f"whole video: **{added_peak / 1e6:.0f} MB** (frames are streamed; only codes are kept)."]
    metrics = {"minutes": args.minutes, "video_frames": n_frames, "sample_fps": args.fps,
               "decode_seconds": decode_s, "encode_seconds": total_s, "sampled_frames": sampled,
               "kept_frames": len(kept), "peak_rss_added_bytes": added_peak,
               "image_encoder": model.config.image_encoder.name}
    publish("video", "Video: decode and encode", "generated video", metrics, "\n".join(body))


if __name__ == "__main__":
    main()
