"""Captions in any script: the trainable text encoder learns real units from Chinese,
Russian, Arabic and accented Latin captions (a subword vocabulary from ``tokenizers``),
while folders written with the old ASCII word vocabulary keep their codes."""
import io
import json

import numpy as np
import torch
from PIL import Image

from crossmodal.cli import main
from crossmodal.config import TextEncoderConfig
from crossmodal.encoders import create_text_encoder
from crossmodal.model import CrossModalHasher

COLOURS = [("red", "红色", "красный"), ("green", "绿色", "зелёный"), ("blue", "蓝色", "синий"),
           ("yellow", "黄色", "жёлтый"), ("black", "黑色", "чёрный"), ("white", "白色", "белый"),
           ("orange", "橙色", "оранжевый"), ("purple", "紫色", "фиолетовый")]
SHAPES = [("正方形", "квадрат"), ("圆形", "круг"), ("三角形", "треугольник")]


def _records(split: str):
    for i, (colour, zh, ru) in enumerate(COLOURS):
        for j, (zh_shape, ru_shape) in enumerate(SHAPES):
            buf = io.BytesIO()
            Image.new("RGB", (48, 48), colour).save(buf, format="PNG")
            yield {"id": f"{split}-{i}-{j}", "image": buf.getvalue(), "labels": [colour, f"shape{j}"],
                   "captions": [f"一个{zh}的{zh_shape}", f"{ru} {ru_shape} на картинке"]}


def test_gru_trained_on_chinese_and_russian_captions_tells_them_apart(tmp_path):
    from crossmodal.data import build_dataset_dict, write_prepared

    data = tmp_path / "zh-ru"
    dd, report = build_dataset_dict({"train": _records("train"), "dev": _records("dev")})
    write_prepared(dd, report, data)
    out = tmp_path / "m"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "6", "--batch-size", "8",
                 "--image-encoder", "small-cnn", "--image-weights", "none", "--image-size", "32",
                 "--text-encoder", "gru", "--text-vocab-size", "300", "--text-hidden", "32", "--bits", "64",
                 "--head-hidden", "64"]) == 0
    assert (out / "tokenizer.json").is_file()
    model = CrossModalHasher.from_pretrained(out)
    captions = [c for r in _records("x") for c in r["captions"]]
    tokens = model.text_encoder.tokenize(captions)["input_ids"]
    assert (tokens > 1).any(1).all()  # every caption has known units (no caption is all [UNK])
    codes = model.encode_texts(captions, 64)
    distinct = len({c.tobytes() for c in codes})
    # different captions, different codes (with an ASCII-only vocabulary every one of them was [UNK]: one code)
    assert distinct >= 0.9 * len(captions), distinct


def test_subwords_in_every_script():
    enc = create_text_encoder(TextEncoderConfig(name="gru", vocab_size=400, embed_dim=8, hidden_dim=8))
    corpus = ["一只狗在雪地里奔跑", "Собака бежит по снегу", "كلب يركض في الثلج", "Ein Hund läuft über die Straße",
              "a dog runs through the snow"]
    enc.build_vocab(corpus)
    ids = enc.tokenize(corpus)["input_ids"]
    assert (ids > 1).sum(1).min() >= 3  # at least three real units each
    assert len({tuple(row.tolist()) for row in ids}) == len(corpus)
    # Unicode normalisation: a decomposed umlaut is the same caption as the composed one
    composed, decomposed = "läuft", "la\u0308uft"
    a, b = enc.tokenize([composed])["input_ids"], enc.tokenize([decomposed])["input_ids"]
    assert torch.equal(a, b) and (a > 1).all()


def test_a_gru_folder_with_the_old_word_vocabulary_keeps_its_codes(tmp_path):
    from conftest import tiny_config

    torch.manual_seed(0)
    model = CrossModalHasher(tiny_config())
    model.text_encoder.vocab = {"red": 2, "circle": 3, "blue": 4}  # what releases before subwords learned
    model.save_pretrained(tmp_path / "old")
    assert (tmp_path / "old" / "vocab.json").is_file() and not (tmp_path / "old" / "tokenizer.json").exists()
    loaded = CrossModalHasher.from_pretrained(tmp_path / "old")
    texts = ["a red circle", "blue", "unknown words"]
    assert np.array_equal(loaded.encode_texts(texts, 32), model.encode_texts(texts, 32))
    assert json.loads((tmp_path / "old" / "vocab.json").read_text()) == model.text_encoder.vocab


def test_the_vocabulary_is_the_same_in_every_process():
    """Same captions, same ids, in any process (same seed, same model)."""
    import subprocess
    import sys

    code = ("from crossmodal.encoders.text import train_subword_tokenizer as t; import hashlib; "
            "print(hashlib.sha256(t(['a dog runs', 'a cat sits', 'два кота', '两只猫', 'dogs run'] * 3, 50)"
            ".to_str().encode()).hexdigest())")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
            for _ in range(3)}
    assert len(runs) == 1 and len(next(iter(runs)).strip()) == 64
