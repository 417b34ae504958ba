
import pytest
import torch
from PIL import Image

from crossmodal.config import ImageEncoderConfig, TextEncoderConfig
from crossmodal.encoders import (apply_trainable, create_image_encoder, create_text_encoder, list_image_encoders,
                                 list_text_encoders)

TV = ["resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"]


def test_registry_lists_required_encoders():
    assert set(TV + ["efficientnet-lite0", "small-cnn"]) <= set(list_image_encoders())
    assert {"minilm", "gru", "transformers"} <= set(list_text_encoders())


def test_efficientnet_lite0_pretrained_offline_gives_distinct_features():
    enc = create_image_encoder(ImageEncoderConfig(name="efficientnet-lite0"))
    enc.eval()
    tf = enc.transform()
    red = tf(Image.new("RGB", (100, 80), (255, 0, 0)))
    noise = tf(Image.fromarray((torch.rand(80, 100, 3) * 255).byte().numpy()))
    assert red.shape == (3, 224, 224)
    with torch.no_grad():
        f = enc(torch.stack([red, noise]))
    assert f.shape == (2, 1280)
    assert not torch.allclose(f[0], f[1])
    # ImageNet weights, not random init: BN statistics are loaded
    assert enc.net._bn0.running_var.mean().item() != pytest.approx(1.0)


@pytest.mark.parametrize("name,size", [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)])
def test_stronger_lite_weights_load_offline_at_their_native_size(name, size):
    enc = create_image_encoder(ImageEncoderConfig(name=name))
    enc.eval()
    assert enc.image_size == size
    x = enc.transform()(Image.new("RGB", (300, 200), (0, 128, 255)))
    assert x.shape == (3, size, size)
    with torch.no_grad():
        f = enc(x[None])
    assert f.shape == (1, 1280)
    lite0 = create_image_encoder(ImageEncoderConfig(name="efficientnet-lite0"))
    assert enc.net._bn0.running_var.mean().item() != pytest.approx(1.0)  # ImageNet statistics, not init
    assert enc.net._bn0.running_var.shape == lite0.net._bn0.running_var.shape
    assert not torch.equal(enc.net._conv_stem.weight, lite0.net._conv_stem.weight)  # its own weights


@pytest.mark.parametrize("name", TV)
def test_torchvision_cnn_from_local_weights_file(name, tmp_path):
    from safetensors.torch import save_file
    import torchvision

    ref = torchvision.models.get_model(name, weights=None)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    enc = create_image_encoder(ImageEncoderConfig(name=name, weights=str(path), image_size=64))
    enc.eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, enc.output_dim)
    # the backbone's weights are the file's
    first = next(iter(ref.state_dict().items()))
    assert torch.equal(enc.net.state_dict()[first[0]], first[1])


def test_torchvision_default_weights_offline_error_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):  # offline, network or not:
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # the discard port refuses every download
    with pytest.raises(RuntimeError) as e:
        create_image_encoder(ImageEncoderConfig(name="mobilenet_v3_large"))
    assert "--image-weights" in str(e.value) and "mobilenet_v3_large" in str(e.value)


def test_missing_weights_file_is_clear_error():
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        create_image_encoder(ImageEncoderConfig(name="resnet50", weights="/nonexistent/w.pth"))


def test_small_cnn_is_trained_from_scratch():
    enc = create_image_encoder(ImageEncoderConfig(name="small-cnn", weights="none"))
    assert all(p.requires_grad for p in enc.parameters())
    assert enc(torch.randn(3, 3, 64, 64)).shape == (3, enc.output_dim)


def test_minilm_offline_embeds_similar_captions_closer():
    enc = create_text_encoder(TextEncoderConfig())
    enc.eval()
    with torch.no_grad():
        f = enc(**enc.tokenize(["a dog runs on the beach", "a puppy running along the sand", "a stock market report"]))
    f = torch.nn.functional.normalize(f, dim=-1)
    assert f.shape == (3, 384)
    assert (f[0] @ f[1]) > (f[0] @ f[2]) + 0.2


def test_transformers_encoder_by_local_folder():
    from crossmodal.encoders.text import minilm_path

    enc = create_text_encoder(TextEncoderConfig(name=str(minilm_path())))
    assert enc(**enc.tokenize(["hello"])).shape == (1, 384)


def test_unknown_transformers_name_offline_is_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="local folder"):
        create_text_encoder(TextEncoderConfig(name="nobody/no-such-model-xyz"))


