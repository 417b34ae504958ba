"""The trainer on small generated data: it learns, saves, resumes after a kill, and
runs data-parallel under torchrun."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from crossmodal.config import HeadConfig, ModelConfig
from crossmodal.data.prepared import PreparedSplits
from crossmodal.model import CrossModalHasher
from retrieval.evaluation import ValidationEvaluator
from training import TrainConfig, Trainer
from training.losses import LossConfig

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--image-encoder", "small-cnn", "--image-weights", "none", "--image-size", "32",
             "--text-encoder", "gru", "--text-vocab-size", "200", "--text-hidden", "32",
             "--head-hidden", "64", "--bits", "16,32"]


def _train_on_cache(model, data, tmp_path, epochs: int = 2):
    """A short run of ``model`` on tiny data with its own feature cache: (trainer, cache folder)."""
    cache = tmp_path / "cache"
    trainer = Trainer(model, data, tmp_path / "m", TrainConfig(epochs=epochs, batch_size=16, cache_dir=str(cache)),
                      scorer=ValidationEvaluator())
    trainer.fit()
    return trainer, cache


def _frozen_model(bits=(16, 32, 64)):
    torch.manual_seed(0)
    return CrossModalHasher(ModelConfig(head=HeadConfig(hidden_dim=256), bits=bits))


def test_cached_training_learns_and_beats_untrained_model(tiny_data, tmp_path):
    data = PreparedSplits.open(tiny_data, ["train"], None, also_screen=["dev"])
    cache = tmp_path / "cache"
    cfg = TrainConfig(epochs=25, batch_size=16, lr=2e-3, patience=25, cache_dir=str(cache),
                      supervision="pairs", val_bits=64)
    untrained = Trainer(_frozen_model(), data, tmp_path / "u", cfg, scorer=ValidationEvaluator())
    untrained._prepare_data()
    base = untrained.validate()["score"]
    trainer = Trainer(_frozen_model(), data, tmp_path / "m", cfg, scorer=ValidationEvaluator())
    summary = trainer.fit()
    assert summary["best_score"] > max(2 * base, 30.0), (base, summary)
    log = [json.loads(line) for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 25 and log[-1]["loss_total"] < log[0]["loss_total"]
    assert {"val_i2t_R@1", "val_t2i_R@10", "temperature", "lr"} <= set(log[0])
    # the saved model is the best epoch's, and it reloads to the same codes
    loaded = CrossModalHasher.from_pretrained(tmp_path / "m")
    texts = ["a large red circle left of a small blue square"]
    assert np.array_equal(loaded.encode_texts(texts, 64), trainer.model.encode_texts(texts, 64))
    # features were cached on disk once (train and dev), and both trainers read the same files
    files = sorted(cache.glob("*.safetensors"))
    assert [f.name[:4] for f in files].count("img-") == 2 and [f.name[:4] for f in files].count("txt-") == 2
    mtimes = [f.stat().st_mtime for f in files]
    Trainer(_frozen_model(), data, tmp_path / "again", TrainConfig(epochs=1, batch_size=16, cache_dir=str(cache),
                                                                   supervision="pairs"),
            scorer=ValidationEvaluator()).fit()
    assert [f.stat().st_mtime for f in sorted(cache.glob("*.safetensors"))] == mtimes


def test_label_supervision_is_used_when_labels_exist(tiny_data, feature_cache_dir, tmp_path):
    data = PreparedSplits.open(tiny_data, ["train"], None, also_screen=["dev"])
    cfg = TrainConfig(epochs=2, batch_size=16, cache_dir=str(feature_cache_dir))
    trainer = Trainer(_frozen_model(), data, tmp_path / "m", cfg, scorer=ValidationEvaluator())
    trainer.fit()
    assert trainer.vocab and trainer.train_labels is not None
    log = json.loads((tmp_path / "m" / "train_log.jsonl").read_text().splitlines()[0])
    assert "val_i2t_mAP" in log  # label-based validation
    # a fresh run into the same folder starts its own log (it used to append to the last run's)
    Trainer(_frozen_model(), data, tmp_path / "m", TrainConfig(epochs=1, batch_size=16, cache_dir=str(feature_cache_dir)),
            scorer=ValidationEvaluator()).fit()
    assert [json.loads(x)["epoch"] for x in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()] == [1]
    # intra-modal terms switch on with labels (label positives) and off with pairs only
    assert trainer.loss_config.intra_image == trainer.loss_config.intra_text == 0.2
    pairs = Trainer(_frozen_model(), data, tmp_path / "p", TrainConfig(epochs=1, batch_size=16, supervision="pairs",
                                                                      cache_dir=str(feature_cache_dir)))
    pairs._prepare_data()
    assert pairs.loss_config.intra_image == pairs.loss_config.intra_text == 0.0
    img, img2, txt, txt2, _, targets = pairs._batch_inputs(0, 0, pairs._batches(0)[0])
    assert img2 is None and txt2 is None and targets == {}  # nothing computed for terms that are off
    explicit = Trainer(_frozen_model(), data, tmp_path / "e", TrainConfig(
        epochs=1, batch_size=16, supervision="pairs", cache_dir=str(feature_cache_dir),
        loss=LossConfig(intra_image=0.3)))
    explicit._prepare_data()
    assert explicit.loss_config.intra_image == 0.3 and explicit.loss_config.intra_text == 0.0


def test_the_reconstruction_term_trains_decoders_that_the_model_does_not_keep(tiny_data, feature_cache_dir,
                                                                              tmp_path):
    """The autoencoder term: a decoder per modality learns to rebuild the clean cached
    features from the relaxed code of their noisy copy; it lowers its loss, trains alone
    (no pairs), and the saved model is the same set of tensors as without it."""
    from safetensors import safe_open

    data = PreparedSplits.open(tiny_data, ["train"], None, also_screen=["dev"])

    def run(name, loss, epochs=8):
        cfg = TrainConfig(epochs=epochs, batch_size=16, patience=epochs, cache_dir=str(feature_cache_dir), loss=loss)
        trainer = Trainer(_frozen_model(), data, tmp_path / name, cfg, scorer=ValidationEvaluator())
        trainer.fit()
        log = [json.loads(x) for x in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
        with safe_open(str(tmp_path / name / "model.safetensors"), "pt") as f:
            return trainer, log, set(f.keys())

    trainer, log, keys = run("rec", LossConfig(reconstruction=1.0))
    assert set(trainer.loss_config.__dict__) >= {"reconstruction"} and set(dict(trainer.model.named_parameters())) \
        .isdisjoint({f"decoders.{k}" for k in ("image", "text")})
    rec = [row["loss_reconstruction"] for row in log]
    assert rec[-1] < 0.8 * rec[0], rec
    _, _, plain_keys = run("plain", LossConfig(), epochs=1)
    assert keys == plain_keys and not any("decoder" in k for k in keys)
    _, alone, _ = run("alone", LossConfig(reconstruction=1.0, inter_contrastive=0.0), epochs=4)
    assert "loss_inter" not in alone[0] or alone[0]["loss_inter"] == 0.0
    assert alone[-1]["loss_reconstruction"] < alone[0]["loss_reconstruction"]


def test_itq_quantizer_is_fitted_after_training(tiny_data, feature_cache_dir, tmp_path):
    data = PreparedSplits.open(tiny_data, ["train"], None, also_screen=["dev"])
    torch.manual_seed(0)
    model = CrossModalHasher(ModelConfig(head=HeadConfig(hidden_dim=64), bits=(16, 32), quantizer="itq"))
    Trainer(model, data, tmp_path / "m", TrainConfig(epochs=2, batch_size=16, cache_dir=str(feature_cache_dir)),
            scorer=ValidationEvaluator()).fit()
    rot = CrossModalHasher.from_pretrained(tmp_path / "m").quantizer.rotation_32
    assert not torch.allclose(rot, torch.eye(32))
    assert torch.allclose(rot @ rot.T, torch.eye(32), atol=1e-4)


def _train_cmd(data: Path, out: Path, epochs: int, extra=()):
    return [sys.executable, "-m", "crossmodal.cli", "train", "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), "--batch-size", "4", "--patience", "100", "--checkpoint-every", "2",
            *TINY_ARGS, *extra]


def test_end_to_end_finetuning_resumes_after_kill_with_identical_result(tiny_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    epochs = 4
    # uninterrupted reference run
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(tiny_data, ref, epochs), check=True, env=env, capture_output=True, timeout=600)
    # a run killed in the middle of an epoch, after a mid-epoch checkpoint
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(tiny_data, run, epochs), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state_file = run / "checkpoint" / "trainer_state.json"
    killed_at = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            st = json.loads(state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.02)
            continue
        if st["epoch"] >= 1 and st["batch"] > 0:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = st
            break
        time.sleep(0.02)
    if killed_at is None:
        proc.kill()
        pytest.fail("training finished before a mid-epoch checkpoint could be observed")
    assert not (run / "train_summary.json").exists()
    out = subprocess.run(_train_cmd(tiny_data, run, epochs, ["--resume"]), check=True, env=env,
                         capture_output=True, text=True, timeout=600)
    assert "resumed from" in out.stdout
    from safetensors.torch import load_file
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    assert (run / "tokenizer.json").is_file()  # the GRU's vocabulary travels with the model


def test_two_process_ddp_training(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "crossmodal.cli", "train", "--data", str(tiny_data), "--out", str(out), "--epochs", "2",
           "--batch-size", "8", *TINY_ARGS]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 * 6  # 48 items / global batch 8 per epoch, shared by both ranks
    model = CrossModalHasher.from_pretrained(out)
    assert model.encode_texts(["a red circle"], 32).shape == (1, 4)


def test_several_captions_per_step_give_each_image_row_all_its_positives(tiny_data, feature_cache_dir, tmp_path):
    data = PreparedSplits.open(tiny_data, ["train"], None, also_screen=["dev"])
    cfg = TrainConfig(epochs=1, batch_size=8, cache_dir=str(feature_cache_dir), captions_per_step=3,
                      supervision="pairs")
    trainer = Trainer(_frozen_model(), data, tmp_path / "m", cfg, scorer=ValidationEvaluator())
    trainer._prepare_data()
    idx = trainer._batches(0)[0]
    img, img2, txt, txt2, item_pos, _ = trainer._batch_inputs(0, 0, idx)
    assert img.shape[0] == 8 and txt.shape[0] == 24
    pos = trainer._pair_positives(item_pos, 3)
    assert pos.shape == (8, 24) and pos.sum(1).tolist() == [3] * 8
    cap1, cap2 = trainer._caption_choice(np.random.default_rng(0), idx)
    assert cap1.shape == (3, 8)
    for j, i in enumerate(idx):
        own = set(trainer.captions_of[i].tolist())
        assert set(cap1[:, j].tolist()) <= own and cap2[j] in own
        assert len(set(cap1[:, j].tolist())) == min(3, len(own))  # distinct captions while there are enough
    summary = trainer.fit()
    assert summary["steps"] == len(trainer._batches(0))


def test_last_stage_finetuning_trains_on_cached_trunk_activations(tiny_data, feature_cache_dir, tmp_path):
    """``last:1`` on EfficientNet-Lite0: the trunk runs once (cached activations), only the
    head conv and the hash heads change, and the saved model's full forward agrees."""
    from crossmodal.config import ImageEncoderConfig

    data = PreparedSplits.open(tiny_data, ["train"], None, also_screen=["dev"])
    torch.manual_seed(0)
    lite0 = ImageEncoderConfig(name="efficientnet-lite0", trainable="last:1", image_size=64)
    model = CrossModalHasher(ModelConfig(image_encoder=lite0, head=HeadConfig(hidden_dim=64), bits=(16, 32)))
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    trainer, cache = _train_on_cache(model, data, tmp_path)
    assert trainer.image_mode == "trunk"
    trunk = trainer.feats["train_img"]
    assert trunk.dtype == torch.float16 and trunk.shape[:3] == (48, 2, 320)  # activations before the head conv
    after = model.image_encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("net._conv_head", "net._bn1")) for k in changed), sorted(changed)[:5]
    loaded = CrossModalHasher.from_pretrained(tmp_path / "m")
    ds = data["dev"]
    from crossmodal.data.images import open_cell
    images = [open_cell(v) for v in ds.cast_column("image", __import__("datasets").Image(decode=False))["image"][:4]]
    full = loaded.embed_images(images)
    with torch.inference_mode():
        x = torch.stack([loaded.image_transform(False)(im) for im in images])
        split = loaded.image_relaxed_from_trunk(loaded.image_encoder.trunk(x, 1)).numpy()
    assert np.allclose(full, split, atol=1e-4)
    # evaluation reads the same trunk cache and gets what the full forward gives
    from crossmodal.data.splits import flatten_split
    from crossmodal.split_outputs import relaxed_outputs
    outputs = relaxed_outputs(loaded, ds, flatten_split(ds).captions, cache)
    assert np.allclose(outputs.image_relaxed[:4], full, atol=1e-2)
    assert len(list(cache.glob("img-*.safetensors"))) == 2  # train and dev trunks, nothing recomputed for dev


