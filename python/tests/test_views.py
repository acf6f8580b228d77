# SPDX-License-Identifier: MIT
"""Views: zero-copy reads, every way a pin is released, and pins that must
outlive release() while an exported buffer still refers to the block."""

import gc
import io
import sys
import tracemalloc
import warnings
import weakref

import pytest

import kvpool

DATA = bytes(range(256)) * 64  # 16 KiB


def inside_pool(pool, address, length):
    return pool.base_address <= address and address + length <= pool.base_address + pool.mapping_size


@pytest.fixture
def block(ns):
    ns.put(1, DATA, tokens=16, priority=2, user_tag=77)
    return 1


def test_view_fields(pool, ns, block):
    v = ns.get(block)
    assert isinstance(v, kvpool.View)
    assert v.key == 1
    assert v.length == len(v) == len(DATA)
    assert (v.tokens, v.priority, v.user_tag) == (16, 2, 77)
    assert v.checksum != 0
    assert v.verify()
    assert not v.released
    assert inside_pool(pool, v.address, v.length)
    assert repr(v) == f"<kvpool.View key=0x{1:032x} {len(DATA)} bytes>"
    v.release()
    assert v.released and repr(v).endswith("released>")


def test_memoryview_is_zero_copy_and_read_only(pool, ns, block):
    v = ns.get(block)
    mv = memoryview(v)
    assert mv.readonly and mv.nbytes == len(DATA) and mv.tobytes() == DATA
    assert isinstance(mv.obj, kvpool.BlockMemory)
    assert repr(mv.obj) == f"<kvpool._kvpool.BlockMemory pinned {len(DATA)} bytes, 1 exports>"
    with pytest.raises(TypeError):
        kvpool.BlockMemory()
    with pytest.raises(TypeError):
        kvpool.View()
    with pytest.raises(TypeError):
        mv[0] = 1
    with pytest.raises(TypeError, match="read-write"):
        io.BytesIO(b"abc").readinto(v)  # asks for a writable buffer: BufferError inside


def test_numpy_zero_copy(pool, ns, block):
    np = pytest.importorskip("numpy")
    v = ns.get(block)
    a = np.frombuffer(v, dtype=np.uint8)
    assert a.ctypes.data == v.address
    assert inside_pool(pool, a.ctypes.data, a.nbytes)
    assert not a.flags.writeable
    assert a.tobytes() == DATA
    h = np.frombuffer(v, dtype=np.float16)
    assert h.ctypes.data == v.address and h.size == len(DATA) // 2


