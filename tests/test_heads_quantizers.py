import numpy as np
import pytest
import torch

from crossmodal.config import HeadConfig
from crossmodal.heads import HashHead, sign_ste
from crossmodal.quantizers import ITQQuantizer, KMeansQuantizer, SignQuantizer, create_quantizer


def test_head_outputs_are_relaxed_codes():
    head = HashHead(10, 32, HeadConfig(hidden_dim=16, depth=3))
    out = head(torch.randn(5, 10) * 100)
    assert out.shape == (5, 32) and (out.abs() <= 1).all()


def test_sign_ste_forward_is_sign_with_zero_as_one_and_gradient_passes_through():
    x = torch.tensor([-0.2, 0.0, 0.7], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1.0, 1.0, 1.0]
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


def test_sign_quantizer_nested_prefixes_and_unknown_length():
    q = SignQuantizer((16, 32))
    x = torch.randn(4, 32)
    b16, b32 = q(x, 16), q(x, 32)
    assert torch.equal(b16, b32[:, :16])
    with pytest.raises(ValueError, match="serves code lengths"):
        q(x, 64)


def test_itq_lowers_quantization_error_and_rotation_is_orthogonal():
    rng = np.random.default_rng(0)
    # correlated, anisotropic data: sign() of raw coordinates wastes bits
    x = (rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))).astype(np.float32)
    q = ITQQuantizer((16,))
    q.fit(x)
    r = q.rotation_16.numpy()
    assert np.allclose(r @ r.T, np.eye(16), atol=1e-4)
    centred = x - x.mean(0)
    proj = q.project(torch.from_numpy(x), 16).numpy()

    def qerr(v):
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return np.linalg.norm(np.sign(v) / 4 - v, axis=1).mean()

    assert qerr(proj) < qerr(centred) - 0.01
    # points of a rotated hypercube: ITQ finds a rotation that makes them near-binary again
    # (faiss' ITQMatrix, used before, left them at a random rotation's 0.61)
    corners = rng.choice([-1.0, 1.0], size=(2000, 16)) @ np.linalg.qr(rng.normal(size=(16, 16)))[0]
    q.fit((corners + 0.05 * rng.normal(size=corners.shape)).astype(np.float32))
    cube = q.project(torch.from_numpy(corners.astype(np.float32)), 16).numpy()
    assert qerr(cube) < 0.45 < 0.55 < qerr(corners)


def test_kmeans_threshold_splits_bimodal_dimension():
    rng = np.random.default_rng(1)
    col = np.concatenate([rng.normal(0.5, 0.05, 700), rng.normal(0.9, 0.05, 300)])
    x = np.stack([col, -col], axis=1).repeat(4, axis=1)[:, :8].astype(np.float32)
    q = KMeansQuantizer((8,))
    q.fit(x)
    t = q.thresholds.numpy()
    assert 0.6 < t[0] < 0.8  # between the two modes, not at 0
    bits = q(torch.from_numpy(x), 8).numpy()
    assert bits[:, 0].mean() == pytest.approx(0.3, abs=0.02)


def test_create_quantizer_rejects_unknown():
    with pytest.raises(ValueError, match="unknown quantizer"):
        create_quantizer("pq", (16,))