def test_attention_pooling_trains_over_a_frozen_backbone_from_cached_activations(tiny_data, tmp_path):
    """``pooling: attention`` with a frozen EfficientNet: the CNN's weights stay exactly as
    loaded, the pool learns (its gates leave zero) from cached inputs of the last stage, and
    the saved model's full forward equals the cached path that training and evaluation use."""
    from datasets import Image as HFImage

    from crossmodal.config import ImageEncoderConfig
    from crossmodal.data.splits import flatten_split
    from crossmodal.data.images import open_cell
    from crossmodal.split_outputs import relaxed_outputs

    data = PreparedSplits.open(tiny_data, ["train"], None, also_screen=["dev"])
    torch.manual_seed(0)
    model = CrossModalHasher(ModelConfig(image_encoder=ImageEncoderConfig(name="efficientnet-lite0", pooling="attention", image_size=64),
                                         head=HeadConfig(hidden_dim=64), bits=(16, 32)))
    assert model.image_tail_stages == 1 and not model.image_encoder.is_frozen
    backbone_before = {k: v.clone() for k, v in model.image_encoder.net.state_dict().items()}
    trainer, cache = _train_on_cache(model, data, tmp_path, epochs=3)
    assert trainer.image_mode == "trunk" and trainer.feats["train_img"].shape[:3] == (48, 2, 320)
    backbone_after = model.image_encoder.net.state_dict()
    assert all(torch.equal(backbone_before[k], backbone_after[k]) for k in backbone_before)
    assert model.image_encoder.pooler.gate.abs().max() > 0  # the pool learned, at the heads' rate

    loaded = CrossModalHasher.from_pretrained(tmp_path / "m")
    assert loaded.config.image_encoder.pooling == "attention"
    ds = data["dev"]
    images = [open_cell(v) for v in ds.cast_column("image", HFImage(decode=False))["image"][:4]]
    full = loaded.embed_images(images)
    outputs = relaxed_outputs(loaded, ds, flatten_split(ds).captions, cache)
    assert np.allclose(outputs.image_relaxed[:4], full, atol=1e-2)
    # mean pooling gives different outputs from the same weights: the learned pool is used
    loaded.image_encoder.set_pooling("mean")
    assert np.abs(loaded.embed_images(images) - full).max() > 1e-5


