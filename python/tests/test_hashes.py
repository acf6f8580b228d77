# SPDX-License-Identifier: MIT
"""vLLM block hashes computed by libkv (kvpool.vllm_*) against vLLM's own recipe.

The reference below is vLLM's: ``sha256_cbor`` / ``xxhash_cbor`` of
``cbor2.dumps(x, canonical=True)`` (vllm/utils/hashing.py), NONE_HASH =
H(seed) and block hash = H((parent or NONE_HASH, tuple(block tokens),
extra_keys)) (vllm/v1/core/kv_cache_utils.py), computed with Debian's
python3-cbor2, hashlib and python3-xxhash.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

import cbor2
import pytest
import xxhash

import kvpool

ALGOS = ("sha256_cbor", "xxhash_cbor")


def sha256_cbor(x: Any) -> bytes:
    """vLLM's sha256_cbor."""
    return hashlib.sha256(cbor2.dumps(x, canonical=True)).digest()


def xxhash_cbor(x: Any) -> bytes:
    """vLLM's xxhash_cbor."""
    return xxhash.xxh3_128_digest(cbor2.dumps(x, canonical=True))


HASH_FNS: dict[str, Callable[[Any], bytes]] = {
    "sha256_cbor": sha256_cbor,
    "xxhash_cbor": xxhash_cbor,
}


