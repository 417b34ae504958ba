"""The model shipped inside the package: it loads offline, matches its card, reproduces the
card's numbers on Flickr8k, and every command that makes codes uses it without --model."""
import json

import pytest
from PIL import Image

from crossmodal.cli import main
from crossmodal.model import CrossModalHasher
from crossmodal.pretrained import DEFAULT_DIR, model_card
from conftest import shared_path


@pytest.fixture(scope="module")
def card() -> dict:
    return model_card()


def test_bundled_model_loads_offline_and_matches_its_card(card):
    model = CrossModalHasher.from_pretrained("default", verify=True)  # recomputes every checksum
    assert model.fingerprint() == card["fingerprint"] == model.compute_fingerprint()
    size = sum(f.stat().st_size for f in DEFAULT_DIR.iterdir() if f.is_file())
    assert size <= 25_000_000 and size == pytest.approx(card["size_bytes"], rel=0.01)
    assert card["trained_on"]["dataset"] == "Flickr8k" and "research" in card["trained_on"]["terms"]
    assert card["code_lengths"] == list(model.config.bits)
    for bits in card["code_lengths"]:
        for direction in ("i2t", "t2i"):
            assert set(card["test"]["metrics"][str(bits)][direction]) == {"R@1", "R@5", "R@10"}
    assert card["command"].startswith("crossmodal train ") and card["limits"]


def test_info_default_prints_the_card(card, capsys):
    assert main(["info", "default"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["card"]["test"] == card["test"] and info["fingerprint"] == card["fingerprint"]


def test_the_cards_recipe_is_what_crossmodal_train_does_by_default(card):
    """No hidden flags: the card's command, parsed as `crossmodal train` parses it, gives the
    model configuration of the bundled model and the training configuration that trained it
    (where the data and the model go aside)."""
    import shlex
    from dataclasses import asdict

    from crossmodal.cli import build_parser
    from crossmodal.cli.train import model_config_from_args, train_config_from_args

    argv = shlex.split(card["command"])
    assert argv[:2] == ["crossmodal", "train"]
    args = build_parser().parse_args(argv[1:])
    model = CrossModalHasher.from_pretrained("default")
    assert model_config_from_args(args).to_dict() == model.config.to_dict()
    recorded = {k: v for k, v in card["train_config"].items() if k not in ("cache_dir",)}
    assert recorded == {k: v for k, v in asdict(train_config_from_args(args)).items() if k != "cache_dir"}
    assert set(argv[2:]) <= {"--data", "--out", args.data, args.out}  # nothing but where the data and model are
    assert card["seed"] == args.seed and card["commit"] and card["versions"]["torch"]
    spread = card["test"]["seed_spread"]
    assert len(spread["seeds"]) >= 3 and card["seed"] == spread["seeds"][0]
    assert spread["metrics"]["64"]["i2t"]["R@10"]["per_seed"][0] == card["test"]["metrics"]["64"]["i2t"]["R@10"]


@pytest.mark.slow
@pytest.mark.shared_data
def test_bundled_model_reproduces_its_card_on_flickr8k_test(card, tmp_path):
    """The card's 64-bit R@1/5/10 both ways, measured again from the original release."""
    import subprocess
    import sys
    from pathlib import Path

    from retrieval.evaluation import evaluate_prepared

    source = shared_path("flickr8k")
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(root / "data_scripts" / "prepare_flickr8k.py"), "--source",
                          str(source), "--out", str(tmp_path / "f8k")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    model = CrossModalHasher.from_pretrained("default")
    # a feature cache of its own, so the CNNs run through ONNX Runtime as they did for the card
    report = evaluate_prepared(model, tmp_path / "f8k", "test", bits=[64], baselines=False, n_examples=0,
                               cache_dir=tmp_path / "cache").report
    for direction in ("i2t", "t2i"):
        for k in ("R@1", "R@5", "R@10"):
            # the feature cache may run on ONNX Runtime or PyTorch: a code bit may differ between the two
            assert report["results"][direction]["64"][k] == pytest.approx(card["test"]["metrics"]["64"][direction][k],
                                                                          abs=0.3), (direction, k)
    assert min(card["test"]["metrics"]["64"][d]["R@10"] for d in ("i2t", "t2i")) >= 50


def test_photos_index_and_search_with_no_model_given(tmp_path, capsys):
    photos = tmp_path / "Pictures"
    (photos / "2026").mkdir(parents=True)
    for i, colour in enumerate(["white", "red", "navy"]):
        Image.new("RGB", (160, 120), colour).save(photos / "2026" / f"p{i}.jpg")
    idx = tmp_path / "idx"
    assert main(["index", "build", "--images", str(photos), "--workers", "0", "--out", str(idx)]) == 0
    manifest_path = idx / (idx / "CURRENT").read_text().strip() / "manifest.json"
    assert json.loads(manifest_path.read_text())["model_path"] == "default"  # named, not a path of this install
    capsys.readouterr()
    assert main(["search", "--index", str(idx), "--text", "a dog in the snow", "--target", "image", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["results"]
    assert len(found) == 3 and all(h["key"].startswith(str(photos)) for h in found)
    # the same photo as a query finds itself at distance 0
    assert main(["search", "--index", str(idx), "--image", str(photos / "2026" / "p1.jpg"), "--target", "image",
                 "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["results"][0]
    assert best["distance"] == 0 and best["key"].endswith("p1.jpg")


def test_an_index_of_an_earlier_default_says_how_to_rebuild(tmp_path, capsys):
    """A release that ships another default: the index names what built it and the rebuild."""
    photos = tmp_path / "p"
    photos.mkdir()
    Image.new("RGB", (90, 90), "teal").save(photos / "a.jpg")
    idx = tmp_path / "idx"
    assert main(["index", "build", "--images", str(photos), "--workers", "0", "--out", str(idx)]) == 0
    manifest_path = idx / (idx / "CURRENT").read_text().strip() / "manifest.json"  # the live version
    manifest = json.loads(manifest_path.read_text())
    manifest["model_fingerprint"] = "0123456789abcdef"  # what an earlier release's default would have written
    manifest_path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["search", "--index", str(idx), "--text", "a dog"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "earlier release's default model (0123456789abcdef)" in err[0]
    assert "crossmodal index build --images" in err[0]
