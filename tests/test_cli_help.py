"""First contact: every option explains itself, registries are listed, --version and
`info` answer, and progress stays readable in a log file."""
from __future__ import annotations

import argparse
import json
import re
import os
import subprocess
import sys

import pytest

from crossmodal.cli import HelpFormatter, build_parser, main
from test_trainer import TINY_ARGS


def _subparsers(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subparsers(sub, (*prefix, name))


def _leaf_commands():
    return [(path, p) for path, p in _subparsers(build_parser())
            if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]


def test_every_option_of_every_command_has_help_and_every_command_an_example():
    leaves = _leaf_commands()
    assert {" ".join(path) for path, _ in leaves} >= {
        "train", "encode", "eval", "demo", "index build", "index add", "index remove", "index info", "video add",
        "video search", "video captions", "serve", "search", "info"}
    for path, parser in leaves:
        assert parser.formatter_class is HelpFormatter, path
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{' '.join(path)} {action.option_strings or action.dest}"
        assert "examples:\n  crossmodal " + path[0] in (parser.epilog or ""), path
        text = parser.format_help()
        assert "examples:" in text


def test_defaults_show_in_help_and_registries_are_listed():
    from crossmodal.encoders import list_image_encoders, list_text_encoders
    from crossmodal.quantizers import QUANTIZERS
    from retrieval.backends import BACKENDS
    from retrieval.index_types import DEFAULT_PARAMS

    parsers = dict((" ".join(path), p) for path, p in _leaf_commands())
    flat = lambda p: " ".join(p.format_help().split())  # noqa: E731  (help text is wrapped to the terminal)
    train = flat(parsers["train"])
    for name in [*list_image_encoders(), *list_text_encoders(), *QUANTIZERS]:
        assert name in train, name
    assert "bundled ImageNet weights, offline" in train and "needs a download" in train
    from training import TrainConfig

    from training.config import PHOTO_TRAIN

    assert f"(default: {TrainConfig().epochs}; with --images: {PHOTO_TRAIN.epochs})" in train  # --epochs
    assert "(default: efficientnet-lite0+efficientnet-lite1+efficientnet-lite2)" in train  # --image-encoder, from ImageEncoderConfig
    build = flat(parsers["index build"])
    for name in [*DEFAULT_PARAMS, *BACKENDS, "nprobe=16", "efSearch=128"]:
        assert name in build, name
    search = flat(parsers["search"])
    assert "(default: 10)" in search and "frame" in search


def test_version():
    res = subprocess.run([sys.executable, "-m", "crossmodal.cli", "--version"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("crossmodal 0.") and "torch 2." in lines[1] and "faiss 1." in lines[1]
    assert lines[2].startswith(("device: cpu", "device: cuda"))


HELP_ARGVS = [["--help"], ["--version"], *([c, "--help"] for c in
              ("train", "encode", "eval", "demo", "index", "video", "serve", "search", "info")),
              *(["index", a, "--help"] for a in ("build", "add", "sync", "remove", "info")),
              *(["video", a, "--help"] for a in ("add", "search", "captions"))]


def test_help_and_version_import_no_torch():
    """``--help`` and ``--version`` answer from metadata and plain-data configs: a probe
    in a fresh interpreter lists what they imported."""
    probe = ("import sys, contextlib, io\nfrom crossmodal.cli import main\nheavy = []\n"
             "for argv in %r:\n"
             "    with contextlib.redirect_stdout(io.StringIO()):\n"
             "        try:\n            main(argv)\n        except SystemExit:\n            pass\n"
             "    heavy += [(argv, m) for m in ('torch', 'torchvision', 'transformers', 'faiss', 'datasets', 'ray') "
             "if m in sys.modules]\n"
             "print(heavy)\n" % (HELP_ARGVS,))
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_train_log_in_a_file_stays_small_and_info_reports_the_model(tiny_data, tmp_path, capsys):
    log = tmp_path / "train.log"
    epochs = 6
    with open(log, "w") as f:
        res = subprocess.run([sys.executable, "-m", "crossmodal.cli", "train", "--data", str(tiny_data), "--out",
                              str(tmp_path / "m"), "--epochs", str(epochs), "--batch-size", "8", "--patience", "99",
                              *TINY_ARGS], stdout=f, stderr=subprocess.STDOUT, timeout=600,
                             env={**os.environ, "CROSSMODAL_PROGRESS_INTERVAL": "30"})
    text = log.read_text()
    assert res.returncode == 0, text[-3000:]
    assert "\r" not in text
    lines = text.splitlines()
    # one summary line per epoch, whatever the number of batches (a slow epoch may add a
    # progress line every CROSSMODAL_PROGRESS_INTERVAL seconds, bounded below)
    epoch_lines = [line for line in lines if re.match(r"epoch \d+: loss ", line)]
    assert len(epoch_lines) == epochs
    assert len(lines) <= 3 * epochs + 20, text
    assert main(["info", str(tmp_path / "m")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "model" and info["bits"] == [16, 32]
    assert info["image_encoder"]["name"] == "small-cnn" and info["text_encoder"]["name"] == "gru"
    assert info["training"]["data"] == str(tiny_data.resolve()) and info["training"]["finished"]
    assert "score" in info["training"]["validation"]


def test_quiet_prints_no_progress(tiny_data, tmp_path):
    res = subprocess.run([sys.executable, "-m", "crossmodal.cli", "--quiet", "train", "--data", str(tiny_data),
                          "--out", str(tmp_path / "m"), "--epochs", "2", "--batch-size", "8", *TINY_ARGS],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "epoch 1/2" not in res.stderr and "batch/s" not in res.stderr
    assert "model written to" in res.stdout


def test_info_on_an_index_and_on_a_wrong_folder(tiny_model, tiny_data, feature_cache_dir, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert main(["index", "build", "--model", str(tiny_model), "--data", str(tiny_data), "--bits", "16",
                 "--cache-dir", str(feature_cache_dir), "--out", str(idx)]) == 0
    capsys.readouterr()
    assert main(["info", str(idx)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "index" and info["nbits"] == 16 and info["counts"]["image"] == 16
    assert info["model"]["fingerprint"] == info["model_fingerprint"]
    assert main(["info", str(tmp_path)]) == 2
    assert "neither a model folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["index", "--help"], ["video", "search", "--help"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage: crossmodal" in capsys.readouterr().out


@pytest.mark.parametrize("variable", ["CROSSMODAL_PROGRESS_INTERVAL", "CROSSMODAL_MAX_PIXELS"])
def test_a_bad_environment_number_is_one_line_naming_it(variable, tmp_path):
    res = subprocess.run([sys.executable, "-m", "crossmodal.cli", "search", "--index", str(tmp_path), "--text", "x"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, variable: "abc"})
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"{variable}='abc' is not valid" in res.stderr and "Traceback" not in res.stderr


def test_help_shows_defaults_as_typed_and_quiet_goes_anywhere():
    parser = build_parser_for_test()
    train = parser["train"].format_help()
    assert "(default: 16,32,64,128)" in " ".join(train.split()) and "(default: 0)" in " ".join(train.split())
    build = " ".join(parser["index build"].format_help().split())
    assert "(default: )" not in build and "(default: the server's default) (default" not in build
    from crossmodal.cli import build_parser

    assert build_parser().parse_args(["search", "--index", "i", "--text", "t", "--quiet"]).quiet is True
    assert build_parser().parse_args(["--quiet", "search", "--index", "i", "--text", "t"]).quiet is True
    assert build_parser().parse_args(["search", "--index", "i", "--text", "t"]).quiet is False


def build_parser_for_test() -> dict:
    import argparse

    from crossmodal.cli import build_parser

    out = {}

    def walk(p, prefix=""):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out[(prefix + " " + name).strip()] = sub
                    walk(sub, prefix + " " + name)
    walk(build_parser())
    return out


def test_quiet_applies_to_its_command_only(monkeypatch):
    """``-q`` in one in-process call leaves the next call (or the Python API) showing progress."""
    from crossmodal.cli import main
    from crossmodal.progress import quiet

    monkeypatch.delenv("CROSSMODAL_QUIET", raising=False)
    assert main(["-q", "index", "info", "--index", "/nonexistent-crossmodal-index"]) == 2
    assert not quiet()