def reference_hashes(
    tokens: Sequence[int],
    block_size: int,
    algo: str,
    seed: str,
    extra_keys: Sequence[Any] | None = None,
    parent: bytes | None = None,
) -> list[bytes]:
    """vLLM's request_block_hasher over full blocks, in plain Python."""
    h = HASH_FNS[algo]
    prev = parent or h(seed)
    out = []
    for i in range(len(tokens) // block_size):
        extra = extra_keys[i] if extra_keys is not None else None
        prev = h((prev, tuple(tokens[i * block_size : (i + 1) * block_size]), extra))
        out.append(prev)
    return out


# ---- The fixed vectors ------------------------------------------------


def test_sha256_cbor_fixed_vectors() -> None:
    root = kvpool.vllm_none_hash("sha256_cbor", "vllm-none-hash")
    assert root.hex() == "9bd96a485ad84efdafb72ee48a1d7a69bcead0f8f0433173941b276b9581eef0"
    assert kvpool.vllm_none_hash("sha256_cbor", "0").hex() == (
        "4e1195df020de59e0d65a33a4279f1183e7ae4e5d980e309f8b55adff2e61c3e"
    )
    (block,) = kvpool.vllm_block_hashes([1, 2, 3, 4], 4, "sha256_cbor", "vllm-none-hash")
    assert block.hex() == "58d0879dff3800f65f8c5fd449d73048c0f7699dd238a03b84b146b151d55111"
    key = kvpool.vllm_key(block)
    assert key & (2**64 - 1) == 9561501211280363793  # vLLM's KV-event form
    assert key == int.from_bytes(block[-16:], "big")


def test_xxhash_cbor_fixed_vectors() -> None:
    root = kvpool.vllm_none_hash("xxhash_cbor", "vllm-none-hash")
    assert root.hex() == "a4e364baa0791a6f63bbf917db9b700d"
    assert kvpool.vllm_none_hash("xxhash_cbor", "0").hex() == "1ebe36576dcb573f26b99533a20aaeca"
    (block,) = kvpool.vllm_block_hashes([1, 2, 3, 4], 4, "xxhash_cbor", "vllm-none-hash")
    assert block.hex() == "47d46a11b8224574dbb8a1b02b1374b7"
    assert kvpool.vllm_key(block) == int.from_bytes(block, "big")


# ---- Defaults: seed and algo ----------------------------------------------------


def test_seed_none_reads_pythonhashseed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    assert kvpool.vllm_none_hash() == sha256_cbor("vllm-none-hash")
    assert kvpool.vllm_block_hashes([7] * 16, 16) == reference_hashes(
        [7] * 16, 16, "sha256_cbor", "vllm-none-hash"
    )
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    assert kvpool.vllm_none_hash() == sha256_cbor("0")
    assert kvpool.vllm_none_hash("xxhash_cbor") == xxhash_cbor("0")
    assert kvpool.vllm_block_hashes([7] * 16, 16) == reference_hashes([7] * 16, 16, "sha256_cbor", "0")
    assert kvpool.vllm_seed_id() == int.from_bytes(sha256_cbor("0")[:8], "big")
    # An explicit seed wins over the environment.
    assert kvpool.vllm_none_hash(seed="vllm-none-hash") == sha256_cbor("vllm-none-hash")


def test_algo_as_manifest_scheme_number() -> None:
    assert kvpool.vllm_none_hash(2, "s") == kvpool.vllm_none_hash("sha256_cbor", "s")
    assert kvpool.vllm_none_hash(3, "s") == kvpool.vllm_none_hash("xxhash_cbor", "s")


def test_seed_id_is_none_hash_prefix() -> None:
    for algo in ALGOS:
        for seed in ("", "0", "vllm-none-hash", "ünïcødé ✓"):
            root = HASH_FNS[algo](seed)
            assert kvpool.vllm_seed_id(algo, seed) == int.from_bytes(root[:8], "big")
    assert kvpool.vllm_seed_id("sha256_cbor", "0") != kvpool.vllm_seed_id("sha256_cbor", "1")
    assert kvpool.vllm_seed_id("sha256_cbor", "0") != kvpool.vllm_seed_id("xxhash_cbor", "0")


# ---- Chains, parents, extra keys -------------------------------------------------


def test_parent_continues_a_chain() -> None:
    tokens = list(range(1000, 1000 + 16 * 10))
    for algo in ALGOS:
        whole = kvpool.vllm_block_hashes(tokens, 16, algo, "s")
        head = kvpool.vllm_block_hashes(tokens[: 16 * 4], 16, algo, "s")
        tail = kvpool.vllm_block_hashes(tokens[16 * 4 :], 16, algo, "s", parent=head[-1])
        assert head + tail == whole
        # A falsy parent means NONE_HASH, as in vLLM's hash_block_tokens.
        assert kvpool.vllm_block_hashes(tokens, 16, algo, "s", parent=b"") == whole
        # Any bytes-like parent.
        assert kvpool.vllm_block_hashes(tokens[64:], 16, algo, "s", parent=bytearray(head[-1])) == tail
        assert kvpool.vllm_block_hashes(tokens[64:], 16, algo, "s", parent=memoryview(head[-1])) == tail


def test_partial_block_and_short_inputs() -> None:
    assert kvpool.vllm_block_hashes([], 16) == []
    assert kvpool.vllm_block_hashes(list(range(15)), 16) == []
    assert len(kvpool.vllm_block_hashes(list(range(33)), 16)) == 2
    # Extra keys for a partial tail block are allowed and ignored.
    assert kvpool.vllm_block_hashes(list(range(20)), 16, extra_keys=[None, ("x",)]) == (
        kvpool.vllm_block_hashes(list(range(20)), 16)
    )


def test_vllm_style_extra_keys() -> None:
    """Extra keys as generate_block_hash_extra_keys builds them: the LoRA
    name, then (mm identifier, offset in the block) pairs, then the cache
    salt on the first block, then a prompt-embeds digest."""
    tokens = [random.Random(5).randrange(150000) for _ in range(64)]
    emb = hashlib.sha256(b"embeds").digest()
    extra = [
        ("my-lora", ("img-abc", 3), "salt-1", emb),
        ("my-lora", ("img-abc", -13), ("img-def", 9), emb),
        ("my-lora", ("img-def", -7), emb),
        None,
    ]
    for algo in ALGOS:
        got = kvpool.vllm_block_hashes(tokens, 16, algo, "42", extra_keys=extra)
        assert got == reference_hashes(tokens, 16, algo, "42", extra)
        assert got != kvpool.vllm_block_hashes(tokens, 16, algo, "42")


def test_tokens_from_other_sequences() -> None:
    np = pytest.importorskip("numpy")
    tokens = list(range(70000, 70000 + 48))
    want = kvpool.vllm_block_hashes(tokens, 16)
    assert kvpool.vllm_block_hashes(tuple(tokens), 16) == want
    assert kvpool.vllm_block_hashes(np.array(tokens, dtype=np.int64), 16) == want
    assert kvpool.vllm_block_hashes(range(70000, 70000 + 48), 16) == want


# ---- Keys and namespaces in a pool ------------------------------------------------


def test_hashes_key_blocks_in_a_vllm_namespace(pool: kvpool.Pool) -> None:
    """A manifest of a vLLM scheme registers; hashes and their vllm_key ints
    name the same blocks; another seed or algorithm is another namespace."""
    hs = kvpool.vllm_block_hashes(list(range(64)), 16, "sha256_cbor", "0")
    keys = [kvpool.vllm_key(h) for h in hs]
    assert [kvpool.to_key(h) for h in hs] == keys
    ns = pool.namespace(
        kvpool.Manifest("m", 16, hash_scheme="sha256_cbor", hash_seed=kvpool.vllm_seed_id("sha256_cbor", "0"))
    )
    assert ns.manifest.hash_scheme == 2
    for i, h in enumerate(hs):
        assert ns.put(h, bytes([i]) * 64)
    assert ns.match_prefix(keys) == 4
    view = ns.get(keys[2])
    assert view is not None
    with view:
        assert bytes(view) == bytes([2]) * 64
    others = [
        kvpool.Manifest("m", 16, hash_scheme="sha256_cbor", hash_seed=kvpool.vllm_seed_id("sha256_cbor", "1")),
        kvpool.Manifest("m", 16, hash_scheme="xxhash_cbor", hash_seed=kvpool.vllm_seed_id("xxhash_cbor", "0")),
    ]
    for m in others:
        other = pool.namespace(m)
        assert other.id != ns.id
        assert other.match_prefix(keys) == 0


# ---- Randomized comparison with cbor2 + hashlib / xxhash -------------------------


def random_extra_item(rng: random.Random, depth: int = 0) -> Any:
    """A value of a type vLLM's extra keys hold, or one cbor2 encodes alike."""
    kind = rng.randrange(12 if depth < 3 else 9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randrange(-30, 300)
    if kind == 3:
        edge = rng.choice([23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64, 2**100])
        return rng.choice([edge, -edge, -edge - 1, edge + 1])
    if kind == 4:
        return rng.randrange(-(2**70), 2**70)
    if kind == 5:
        alphabet = "abcXYZ019 _-/.é✓\U0001f600"
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 23, 24, 40, 300])))
    if kind == 6:
        return rng.randbytes(rng.choice([0, 1, 16, 23, 24, 32, 255, 256]))
    if kind == 7:
        return bytearray(rng.randbytes(rng.randrange(0, 40)))
    if kind == 8:
        return f"mm-{rng.randrange(10**6):x}"
    seq = [random_extra_item(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 3, 24, 25]))]
    return tuple(seq) if kind != 11 else seq


