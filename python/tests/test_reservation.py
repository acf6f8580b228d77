# SPDX-License-Identifier: MIT
"""put and reserve/commit/abort: dedup, metadata, checksums, buffers that
must be gone before a commit, aborts by `with` and by collection, errors."""

import gc
import warnings

import pytest

import kvpool


def test_put_returns_stored_or_dedup(ns):
    assert ns.put(1, b"first") is True
    assert ns.put(1, b"second") is False
    assert bytes(ns.get(1)) == b"first"


def test_put_accepts_buffers(ns):
    np = pytest.importorskip("numpy")
    ns.put(1, bytearray(b"ba"))
    ns.put(2, memoryview(b"xxmvxx")[2:4])
    arr = np.arange(8, dtype=np.uint16)
    ns.put(3, arr)
    assert bytes(ns.get(1)) == b"ba" and bytes(ns.get(2)) == b"mv"
    assert bytes(ns.get(3)) == arr.tobytes()
    with pytest.raises((BufferError, ValueError), match="contiguous"):
        ns.put(4, arr[::2])
    with pytest.raises(TypeError):
        ns.put(5, "text")


def test_put_metadata_parent_ttl(ns):
    ns.put(1, b"root", tokens=16, priority=1, user_tag=2**64 - 1)
    ns.put(2, b"child", parent=1, ttl_ms=60_000)
    v = ns.get(1)
    assert (v.tokens, v.priority, v.user_tag) == (16, 1, 2**64 - 1)
    assert ns.contains(2)


def test_ttl_expires(ns):
    import time
    ns.put(1, b"short-lived", ttl_ms=1)
    time.sleep(0.02)
    assert not ns.contains(1) and ns.get(1) is None
    assert ns.put(1, b"again")  # an expired block is replaced


def test_large_put_without_gil(ns):
    big = bytes(range(256)) * 4096  # 1 MiB
    assert ns.put(1, big)
    assert bytes(ns.get(1)) == big


def test_reserve_commit(pool, ns):
    r = ns.reserve(7, 64, tokens=16, priority=3, user_tag=9)
    assert isinstance(r, kvpool.Reservation)
    assert (r.key, r.length, r.state) == (7, 64, "open")
    assert pool.base_address <= r.address < pool.base_address + pool.mapping_size
    assert not ns.contains(7) and ns.get(7) is None  # invisible until committed
    r.buffer[:] = b"y" * 64
    address = r.address
    assert "open" in repr(r)
    r.commit()
    assert r.state == "committed" and "committed" in repr(r)
    v = ns.get(7)
    assert bytes(v) == b"y" * 64 and v.verify()
    assert (v.tokens, v.priority, v.user_tag) == (16, 3, 9)
    assert v.address == address  # written in place
    assert ns.reserve(7, 64) is None  # already committed
    with pytest.raises(ValueError, match="committed"):
        r.buffer
    with pytest.raises(ValueError, match="committed"):
        r.address
    with pytest.raises(ValueError, match="committed"):
        r.commit()
    with pytest.raises(ValueError, match="committed"):
        r.abort()
    assert (r.key, r.length) == (7, 64)


def test_commit_with_checksum(ns):
    r = ns.reserve(1, 4)
    r.buffer[:] = b"abcd"
    r.commit(checksum=0x1234)  # the caller's word is taken as is
    v = ns.get(1)
    assert v.checksum == 0x1234
    assert not v.verify()
    with pytest.raises(TypeError):
        ns.reserve(2, 4).commit(checksum="x")
    with pytest.raises(TypeError):
        ns.reserve(3, 4).commit(1, 2)


def test_abort(pool, ns):
    r = ns.reserve(1, 100)
    assert pool.clients()[0]["reservations"] == 1
    r.abort()
    assert r.state == "aborted"
    r.abort()  # idempotent
    assert pool.clients()[0]["reservations"] == 0
    with pytest.raises(ValueError, match="aborted"):
        r.commit()
    with pytest.raises(ValueError, match="aborted"):
        r.buffer
    r2 = ns.reserve(1, 100)  # the key is free again
    r2.abort()


