"""``--engine ray``: the same index as the local engine, from a real local Ray instance,
through a worker killed mid-build and a driver killed mid-build, and one line for a
missing extra or a wrong address."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossmodal.cli import main
from retrieval.index import CrossModalIndex, read_manifest
from retrieval.search import Searcher

from test_photos import photo
from test_video import write_video

CLI = [sys.executable, "-m", "crossmodal.cli"]
QUERIES = ["a dog running on the grass", "a red sunset over the sea", "two children playing"]


def make_library(root: Path, n: int, seed: int = 0, size=(320, 240)) -> Path:
    """``n`` photos spread over nested folders."""
    for i in range(n):
        photo(root / ["", "trip", "trip/day2", "home/old"][i % 4] / f"p{i:03d}.jpg", seed * 1000 + i, size=size)
    return root


def contents(index_dir: Path) -> dict[str, tuple]:
    """key -> (packed code, stored outputs, their scale) of every image item; a key twice fails."""
    idx = CrossModalIndex.load(index_dir)
    ids, codes = idx.indexes["image"].codes_of_all()
    keys = [idx.item(int(i))["key"] for i in ids]
    assert len(set(keys)) == len(keys), "an item is in the index twice"
    rids, vectors, scales = idx.rerank_stores["image"].merged()
    stored = {int(i): (v.tobytes(), float(s)) for i, v, s in zip(rids, vectors, scales)}
    return {k: (c.tobytes(), *stored[int(i)]) for k, i, c in zip(keys, ids, codes)}


def top5(index_dir: Path) -> list:
    searcher = Searcher.open(index_dir)
    return [[(h.key, round(h.score, 6)) for h in searcher.search_texts([q], "image", k=5)[0]] for q in QUERIES]


def ray_flags(address: str, *more: str) -> list[str]:
    return ["--engine", "ray", "--ray-address", address, "--workers", "2", *more]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("ray-lib") / "Pictures", 40)


@pytest.fixture(scope="module")
def local_index(library, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray-local") / "idx"
    assert main(["index", "build", "-q", "--images", str(library), "--out", str(out)]) == 0
    return out


def test_ray_builds_adds_and_syncs_the_same_index_as_the_local_engine(ray_cluster, library, local_index, tmp_path):
    """build on 40 nested photos, then add a folder, then sync after a photo is deleted and
    another added: after each step the Ray index holds the same items with the same bits
    (codes and stored outputs) as the local one, and answers text queries identically."""
    ray_idx = tmp_path / "ray-idx"
    assert main(["index", "build", "-q", "--images", str(library), "--out", str(ray_idx),
                 *ray_flags(ray_cluster, "--batch-size", "8", "--chunk-size", "16")]) == 0
    want = contents(local_index)
    assert len(want) == 40 and contents(ray_idx) == want
    assert top5(ray_idx) == top5(local_index)

    # add a folder, then change the library and sync: the same steps on both engines
    local_idx = tmp_path / "local-idx"
    shutil.copytree(local_index, local_idx)
    extra = make_library(tmp_path / "Scans", 5, seed=7)
    for idx, flags in ((local_idx, []), (ray_idx, ray_flags(ray_cluster))):
        assert main(["index", "add", "-q", "--index", str(idx), "--images", str(extra), *flags]) == 0
    assert len(contents(ray_idx)) == 45 and contents(ray_idx) == contents(local_idx)

    gone = sorted(library.rglob("*.jpg"))[3]
    moved = gone.with_name("kept-aside.jpg")
    gone.rename(moved)
    new = photo(library / "trip" / "new.jpg", 4242)
    try:
        for idx, flags in ((local_idx, []), (ray_idx, ray_flags(ray_cluster))):
            assert main(["index", "sync", "-q", "--index", str(idx), "--images", str(library), *flags]) == 0
    finally:
        moved.rename(gone)
        new.unlink()
    after = contents(ray_idx)
    assert str(new) in after and str(gone) not in after and str(moved) in after
    assert after == contents(local_idx) and top5(ray_idx) == top5(local_idx)


def test_ray_adds_videos_with_the_same_frames_as_the_local_engine(ray_cluster, local_index, tmp_path):
    from PIL import Image

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    video = write_video(tmp_path / "clip.mp4", [Image.new("RGB", (96, 96), c) for c in colours], seconds=2)
    frames = {}
    for name, flags in (("local", []), ("ray", ray_flags(ray_cluster))):
        idx = tmp_path / name
        shutil.copytree(local_index, idx)
        assert main(["video", "add", "-q", "--index", str(idx), str(video), *flags]) == 0
        index = CrossModalIndex.load(idx)
        frames[name] = [(f["key"], f["timestamp"], f["extra"]["end"]) for f in index.frames_of(str(video.resolve()))]
        ids, codes = index.indexes["frame"].codes_of_all()
        frames[name + "-codes"] = sorted((index.item(int(i))["key"], c.tobytes()) for i, c in zip(ids, codes))
    assert len(frames["local"]) >= 3  # one kept frame per colour at least
    assert frames["ray"] == frames["local"] and frames["ray-codes"] == frames["local-codes"]


def _wait_for_images(index_dir: Path, at_least: int, proc: subprocess.Popen, timeout: float = 300) -> int:
    """Poll the committed index until it holds ``at_least`` images (the build still running)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"the build ended before the fault could be injected: {proc.communicate()}"
        try:
            n = read_manifest(index_dir)["counts"]["image"]
            if n >= at_least:
                return n
        except Exception:  # noqa: BLE001 — not written yet, or mid-write
            pass
        time.sleep(0.05)
    raise AssertionError("no commit within the timeout")


