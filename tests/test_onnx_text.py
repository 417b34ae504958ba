"""Text queries through ONNX Runtime: the frozen MiniLM of a model folder is exported once,
checked against PyTorch, cached by its checksum, and later processes embed text without
importing transformers, with the same codes as PyTorch."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from crossmodal.config import TextEncoderConfig
from crossmodal.encoders import create_text_encoder
from crossmodal.onnx_text import export, export_path, load_cached, tokenizer_file


CAPTIONS = ["two dogs playing in the snow", "A man rides a bike .", "Ein Hund läuft über die Straße",
            "一只狗在雪地里奔跑", "Собака бежит по снегу", "كلب يركض", "a child " * 50, "x"]

EMBED = """
import json, sys
import numpy as np
from crossmodal.model import CrossModalHasher
m = CrossModalHasher.from_pretrained("default")
relaxed = m.embed_texts(json.loads(sys.argv[1]))
print(json.dumps({"relaxed": relaxed.tolist(), "onnx": m._onnx_text is not None,
                  "transformers": "transformers" in sys.modules}))
"""


def _embed(cache, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", EMBED, json.dumps(CAPTIONS)], capture_output=True, text=True,
                         env={**os.environ, "CROSSMODAL_CACHE": str(cache), **env}, check=True)
    return json.loads(out.stdout)


def test_second_process_embeds_text_without_transformers_and_gives_pytorchs_codes(tmp_path):
    cache = tmp_path / "cache"
    first = _embed(cache)  # PyTorch, and exports for the next process
    assert first["transformers"] and not first["onnx"]
    sha256 = json.loads(_default_config())["frozen_encoders"]["text_encoder"]["sha256"]
    assert list((cache / "onnx").iterdir()) == [export_path(cache / "onnx", sha256, TextEncoderConfig())]
    second = _embed(cache)
    assert second["onnx"] and not second["transformers"]
    torch_only = _embed(tmp_path / "other", CROSSMODAL_NO_ONNX="1")
    assert not torch_only["onnx"] and not (tmp_path / "other" / "onnx").exists()
    a, b = np.array(second["relaxed"]), np.array(torch_only["relaxed"])
    assert np.abs(a - b).max() < 1e-4
    assert np.array_equal(a >= 0, b >= 0)  # the same codes at every length
    assert np.array_equal(np.array(first["relaxed"]), b)


def _default_config() -> str:
    from crossmodal.pretrained import DEFAULT_DIR
    return (DEFAULT_DIR / "config.json").read_text()


@pytest.fixture(scope="module")
def minilm():
    return create_text_encoder(TextEncoderConfig(max_length=16)).eval()


def test_tokens_match_transformers_in_every_script_and_truncate_alike(minilm, tmp_path):
    cfg = TextEncoderConfig(max_length=16)
    assert export(minilm, cfg, tmp_path, "a" * 64)
    engine = load_cached(tmp_path, "a" * 64, cfg)
    ours, theirs = engine.tokenize(CAPTIONS), minilm.tokenize(CAPTIONS)
    assert ours["input_ids"].shape == (len(CAPTIONS), 16)  # the long caption is cut at max_length
    for key in ("input_ids", "attention_mask"):
        assert np.array_equal(ours[key], theirs[key].numpy())
    import torch

    with torch.inference_mode():
        reference = minilm(**theirs).numpy()
    assert np.abs(engine(CAPTIONS).numpy() - reference).max() < 1e-4


def test_a_damaged_cached_graph_is_dropped_and_pytorch_answers(tmp_path, capsys):
    cfg = TextEncoderConfig()
    path = export_path(tmp_path, "b" * 64, cfg)
    path.write_bytes(b"not an onnx graph")
    assert load_cached(tmp_path, "b" * 64, cfg) is None
    assert "cannot load the cached text graph" in capsys.readouterr().err and not path.exists()


def test_only_encoders_with_a_local_tokenizer_qualify(tmp_path):
    assert tokenizer_file(TextEncoderConfig()).name == "tokenizer.json"
    assert tokenizer_file(TextEncoderConfig(name="gru")) is None
    assert tokenizer_file(TextEncoderConfig(name="sentence-transformers/some-hub-model")) is None
    assert tokenizer_file(TextEncoderConfig(name=str(tmp_path))) is None  # a folder without tokenizer.json


def test_an_export_that_disagrees_with_pytorch_is_not_cached(minilm, tmp_path, capsys, monkeypatch):
    from crossmodal.onnx_graphs import OnnxGraph

    monkeypatch.setattr(OnnxGraph, "run", lambda self, inputs: np.zeros((len(inputs["input_ids"]), 384), np.float32))
    assert not export(minilm, TextEncoderConfig(max_length=16), tmp_path, "c" * 64)
    assert not export_path(tmp_path, "c" * 64, TextEncoderConfig(max_length=16)).exists()
    assert list(tmp_path.iterdir()) == []
    assert "differ from PyTorch" in capsys.readouterr().err


def test_the_cache_key_covers_everything_a_graph_depends_on(minilm, tmp_path, monkeypatch):
    """Weights, tokenizer file, export code and package versions: a change to any of them
    makes the cached graph unusable, so the next text query exports again."""
    import shutil

    from crossmodal import onnx_text
    from crossmodal.encoders.text import minilm_path

    cfg = TextEncoderConfig(max_length=16)
    assert export(minilm, cfg, tmp_path, "d" * 64)
    assert load_cached(tmp_path, "d" * 64, cfg) is not None
    assert load_cached(tmp_path, "e" * 64, cfg) is None  # other weights
    assert load_cached(tmp_path, "d" * 64, TextEncoderConfig(max_length=32)) is None  # another length
    folder = tmp_path / "minilm-copy"  # the same model with another tokenizer file
    shutil.copytree(minilm_path(), folder)
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok.setdefault("added_tokens", []).append({"id": 99999, "content": "[NEW]", "single_word": False, "lstrip": False,
                                               "rstrip": False, "normalized": False, "special": True})
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    assert export_path(tmp_path, "d" * 64, TextEncoderConfig(name=str(folder), max_length=16)) != \
        export_path(tmp_path, "d" * 64, cfg)
    monkeypatch.setattr(onnx_text, "EXPORT_VERSION", onnx_text.EXPORT_VERSION + 1)  # new export code
    assert load_cached(tmp_path, "d" * 64, cfg) is None
    monkeypatch.undo()
    for package in onnx_text.GRAPH_PACKAGES:  # an upgrade of torch, onnx or onnxruntime
        real = onnx_text.package_versions()
        monkeypatch.setattr(onnx_text, "package_versions", lambda real=real, p=package: {**real, p: "99.0"})
        assert load_cached(tmp_path, "d" * 64, cfg) is None, package
        monkeypatch.undo()
    assert load_cached(tmp_path, "d" * 64, cfg) is not None  # nothing changed: the same graph
    assert export(minilm, cfg, tmp_path, "e" * 64) and len(list(tmp_path.glob("text-*.onnx"))) == 2  # re-export
