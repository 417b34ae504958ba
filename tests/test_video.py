"""Video caption lookup on real MP4 files built with PyAV from known images."""
import json

import av
import numpy as np
import pytest
from PIL import Image

from crossmodal.cli import main
from crossmodal.data import load_prepared
from crossmodal.video import VideoError, sample_frames
from retrieval.search import Searcher
from retrieval.video import add_videos, encode_video, image_to_moments, text_to_moments, video_captions

SEG = 3  # seconds per segment
FPS = 5


def write_video(path, images, seconds=SEG, fps=FPS, fmt=None):
    c = av.open(str(path), "w", format=fmt)
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = 96, 96, "yuv420p"
    for img in images:
        arr = np.asarray(img.convert("RGB").resize((96, 96)))
        for _ in range(seconds * fps):
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


@pytest.fixture(scope="module")
def scene(tiny_model, tiny_data, feature_cache_dir, tmp_path_factory):
    """An index of the train split (images + captions) and a video of three train images."""
    root = tmp_path_factory.mktemp("video")
    idx = root / "idx"
    assert main(["index", "build", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "train",
                 "--bits", "64", "--cache-dir", str(feature_cache_dir), "--out", str(idx)]) == 0
    train = load_prepared(tiny_data)["train"]
    # Scenes the model itself tells apart as stills (this tests the video path, not the
    # tiny model's quality): own caption among the still's top 3, distinct labels.
    searcher = Searcher.open(idx)
    rows, labels = [], set()
    for row in train:
        top = searcher.search_images([row["image"]], "text", k=3)[0]
        if any(h.key.startswith(row["id"] + "#") for h in top) and row["labels"][0] not in labels:
            rows.append(row)
            labels.add(row["labels"][0])
        if len(rows) == 3:
            break
    assert len(rows) == 3
    video = write_video(root / "three.mp4", [r["image"] for r in rows])
    return {"index": idx, "video": video, "rows": rows, "root": root}


def test_sampling_is_streaming_at_the_chosen_rate(scene):
    frames = list(sample_frames(scene["video"], fps=1.0))
    assert [f.frame for f in frames] == [i * FPS for i in range(3 * SEG)]
    assert [round(f.timestamp, 2) for f in frames] == [float(i) for i in range(3 * SEG)]
    assert [round(f.timestamp, 1) for f in sample_frames(scene["video"], fps=2.5)][:4] == [0.0, 0.4, 0.8, 1.2]
    assert len(list(sample_frames(scene["video"], fps=1.0, max_frames=4))) == 4


def test_deduplication_keeps_one_frame_per_still_segment(scene):
    searcher = Searcher.open(scene["index"])
    kept, sampled = encode_video(searcher.model, scene["video"], 64, fps=1.0, dedup_radius=6)
    assert sampled == 9
    assert [(k.start, k.end) for k in kept] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]
    kept_all, _ = encode_video(searcher.model, scene["video"], 64, fps=1.0, dedup_radius=-1)
    assert len(kept_all) == 9


def test_caption_finds_its_segment_and_video_finds_its_captions(scene, tmp_path):
    import shutil
    idx = tmp_path / "idx"
    shutil.copytree(scene["index"], idx)
    searcher = Searcher.open(idx)
    rep = add_videos(searcher, [str(scene["video"])], fps=1.0, dedup_radius=6)
    assert rep.videos_added == 1 and rep.frames_kept == 3 and not rep.failed
    for x, row in enumerate(scene["rows"]):
        # margin 0: a moment is a run of equally near frames (the tiny test model separates scenes by few bits)
        moments = text_to_moments(searcher, row["captions"][0], top=3, margin=0)
        assert (moments[0].start, moments[0].end) == (SEG * x, SEG * (x + 1)), (x, moments)
        still = image_to_moments(searcher, row["image"], top=1, margin=0)[0]
        assert (still.start, still.end) == (SEG * x, SEG * (x + 1))
    res = video_captions(searcher, str(scene["video"]), k=5, dedup_radius=6)
    assert len(res["segments"]) == 3
    for x, (row, seg) in enumerate(zip(scene["rows"], res["segments"])):
        assert (seg["start"], seg["end"]) == (SEG * x, SEG * (x + 1))
        assert set(row["captions"]) & {c["text"] for c in seg["captions"][:3]}, (x, seg)
    assert res["summary"] and all(b["ranges"] for b in res["summary"])


