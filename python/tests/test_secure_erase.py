# SPDX-License-Identifier: MIT
"""create_pool(secure_erase=True) (uapi/PROTOCOL.md section 14): a removed
block's bytes are gone from the pool file, and the header carries the
incompatible feature bit; a plain pool keeps the bytes, which shows that
the scan would find them."""

import mmap
import os
import struct
from typing import Callable

import pytest

import kvpool

HEADER_INCOMPAT = 24  # kv_region_header.incompat_features
INCOMPAT_SECURE_ERASE = 1 << 3


def region_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        try:
            return bytes(m)
        finally:
            m.close()


@pytest.mark.parametrize("erase", [False, True])
def test_remove_leaves_nothing_readable(pool_factory: Callable[..., str], erase: bool) -> None:
    path = pool_factory(16 << 20, secure_erase=erase)
    incompat = struct.unpack_from("<Q", region_bytes(path), HEADER_INCOMPAT)[0]
    assert bool(incompat & INCOMPAT_SECURE_ERASE) == erase
    data = os.urandom(64 << 10)
    probes = [data[i : i + 32] for i in range(0, len(data) - 32, len(data) // 8)]
    with kvpool.Pool(path) as pool:
        ns = pool.namespace(kvpool.Manifest("erase-model", 16, dtype="fp16"))
        assert ns.put(1, data)
        image = region_bytes(path)
        assert all(p in image for p in probes)
        assert ns.remove(1)
        image = region_bytes(path)
        found = sum(p in image for p in probes)
        assert found == (0 if erase else len(probes))
        r = ns.reserve(2, 64 << 10)
        assert r is not None
        if erase:
            assert bytes(r.buffer) == bytes(64 << 10), "a reservation is all zero"
        r.abort()
