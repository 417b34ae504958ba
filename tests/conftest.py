"""Shared fixtures: small data generated on the fly, and the real data where present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared synthetic dataset: 48 train / 16 dev / 16 test scenes of 64x64 pixels."""
    from crossmodal.data import build_dataset_dict, write_prepared
    from crossmodal.data.synthetic import synthetic_splits

    out = tmp_path_factory.mktemp("data") / "shapes"
    dd, report = build_dataset_dict(synthetic_splits(train=48, dev=16, test=16, seed=1, size=64))
    write_prepared(dd, report, out)
    return out


@pytest.fixture(scope="session")
def feature_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("features")


def tiny_config(quantizer: str = "sign", bits=(16, 32)):
    from crossmodal.config import HeadConfig, ImageEncoderConfig, ModelConfig, TextEncoderConfig

    return ModelConfig(image_encoder=ImageEncoderConfig(name="small-cnn", weights="none", image_size=32),
                       text_encoder=TextEncoderConfig(name="gru", vocab_size=200, embed_dim=32, hidden_dim=32),
                       head=HeadConfig(hidden_dim=64, depth=2, dropout=0.0), bits=bits, quantizer=quantizer)


def require_milvus_module(name: str, reason: str):
    """Import a Milvus package, or skip: unless CROSSMODAL_REQUIRE_MILVUS=1 (``make test``,
    CI), where a missing server or client is a failure, not a quiet skip."""
    if os.environ.get("CROSSMODAL_REQUIRE_MILVUS") == "1":
        import importlib

        try:
            return importlib.import_module(name)
        except ImportError as e:
            pytest.fail(f"CROSSMODAL_REQUIRE_MILVUS=1 but {name} cannot be imported ({e}): {reason}")
    return pytest.importorskip(name, reason=reason)


def shared_path(*parts: str) -> Path:
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (tests that need ../shared/data skip without it)")
    return p


@pytest.fixture(scope="session")
def tiny_model(tiny_data, feature_cache_dir, tmp_path_factory) -> Path:
    """The default encoders (frozen, cached) with small heads, trained briefly on tiny_data."""
    from crossmodal.cli import main

    out = tmp_path_factory.mktemp("models") / "tiny"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "40", "--batch-size", "16", "--patience", "40",
                 "--bits", "16,32,64", "--head-hidden", "256", "--cache-dir", str(feature_cache_dir)]) == 0
    return out


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus standalone server (the ``milvus`` package) for the whole session, on
    free ports and a fresh data folder; stopped by PID at the end."""
    require_milvus_module("milvus", reason="the milvus package (a real Milvus standalone server) is not installed; "
                                           "`pip install -e '.[test]'` installs it")
    from retrieval.milvus_server import LocalMilvus

    # 5-12 s on a quiet machine; the margin is for a machine loaded by benchmarks beside the suite
    server = LocalMilvus(tmp_path_factory.mktemp("milvus-server"), ready_timeout=300).start()
    yield server
    server.stop()
    assert not server.alive()


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray instance for the whole session (``ray.init(num_cpus=2)``, started
    once): commands in this process join it, and command processes join it by address."""
    ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[test]" (or "crossmodal[ray]")')
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2 ** 20, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# ---- CI runs every test: a skip there is a failure ------------------------------------------
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    """With ``CROSSMODAL_NO_SKIPS=1`` (``.ci/run``) any skipped test fails the run, naming
    it: CI has ../shared/data, the Milvus server and Chromium, so nothing there may skip."""
    if _SKIPPED and os.environ.get("CROSSMODAL_NO_SKIPS") == "1":
        print(f"\nCROSSMODAL_NO_SKIPS=1 and {len(_SKIPPED)} test(s) skipped:\n  " + "\n  ".join(_SKIPPED))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
