"""A folder tree of photos into an index: walk, decode reduced in parallel, encode in
batches, commit in chunks, and keep the index in sync with the folder.

* **Walk**: folders recursively (symlinked folders followed once: a link loop is seen
  and skipped), files by image extension, unreadable folders reported, never fatal.
* **Stream**: the one batch encoder (:mod:`crossmodal.image_batches`) decodes in worker
  processes while the main process runs the CNN (through ONNX Runtime when installed:
  :mod:`crossmodal.runtime`), with a bounded number of decoded photos in memory. A JPEG
  is decoded reduced to the encoder's size (never below it) and EXIF orientation is
  applied (:func:`crossmodal.data.images.open_image`).
* **Chunks**: every ``chunk_size`` photos the codes go in as one serialised commit, so
  a killed run loses at most one chunk; the next run skips every photo already indexed
  with the same size and modification time, and never adds one twice (items are keyed
  by absolute path).
* **Sync**: each photo's path, size, mtime and content hash live in the item metadata;
  :func:`sync_photos` adds new photos, re-encodes changed ones, removes deleted ones.
  A photo whose size and mtime match is not read at all; one whose mtime changed but
  whose content hash did not is only re-stamped.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from crossmodal.data.images import photo_date
from crossmodal.image_batches import EncodedBatch, PhotoFiles, encode_batches
from crossmodal.errors import InvalidInput, MissingInput
from crossmodal.runtime import ImageRuntime, TorchImageRuntime, image_runtime

from .index import CrossModalIndex, IndexChanges, NewIndex, WriteReport, has_index, write_index
from .photo_options import DEFAULT_BATCH, PhotoOptions, default_workers
from .store import Item

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
@dataclass(frozen=True)
class PhotoFile:
    """A photo on disk as the index remembers it."""
    path: str  #: absolute path: the item's key
    size: int
    mtime_ns: int


@dataclass
class PhotoReport:
    """What a photo run did; ``summary()`` is the line a command prints at the end. The
    index's side (added, updated, re-stamped, removed) is the writer's own report."""
    found: int = 0  #: image files listed under the roots
    unchanged: int = 0  #: already indexed with the same size and mtime (not read)
    walk_failures: int = 0  #: paths named or listed that could not be read at all (also in ``failed``)
    failed: list[tuple[str, str]] = field(default_factory=list)  #: (path, why)
    unreadable_folders: list[tuple[str, str]] = field(default_factory=list)
    written: WriteReport = field(default_factory=WriteReport)  #: every commit's, merged

    @property
    def added(self) -> int:
        """Photos new to the index (captions or dataset items riding in the same commit not counted)."""
        return self.written.of("image", "added") - self.written.of("image", "replaced")

    @property
    def updated(self) -> int:
        """Re-encoded because the file changed."""
        return self.written.of("image", "replaced")

    @property
    def restamped(self) -> int:
        """mtime changed, content did not: metadata only."""
        return self.written.of("image", "restamped")

    @property
    def removed(self) -> int:
        return self.written.of("image", "removed")

    @property
    def present(self) -> int:
        """Already indexed and left as they were (not read, re-stamped, or already there)."""
        return self.unchanged + self.restamped + self.written.of("image", "skipped")

    @property
    def seen(self) -> int:
        """Every photo the run looked at: the files listed, and the paths named that could not be."""
        return self.found + self.walk_failures

    def summary(self) -> str:
        """``S photo(s) seen: added A, updated U, already present P, unreadable N``; the
        four add up to S (+ unreadable folders when any)."""
        parts = [f"added {self.added}", f"updated {self.updated}", f"already present {self.present}",
                 f"unreadable {len(self.failed)}"]
        if self.removed:
            parts.append(f"removed {self.removed}")
        if self.unreadable_folders:
            parts.append(f"unreadable folders {len(self.unreadable_folders)}")
        return f"{self.seen} photo(s) seen: " + ", ".join(parts)

    def sync_summary(self) -> str:
        return (f"sync of {self.seen} photo(s): added {self.added}, updated {self.updated}, removed {self.removed}, "
                f"unchanged {self.present}, unreadable {len(self.failed)}")


def photo_key(path: str | os.PathLike) -> str:
    """How a photo is keyed: its absolute path as the user reaches it, symlinks kept (a
    photo under a linked folder belongs to the root the user named, so a sync of that
    root removes it when the link or the file goes)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def walk_photos(roots: Sequence[str | os.PathLike], report: PhotoReport | None = None) -> list[PhotoFile]:
    """Every image file under ``roots`` (folders, recursively, or files), sorted by path,
    each once. Hidden files and folders (a leading dot) are left out. A folder reached
    twice (a link to a folder already walked, or a loop) is walked the first time only,
    in sorted order, so a photo is never indexed under two paths."""
    report = report if report is not None else PhotoReport()
    seen_dirs: set[tuple[int, int]] = set()
    found: dict[str, PhotoFile] = {}

    def fail(path, why: str) -> None:
        report.failed.append((str(path), why))
        report.walk_failures += 1
        print(f"skipped {path}: {why}", file=sys.stderr)

    def add_file(path: Path) -> None:
        try:
            key = photo_key(path)
            st = os.stat(key)
        except OSError as e:
            fail(path, f"{type(e).__name__}: {e.strerror or e}")
            return
        found.setdefault(key, PhotoFile(key, st.st_size, st.st_mtime_ns))

    def on_error(e: OSError) -> None:
        report.unreadable_folders.append((str(e.filename), e.strerror or str(e)))
        print(f"skipped folder {e.filename}: {e.strerror or e}", file=sys.stderr)

    for root in roots:
        root = Path(root).expanduser()
        if root.is_file():
            add_file(root)
            continue
        if not root.is_dir():
            fail(root, "no such file or folder")
            continue
        root = Path(photo_key(root))
        for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=True):
            try:
                st = os.stat(folder)
            except OSError:
                dirs[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop, or a folder reached twice
                dirs[:] = []
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                    add_file(Path(folder) / name)
    report.found = len(found)
    return [found[k] for k in sorted(found)]


def runtime_threads(workers: int) -> int:
    """Threads for the CNN runtime: the cores the decoders leave, at least one."""
    return max(1, (os.cpu_count() or 2) - workers)


def _date_fields(p: PhotoFile) -> dict:
    """When the photo was taken, and from what (``crossmodal.data.images.photo_date``)."""
    date, origin = photo_date(p.path, p.mtime_ns)
    return {"date": date, "date_from": origin}


def _photo_item(p: PhotoFile, digest: str, look: str) -> Item:
    return Item(key=p.path, source=p.path, extra={"size": p.size, "mtime_ns": p.mtime_ns, "hash": digest,
                                                  "look": look, **_date_fields(p)})


def encode_photos(model, photos: Sequence[PhotoFile], batch_size: int = DEFAULT_BATCH,
                  workers: int | None = None, runtime: ImageRuntime | None = None,
                  desc: str = "photos") -> Iterator[tuple[list[Item], np.ndarray, list]]:
    """Stream ``photos`` through the image encoder (``runtime``: PyTorch unless given),
    through the one batch encoder (:mod:`crossmodal.image_batches`): yields, per batch,
    the items that decoded, their relaxed outputs and the (path, why) of those that did not."""
    workers = default_workers() if workers is None else workers
    runtime = runtime or TorchImageRuntime(model)
    enc = model.image_encoder
    sources = PhotoFiles([p.path for p in photos], min_side=enc.image_size)
    for batch in encode_batches(sources, enc.transform(train=False), runtime.relaxed, batch_size, workers,
                                desc=desc, unit="photo"):
        yield _batch_items(model, photos, batch)


def _batch_items(model, photos: Sequence[PhotoFile], batch: EncodedBatch) -> tuple[list[Item], np.ndarray, list]:
    relaxed = batch.outputs if batch.positions else np.zeros((0, model.config.output_width), np.float32)
    return ([_photo_item(photos[i], digest, look) for i, digest, look in zip(batch.positions, batch.digests,
                                                                            batch.looks)],
            relaxed, [(photos[i].path, why) for i, why in batch.failed])


def encode_photos_on_ray(model, photos: Sequence[PhotoFile], options: PhotoOptions
                         ) -> Iterator[tuple[list[Item], np.ndarray, list]]:
    """:func:`encode_photos` with the batches run by Ray actors (``options.engine``): each
    batch holds the photos the local engine would put in it, encoded by the same batch
    encoder, runtime and preprocessing, so the outputs are the same; batches come back in
    order of completion."""
    from crossmodal.engines import WorkerSpec, map_units, model_for_workers

    step = options.batch_size
    units = [(start, [p.path for p in photos[start:start + step]]) for start in range(0, len(photos), step)]
    spec = WorkerSpec("retrieval.photos:photo_batch_worker",
                      (*model_for_workers(model), options.runtime, RAY_WORKER_THREADS))
    for _, batch in map_units(spec, units, options.engine, cpus_per_worker=RAY_WORKER_THREADS):
        yield _batch_items(model, photos, batch)


#: threads (and CPUs reserved) per Ray encoding actor: the local engine's CNN runs on one
#: thread beside its decoders on two cores, and one thread gives the same bits
RAY_WORKER_THREADS = 1


def photo_batch_worker(model_dir: str, fingerprint: str, runtime: str, threads: int):
    """A Ray worker's photo encoder: the driver's model (:func:`crossmodal.engines.worker_model`)
    run on ``runtime``; returns a function ``(start, paths) -> EncodedBatch`` whose positions
    count from ``start``."""
    from crossmodal.engines import worker_model

    model = worker_model(model_dir, fingerprint)
    encoder = model.image_encoder
    run = image_runtime(model, runtime, threads=threads).relaxed
    transform = encoder.transform(train=False)

    def encode(unit: tuple[int, list[str]]) -> EncodedBatch:
        start, paths = unit
        batch = next(encode_batches(PhotoFiles(paths, min_side=encoder.image_size), transform, run, len(paths)))
        batch.positions = [start + i for i in batch.positions]
        batch.failed = [(start + i, why) for i, why in batch.failed]
        return batch

    return encode


def indexed_photos(index: CrossModalIndex) -> dict[str, dict]:
    """path -> {size, mtime_ns, hash} of every image item that came from a photo file."""
    out = {}
    for meta in index.items_of("image"):
        extra = meta["extra"]
        if "mtime_ns" in extra:
            out[meta["key"]] = extra
    return out


def _changed(p: PhotoFile, known: dict | None) -> bool:
    return known is None or known.get("size") != p.size or known.get("mtime_ns") != p.mtime_ns


def index_photos(index_dir: str | os.PathLike, model, photos: Sequence[PhotoFile], report: PhotoReport,
                 options: PhotoOptions | None = None, update: bool = True, riders: IndexChanges | None = None,
                 create: NewIndex | None = None) -> bool:
    """Encode and add ``photos`` to the index in ``index_dir``, committing every
    ``options.chunk_size`` photos. Photos already indexed with the same size and mtime
    are not read; with ``update``, changed ones are re-encoded (same key, new code).

    ``riders`` (captions, dataset items given in the same command) go in with the last
    chunk of photos, in the same commit, so a command that adds photos and captions
    together is not left half-applied by a kill. ``create``: the index to start if the
    folder holds none yet (a first build). Returns whether the riders went in (False
    when no photo needed a commit: the caller commits them)."""
    options = options or PhotoOptions()
    if options.chunk_size < 1 or options.batch_size < 1:
        raise InvalidInput(f"chunk and batch sizes must be at least 1, got {options.chunk_size} and "
                           f"{options.batch_size}")
    known = indexed_photos(CrossModalIndex.load(index_dir, model.fingerprint())) if create is None or \
        has_index(index_dir) else {}
    todo = [p for p in photos if (_changed(p, known.get(p.path)) if update else p.path not in known)]
    report.unchanged += len(photos) - len(todo)
    _date_older_photos(index_dir, model, [p for p in photos if p.path in known and p not in todo], known)
    pending_items: list[Item] = []
    pending_relaxed: list[np.ndarray] = []

    def flush(last: bool = False) -> bool:
        if not pending_items:
            return False
        changes = _photo_changes(pending_items, np.concatenate(pending_relaxed), known, update)
        if last and riders:
            changes.extend(riders)
        report.written.merge(write_index(index_dir, model, changes, create))
        for it in pending_items:
            known[it.key] = it.extra
        pending_items.clear()
        pending_relaxed.clear()
        return last and bool(riders)

    if not todo:
        return False
    if options.engine.name == "ray":
        batches = encode_photos_on_ray(model, todo, options)
    else:
        workers = default_workers() if options.workers is None else options.workers
        runtime = image_runtime(model, options.runtime, threads=runtime_threads(workers))
        batches = encode_photos(model, todo, options.batch_size, workers, runtime)
    for items, relaxed, failed in batches:
        for path, why in failed:
            report.failed.append((path, why))
            print(f"skipped {path}: {why}", file=sys.stderr)
        pending_items.extend(items)
        pending_relaxed.append(relaxed)
        if len(pending_items) >= options.chunk_size:
            flush()
    return flush(last=True)


def _date_older_photos(index_dir, model, photos: Sequence[PhotoFile], known: dict) -> None:
    """Photos indexed by a release that kept no date get one (read from the file's header,
    no decoding), so date filters and sorting see them after one sync."""
    undated = [p for p in photos if "date" not in known[p.path]]
    if not undated:
        return
    items = [Item(key=p.path, source=p.path, extra={**known[p.path], **_date_fields(p)}) for p in undated]
    write_index(index_dir, model, IndexChanges().restamp("image", items))
    for it in items:
        known[it.key] = it.extra


def _photo_changes(items: list[Item], relaxed: np.ndarray, known: dict, update: bool) -> IndexChanges:
    """One chunk's changes: a photo whose content hash is unchanged is only re-stamped
    (its code would be the same); the others are added (replaced, with ``update``)."""
    same = np.array([(k := known.get(it.key)) is not None and k.get("hash") == it.extra["hash"] for it in items], bool)
    return (IndexChanges().restamp("image", [it for it, s in zip(items, same) if s])
            .add("image", [it for it, s in zip(items, same) if not s], relaxed[~same], update=update))


def sync_photos(index_dir: str | os.PathLike, model, roots: Sequence[str | os.PathLike],
                options: PhotoOptions | None = None) -> PhotoReport:
    """Bring the index's photos under ``roots`` in line with the folders: add new
    photos, re-encode changed ones, remove those that are gone. Photos indexed from
    elsewhere (other folders, dataset items, captions) are left alone."""
    check_sync_roots(roots)
    report = PhotoReport()
    photos = walk_photos(roots, report)
    index_photos(index_dir, model, photos, report, options, update=True)
    present = {p.path for p in photos}
    prefixes = tuple(photo_key(r) for r in roots)
    unreadable = tuple(f for f, _ in report.unreadable_folders)
    failed = {photo_key(path) for path, _ in report.failed}

    def gone(meta: dict) -> bool:
        # what could not be seen is not gone: an unreadable folder or photo keeps its entries
        path = meta["key"]
        return ("mtime_ns" in meta["extra"] and _under(path, prefixes) and path not in present
                and path not in failed and not _under(path, unreadable))

    report.written.merge(write_index(index_dir, model, IndexChanges().remove_where("image", gone)))
    return report


def _is_gone(meta: dict) -> bool:
    """An item that came from a photo file no longer there (moved, renamed, deleted, or on
    a drive that is not plugged in)."""
    return "mtime_ns" in meta["extra"] and not os.path.exists(meta["key"])


def missing_photos(index: CrossModalIndex) -> list[str]:
    """Paths of indexed photo files that are no longer there (the caller shows them before removing)."""
    return sorted(m["key"] for m in index.items_of("image") if _is_gone(m))


def prune_missing(index_dir: str | os.PathLike, model, dry_run: bool = False) -> list[str]:
    """Remove every photo whose file is gone, decided under the writer lock on the newest
    version (``dry_run``: only say which). Returns the paths removed (or that would be)."""
    if dry_run:
        return missing_photos(CrossModalIndex.load(index_dir))
    gone: list[str] = []

    def is_gone(meta: dict) -> bool:
        if _is_gone(meta):
            gone.append(meta["key"])
            return True
        return False

    write_index(index_dir, model, IndexChanges().remove_where("image", is_gone))
    return sorted(gone)


def remove_under(index_dir: str | os.PathLike, folders: Sequence[str | os.PathLike], dry_run: bool = False
                 ) -> dict[str, int]:
    """Remove every photo and video frame whose file lies inside ``folders`` (whether the
    files still exist or not): a folder dropped from a library in one command. Returns
    the count per modality (``dry_run``: what would go)."""
    prefixes = tuple(photo_key(f) for f in folders)

    def inside(meta: dict) -> bool:
        return meta["source"] is not None and _under(meta["source"], prefixes)

    if dry_run:
        idx = CrossModalIndex.load(index_dir)
        return {m: sum(1 for meta in idx.items_of(m) if inside(meta)) for m in ("image", "frame")}
    report = write_index(index_dir, None, IndexChanges().remove_where("image", inside).remove_where("frame", inside))
    return {m: report.of(m, "removed") for m in ("image", "frame")}


def check_sync_roots(roots: Sequence[str | os.PathLike]) -> None:
    """A root that is missing or cannot be listed (an unplugged drive, a typo, no
    permission) would look like a folder whose photos were all deleted: refuse the sync
    before anything changes."""
    for root in roots:
        path = Path(photo_key(root))
        if path.is_file():
            continue
        if not path.is_dir():
            raise MissingInput(f"{root} does not exist (an unplugged drive or a typo?): nothing was synced or removed; "
                               f"reconnect it, or leave it out of --images to sync the other folders")
        try:
            next(os.scandir(path), None)
        except OSError as e:
            raise MissingInput(f"{root} cannot be listed ({e.strerror or e}): nothing was synced or removed; fix its "
                               f"permissions, or leave it out of --images") from None


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes)