def _bad_videos(root, good):
    files = {}
    files["missing"] = root / "missing.mp4"
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(4)]
    full = write_video(root / "noise.mkv", noise, seconds=2, fmt="matroska")
    data = full.read_bytes()
    (root / "truncated.mkv").write_bytes(data[: len(data) // 2])
    files["truncated"] = root / "truncated.mkv"
    (root / "garbage.mp4").write_bytes(b"this is not a video" * 100)
    files["corrupt"] = root / "garbage.mp4"
    c = av.open(str(root / "audio.m4a"), "w")
    s = c.add_stream("aac", rate=16000)
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    fr.sample_rate = 16000
    for p in list(s.encode(fr)) + list(s.encode()):
        c.mux(p)
    c.close()
    files["audio only"] = root / "audio.m4a"
    c = av.open(str(root / "empty.mkv"), "w")
    s = c.add_stream("libx264", rate=10)
    s.width = s.height = 64
    s.pix_fmt = "yuv420p"
    c.start_encoding()
    c.close()
    files["zero-length"] = root / "empty.mkv"
    mkv = write_video(root / "ok.mkv", noise[:1], seconds=1, fmt="matroska").read_bytes()
    assert b"V_MPEG4/ISO/AVC" in mkv
    (root / "codec.mkv").write_bytes(mkv.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    files["unsupported codec"] = root / "codec.mkv"
    return files


EXPECTED = {"missing": "no such file", "truncated": "truncated", "corrupt": "not a readable video",
            "audio only": "no video stream", "zero-length": "zero-length", "unsupported codec": "cannot be decoded: the file is damaged, or FFmpeg has no decoder"}


def test_each_bad_video_gives_a_clear_error_naming_the_file(tmp_path, scene):
    for case, path in _bad_videos(tmp_path, scene["video"]).items():
        with pytest.raises(VideoError) as e:
            list(sample_frames(path, fps=10))
        assert str(path) in str(e.value) and EXPECTED[case] in str(e.value), (case, str(e.value))


def test_batch_with_bad_videos_adds_the_good_ones_and_counts_failures(scene, tmp_path, capsys):
    import shutil
    idx = tmp_path / "idx"
    shutil.copytree(scene["index"], idx)
    bad = _bad_videos(tmp_path, scene["video"])
    assert main(["video", "add", "--index", str(idx), str(scene["video"]), *map(str, bad.values())]) == 0
    out = capsys.readouterr().out
    assert "1 video(s) added" in out and f"{len(bad)} failed" in out
    for path in bad.values():
        assert str(path) in out
    caption = scene["rows"][1]["captions"][0]
    assert main(["video", "search", "--index", str(idx), "--text", caption, "--json"]) == 0
    moments = json.loads(capsys.readouterr().out)
    assert moments[0]["video"] == str(scene["video"].resolve()) and moments[0]["start"] == SEG
    assert main(["video", "captions", "--index", str(idx), str(scene["video"]), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["segments"] and res["summary"]


def test_a_thumbnail_frame_is_the_frame_that_was_sampled(scene):
    """``frame_at`` seeks to the indexed moment and returns the very frame sampling gave
    for that time (what the service shows as a video moment's thumbnail)."""
    from crossmodal.video import frame_at

    for f in sample_frames(scene["video"], fps=1.0):
        got = np.asarray(frame_at(scene["video"], f.timestamp), dtype=np.int16)
        assert got.shape == (96, 96, 3)
        assert np.abs(got - np.asarray(f.image, dtype=np.int16)).max() == 0, f.timestamp
    with pytest.raises(VideoError, match="no such file"):
        frame_at(scene["root"] / "gone.mp4", 1.0)
