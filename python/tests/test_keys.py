# SPDX-License-Identifier: MIT
"""Keys (ints, engine hashes) and kvpool's chained hash."""

import array
import hashlib

import pytest

import kvpool


def test_int_keys():
    for k in (0, 1, 2**64 - 1, 2**64, 2**128 - 1):
        assert kvpool.to_key(k) == k


def test_bytes_keys_take_last_16_bytes_big_endian():
    h = hashlib.sha256(b"block").digest()
    k = kvpool.to_key(h)
    assert k == int.from_bytes(h[-16:], "big")
    # vLLM's KV-event form of the hash (its last 8 bytes) is the low word.
    assert k & (2**64 - 1) == int.from_bytes(h, "big") & (2**64 - 1)
    assert kvpool.to_key(h[-16:]) == k
    assert kvpool.to_key(bytearray(h)) == k
    assert kvpool.to_key(memoryview(h)) == k


def test_index_objects():
    np = pytest.importorskip("numpy")
    assert kvpool.to_key(np.uint64(2**63 + 5)) == 2**63 + 5


@pytest.mark.parametrize("bad,error,match", [
    (-1, OverflowError, r"int in \[0, 2\*\*128\)"),
    (2**128, OverflowError, r"int in \[0, 2\*\*128\)"),
    (b"\0" * 8, ValueError, "16 or 32 bytes .* not 8"),
    (b"\0" * 33, ValueError, "not 33"),
    ("abc", TypeError, "not str"),
    (1.5, TypeError, "not float"),
    (None, TypeError, "not NoneType"),
])
def test_bad_keys(bad, error, match, ns):
    with pytest.raises(error, match=match):
        kvpool.to_key(bad)
    # The same conversion guards every keyed call.
    for call in (ns.get, ns.contains, ns.remove, lambda k: ns.put(k, b"x"), lambda k: ns.reserve(k, 1),
                 lambda k: ns.match_prefix([k]), lambda k: ns.get_many([k]), lambda k: ns.contains_many([k]),
                 lambda k: ns.put_many([k], [b"x"])):
        with pytest.raises(error):
            call(bad)
    if bad is not None:  # parent=None means "no parent"
        with pytest.raises(error):
            ns.put(1, b"x", parent=bad)
        with pytest.raises(error):
            ns.reserve(1, 1, parent=bad)


def test_equal_keys_address_one_block(ns):
    h = hashlib.sha256(b"x").digest()
    ns.put(h, b"by hash")
    assert bytes(ns.get(kvpool.to_key(h))) == b"by hash"
    assert ns.get(h).key == kvpool.to_key(h)


def test_hash_chain_links():
    tokens = list(range(100))
    seed = 12345
    keys = kvpool.hash_chain(tokens, 16, seed)
    assert len(keys) == 6  # full blocks only
    prev = None
    for i, k in enumerate(keys):
        assert k == kvpool.hash_block(seed, prev, tokens[i * 16:(i + 1) * 16])
        prev = k
    assert kvpool.hash_block(seed, 0, tokens[:16]) == keys[0]
    # A changed token changes its block's key and every later one.
    changed = kvpool.hash_chain(tokens[:20] + [999] + tokens[21:], 16, seed)
    assert changed[0] == keys[0] and all(a != b for a, b in zip(changed[1:], keys[1:]))
    assert kvpool.hash_chain(tokens, 16, seed + 1)[0] != keys[0]
    assert kvpool.hash_chain(tokens[:15], 16, seed) == []
    assert all(0 <= k < 2**128 for k in keys)


def test_hash_chain_token_forms():
    np = pytest.importorskip("numpy")
    tokens = list(range(1000, 1064))
    want = kvpool.hash_chain(tokens, 16, 7)
    assert kvpool.hash_chain(tuple(tokens), 16, 7) == want
    assert kvpool.hash_chain(array.array("I", tokens), 16, 7) == want
    assert kvpool.hash_chain(array.array("i", tokens), 16, 7) == want
    assert kvpool.hash_chain(array.array("q", tokens), 16, 7) == want
    assert kvpool.hash_chain(np.array(tokens, dtype=np.int64), 16, 7) == want
    assert kvpool.hash_chain(np.array(tokens, dtype=np.uint32), 16, 7) == want
    assert kvpool.hash_chain(iter(tokens), 16, 7) == want
    assert kvpool.hash_chain(range(1000, 1064), 16, 7) == want


@pytest.mark.parametrize("tokens,error,match", [
    ([1, -1], OverflowError, r"token 1 \(-1\) is not an int in \[0, 2\*\*32\)"),
    ([2**32], OverflowError, r"token 0 \(4294967296\)"),
    (["a"], OverflowError, "token 0 .'a'. is not an int"),
    (array.array("i", [5, -3]), OverflowError, "token id -3 is outside"),
    (array.array("q", [2**40]), OverflowError, "outside"),
    (array.array("d", [1.0]), TypeError, "format 'd'"),
    (5, TypeError, "tokens must be a sequence"),
])
def test_bad_tokens(tokens, error, match):
    with pytest.raises(error, match=match):
        kvpool.hash_chain(tokens, 16, 0)


def test_hash_chain_bad_block_tokens():
    with pytest.raises(ValueError, match="block_tokens must be > 0"):
        kvpool.hash_chain([1, 2], 0, 0)


def test_namespace_hash_chain(ns):
    tokens = list(range(64))
    assert ns.hash_chain(tokens) == kvpool.hash_chain(tokens, ns.block_tokens, ns.seed)
