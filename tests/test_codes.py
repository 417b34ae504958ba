import numpy as np
import pytest

from crossmodal.codes import binarize, hamming_distances, pack_bits, unpack_bits


def test_pack_is_big_endian_and_roundtrips():
    bits = np.zeros((1, 16), dtype=bool)
    bits[0, 0] = True  # most significant bit of the first byte
    bits[0, 15] = True
    packed = pack_bits(bits)
    assert packed.tolist() == [[128, 1]]
    assert (unpack_bits(packed) == bits).all()


def test_bit_is_one_where_relaxed_is_nonnegative_including_zero():
    assert binarize(np.array([[-0.5, 0.0, 0.3, -0.0]])).tolist() == [[False, True, True, True]]


def test_hamming_matches_bruteforce():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, (7, 64)).astype(bool)
    b = rng.integers(0, 2, (11, 64)).astype(bool)
    d = hamming_distances(pack_bits(a), pack_bits(b), chunk=3)
    brute = (a[:, None, :] != b[None, :, :]).sum(-1)
    assert (d == brute).all()


def test_pack_rejects_non_multiple_of_eight():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_bits(np.zeros((2, 12), dtype=bool))


def test_hamming_rejects_mixed_lengths():
    with pytest.raises(ValueError, match="code lengths differ"):
        hamming_distances(np.zeros((1, 2), np.uint8), np.zeros((1, 4), np.uint8))
