"""Video search through frame encoding.

* ``add_videos``: sample frames (streaming), encode them with the image encoder, drop
  near-duplicates (a frame whose code is within ``dedup_radius`` of the last kept frame
  adds nothing: shot-change aware sampling), store the kept frames in the ``frame`` index
  with video, frame number and time range. A bad video fails alone: the others still go
  in and the report counts and names the failures.
* ``text_to_moments`` / ``image_to_moments``: rank videos and time segments for a query;
  adjacent matching frames of a video merge into one segment.
* ``video_captions``: for each segment of a video, the nearest captions of the text
  index, and a summary of the best captions for the whole video with their time ranges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from crossmodal.codes import hamming_distances
from crossmodal.engines import EngineOptions
from crossmodal.video import VideoError, sample_frames

from .index import CrossModalIndex, IndexChanges, write_index
from .store import Item, display_text


@dataclass
class VideoAddReport:
    videos_added: int = 0
    frames_sampled: int = 0
    frames_kept: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        s = (f"{self.videos_added} video(s) added: {self.frames_kept} frames kept of {self.frames_sampled} sampled; "
             f"{len(self.failed)} failed")
        return s + "".join(f"\n  failed: {display_text(msg)}" for _, msg in self.failed)


@dataclass
class KeptFrame:
    frame: int
    start: float
    end: float
    code: np.ndarray
    relaxed: np.ndarray


def encode_video(model, path: str, nbits: int, fps: float = 1.0, max_frames: int | None = None,
                 dedup_radius: int = 2, batch_size: int = 16) -> tuple[list[KeptFrame], int]:
    """Sample, encode and de-duplicate one video's frames; returns (kept frames, sampled count).
    Only codes are kept in memory, never more than ``batch_size`` decoded frames."""
    kept: list[KeptFrame] = []
    sampled = 0
    batch = []

    def flush():
        nonlocal batch
        if not batch:
            return
        relaxed = model.embed_images([f.image for f in batch])
        codes = model.quantize(relaxed, nbits)
        for f, c, r in zip(batch, codes, relaxed):
            if kept and int(hamming_distances(c[None], kept[-1].code[None])[0, 0]) <= dedup_radius:
                continue
            if kept:
                kept[-1].end = f.timestamp
            kept.append(KeptFrame(f.frame, f.timestamp, f.timestamp, c, r))
        batch = []

    last_t = 0.0
    for f in sample_frames(path, fps=fps, max_frames=max_frames):
        sampled += 1
        last_t = f.timestamp
        batch.append(f)
        if len(batch) == batch_size:
            flush()
    flush()
    if kept:
        kept[-1].end = max(kept[-1].start, last_t) + 1.0 / fps
    return kept, sampled


def video_encoder(model, nbits: int, fps: float, max_frames: int | None, dedup_radius: int):
    """``path -> (kept frames, sampled count)``, or the reason (a line) the video could not be read."""
    def encode(path: str):
        try:
            return encode_video(model, path, nbits, fps, max_frames, dedup_radius)
        except VideoError as e:
            return str(e)
    return encode


def video_worker(model_dir: str, fingerprint: str, nbits: int, fps: float, max_frames: int | None,
                 dedup_radius: int):
    """A Ray worker's :func:`video_encoder`, on the driver's model
    (:func:`crossmodal.engines.worker_model`)."""
    from crossmodal.engines import worker_model

    return video_encoder(worker_model(model_dir, fingerprint), nbits, fps, max_frames, dedup_radius)


def add_videos(searcher, paths: Iterable[str], fps: float = 1.0, max_frames: int | None = None,
               dedup_radius: int = 2, engine: EngineOptions | None = None) -> VideoAddReport:
    """Sample, encode and index the frames of videos into the searcher's index folder
    (``engine``: where the videos are encoded, one video per unit; here by default).

    Encoding (the slow part) runs outside the writer lock; the frames then go in as one
    serialised commit, which replaces the frames of a video added before."""
    from crossmodal.engines import WorkerSpec, map_units, model_for_workers

    if searcher.index_dir is None:
        raise ValueError("add_videos needs a Searcher opened from an index folder")
    model, nbits = searcher.model, searcher.index.nbits
    engine = engine or EngineOptions()
    paths = list(paths)
    spec = WorkerSpec("retrieval.video:video_worker", (*model_for_workers(model), nbits, fps, max_frames,
                                                        dedup_radius)) if engine.name == "ray" else None
    results = dict(map_units(spec, paths, engine, local_run=video_encoder(model, nbits, fps, max_frames,
                                                                          dedup_radius)))
    report = VideoAddReport()
    encoded = []
    for position, path in enumerate(paths):  # in the order given, whatever order the engine finished in
        result = results[position]
        if isinstance(result, str):
            report.failed.append((str(path), result))
            continue
        kept, sampled = result
        encoded.append((str(Path(path).resolve()), kept))
        report.videos_added += 1
        report.frames_sampled += sampled
        report.frames_kept += len(kept)
    if not encoded:
        return report
    changes = IndexChanges()
    width = searcher.model.config.output_width
    for video, kept in encoded:  # re-adding a video replaces its frames
        items = [Item(key=f"{video}@{k.frame}", source=video, video=video, timestamp=k.start,
                      extra={"frame": k.frame, "end": k.end}) for k in kept]
        changes.replace_frames(video, items, np.stack([k.relaxed for k in kept]) if kept
                               else np.zeros((0, width), np.float32))
    write_index(searcher.index_dir, searcher.model, changes)
    searcher.refresh()
    return report


@dataclass
class Moment:
    video: str
    start: float
    end: float
    best_distance: int
    score: float  # 1 - mean normalised distance of the matching frames (higher is better)
    frames: list[int]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _moments_from_hits(index: CrossModalIndex, hits, top: int, margin: int | None = None) -> list[Moment]:
    """Group candidate frames into moments: consecutive frames of a video merge while
    their distances stay within ``margin`` bits of the run's best (default K/16), so a
    well-matching stretch is not diluted by the weaker frames next to it."""
    margin = max(1, index.nbits // 16) if margin is None else margin
    by_video: dict[str, dict[int, int]] = {}
    for h in hits:
        by_video.setdefault(h.video, {})[h.id] = h.distance
    moments = []
    for video, dists in by_video.items():
        run: list[dict] = []

        def close():
            if run:
                d = [dists[x["id"]] for x in run]
                moments.append(Moment(video, run[0]["timestamp"], run[-1]["extra"]["end"], min(d),
                                      1.0 - float(np.mean(d)) / index.nbits, [x["extra"]["frame"] for x in run]))
                run.clear()

        for f in index.frames_of(video):  # in time order
            d = dists.get(f["id"])
            if d is None:
                close()
                continue
            if run and abs(d - min(dists[x["id"]] for x in run)) > margin:
                close()
            run.append(f)
        close()
    moments.sort(key=lambda m: (m.best_distance, -m.score, m.video, m.start))
    return moments[:top]


def moments_for_relaxed(searcher, relaxed: np.ndarray, top: int = 10, candidates: int = 100,
                        radius: int | None = None, margin: int | None = None) -> list[Moment]:
    """Segments of indexed videos matching one query's continuous outputs [1, K] (through
    the searcher's public query path; ``margin``: see ``_moments_from_hits``)."""
    hits = searcher.search_relaxed(relaxed.reshape(1, -1), "frame", k=candidates, radius=radius)[0]
    return _moments_from_hits(searcher.index, hits, top, margin)


