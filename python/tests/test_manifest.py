# SPDX-License-Identifier: MIT
"""kvpool.Manifest: fields, names, validation, identity."""

import pytest

import kvpool


def test_defaults():
    m = kvpool.Manifest("llama", 16)
    assert m.model_name == "llama"
    assert m.block_tokens == 16
    assert m.weights_fingerprint == bytes(32)
    assert (m.dtype, m.kv_layout, m.tp_rank, m.tp_world, m.hash_scheme, m.hash_seed) == (0, 0, 0, 1, 1, 0)
    assert len(m.to_bytes()) == 160
    assert m.to_bytes()[:5] == b"llama"


def test_all_fields():
    fp = bytes(range(32))
    m = kvpool.Manifest("x" * 63, 32, weights_fingerprint=fp, dtype=2000, kv_layout=7, tp_rank=3,
                        tp_world=4, hash_scheme=2, hash_seed=2**64 - 1)
    assert m.as_dict() == {"model_name": "x" * 63, "block_tokens": 32, "weights_fingerprint": fp,
                           "dtype": 2000, "kv_layout": 7, "tp_rank": 3, "tp_world": 4,
                           "hash_scheme": 2, "hash_seed": 2**64 - 1}
    assert kvpool.Manifest(**m.as_dict()) == m
    assert "hash_scheme=2" in repr(m)


def test_short_fingerprint_is_zero_padded():
    assert kvpool.Manifest("m", 16, weights_fingerprint=b"ab").weights_fingerprint == b"ab" + bytes(30)


@pytest.mark.parametrize("name,code", [
    ("fp16", 1), ("float16", 1), ("half", 1), ("bf16", 2), ("bfloat16", 2), ("fp8_e4m3", 3),
    ("float8_e4m3fn", 3), ("fp8_e5m2", 4), ("float8_e5m2", 4), ("fp32", 5), ("float32", 5),
    ("float", 5), ("int8", 6), ("torch.float16", 1),
])
def test_dtype_names(name, code):
    assert kvpool.Manifest("m", 16, dtype=name).dtype == code


def test_torch_dtype():
    torch = pytest.importorskip("torch")
    assert kvpool.Manifest("m", 16, dtype=torch.bfloat16).dtype == 2
    assert kvpool.Manifest("m", 16, dtype=torch.float32).dtype == 5


@pytest.mark.parametrize("name,code", [
    ("kvpool", 1), ("xxh3_128_chained", 1), ("sha256_cbor", 2), ("xxhash_cbor", 3),
])
def test_hash_scheme_names(name, code):
    assert kvpool.Manifest("m", 16, hash_scheme=name).hash_scheme == code


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(model_name="", block_tokens=16), ValueError, "model_name must be 1..63 bytes"),
    (dict(model_name="x" * 64, block_tokens=16), ValueError, "not 64"),
    (dict(model_name="a\0b", block_tokens=16), ValueError, "NUL"),
    (dict(model_name="m", block_tokens=0), ValueError, "block_tokens must be > 0"),
    (dict(model_name="m", block_tokens=16, tp_rank=2, tp_world=2), ValueError, r"tp_rank \(2\) must be < tp_world \(2\)"),
    (dict(model_name="m", block_tokens=16, tp_world=0), ValueError, "tp_world"),
    (dict(model_name="m", block_tokens=16, weights_fingerprint=bytes(33)), ValueError, "at most 32 bytes, not 33"),
    (dict(model_name="m", block_tokens=16, dtype="fp64"), ValueError, "unknown dtype 'fp64'"),
    (dict(model_name="m", block_tokens=16, hash_scheme="md5"), ValueError, "unknown hash_scheme 'md5'"),
    (dict(model_name="m", block_tokens=-1), TypeError, ""),
    (dict(model_name="m", block_tokens=16, hash_seed=2**64), TypeError, ""),
    (dict(model_name="m", block_tokens=16, weights_fingerprint="abc"), TypeError, ""),
])
def test_invalid(kwargs, error, match):
    with pytest.raises(error, match=match):
        kvpool.Manifest(**kwargs)


def test_identity():
    a = kvpool.Manifest("m", 16, dtype="fp16")
    b = kvpool.Manifest("m", 16, dtype=1)
    c = kvpool.Manifest("m", 16, dtype="bf16")
    assert a == b and hash(a) == hash(b) and a.seed == b.seed
    assert a != c and a.seed != c.seed
    assert a != "m"
    assert len({a, b, c}) == 2
    for field, value in [("weights_fingerprint", b"w"), ("kv_layout", 1), ("tp_world", 2),
                         ("hash_scheme", 2), ("hash_seed", 5)]:
        assert kvpool.Manifest("m", 16, dtype=1, **{field: value}).seed != a.seed, field
    assert kvpool.Manifest("m", 32, dtype=1).seed != a.seed