def random_extra_keys(rng: random.Random, n_blocks: int) -> list[Any] | None:
    if rng.random() < 0.3:
        return None
    keys: list[Any] = []
    for _ in range(n_blocks + rng.randrange(2)):
        if rng.random() < 0.4:
            keys.append(None)
        else:
            keys.append(tuple(random_extra_item(rng, 1) for _ in range(rng.randrange(1, 5))))
    return keys


def test_randomized_against_cbor2() -> None:
    rng = random.Random(0x6B76)
    cases = 0
    for _ in range(600):
        algo = rng.choice(ALGOS)
        block_size = rng.choice([1, 2, 3, 7, 16, 16, 16, 32, 33, 64])
        n_tokens = rng.randrange(0, 8 * block_size + block_size)
        vocab = rng.choice([24, 256, 65536, 150000, 2**32])
        tokens = [rng.randrange(vocab) for _ in range(n_tokens)]
        seed = rng.choice(["vllm-none-hash", "0", "", str(rng.randrange(2**32)), "sëed✓" * rng.randrange(1, 9)])
        n_blocks = n_tokens // block_size
        extra = random_extra_keys(rng, n_blocks)
        parent = None
        if rng.random() < 0.2:
            parent = rng.randbytes(rng.choice([16, 32]))
        got = kvpool.vllm_block_hashes(tokens, block_size, algo, seed, extra_keys=extra, parent=parent)
        want = reference_hashes(tokens, block_size, algo, seed, extra, parent)
        assert got == want, (algo, block_size, tokens, seed, extra, parent)
        for h in got:
            assert kvpool.vllm_key(h) == int.from_bytes(h[-16:], "big")
        cases += 1
    assert cases == 600


