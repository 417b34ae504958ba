"""The versioned folder an index lives in: atomic versions, the writer lock, cleanup.

Knows nothing of what a version holds (``retrieval.index`` writes and reads the files);
it owns how versions come and go::

    IDX/CURRENT               name of the live version folder (replaced atomically)
    IDX/v-<n>/manifest.json   what the index module records, plus the sha256 of every file
    IDX/.lock                 the writer lock (an flock: released by the kernel when its holder dies)

A version is written complete into ``.v-<n>.tmp``, fsynced, renamed, then ``CURRENT`` is
swapped with ``os.replace``: a process killed at any moment leaves the previous version
live and intact, and the next writer removes what the killed one left (any version newer
than ``CURRENT``). The version just replaced is kept one more round for readers that read
``CURRENT`` a moment before the switch. Reading verifies every checksum.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, TypeVar

from filelock import FileLock

from crossmodal.atomic import atomic_write_text, fsync_dir
from crossmodal.errors import CrossmodalError, UnsafeOutput

VERSION_NAME = re.compile(r"v-\d{6,}")
TMP_NAME = re.compile(r"\.v-\d{6,}\.tmp|\.CURRENT(\.\d+)?\.tmp")
LOCK_NAME = ".lock"
#: who holds the writer lock (pid and command), for the message of a writer that waits
LOCK_OWNER_NAME = ".lock.owner"
MANIFEST_FORMAT = "crossmodal-index"

T = TypeVar("T")


class NotAnIndex(CrossmodalError, FileNotFoundError):
    """The folder holds no index (or not a readable ``CURRENT``)."""


class IndexCorrupt(CrossmodalError, ValueError):
    """The live version's files do not match its manifest."""


RECOVER = "restore the folder from a backup, or rebuild it with `crossmodal index build --out {folder}`"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- writing ---------------------------------------------------------------------------
def write_version(folder: Path, fill: Callable[[Path], dict]) -> str:
    """Write the next version and make it live; the caller holds :func:`writer_lock`.
    ``fill(tmp)`` writes the data files into ``tmp`` and returns the manifest's fields;
    the checksums of what it wrote are added here. Anything newer than ``CURRENT`` is
    debris of a killed writer and is removed first. A write the disk refuses leaves the
    live version as it was and raises one line (:func:`storage_error`)."""
    import sqlite3

    try:
        return _write_version(folder, fill)
    except (OSError, sqlite3.Error, RuntimeError) as e:
        error = storage_error(folder, e)
        if error is e:
            raise
        remove_debris(folder, keep={read_current(folder)} - {None})  # the half-written version goes
        raise error from None


