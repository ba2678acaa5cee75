"""Our XXH64 against the reference implementation (the xxhash package)."""

import numpy as np
import pytest
import xxhash

from repack.checksum import XXH64


@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 4097, 1 << 20])
def test_matches_reference(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert XXH64(data).hexdigest() == xxhash.xxh64(data).hexdigest()
    assert XXH64(data, seed=7).intdigest() == xxhash.xxh64(data, seed=7).intdigest()


def test_streaming_equals_one_shot():
    data = np.random.default_rng(1).integers(0, 256, 100_003, dtype=np.uint8)
    for cuts in ([1, 31, 32, 33], [5000, 17], [64] * 100):
        h, pos = XXH64(), 0
        for c in cuts:
            h.update(data[pos:pos + c])
            pos += c
        h.update(data[pos:])
        assert h.hexdigest() == xxhash.xxh64(data.tobytes()).hexdigest()


def test_rejects_non_contiguous():
    with pytest.raises(ValueError):
        XXH64(np.zeros(10, dtype=np.uint8)[::2])