def test_long_chain_matches_and_threads_agree() -> None:
    """A chain long enough to be hashed without the GIL, from 4 threads."""
    rng = random.Random(9)
    tokens = [rng.randrange(150000) for _ in range(16 * 1000)]
    want = {algo: reference_hashes(tokens, 16, algo, "vllm-none-hash") for algo in ALGOS}
    results: list[bool] = []

    def work(algo: str) -> None:
        for _ in range(5):
            results.append(kvpool.vllm_block_hashes(tokens, 16, algo, "vllm-none-hash") == want[algo])

    threads = [threading.Thread(target=work, args=(ALGOS[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 20


# ---- Bad input --------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["sha256", "xxhash", "SHA256_CBOR", "", 1, 4, 0])
def test_unknown_algo(algo: Any) -> None:
    with pytest.raises(ValueError, match="algo"):
        kvpool.vllm_block_hashes([1, 2], 1, algo)
    with pytest.raises(ValueError, match="algo"):
        kvpool.vllm_none_hash(algo)
    with pytest.raises(ValueError, match="algo"):
        kvpool.vllm_seed_id(algo, "0")


def test_wrong_types() -> None:
    with pytest.raises(TypeError):
        kvpool.vllm_none_hash(None)
    with pytest.raises(TypeError):
        kvpool.vllm_none_hash(True)
    with pytest.raises(TypeError):
        kvpool.vllm_none_hash("sha256_cbor", 0)
    with pytest.raises(TypeError):
        kvpool.vllm_block_hashes(5, 1)
    with pytest.raises(TypeError):
        kvpool.vllm_block_hashes(["1"], 1)
    with pytest.raises(TypeError):
        kvpool.vllm_block_hashes([1, 2], 1, parent="not bytes")


@pytest.mark.parametrize("block_size", [0, -1, 2**32])
def test_bad_block_size(block_size: int) -> None:
    with pytest.raises(ValueError, match="block_size"):
        kvpool.vllm_block_hashes([1, 2, 3, 4], block_size)


@pytest.mark.parametrize("token", [-1, 2**32, 2**64])
def test_token_out_of_range(token: int) -> None:
    with pytest.raises(ValueError, match=r"tokens\[2\]"):
        kvpool.vllm_block_hashes([1, 2, token, 4], 2)


def test_too_few_extra_keys() -> None:
    with pytest.raises(ValueError, match="extra_keys has 1 entries for 2"):
        kvpool.vllm_block_hashes([1, 2, 3, 4], 2, extra_keys=[None])
    with pytest.raises(TypeError):
        kvpool.vllm_block_hashes([1, 2, 3, 4], 2, extra_keys=5)


@pytest.mark.parametrize("item", [1.5, {"a": 1}, memoryview(b"x"), object(), {1, 2}])
def test_unencodable_extra_key(item: Any) -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        kvpool.vllm_block_hashes([1, 2], 2, extra_keys=[("ok", item)])


def test_extra_keys_nested_too_deep() -> None:
    ok: Any = None
    for _ in range(64):
        ok = (ok,)
    kvpool.vllm_block_hashes([1, 2], 2, extra_keys=[ok])  # 64 levels below the item: accepted
    with pytest.raises(ValueError, match="deeper"):
        kvpool.vllm_block_hashes([1, 2], 2, extra_keys=[(ok,)])


def test_unencodable_text() -> None:
    with pytest.raises(UnicodeEncodeError):
        kvpool.vllm_block_hashes([1, 2], 2, extra_keys=[("\ud800",)])
    with pytest.raises(UnicodeEncodeError):
        kvpool.vllm_none_hash("sha256_cbor", "\ud800")


@pytest.mark.parametrize("length", [0, 15, 17, 20, 31, 36])
def test_vllm_key_length(length: int) -> None:
    with pytest.raises(ValueError, match="16 or 32 bytes"):
        kvpool.vllm_key(bytes(length))
