"""Video frame sampling with PyAV, streaming: a long video is never held in memory.

``sample_frames`` decodes one frame at a time and yields the ones at the chosen rate
(default one per second), so memory stays constant whatever the video's length. Every
way a video file can be bad (missing, truncated or corrupt, no video stream, no frames,
a codec FFmpeg cannot decode) raises :class:`VideoError` naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from .errors import InvalidInput


class VideoError(InvalidInput):
    """A video that cannot be read; the message names the file and the reason."""


@dataclass
class SampledFrame:
    frame: int  # index of the decoded frame in the video
    timestamp: float  # seconds from the start
    image: Image.Image


@dataclass
class VideoInfo:
    path: str
    duration: float | None
    fps: float | None
    width: int
    height: int
    codec: str


def _open(path: str | os.PathLike):
    import av

    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: no such file")
    if p.is_dir():
        raise VideoError(f"{p}: is a folder, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: empty file (0 bytes)")
    try:
        container = av.open(str(p))
    except av.error.EOFError:
        raise VideoError(f"{p}: the file ends before any video data (zero-length video)") from None
    except av.error.FFmpegError as e:
        raise VideoError(f"{p}: not a readable video ({e.__class__.__name__}: {e})") from None
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "no streams"
        container.close()
        raise VideoError(f"{p}: has no video stream (found: {kinds})")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.name or stream.codec_context.name == "none":
        container.close()
        raise VideoError(f"{p}: its video stream cannot be decoded: the file is damaged, or FFmpeg has no decoder "
                         f"for its codec")
    return container, stream


def probe(path: str | os.PathLike) -> VideoInfo:
    container, stream = _open(path)
    try:
        duration = float(stream.duration * stream.time_base) if stream.duration else (
            container.duration / 1e6 if container.duration else None)
        fps = float(stream.average_rate) if stream.average_rate else None
        return VideoInfo(str(path), duration, fps, stream.codec_context.width, stream.codec_context.height,
                         stream.codec_context.name)
    finally:
        container.close()


def sample_frames(path: str | os.PathLike, fps: float = 1.0, max_frames: int | None = None) -> Iterator[SampledFrame]:
    """Yield frames at ``fps`` per second (the first frame at or after each tick), at
    most ``max_frames`` of them. Raises :class:`VideoError` for a bad file, including
    one that breaks off partway (frames already yielded stay yielded)."""
    import av

    if fps <= 0:
        raise InvalidInput("fps must be positive")
    container, stream = _open(path)
    stream.thread_type = "AUTO"
    duration = float(stream.duration * stream.time_base) if stream.duration else (
        container.duration / 1e6 if container.duration else None)
    frame_step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.04
    next_tick, n_out, n, t = 0.0, 0, -1, 0.0
    try:
        for n, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else n / float(stream.average_rate or 25)
            if t + 1e-6 < next_tick:
                continue
            yield SampledFrame(n, t, frame.to_image())
            n_out += 1
            next_tick = (int(t * fps + 1e-6) + 1) / fps
            if max_frames and n_out >= max_frames:
                break
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed after {n + 1} frame(s) ({e.__class__.__name__}: {e}); "
                         f"the file is truncated or corrupt") from None
    finally:
        container.close()
    if n < 0:
        raise VideoError(f"{path}: the video stream holds no frames (zero-length video)")
    if not (max_frames and n_out >= max_frames) and duration and t + 3 * frame_step < duration:
        raise VideoError(f"{path}: decoding stopped at {t:.1f}s of {duration:.1f}s; the file is truncated or corrupt")


def frame_at(path: str | os.PathLike, timestamp: float) -> Image.Image:
    """The first frame at or after ``timestamp`` seconds (what :func:`sample_frames` gave
    for that time), found by seeking to the key frame before it: a thumbnail of an indexed
    moment without decoding the video from its start."""
    import av

    container, stream = _open(path)
    try:
        container.seek(int(timestamp / stream.time_base), stream=stream, backward=True)
        last = None
        for last in container.decode(stream):
            if last.time is None or last.time >= timestamp - 1e-3:
                return last.to_image()
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed near {timestamp:.1f}s ({e.__class__.__name__}: {e})") from None
    finally:
        container.close()
    if last is None:
        raise VideoError(f"{path}: no frame at {timestamp:.1f}s (the video is shorter than when it was indexed?)")
    return last.to_image()