def _write_version(folder: Path, fill: Callable[[Path], dict]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    current = read_current(folder)
    remove_debris(folder, keep={current} if current else set())
    version = f"v-{version_number(current) + 1 if current else 1:06d}"
    tmp = folder / f".{version}.tmp"
    tmp.mkdir()
    fields = fill(tmp)
    files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
    (tmp / "manifest.json").write_text(json.dumps({"format": MANIFEST_FORMAT, **fields, "files": files}, indent=2))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(tmp)
    fault_point("version-files-written")
    os.replace(tmp, folder / version)
    fault_point("version-renamed")
    atomic_write_text(folder / "CURRENT", version, on_written=lambda: fault_point("current-tmp-written"))
    fault_point("current-switched")
    # the version just replaced stays one more round, for readers that read CURRENT
    # a moment ago; older ones and leftovers go
    remove_debris(folder, keep={version} | ({current} if current else set()))
    return version


# ---- reading ---------------------------------------------------------------------------
def read_live(folder: Path, open_version: Callable[[str, Path, dict], T], check_fields: Callable[[dict], list[str]]
              ) -> T:
    """``open_version(name, version_dir, manifest)`` on the live version, its files checked
    against the manifest first. A writer may switch ``CURRENT`` and retire the version
    being read meanwhile; the read then starts again on the new version."""
    for attempt in range(5):
        current = read_current_version(folder)
        try:
            manifest = read_manifest_of(folder, current, check_fields)
            verify_files(folder, current, manifest)
            return open_version(current, folder / current, manifest)
        except (IndexCorrupt, NotAnIndex):
            if attempt == 4 or read_current_version(folder) == current:
                raise
    raise AssertionError("unreachable")


def read_manifest_of(folder: Path, current: str, check_fields: Callable[[dict], list[str]]) -> dict:
    """The manifest of version ``current``, checked for format and fields (not checksums);
    ``check_fields`` returns what is wrong with the index module's own fields."""
    vdir = folder / current
    recover = RECOVER.format(folder=folder)
    if not vdir.is_dir():
        raise NotAnIndex(f"{folder}/CURRENT names version {current}, which is missing: {recover}")
    try:
        manifest = json.loads((vdir / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexCorrupt(f"{folder}: manifest of {current} unreadable ({e}); {recover}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise NotAnIndex(f"{folder}: {current}/manifest.json is not a crossmodal index manifest")
    if "files" not in manifest:
        raise IndexCorrupt(f"{folder}: {current}/manifest.json lacks 'files': the index is damaged; {recover}")
    files = manifest["files"]
    wrong = check_fields(manifest)
    if not isinstance(files, dict):
        wrong.append(f"was edited: 'files' should be an object, not {json.dumps(files)[:30]}")
    elif not all(isinstance(v, str) for v in files.values()):
        wrong.append("was edited: 'files' should map each file to its sha256")
    if wrong:
        raise IndexCorrupt(f"{folder}: {current}/manifest.json {'; '.join(wrong)}; {recover}")
    return manifest


def verify_files(folder: Path, current: str, manifest: dict) -> None:
    """Every listed file present with its checksum, and no data file left unlisted."""
    vdir = folder / current
    recover = RECOVER.format(folder=folder)
    for name, digest in manifest["files"].items():
        path = vdir / name
        if not path.is_file():
            raise IndexCorrupt(f"{folder}: file {name} listed in the manifest is missing; {recover}")
        if sha256_file(path) != digest:
            raise IndexCorrupt(f"{folder}: checksum mismatch for {name}: the index is corrupt; {recover}")
    # a data file whose entry was deleted from the manifest would escape its checksum (SQLite's
    # own transient files, which a reader may create beside the store, are not data files)
    unlisted = sorted(p.name for p in vdir.iterdir() if p.name not in manifest["files"]
                      and (p.name == "metadata.sqlite" or p.suffix in (".faissbin", ".npy", ".npz")))
    if unlisted:
        raise IndexCorrupt(f"{folder}: {', '.join(unlisted)} in {current} not listed in its manifest: the index "
                           f"was edited by hand; {recover}")


def version_number(name: str) -> int:
    return int(name.split("-")[1])


def read_current(folder: Path) -> str | None:
    """The name in ``CURRENT`` when it is well-formed, else None (no check that it exists)."""
    p = folder / "CURRENT"
    if not p.is_file():
        return None
    name = p.read_text(errors="replace").strip()
    return name if VERSION_NAME.fullmatch(name) else None


def read_current_version(folder: str | os.PathLike) -> str:
    """The live version's name; a clear :class:`NotAnIndex` when there is none. Cheap
    (one small file): a server calls it per request to notice a newer version."""
    folder = Path(folder)
    if folder.is_file():
        raise NotAnIndex(f"{folder} is a file, not an index: --index takes the folder that `crossmodal index build "
                         f"--out DIR` wrote")
    if not folder.is_dir():
        raise NotAnIndex(f"{folder} does not exist; build an index with `crossmodal index build --out {folder}`")
    p = folder / "CURRENT"
    if not p.is_file():
        raise NotAnIndex(f"{folder} is not a crossmodal index (no CURRENT file); build one with "
                         f"`crossmodal index build`")
    name = read_current(folder)
    if name is None:
        raise NotAnIndex(f"{folder}/CURRENT does not name a version (it holds {p.read_text(errors='replace')[:40]!r}); "
                         f"restore it from a backup, or rebuild with `crossmodal index build --out {folder}`")
    return name


def has_index(folder: str | os.PathLike) -> bool:
    return (Path(folder) / "CURRENT").is_file()


# ---- cleanup ---------------------------------------------------------------------------
def _is_index_debris(name: str) -> bool:
    return bool(VERSION_NAME.fullmatch(name) or TMP_NAME.fullmatch(name)) or name in (LOCK_NAME, LOCK_OWNER_NAME)


def refuse_foreign(folder: str | os.PathLike) -> None:
    """Write only into an index folder, an empty one, or one holding nothing but the
    leftovers of an index (a first build killed before its ``CURRENT`` was written)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UnsafeOutput(f"{folder} is a file, not an index folder; choose another --out")
    if folder.is_dir() and not has_index(folder):
        foreign = [p.name for p in folder.iterdir() if not _is_index_debris(p.name)]
        if foreign:
            raise NotAnIndex(f"{folder} exists and is not a crossmodal index (it holds {', '.join(sorted(foreign)[:3])}"
                             f"{', ...' if len(foreign) > 3 else ''}); refusing to write into it: choose a new or "
                             f"empty --out")


def remove_debris(folder: Path, keep: set[str]) -> None:
    """Remove every version folder but ``keep``, and leftovers of killed saves."""
    for p in folder.iterdir():
        if p.name in keep or p.name in ("CURRENT", LOCK_NAME, LOCK_OWNER_NAME):
            continue
        if _is_index_debris(p.name):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def discard_folder(folder: Path) -> None:
    """Remove an index's versions, ``CURRENT`` and leftovers (the caller holds the writer
    lock and knows the index holds nothing), then the lock files and the folder itself
    when nothing else is left in it: a build that made an empty index leaves no trace."""
    (folder / "CURRENT").unlink(missing_ok=True)
    remove_debris(folder, keep=set())


def remove_empty_folder(folder: Path) -> None:
    """After :func:`discard_folder` and the lock's release: the lock files, and the folder if empty."""
    for name in (LOCK_NAME, LOCK_OWNER_NAME):
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something else lives there: leave it


# ---- the writer lock -------------------------------------------------------------------
_LOCKS: dict[str, FileLock] = {}
_LOCKS_GUARD = threading.Lock()


def writer_lock(folder: str | os.PathLike, timeout: float | None = None) -> "WriterLock":
    """The exclusive writer lock of an index folder (``IDX/.lock``, an ``flock``): held
    across load → modify → save by every writer, in any process; released by the
    kernel if its holder dies. One lock object per folder in a process: a thread that
    holds it may take it again, and another thread waits like another process would.
    ``timeout``: seconds to wait (``CROSSMODAL_LOCK_TIMEOUT``, default 600)."""
    from crossmodal.settings import env_number

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(folder, e) from None
    if os.environ.get("CROSSMODAL_TEST_NO_LOCK") == "1":  # test-only: shows the concurrency test can fail
        return contextlib.nullcontext()
    if (folder / LOCK_NAME).is_dir():
        raise UnsafeOutput(f"{folder / LOCK_NAME} is a folder, but that name is where the index keeps its writer lock "
                           f"file: move or rename it (it is not part of the index) and run this again; nothing was "
                           f"written")
    key = str(folder.resolve())
    with _LOCKS_GUARD:
        if key not in _LOCKS:
            _LOCKS[key] = FileLock(str(folder / LOCK_NAME))
    return WriterLock(folder, _LOCKS[key], env_number("CROSSMODAL_LOCK_TIMEOUT", 600.0) if timeout is None else timeout)


class WriterLock:
    """Takes a folder's lock; a writer that has to wait says whom it waits for, keeps
    waiting up to ``timeout`` seconds, then gives up with one line (nothing written)."""

    def __init__(self, folder: Path, lock: FileLock, timeout: float):
        self.folder, self.lock, self.timeout = folder, lock, timeout

    def __enter__(self) -> "WriterLock":
        from filelock import Timeout

        from crossmodal.errors import Unavailable

        owner_file = self.folder / LOCK_OWNER_NAME
        try:
            if self.lock.is_locked:  # this thread holds it already
                self.lock.acquire()
                return self
            try:
                self.lock.acquire(timeout=min(1.0, self.timeout))
            except Timeout:
                owner = _read_owner(owner_file)
                print(f"waiting for {owner}, which is writing to {self.folder} (up to {self.timeout:.0f} s; "
                      f"CROSSMODAL_LOCK_TIMEOUT sets it)", file=sys.stderr, flush=True)
                try:
                    self.lock.acquire(timeout=max(0.0, self.timeout - 1.0))
                except Timeout:
                    raise Unavailable(f"{self.folder} stayed locked by {owner} for {self.timeout:.0f} s; nothing was "
                                      f"written. Wait for it to finish and run this again (or raise "
                                      f"CROSSMODAL_LOCK_TIMEOUT)") from None
            try:
                owner_file.write_text(f"pid {os.getpid()} ({' '.join(os.path.basename(a) for a in sys.argv[:3])})")
            except OSError:
                pass  # only a courtesy for the next writer's message
        except OSError as e:
            raise storage_error(self.folder, e) from None
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _read_owner(path: Path) -> str:
    try:
        return "another writer (" + path.read_text().strip() + ")"
    except OSError:
        return "another writer"


def storage_error(folder: Path, e: BaseException) -> Exception:
    """A write that the disk refused, as one line saying what to do; anything else as it was."""
    import errno

    from crossmodal.errors import Unavailable

    text = str(e)
    code = getattr(e, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "disk is full" in text:
        return Unavailable(f"{folder}: the disk is full ({text.splitlines()[0][:120]}); this commit was not written "
                           f"and the index stays at its last version (with any chunk this command committed before): "
                           f"free some space and run the command again, which goes on from there")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text or "read-only" in text:
        return Unavailable(f"{folder} cannot be written here ({text.splitlines()[0][:120]}): searches work, but "
                           f"adding or removing needs write access to the folder (or a copy of it)")
    return e


def fault_point(name: str) -> None:
    """Fault injection for the tests: ``CROSSMODAL_KILL_AT=<name>`` makes the process
    SIGKILL itself here, the way a power cut or an OOM kill would;
    ``CROSSMODAL_PAUSE_AT=<name>:<seconds>:<marker file>`` creates the marker and waits
    there (a writer that holds the lock while a second one starts) for the seconds, or
    until a file ``<marker>.release`` appears."""
    if os.environ.get("CROSSMODAL_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("CROSSMODAL_PAUSE_AT", "").split(":", 2)
    if pause[0] == name and len(pause) == 3:
        import time

        Path(pause[2]).touch()
        release, deadline = Path(pause[2] + ".release"), time.monotonic() + float(pause[1])
        while time.monotonic() < deadline and not release.exists():
            time.sleep(0.05)