def encoding_actor_pids() -> list[int]:
    """Processes of Ray Data actors, found as a user finds them in ``ps`` (Ray titles an
    actor's process ``ray::MapWorker(...)``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::MapWorker"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


def _build_cmd(library: Path, out: Path, address: str) -> list[str]:
    return [*CLI, "index", "build", "--images", str(library), "--out", str(out),
            *ray_flags(address, "--batch-size", "1", "--chunk-size", "4")]


def test_a_ray_worker_killed_mid_build_is_replaced_and_nothing_is_lost_or_doubled(ray_cluster, library,
                                                                                   local_index, tmp_path):
    out = tmp_path / "idx"
    proc = subprocess.Popen(_build_cmd(library, out, ray_cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_images(out, 4, proc)
    workers = encoding_actor_pids()
    assert workers, "no encoding actor is running mid-build"
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)  # mid-batch: each batch is one photo, and 36 are still to go
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert "40 photo(s) seen: added 40" in stdout
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert contents(out) == contents(local_index)


def test_a_driver_killed_mid_build_resumes_from_its_last_commit(ray_cluster, library, local_index, tmp_path):
    out = tmp_path / "idx"
    proc = subprocess.Popen(_build_cmd(library, out, ray_cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    committed = _wait_for_images(out, 4, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert 4 <= read_manifest(out)["counts"]["image"] < 40
    rerun = subprocess.run(_build_cmd(library, out, ray_cluster), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stdout
    present = int(rerun.stdout.split("already present ")[1].split(",")[0])
    assert present >= committed
    assert contents(out) == contents(local_index)


def test_a_wrong_ray_address_is_one_line_and_writes_nothing(library, tmp_path):
    out = tmp_path / "idx"
    r = subprocess.run([*CLI, "index", "build", "--images", str(library), "--out", str(out), "--engine", "ray",
                        "--ray-address", "127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--ray-address 127.0.0.1:9: nothing answers there" in r.stderr
    assert not out.exists()


def test_ray_not_installed_names_the_extra(library, tmp_path):
    """Ray absent (a package that fails to import shadows it): one line naming the extra, exit 2."""
    blocker = tmp_path / "no-ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "idx"
    r = subprocess.run([*CLI, "index", "build", "--images", str(library), "--out", str(out), "--engine", "ray"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and 'pip install "crossmodal[ray]"' in r.stderr
    assert r.stderr.strip().count("\n") == 0 and not out.exists()
    # and the local engine never imports it
    r = subprocess.run([*CLI, "index", "build", "-q", "--images", str(library / "home"), "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr


def test_ray_build_onto_a_milvus_server_holds_the_local_codes(ray_cluster, milvus_server, library, local_index,
                                                             tmp_path):
    out = tmp_path / "idx"
    assert main(["index", "build", "-q", "--images", str(library), "--out", str(out), "--backend", "milvus",
                 "--milvus-uri", milvus_server.uri, "--milvus-prefix", "rayengine",
                 *ray_flags(ray_cluster, "--batch-size", "8", "--chunk-size", "16")]) == 0
    assert read_manifest(out)["backend"] == "milvus"
    assert contents(out) == contents(local_index)
    assert top5(out) == top5(local_index)


def test_ray_options_that_cannot_apply_are_refused_before_any_work(tiny_data, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "build", "--data", str(tiny_data), "--out", str(out), "--engine", "ray"]) == 2
    assert "--engine ray encodes photo folders (--images)" in capsys.readouterr().err
    assert main(["index", "build", "--images", str(tmp_path), "--out", str(out), "--ray-address", "auto"]) == 2
    assert "--ray-address goes with --engine ray" in capsys.readouterr().err
    assert main(["index", "build", "--images", str(tmp_path), "--out", str(out), "--engine", "ray",
                 "--workers", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert not out.exists()