def test_torch_zero_copy(pool, ns, block):
    torch = pytest.importorskip("torch")
    v = ns.get(block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "buffer is not writable"
        t = torch.frombuffer(v, dtype=torch.uint8)
        h = torch.frombuffer(v, dtype=torch.float16)
    assert t.data_ptr() == v.address
    assert inside_pool(pool, t.data_ptr(), t.numel())
    assert bytes(t.numpy()) == DATA
    assert h.data_ptr() == v.address and h.numel() == len(DATA) // 2


def test_release_unpins(pool, ns, block):
    v = ns.get(block)
    assert pool.pins_held() == 1
    v.release()
    assert pool.pins_held() == 0
    v.release()  # idempotent
    assert pool.pins_held() == 0


def test_with_unpins(pool, ns, block):
    with ns.get(block) as v:
        assert pool.pins_held() == 1
        assert bytes(v) == DATA
    assert v.released and pool.pins_held() == 0
    with pytest.raises(RuntimeError):
        with ns.get(block):
            raise RuntimeError("boom")
    assert pool.pins_held() == 0


def test_collection_unpins(pool, ns, block):
    v = ns.get(block)
    assert pool.pins_held() == 1
    del v
    assert pool.pins_held() == 0
    views = [ns.get(block) for _ in range(10)]
    assert pool.pins_held() == 10
    del views
    assert pool.pins_held() == 0


def test_release_all(pool, ns, block):
    views = [ns.get(block) for _ in range(5)] + [None]
    assert pool.pins_held() == 5
    kvpool.release_all(views)
    assert pool.pins_held() == 0 and all(v.released for v in views[:5])
    kvpool.release_all(iter(views))  # again: no-op
    with pytest.raises(TypeError, match="expected kvpool.View or None, not int"):
        kvpool.release_all([1])
    with pytest.raises(TypeError):
        kvpool.release_all(5)


def test_released_view(ns, block):
    v = ns.get(block)
    v.release()
    with pytest.raises(ValueError, match="released"):
        v.address
    with pytest.raises(ValueError, match="released"):
        v.verify()
    with pytest.raises(ValueError, match="released"):
        memoryview(v)
    with pytest.raises(ValueError, match="released"):
        bytes(v)
    # The metadata stays readable.
    assert (v.length, v.key, v.tokens) == (len(DATA), 1, 16)


def test_pin_outlives_release_while_memoryview_alive(pool, ns, block):
    v = ns.get(block)
    mv = memoryview(v)
    sub = mv[100:200]
    v.release()
    assert pool.pins_held() == 1
    assert ns.remove(block)  # even removed, the pinned memory stays valid
    assert mv.tobytes() == DATA and sub.tobytes() == DATA[100:200]
    mv.release()
    assert pool.pins_held() == 1  # the slice still refers to the block
    del sub
    assert pool.pins_held() == 0


def test_pin_outlives_release_while_numpy_alive(pool, ns, block):
    np = pytest.importorskip("numpy")
    v = ns.get(block)
    a = np.frombuffer(v, dtype=np.uint8)
    view_of_a = a[10:20]
    v.release()
    del v
    gc.collect()
    assert pool.pins_held() == 1
    assert a.tobytes() == DATA
    del a
    assert pool.pins_held() == 1
    assert view_of_a.tobytes() == DATA[10:20]
    del view_of_a
    assert pool.pins_held() == 0


def test_pin_outlives_release_while_tensor_alive(pool, ns, block):
    torch = pytest.importorskip("torch")
    v = ns.get(block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = torch.frombuffer(v, dtype=torch.uint8)
    t2 = t[5:9]
    with v:
        pass
    del v
    assert pool.pins_held() == 1
    assert bytes(t.numpy()) == DATA
    del t
    assert pool.pins_held() == 1
    assert bytes(t2.numpy()) == DATA[5:9]
    del t2
    gc.collect()
    assert pool.pins_held() == 0


def test_collected_view_with_live_export(pool, ns, block):
    mv = memoryview(ns.get(block))  # the View itself is gone at once
    assert pool.pins_held() == 1
    assert mv.tobytes() == DATA
    del mv
    assert pool.pins_held() == 0


def test_views_hold_the_pool_object(pool_path, manifest):
    pool = kvpool.Pool(pool_path)
    ns = pool.namespace(manifest)
    ns.put(1, b"abc")
    v = ns.get(1)
    ref = weakref.ref(pool) if hasattr(pool, "__weakref__") else None
    del pool, ns
    gc.collect()
    assert bytes(v) == b"abc"
    if ref is not None:
        assert ref() is not None
    v.release()


def test_verify_detects_corruption(pool, ns, block):
    import ctypes
    v = ns.get(block)
    assert v.verify()
    # Flip a byte under the view (as a bad writer or memory error would).
    p = ctypes.cast(v.address + 7, ctypes.POINTER(ctypes.c_ubyte))
    p[0] ^= 0xFF
    assert not v.verify()
    p[0] ^= 0xFF
    assert v.verify()


def test_large_verify_without_gil(ns):
    big = bytes(1 << 20)
    ns.put(9, big)
    v = ns.get(9)
    assert v.verify()
    mv = memoryview(v)  # the pin is now in the memory object
    assert v.verify()
    v.release()
    assert mv.tobytes() == big


def test_no_leak_over_100k_get_release(pool, ns):
    key = 2**100 + 12345  # not a cached small int: its count is ours alone
    ns.put(key, DATA)
    get = ns.get
    for _ in range(1000):  # warm up caches and free lists
        get(key).release()
    gc.collect()
    refs_ns, refs_pool, refs_key = sys.getrefcount(ns), sys.getrefcount(pool), sys.getrefcount(key)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(100_000):
        get(key).release()
    for _ in range(20_000):
        with get(key) as v:
            memoryview(v).release()
    for _ in range(20_000):
        v = get(key)
        del v
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < 64 * 1024, f"{grown} bytes more allocated after 140k cycles"
    assert (sys.getrefcount(ns), sys.getrefcount(pool), sys.getrefcount(key)) == (refs_ns, refs_pool, refs_key)
    assert pool.pins_held() == 0
    assert pool.usage()["pins"] == 0
    st = pool.stats()
    assert st["hits"] >= 140_000


def test_get_errors(pool_factory, manifest):
    with kvpool.Pool(pool_factory(16 << 20, pins_per_client=8)) as pool:
        ns = pool.namespace(manifest)
        ns.put(1, b"x")
        views = [ns.get(1) for _ in range(8)]
        with pytest.raises(kvpool.NoPinsError, match="pin journal full") as ei:
            ns.get(1)
        assert ei.value.errno == 105
        views.pop().release()
        views.append(ns.get(1))
        kvpool.release_all(views)
        assert pool.pins_held() == 0