def test_untrained_attention_pool_is_mean_pooling():
    from crossmodal.encoders.image import AttentionPool

    torch.manual_seed(0)
    x = torch.randn(3, 40, 7, 7)
    pool = AttentionPool(40)
    assert torch.allclose(pool(x), x.mean(dim=(2, 3)), atol=1e-6)
    with torch.no_grad():
        pool.gate.fill_(1.0)
    assert not torch.allclose(pool(x), x.mean(dim=(2, 3)), atol=1e-3)


def test_attention_pooling_is_refused_where_the_network_pools_itself():
    from crossmodal.config import ImageEncoderConfig
    from crossmodal.errors import InvalidInput

    with pytest.raises(InvalidInput, match="attention pooling"):
        CrossModalHasher(ModelConfig(image_encoder=ImageEncoderConfig(name="small-cnn", weights="none",
                                                                      pooling="attention")))


def test_text_last_layer_finetuning_trains_on_cached_token_states(tiny_data, tmp_path):
    """``--text-trainable last:1`` on MiniLM: the lower layers run once (packed float16
    token states in the cache), only the last layer and the heads change, and the saved
    model's plain forward gives what the cached path gives."""
    from crossmodal.config import TextEncoderConfig
    from crossmodal.data.splits import flatten_split
    from crossmodal.split_outputs import relaxed_outputs

    data = PreparedSplits.open(tiny_data, ["train"], None, also_screen=["dev"])
    torch.manual_seed(0)
    model = CrossModalHasher(ModelConfig(text_encoder=TextEncoderConfig(trainable="last:1"),
                                         head=HeadConfig(hidden_dim=64), bits=(16, 32)))
    assert model.text_tail_layers == 1
    before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    trainer, cache = _train_on_cache(model, data, tmp_path)
    assert trainer.text_mode == "trunk"
    states = trainer.feats["train_txt"]
    assert states.states.dtype == torch.float16 and len(states) == len(trainer.train.captions)
    changed = {k for k, v in model.text_encoder.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("net.encoder.layer.5.") for k in changed), sorted(changed)[:5]

    loaded = CrossModalHasher.from_pretrained(tmp_path / "m")
    ds = data["dev"]
    captions = flatten_split(ds).captions
    outputs = relaxed_outputs(loaded, ds, captions, cache)
    assert np.allclose(outputs.text_relaxed, loaded.embed_texts(captions), atol=1e-2)
    assert len(list(cache.glob("txt-*.safetensors"))) == 2  # train and dev token states, read back for dev


