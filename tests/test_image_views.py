"""Flip test-time augmentation as a model setting (``--image-views flip``): every path
that encodes an image (prepared data through the cache, photos through ONNX Runtime,
image queries through PyTorch) gives the mean of the plain and mirrored views, so an
indexed photo and the same photo as a query get the same code."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

from crossmodal.cli import main
from crossmodal.config import ModelConfig
from crossmodal.errors import InvalidInput
from crossmodal.model import CrossModalHasher
from test_photos import photo


@pytest.fixture()
def flip_model(tiny_model, tmp_path):
    """tiny_model's weights with image_views=flip (what training with --image-views flip
    writes: the flag does not change training)."""
    out = tmp_path / "tiny-flip"
    shutil.copytree(tiny_model, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["image_views"] = "flip"
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_the_setting_is_validated_and_leaves_plain_configs_as_they_were():
    assert "image_views" not in ModelConfig().to_dict()  # models written before it keep their fingerprint
    flip = ModelConfig(image_views="flip")
    assert flip.to_dict()["image_views"] == "flip"
    assert ModelConfig.from_dict(json.loads(flip.to_json())).image_views == "flip"
    with pytest.raises(InvalidInput, match="unknown image views 'mirror'"):
        ModelConfig(image_views="mirror")


def test_train_flag_sets_it_and_rejects_a_typo(tiny_data, tmp_path, capsys):
    import argparse

    from crossmodal.cli.train import add_train_args, model_config_from_args

    p = argparse.ArgumentParser()
    add_train_args(p)
    args = p.parse_args(["--data", str(tiny_data), "--out", str(tmp_path / "m"), "--image-views", "flip"])
    assert model_config_from_args(args).image_views == "flip"
    assert model_config_from_args(p.parse_args(["--data", "d", "--out", "o"])).image_views == "plain"
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "m"), "--image-views", "flipped"])
    assert "invalid choice: 'flipped'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_flip_model_encodes_the_mean_of_both_views(tiny_model, flip_model, tmp_path):
    plain, flip = CrossModalHasher.from_pretrained(tiny_model), CrossModalHasher.from_pretrained(flip_model)
    assert plain.fingerprint() != flip.fingerprint()  # an index of plain codes refuses it
    images = [Image.open(photo(tmp_path / f"{n}.jpg", n, size=(96, 72))) for n in range(5)]
    mirrored = [ImageOps.mirror(im) for im in images]
    expected = (plain.embed_images(images) + plain.embed_images(mirrored)) / 2
    got = flip.embed_images(images)
    assert np.allclose(got, expected, atol=1e-4)
    assert not np.allclose(got, plain.embed_images(images), atol=1e-3)
    assert np.allclose(flip.embed_images(mirrored), got, atol=1e-4)  # a mirrored photo is the same photo


def test_cached_dataset_path_uncached_path_and_queries_agree(tiny_model, flip_model, tiny_data, feature_cache_dir):
    from crossmodal.data import load_prepared
    from crossmodal.data.splits import flatten_split
    from crossmodal.features import decode_image, relaxed_outputs

    plain, flip = CrossModalHasher.from_pretrained(tiny_model), CrossModalHasher.from_pretrained(flip_model)
    ds = load_prepared(tiny_data)["test"]
    captions = flatten_split(ds).captions
    cached = relaxed_outputs(flip, ds, captions, feature_cache_dir)
    uncached = relaxed_outputs(flip, ds, captions, None)  # computes the mirrored view itself
    queried = flip.embed_images([decode_image(v) for v in ds["image"]])
    assert np.allclose(cached.image_relaxed, uncached.image_relaxed, atol=1e-3)
    assert np.allclose(cached.image_relaxed, queried, atol=1e-3)
    tried = relaxed_outputs(plain, ds, captions, feature_cache_dir, flip_tta=True)  # eval --flip-tta on the plain model
    assert np.allclose(tried.image_relaxed, cached.image_relaxed, atol=1e-6)
    assert np.array_equal(cached.text_relaxed, relaxed_outputs(plain, ds, captions, feature_cache_dir).text_relaxed)


def test_photos_indexed_by_a_flip_model_hold_flip_codes(tiny_model, flip_model, tmp_path):
    from retrieval.index import CrossModalIndex, IndexMismatch

    lib = tmp_path / "Pictures"
    paths = [photo(lib / f"sub{n % 2}" / f"{n}.jpg", 10 + n) for n in range(8)]
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(flip_model), "--images", str(lib), "--bits", "64",
                 "--out", str(out), "--workers", "1"]) == 0  # through ONNX Runtime
    index = CrossModalIndex.load(out)
    images = [Image.open(p) for p in paths]
    flip, plain = CrossModalHasher.from_pretrained(flip_model), CrossModalHasher.from_pretrained(tiny_model)
    own = [hits[0].distance for hits in index.search(flip.encode_images(images, 64), "image", k=1)]
    assert own == [0] * len(paths)  # each photo, queried as a photo, finds itself exactly
    other = [hits[0].distance for hits in index.search(plain.encode_images(images, 64), "image", k=1)]
    assert max(other) > 0  # plain codes would not have matched every photo
    with pytest.raises(IndexMismatch, match="not by the model in use"):
        CrossModalIndex.load(out, plain.fingerprint())
