"""`crossmodal train --images`: an image-only model learned by reconstruction, on photos
without captions (the autoencoder family), and what it serves and refuses."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from crossmodal.cli import main
from tests.conftest import shared_path
from training.photos import MIN_PHOTOS, dev_cut, view_retrieval_score


@pytest.fixture(scope="module")
def forty_photos(tmp_path_factory):
    """40 real Flickr8k photos in two nested folders, as a user's library would hold them."""
    images = sorted(shared_path("flickr8k", "images").glob("*.jpg"))[:40]
    root = tmp_path_factory.mktemp("library")
    for i, p in enumerate(images):
        folder = root / ("2024/summer" if i % 2 else "2025")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / p.name)
    return root


@pytest.fixture(scope="module")
def photo_model(forty_photos, tmp_path_factory, feature_cache_dir):
    out = tmp_path_factory.mktemp("models") / "mine"
    assert main(["train", "--images", str(forty_photos), "--out", str(out), "--epochs", "8",
                 "--cache-dir", str(feature_cache_dir)]) == 0
    return out


def test_photo_model_finds_each_photo_first(photo_model, forty_photos, tmp_path, capsys):
    summary = json.loads((photo_model / "train_summary.json").read_text())
    assert summary["photos"] == {"train": 36, "dev": 4, "unreadable": 0}
    assert json.loads((photo_model / "config.json").read_text())["image_only"] is True
    index = tmp_path / "idx"
    assert main(["index", "build", "--images", str(forty_photos), "--model", str(photo_model), "--out",
                 str(index)]) == 0
    from retrieval.search import Searcher

    searcher = Searcher.open(str(index))
    photos = sorted(forty_photos.rglob("*.jpg"))
    hits = searcher.search_images([Image.open(p) for p in photos], target="image", k=1)
    assert [h[0].key for h in hits] == [str(p) for p in photos]
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--text", "a dog on the beach"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on photos without captions" in err[0] and "--image" in err[0]


def test_photo_model_codes_come_from_its_own_training(photo_model, forty_photos, tmp_path, feature_cache_dir):
    """Another seed trains other codes: the model is learned from the photos, not a fixed
    projection; the same seed gives the same model."""
    again = tmp_path / "again"
    other = tmp_path / "other"
    for out, seed in ((again, "0"), (other, "1")):
        assert main(["train", "--images", str(forty_photos), "--out", str(out), "--epochs", "8", "--seed", seed,
                     "--cache-dir", str(feature_cache_dir), "-q"]) == 0
    fingerprint = lambda m: json.loads((m / "config.json").read_text())["fingerprint"]  # noqa: E731
    assert fingerprint(again) == fingerprint(photo_model)
    assert fingerprint(other) != fingerprint(photo_model)


def _write_photos(folder, n, rng):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"p{i:03d}.jpg")


def test_bad_photo_folders_get_one_line(tmp_path, capsys, feature_cache_dir):
    rng = np.random.default_rng(0)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(25):
        (broken / f"b{i}.jpg").write_bytes(b"not a jpeg at all")
    few = tmp_path / "few"
    _write_photos(few, MIN_PHOTOS - 1, rng)
    cases = {"no photos found under": ["--images", str(empty)],
             "0 readable photo(s)": ["--images", str(broken)],
             f"{MIN_PHOTOS - 1} readable photo(s)": ["--images", str(few)],
             "either --data": ["--images", str(few), "--data", str(tmp_path)]}
    for message, args in cases.items():
        capsys.readouterr()
        out = tmp_path / f"model-{len(message)}"
        assert main(["train", *args, "--out", str(out), "--cache-dir", str(feature_cache_dir), "-q"]) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (message, err)
        assert not (out / "model.safetensors").exists()


def test_dev_cut_is_seeded_and_disjoint():
    train, dev = dev_cut(100, seed=3)
    assert len(dev) == 10 and len(train) == 90 and not set(train) & set(dev)
    assert (dev_cut(100, seed=3)[1] == dev).all() and not (dev_cut(100, seed=4)[1] == dev).all()
    assert len(dev_cut(MIN_PHOTOS, seed=0)[1]) == 4
    with pytest.raises(Exception, match="at least"):
        dev_cut(MIN_PHOTOS - 1, seed=0)


def test_view_score_counts_ties_against_the_photo():
    plain = np.array([[1.0, 1, 1, 1, 1, 1, 1, 1], [-1, -1, -1, -1, -1, -1, -1, -1]])
    assert view_retrieval_score(plain, plain, 8)["score"] == 100.0
    same = np.ones((3, 8))  # every code equal: no photo is found ahead of the others
    s = view_retrieval_score(same, same, 8)
    assert s["m2p_R@1"] == 0.0 and s["m2p_R@5"] == 100.0