def test_text_tail_of_trunk_is_the_full_forward():
    from crossmodal.config import TextEncoderConfig
    from crossmodal.encoders import create_text_encoder
    from crossmodal.features import TokenStates

    enc = create_text_encoder(TextEncoderConfig(trainable="last:2")).eval()
    texts = ["a dog runs on the beach", "two children play with a red ball in a park near a tall tree", "hi"]
    tok = enc.tokenize(texts)
    with torch.no_grad():
        full = enc(**tok)
        for n in (1, 2, 3):
            states = enc.trunk(tok["input_ids"], tok["attention_mask"], n)
            assert torch.allclose(enc.tail(states, tok["attention_mask"], n), full, atol=1e-5)
        # packed storage gives the same padded batch back, in any order
        states = enc.trunk(tok["input_ids"], tok["attention_mask"], 1)
        mask = tok["attention_mask"].bool()
        lengths = mask.sum(1)
        packed = TokenStates(states[mask].half(), torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]))
        batch, batch_mask = packed.batch([2, 0])
        assert batch.shape == (2, int(lengths[0]), states.shape[-1]) and batch_mask.sum(1).tolist() == [int(lengths[2]), int(lengths[0])]
        assert torch.allclose(enc.tail(batch, batch_mask, 1), full[[2, 0]], atol=1e-2)


