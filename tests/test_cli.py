"""The ``crossmodal`` command as a user runs it."""
import json
import subprocess
import sys

import numpy as np

from crossmodal.cli import main
from crossmodal.model import CrossModalHasher
from test_trainer import TINY_ARGS


def test_train_then_encode_writes_documented_npz(tiny_data, tmp_path):
    model_dir = tmp_path / "model"
    assert main(["train", "--data", str(tiny_data), "--out", str(model_dir), "--epochs", "2", "--batch-size", "8",
                 *TINY_ARGS]) == 0
    npz = tmp_path / "codes.npz"
    assert main(["encode", "--model", str(model_dir), "--data", str(tiny_data), "--split", "test",
                 "--out", str(npz)]) == 0
    z = np.load(npz)
    assert z["bits"].tolist() == [16, 32]
    assert z["image_ids"].shape == (16,) and z["text_ids"].shape == (80,)
    assert z["text_ids"][0].endswith("#0") and z["text_item_ids"][0] == z["image_ids"][0]
    assert z["image_codes_32"].dtype == np.uint8 and z["image_codes_32"].shape == (16, 4)
    assert z["text_codes_16"].shape == (80, 2)
    model = CrossModalHasher.from_pretrained(model_dir)
    assert str(z["model_fingerprint"]) == model.fingerprint()
    assert np.array_equal(model.encode_texts([str(z["texts"][3])], 32), z["text_codes_32"][3:4])


def test_bad_input_gives_clear_error_not_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "crossmodal.cli", "train", "--data", str(tmp_path / "none"),
                          "--out", str(tmp_path / "m")], capture_output=True, text=True)
    assert res.returncode == 2
    assert "not a prepared crossmodal dataset" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "crossmodal.cli", "train", "--data", "x", "--out", "y",
                          "--bits", "12"], capture_output=True, text=True)
    assert res.returncode == 2 and "multiple of 8" in res.stderr
    res = subprocess.run([sys.executable, "-m", "crossmodal.cli", "train", "--data", "x", "--out", "y",
                          "--image-encoder", "efficientnet-lite0+efficientnet-lite9"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown image encoder 'efficientnet-lite9'" in res.stderr
    assert "join several with '+'" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "crossmodal.cli", "train", "--data", "x", "--out", "y",
                          "--head-width", "100"], capture_output=True, text=True)
    assert res.returncode == 2 and "head width 100" in res.stderr and "Traceback" not in res.stderr


def test_demo_runs_end_to_end_on_a_small_built_in_set(tmp_path, capsys):
    """The README's first command, shrunk: dataset -> train -> index -> eval -> queries."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--train-size", "60", "--dev-size", "20", "--test-size", "20",
                 "--epochs", "2", "--bits", "16,32"]) == 0
    text = capsys.readouterr().out
    assert "5/5 example queries" in text and "text → images" in text
    report = json.loads((out / "report" / "report.json").read_text())
    for direction in ("i2t", "t2i"):  # the trained 16-bit codes beat LSH over the same outputs
        trained, lsh = report["results"][direction]["16"]["mAP"], report["baselines"]["lsh"][direction]["16"]["mAP"]
        assert trained > lsh, (direction, trained, lsh)
    assert (out / "report" / "summary.md").is_file() and (out / "index" / "CURRENT").is_file()
    # run again: the dataset and the model are reused, the index is rebuilt in place
    assert main(["demo", "--out", str(out), "--train-size", "60", "--dev-size", "20", "--test-size", "20",
                 "--epochs", "2", "--bits", "16,32"]) == 0
    assert "already trained" in capsys.readouterr().out
