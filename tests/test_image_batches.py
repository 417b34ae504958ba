"""The one batch image encoder: the same batches whatever the worker count, failures
reported by position without stopping the others, and a dataset row that cannot be
decoded named in one line."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal.errors import InvalidInput
from crossmodal.image_batches import DatasetCells, PhotoFiles, encode_batches


def _jpeg(path, seed: int, size=(80, 60)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    return str(path)


def _transform(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.resize((16, 16)), dtype=np.float32)).permute(2, 0, 1)


def _run(pixels: torch.Tensor) -> np.ndarray:
    return pixels.mean(dim=(2, 3)).numpy()  # one row per image: any per-row function would do


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_come_in_source_order_with_failures_named_by_position(tmp_path, workers):
    paths = [_jpeg(tmp_path / f"p{i}.jpg", i) for i in range(11)]
    (tmp_path / "p4.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "p9.jpg").write_bytes((tmp_path / "p8.jpg").read_bytes()[:200])  # truncated
    sources = PhotoFiles(paths, min_side=60)  # no reduced decoding at this size: Image.open gives the same pixels
    batches = list(encode_batches(sources, _transform, _run, batch_size=4, workers=workers))
    assert [b.positions for b in batches] == [[0, 1, 2, 3], [5, 6, 7], [8, 10]]
    assert [b.failed for b in batches][1][0][0] == 4 and "not an image file" in batches[1].failed[0][1]
    assert batches[2].failed[0][0] == 9 and "truncated" in batches[2].failed[0][1]
    for b in batches:  # each output row is its own image's, and the digest its file's bytes'
        for row, (i, digest) in enumerate(zip(b.positions, b.digests)):
            img = Image.open(paths[i]).convert("RGB")
            assert np.allclose(b.outputs[row], _run(_transform(img)[None])[0])
            assert digest == sources.open(i)[1] and len(digest) == 32


def test_dataset_features_are_the_same_with_and_without_decoding_workers(tmp_path):
    """The feature cache's pixels do not depend on how many processes decoded them."""
    from datasets import Dataset, Features, Image as HFImage, Value

    cells = [{"bytes": open(_jpeg(tmp_path / f"{i}.jpg", i, (90 + i, 70)), "rb").read(), "path": None}
             for i in range(7)]
    ds = Dataset.from_dict({"id": [str(i) for i in range(7)], "image": cells},
                           features=Features({"id": Value("string"), "image": HFImage()}))
    outs = [np.concatenate([b.outputs for b in encode_batches(DatasetCells(ds), _transform, _run, 3, workers)])
            for workers in (0, 1)]
    assert outs[0].shape == (7, 3) and np.array_equal(outs[0], outs[1])


def test_a_dataset_row_that_cannot_be_decoded_is_one_line_naming_it(tmp_path):
    from datasets import Dataset, Features, Image as HFImage

    from crossmodal.config import ImageEncoderConfig
    from crossmodal.encoders import create_image_encoder
    from crossmodal.features import encoder_key, image_features

    good = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(good, format="PNG")
    ds = Dataset.from_dict({"image": [{"bytes": good.getvalue(), "path": None}, {"bytes": b"garbage", "path": None}]},
                           features=Features({"image": HFImage()}))
    cfg = ImageEncoderConfig(name="efficientnet-lite0", image_size=64)
    with pytest.raises(InvalidInput, match=r"image row 1 of the split cannot be decoded \(not an image file"):
        image_features(create_image_encoder(cfg), encoder_key(cfg), ds, None, workers=0)