def test_the_mirrored_view_is_computed_only_when_training_uses_it(tiny_data, tmp_path):
    """Without flips (and no intra-image term: pairs, not labels) the feature pass runs the CNN on the plain view
    only and every step reads it; with flips the pair is cached, and it then also answers
    for the plain view (no second file)."""
    from safetensors.torch import load_file

    data = PreparedSplits.open(tiny_data, ["train"], None, also_screen=["dev"])
    cache = tmp_path / "cache"
    plain = Trainer(_frozen_model(), data, tmp_path / "plain",
                    TrainConfig(epochs=1, batch_size=16, cache_dir=str(cache), flip_augment=False, feature_noise=0.0,
                                supervision="pairs"),
                    scorer=ValidationEvaluator())
    plain.fit()
    shapes = sorted(tuple(load_file(str(f))["features"].shape) for f in cache.glob("img-*.safetensors"))
    assert [s[1] for s in shapes] == [1, 1]  # train and dev: one view each
    idx = plain._batches(0)[0]
    img, img2, *_ = plain._batch_inputs(0, 0, idx)
    assert img2 is None and torch.equal(img, plain.feats["train_img"][torch.from_numpy(idx), 0])
    flips = Trainer(_frozen_model(), data, tmp_path / "flips",
                    TrainConfig(epochs=1, batch_size=16, cache_dir=str(cache), feature_noise=0.0,
                                supervision="pairs", flip_augment=True),
                    scorer=ValidationEvaluator())
    flips.fit()
    pairs = [f for f in cache.glob("img-*.safetensors") if load_file(str(f))["features"].shape[1] == 2]
    assert len(pairs) == 1  # the training split's pair; dev stays plain
    views = flips._batch_inputs(0, 0, idx)[0]
    mirrored = flips.feats["train_img"][torch.from_numpy(idx), 1]
    assert any(torch.equal(views[i], mirrored[i]) for i in range(len(idx)))  # some steps read the mirrored view
    assert torch.equal(flips.feats["train_img"][:, 0], plain.feats["train_img"][:, 0])
    files = set(cache.glob("img-*.safetensors"))
    Trainer(_frozen_model(), data, tmp_path / "again", TrainConfig(epochs=1, batch_size=16, cache_dir=str(cache),
                                                                   flip_augment=False, supervision="pairs"),
            scorer=ValidationEvaluator()).fit()
    assert set(cache.glob("img-*.safetensors")) == files
