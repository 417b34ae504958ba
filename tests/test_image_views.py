"""Test-time image views as a model setting (``--image-views flip|crops``): every path
that encodes an image (prepared data through the cache, photos through ONNX Runtime,
image queries through PyTorch) gives the mean over the same views, so an indexed photo
and the same photo as a query get the same code."""
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


def with_views(model_dir, tmp_path, views: str):
    """model_dir's weights with another image_views (what training with --image-views
    writes: the flag does not change training)."""
    out = tmp_path / f"tiny-{views}"
    shutil.copytree(model_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["image_views"] = views
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture()
def flip_model(tiny_model, tmp_path):
    return with_views(tiny_model, tmp_path, "flip")


def test_views_are_laid_out_view_major_and_crop_the_corners():
    import torch

    from crossmodal.views import make_views, mean_over_views, view_count

    ramp = torch.linspace(0, 1, 20)
    x = torch.stack([ramp[None, :].expand(20, 20), ramp[:, None].expand(20, 20), torch.zeros(20, 20)])[None]
    x = torch.cat([x, x + 1])  # two images: the second is the first plus one
    crops = make_views(x, "crops")
    assert crops.shape == (view_count("crops") * 2, 3, 20, 20)
    first = crops[0::2]  # the first image's five views
    assert torch.allclose(crops[1::2], first + 1, atol=1e-5)
    left, top = first[:, 0].mean((1, 2)), first[:, 1].mean((1, 2))
    assert left[0] < left[1] and left[2] < left[3] and top[0] < top[2] and top[1] < top[3]  # tl, tr, bl, br
    assert left[0] < left[4] < left[1] and top[0] < top[4] < top[2]  # the centre crop
    assert torch.allclose(make_views(x, "flip")[2:], x.flip(3))
    assert torch.allclose(mean_over_views(make_views(x, "flip"), "flip")[:, 1], x[:, 1])  # symmetric channel
    assert torch.equal(make_views(x, "plain"), x)


def test_the_setting_is_validated_and_leaves_plain_configs_as_they_were():
    assert "image_views" not in ModelConfig().to_dict()  # models written before it keep their fingerprint
    flip = ModelConfig(image_views="flip")
    assert flip.to_dict()["image_views"] == "flip"
    assert ModelConfig.from_dict(json.loads(flip.to_json())).image_views == "flip"
    with pytest.raises(InvalidInput, match="unknown image views 'mirror'"):
        ModelConfig(image_views="mirror")
    from crossmodal.config import ImageEncoderConfig

    for encoder in (ImageEncoderConfig(trainable="last:1"), ImageEncoderConfig(name="efficientnet-lite0",
                                                                               pooling="attention")):
        with pytest.raises(InvalidInput, match="'crops' need a frozen image encoder with mean pooling"):
            ModelConfig(image_encoder=encoder, image_views="crops")
        ModelConfig(image_encoder=encoder, image_views="flip")  # flip works on cached trunks


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


@pytest.mark.parametrize("views", ["flip", "crops"])
def test_cached_dataset_path_uncached_path_and_queries_agree(views, tiny_model, tiny_data, feature_cache_dir, tmp_path):
    from crossmodal.data import load_prepared
    from crossmodal.data.splits import flatten_split
    from crossmodal.data.images import open_cell
    from crossmodal.split_outputs import relaxed_outputs

    plain = CrossModalHasher.from_pretrained(tiny_model)
    flip = CrossModalHasher.from_pretrained(with_views(tiny_model, tmp_path, views))
    ds = load_prepared(tiny_data)["test"]
    captions = flatten_split(ds).captions
    cached = relaxed_outputs(flip, ds, captions, feature_cache_dir)
    uncached = relaxed_outputs(flip, ds, captions, None)  # computes the mirrored view itself
    queried = flip.embed_images([open_cell(v) for v in ds["image"]])
    assert np.allclose(cached.image_relaxed, uncached.image_relaxed, atol=1e-3)
    assert np.allclose(cached.image_relaxed, queried, atol=1e-3)
    assert not np.allclose(cached.image_relaxed, relaxed_outputs(plain, ds, captions, feature_cache_dir).image_relaxed,
                           atol=1e-3)
    tried = relaxed_outputs(plain, ds, captions, feature_cache_dir, views=views)  # eval --image-views on the plain model
    assert np.allclose(tried.image_relaxed, cached.image_relaxed, atol=1e-6)
    plain_out = relaxed_outputs(plain, ds, captions, feature_cache_dir)
    assert np.array_equal(cached.text_relaxed, plain_out.text_relaxed)
    assert np.array_equal(cached.image_features, plain_out.image_features)  # baselines see the plain view


def test_eval_tries_views_on_a_plain_model(tiny_model, tiny_data, feature_cache_dir, tmp_path):
    out = tmp_path / "report"
    assert main(["eval", "--model", str(tiny_model), "--data", str(tiny_data), "--bits", "32", "--no-baselines",
                 "--image-views", "crops", "--cache-dir", str(feature_cache_dir), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["image_views"] == "crops"
    assert json.loads((tiny_model / "config.json").read_text()).get("image_views") is None  # the model is unchanged


def test_photos_indexed_by_a_views_model_hold_its_codes(tiny_model, tmp_path):
    """With the mirrored view (the photo path averages views the way crops do: the
    dataset-path test above covers both settings' averaging)."""
    views = "flip"
    from retrieval.index import CrossModalIndex, IndexMismatch

    flip_model = with_views(tiny_model, tmp_path, views)
    lib = tmp_path / "Pictures"
    paths = [photo(lib / f"sub{n % 2}" / f"{n}.jpg", 10 + n) for n in range(8)]
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(flip_model), "--images", str(lib), "--bits", "64",
                 "--out", str(out), "--workers", "1"]) == 0  # through ONNX Runtime
    index = CrossModalIndex.load(out)
    from crossmodal.runtime import OnnxImageRuntime, image_runtime

    # the views export with the model (an export failure would have fallen back to PyTorch quietly)
    exported = image_runtime(CrossModalHasher.from_pretrained(flip_model), "onnx", cache_dir=tmp_path / "onnx")
    assert isinstance(exported, OnnxImageRuntime)
    images = [Image.open(p) for p in paths]
    flip, plain = CrossModalHasher.from_pretrained(flip_model), CrossModalHasher.from_pretrained(tiny_model)
    own = [hits[0].distance for hits in index.search(flip.encode_images(images, 64), "image", k=1)]
    assert own == [0] * len(paths)  # each photo, queried as a photo, finds itself exactly
    other = [hits[0].distance for hits in index.search(plain.encode_images(images, 64), "image", k=1)]
    assert max(other) > 0  # plain codes would not have matched every photo
    with pytest.raises(IndexMismatch, match="not by the model in use"):
        CrossModalIndex.load(out, plain.fingerprint())