def test_with_commits_or_aborts(pool, ns):
    with ns.reserve(1, 3) as r:
        r.buffer[:] = b"abc"
    assert r.state == "committed" and bytes(ns.get(1)) == b"abc"
    with pytest.raises(RuntimeError):
        with ns.reserve(2, 3) as r:
            r.buffer[:] = b"xyz"
            raise RuntimeError("engine failed mid-write")
    assert r.state == "aborted" and not ns.contains(2)
    with ns.reserve(3, 3) as r:
        r.buffer[:] = b"123"
        r.commit()  # committing inside the block is fine too
    assert bytes(ns.get(3)) == b"123"
    assert pool.clients()[0]["reservations"] == 0


def test_collected_reservation_aborts(pool, ns):
    r = ns.reserve(1, 10)
    assert pool.clients()[0]["reservations"] == 1
    del r
    gc.collect()
    assert pool.clients()[0]["reservations"] == 0
    assert ns.reserve(1, 10) is not None


def test_commit_refused_while_buffer_alive(ns):
    r = ns.reserve(1, 8)
    mv = r.buffer
    mv[:] = b"12345678"
    with pytest.raises(BufferError, match="drop it before commit"):
        r.commit()
    assert r.state == "open"
    sub = mv[2:4]
    mv.release()
    with pytest.raises(BufferError):
        r.commit()  # the slice still refers to the memory
    del sub
    r.commit()
    assert bytes(ns.get(1)) == b"12345678"


def test_commit_refused_while_numpy_or_tensor_alive(ns):
    np = pytest.importorskip("numpy")
    r = ns.reserve(1, 16)
    a = np.frombuffer(r.buffer, dtype=np.uint8)
    assert a.flags.writeable and a.ctypes.data == r.address
    a[:] = 7
    with pytest.raises(BufferError):
        r.commit()
    del a
    r.commit()
    assert bytes(ns.get(1)) == b"\x07" * 16
    torch = pytest.importorskip("torch")
    r = ns.reserve(2, 16)
    t = torch.frombuffer(r.buffer, dtype=torch.uint8)
    assert t.data_ptr() == r.address
    t.fill_(9)
    with pytest.raises(BufferError):
        r.commit()
    del t
    r.commit()
    assert bytes(ns.get(2)) == b"\x09" * 16


def test_abort_with_live_buffer_defers_the_free(pool, ns):
    r = ns.reserve(1, 8)
    mv = r.buffer
    r.abort()
    assert r.state == "aborted"
    mv[:] = b"stillok!"  # the space is still reserved for this buffer
    assert pool.clients()[0]["reservations"] == 1
    mv.release()
    assert pool.clients()[0]["reservations"] == 0


def test_reserve_errors(pool_factory, manifest):
    with kvpool.Pool(pool_factory(16 << 20, slab_size=1 << 20)) as pool:
        ns = pool.namespace(manifest)
        r = ns.reserve(1, 10)
        with pytest.raises(kvpool.BusyError, match="reserved by another writer") as ei:
            ns.reserve(1, 10)
        assert ei.value.errno == 16
        with pytest.raises(kvpool.BusyError):
            ns.put(1, b"x")
        with pytest.raises(kvpool.BusyError):
            ns.remove(1)
        r.abort()
        for length in (0, (1 << 20) + 1):
            with pytest.raises(kvpool.TooLargeError, match="zero or larger than the slab size") as ei:
                ns.reserve(2, length)
            assert ei.value.errno == 90
        with pytest.raises(kvpool.TooLargeError):
            ns.put(2, b"")
        with pytest.raises(kvpool.TooLargeError):
            ns.put(2, bytes((1 << 20) + 1))
        with pytest.raises(TypeError):
            ns.reserve(2, -1)


def test_pool_full(pool_factory, manifest):
    with kvpool.Pool(pool_factory(16 << 20, slab_size=1 << 20)) as pool:
        ns = pool.namespace(manifest)
        held = []
        with pytest.raises(kvpool.PoolFullError, match="pinned or reserved") as ei:
            for k in range(64):
                held.append(ns.reserve(k, 1 << 20))
        assert ei.value.errno == 28
        assert 1 <= len(held) < 64
        with pytest.raises(kvpool.PoolFullError):
            ns.put(1000, bytes(1 << 20))
        for r in held:
            r.abort()
        assert ns.put(1000, bytes(1 << 20))