def text_to_moments(searcher, text: str, top: int = 10, candidates: int = 100,
                    radius: int | None = None, margin: int | None = None) -> list[Moment]:
    from .search import check_query_texts
    return moments_for_relaxed(searcher, searcher.model.embed_texts(check_query_texts([text])), top, candidates,
                               radius, margin)


def image_to_moments(searcher, image, top: int = 10, candidates: int = 100, radius: int | None = None,
                     margin: int | None = None) -> list[Moment]:
    return moments_for_relaxed(searcher, searcher.model.embed_images([image]), top, candidates, radius, margin)


def video_captions(searcher, path: str, k: int = 3, fps: float = 1.0, max_frames: int | None = None,
                   dedup_radius: int = 2) -> dict:
    """Caption lookup: each segment's nearest captions, and the best captions overall with
    the time ranges where they match. Works on any video file, indexed or not."""
    kept, sampled = encode_video(searcher.model, path, searcher.index.nbits, fps, max_frames, dedup_radius)
    segments = []
    if not kept:
        return {"video": str(path), "segments": [], "summary": []}
    results = searcher.search_relaxed(np.stack([f.relaxed for f in kept]), "text", k=k)
    best: dict[int, dict] = {}
    for f, hits in zip(kept, results):
        segments.append({"start": f.start, "end": f.end, "frame": f.frame,
                         "captions": [{"id": h.id, "text": h.source, "distance": h.distance} for h in hits]})
        for h in hits:
            b = best.setdefault(h.id, {"text": h.source, "best_distance": h.distance, "ranges": []})
            b["best_distance"] = min(b["best_distance"], h.distance)
            if b["ranges"] and abs(b["ranges"][-1][1] - f.start) < 1e-6:
                b["ranges"][-1][1] = f.end
            else:
                b["ranges"].append([f.start, f.end])
    summary = sorted(best.values(), key=lambda b: (b["best_distance"], -sum(e - s for s, e in b["ranges"])))
    return {"video": str(path), "frames_sampled": sampled, "segments": segments, "summary": summary[:max(k, 5)]}