def test_gru_needs_vocab_then_encodes():
    enc = create_text_encoder(TextEncoderConfig(name="gru", vocab_size=50, embed_dim=8, hidden_dim=8))
    with pytest.raises(RuntimeError, match="vocabulary"):
        enc.tokenize(["a cat"])
    enc.build_vocab(["a cat", "a dog", "the cat sat"])
    batch = enc.tokenize(["a cat", "unknown words here ok"])
    assert batch["input_ids"][0, 0] != enc.UNK and batch["input_ids"][1, 0] == enc.UNK
    assert enc(**batch).shape == (2, 16)


def test_trainable_modes_frozen_last_full():
    enc = create_image_encoder(ImageEncoderConfig(name="efficientnet-lite0", weights="none"))
    assert enc.is_frozen and not any(p.requires_grad for p in enc.parameters())
    apply_trainable(enc, "last:2")
    blocks = enc.blocks()
    trainable = {id(p) for b in blocks[-2:] for p in b.parameters()}
    assert all(p.requires_grad == (id(p) in trainable) for p in enc.parameters())
    apply_trainable(enc, "full")
    assert all(p.requires_grad for p in enc.parameters())
    with pytest.raises(ValueError, match="last:N"):
        apply_trainable(enc, "some")

    txt = create_text_encoder(TextEncoderConfig(trainable="last:1"))
    layer_params = {id(p) for p in txt.blocks()[-1].parameters()}
    assert layer_params and all(p.requires_grad == (id(p) in layer_params) for p in txt.parameters())


def test_concatenated_encoders_give_each_parts_features_side_by_side():
    from crossmodal.encoders.image import ConcatImageEncoder

    enc = create_image_encoder(ImageEncoderConfig(name="efficientnet-lite0+efficientnet-lite2")).eval()
    assert isinstance(enc, ConcatImageEncoder) and enc.is_frozen
    assert enc.output_dim == 2560 and enc.image_size == 260
    x = enc.transform()(Image.new("RGB", (300, 200), (200, 30, 90)))[None]
    assert x.shape == (1, 3, 260, 260)
    lite0 = create_image_encoder(ImageEncoderConfig(name="efficientnet-lite0")).eval()
    lite2 = create_image_encoder(ImageEncoderConfig(name="efficientnet-lite2")).eval()
    with torch.no_grad():
        both = enc(x)
        small = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        assert torch.allclose(both[:, :1280], lite0(small), atol=1e-5)
        assert torch.allclose(both[:, 1280:], lite2(x), atol=1e-5)


def test_bad_encoder_combinations_are_refused_clearly(tmp_path):
    from crossmodal.errors import InvalidInput

    with pytest.raises(InvalidInput, match="unknown image encoder 'nope'.*join several with"):
        create_image_encoder(ImageEncoderConfig(name="efficientnet-lite0+nope"))
    with pytest.raises(InvalidInput, match="twice"):
        create_image_encoder(ImageEncoderConfig(name="efficientnet-lite0+efficientnet-lite0"))
    with pytest.raises(InvalidInput, match="weights file cannot serve several"):
        create_image_encoder(ImageEncoderConfig(name="efficientnet-lite0+efficientnet-lite2",
                                                weights=str(tmp_path / "w.pth")))
    with pytest.raises(InvalidInput, match="pool on their own"):
        create_image_encoder(ImageEncoderConfig(name="efficientnet-lite0+efficientnet-lite2", pooling="attention"))


def test_caption_features_do_not_depend_on_their_batch():
    """Captions are encoded in batches of similar length (less padding): each caption's
    features and token states equal those of the caption encoded alone."""
    from crossmodal.features import TokenStates, length_sorted_batches, text_features, text_trunk_states

    captions = ["a dog", "two children play football on a wide green field near the old school building",
                "a red car", "", "a man in a blue shirt rides a bicycle down the hill", "cat"]
    batches = length_sorted_batches(captions, 2)
    assert sorted(r for b in batches for r in b) == list(range(len(captions)))
    assert [len(captions[b[0]]) for b in batches] == sorted(len(captions[b[0]]) for b in batches)
    enc = create_text_encoder(TextEncoderConfig(name="minilm"))
    batched = text_features(enc, {}, None, captions, None, batch_size=2)
    with torch.inference_mode():
        alone = torch.cat([enc(**enc.tokenize([c])) for c in captions])
    assert torch.allclose(batched, alone, atol=1e-5)
    states = text_trunk_states(enc, {}, None, captions, None, trunk_of=1, batch_size=2)
    assert isinstance(states, TokenStates) and len(states) == len(captions)
    with torch.inference_mode():
        for i, c in enumerate(captions):
            tok = enc.tokenize([c])
            own = enc.trunk(tok["input_ids"], tok["attention_mask"], 1)[0].half()
            got, mask = states.batch([i])
            assert torch.allclose(got[0][mask[0].bool()], own.float(), atol=2e-2)
