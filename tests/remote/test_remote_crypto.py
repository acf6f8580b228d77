# SPDX-License-Identifier: MIT
"""Encrypted remote values end to end: two kvpoolds sharing a pool key.

A 3-master Redis Cluster and two kvpoolds (hosts A and B) whose pools have
[pool.encryption] with the same key "k1" (key files of mode 0600) and a
remote tier on the cluster. A's blocks are sealed on upload; B fetches them
byte-exact and what Redis holds is ciphertext. Then what B must refuse,
each a counted rejection by reason with nothing committed: plaintext
written under an encrypted block's Redis key, a key id B does not have,
the wrong key under the right id. Last, a rotation: A seals with "k2" and
keeps "k1", B has both and reads values of either.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from redis_cluster import RedisCluster  # noqa: E402
from test_remote_tier import (BLOCK, Host, assert_clean, fetch, put_chain,  # noqa: E402
                              read_back, redis_client, redis_key, wait_uploaded)

HEADER = 128  # KV_REMOTE_HEADER_SIZE_V1
CRYPTO = 128  # KV_REMOTE_CRYPTO_SIZE_V1
F_ENCRYPTED = 1  # KV_REMOTE_F_ENCRYPTED


def key_file(d: Path, name: str, seed: int) -> Path:
    """A pool key as `openssl rand -hex 32` writes it, mode 0600."""
    p = d / f"{name}.key"
    p.write_text(bytes((seed * 37 + i * 11 + 1) & 0xFF for i in range(32)).hex() + "\n")
    p.chmod(0o600)
    return p


def encryption_table(current: str, keys: list[tuple[str, Path]]) -> str:
    s = f'\n[pool.encryption]\nkey = "{current}"\n'
    for kid, path in keys:
        s += f'[[pool.encryption.keys]]\nid = "{kid}"\nfile = "{path}"\n'
    return s


class CryptHost(Host):
    """A Host whose pool is encrypted; its snapshots are not at issue here."""

    def __init__(self, workdir: Path, tag: str, seeds: list[str], current: str,
                 keys: list[tuple[str, Path]]) -> None:
        super().__init__(workdir, tag, seeds)
        text = self.config.read_text().replace(
            "persist_on_stop = true\nrestore_on_start = true\n",
            "persist_on_stop = false\nrestore_on_start = false\n")
        text = text.replace('log_level = "debug"\n',
                            f'log_level = "debug"\nmetrics = "unix:{workdir}/metrics"\n')
        self.metrics_sock = workdir / "metrics"
        self.base = text
        self.config.write_text(text + encryption_table(current, keys))

    def metrics(self) -> str:
        """The Prometheus text of the unix-socket metrics endpoint."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.metrics_sock))
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode(errors="replace")

    def rekey(self, current: str, keys: list[tuple[str, Path]]) -> None:
        """Reload with other keys and wait for the tier to restart (its
        counters start again from zero: the caller made one fetch before)."""
        assert self.remote()["fetches"] > 0
        self.config.write_text(self.base + encryption_table(current, keys))
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            r = self.remote()
            if r.get("enabled") and r["fetches"] == 0:
                assert r["encrypted"] and r["key"] == current, r
                return
            assert time.monotonic() < deadline, r
            time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: Any) -> Any:
    if not os.path.exists("/usr/bin/redis-server"):
        pytest.skip("redis-server is not installed")
    base = tmp_path_factory.mktemp("remote-crypto")
    keys = base / "keys"
    keys.mkdir(mode=0o700)
    k = {"k1": key_file(keys, "k1", 1), "k1-wrong": key_file(keys, "k1-wrong", 2),
         "k2": key_file(keys, "k2", 3), "kx": key_file(keys, "kx", 4)}
    with RedisCluster() as rc:
        tag = f"{os.getpid()}-rcrypt"
        a = CryptHost(base / "a", tag + "-a", rc.seeds, "k1", [("k1", k["k1"])])
        b = CryptHost(base / "b", tag + "-b", rc.seeds, "k1", [("k1", k["k1"])])
        try:
            a.start()
            b.start()
            yield rc, a, b, k
        finally:
            a.close()
            b.close()


def all_values(rc: RedisCluster) -> list[bytes]:
    """Every value the cluster holds."""
    client = redis_client(rc)
    out = []
    for i in range(rc.masters):
        for name in rc.cli(i, "--scan", "--pattern", "kvt:*", check=False).split():
            v = client.get(name)
            if v is not None:
                out.append(v)
    return out


def chain_on_a(a: Host, n: int, size: int, seed: int) -> tuple[list[int], list[bytes]]:
    base = a.remote()["uploads"]
    keys, datas = put_chain(a.pool_path, n, size, seed)
    up = wait_uploaded(a, base + n)
    assert up["upload_errors"] == 0, up
    return keys, datas


def key_id_of(value: bytes) -> str:
    return value[HEADER:HEADER + 32].rstrip(b"\0").decode()


def test_round_trip_byte_exact_and_redis_holds_only_ciphertext(world: Any) -> None:
    rc, a, b, _ = world
    ra = a.remote()
    assert ra["encrypted"] is True and ra["key"] == "k1", ra
    text = subprocess.run([str(a.kvctl_binary), "--socket", str(a.sock), "remote", "status",
                           "alpha"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert "sealed with key k1" in text, text
    keys, datas = chain_on_a(a, 8, 64 << 10, 1)
    r = fetch(b, keys)
    assert r["committed"] == 8 and r["fetched"] == 8, r
    assert read_back(b, keys) == datas
    values = all_values(rc)
    assert len(values) >= 8
    blob = b"".join(values)
    for d in datas:
        for off in range(0, len(d) - 32, 4096):
            assert d[off:off + 32] not in blob, f"plaintext at offset {off} is in Redis"
    for v in values:
        (flags,) = struct.unpack_from("<I", v, 12)
        assert flags == F_ENCRYPTED and key_id_of(v) == "k1"
        assert len(v) == HEADER + CRYPTO + (64 << 10)
    assert_clean(b)


def test_plaintext_injected_is_refused(world: Any) -> None:
    import xxhash

    rc, a, b, _ = world
    keys, datas = chain_on_a(a, 6, 8 << 10, 2)
    client = redis_client(rc)
    bad = 3
    k = redis_key(rc, keys[bad])
    sealed = client.get(k)
    # A well-formed plain value for that block: the same namespace and key,
    # its real bytes and their checksum.
    evil = bytearray(sealed[:HEADER])
    struct.pack_into("<I", evil, 12, 0)
    struct.pack_into("<Q", evil, 56, xxhash.xxh3_64_intdigest(datas[bad]))
    client.set(k, bytes(evil) + datas[bad])
    before = b.remote()["rejected"]
    r = fetch(b, keys)
    assert r["committed"] == bad and r["rejected"] == 1, r
    after = b.remote()["rejected"]
    assert after["plaintext"] == before["plaintext"] + 1, (before, after)
    assert read_back(b, keys[:bad]) == datas[:bad]
    assert read_back(b, keys[bad:]) == [None] * (len(keys) - bad)
    line = f'kvpool_remote_rejected_total{{pool="alpha",reason="plaintext"}} {after["plaintext"]}'
    assert line in b.metrics(), line
    assert_clean(b)


def test_unknown_key_id_and_wrong_key_are_counted_misses(world: Any) -> None:
    rc, a, b, k = world
    keys, datas = chain_on_a(a, 4, 8 << 10, 3)
    fetch(b, [12345])  # a miss: B's tier has fetched, its restart shows
    b.rekey("kx", [("kx", k["kx"])])
    r = fetch(b, keys)
    assert r["committed"] == 0 and r["rejected"] == 1, r
    assert b.remote()["rejected"]["key_id"] == 1
    assert read_back(b, keys) == [None] * len(keys)

    b.rekey("k1", [("k1", k["k1-wrong"])])  # the right id, other bytes
    r = fetch(b, keys)
    assert r["committed"] == 0 and r["rejected"] == 1, r
    rb = b.remote()
    assert rb["rejected"]["decrypt"] == 1, rb
    assert "k1" in (rb["last_error"] or ""), rb
    assert read_back(b, keys) == [None] * len(keys)
    assert_clean(b)


def test_rotation_reads_old_and_new_keys(world: Any) -> None:
    rc, a, b, k = world
    old_keys, old_datas = chain_on_a(a, 4, 16 << 10, 4)  # sealed with k1
    fetch(a, [12345])
    a.rekey("k2", [("k1", k["k1"]), ("k2", k["k2"])])
    new_keys, new_datas = chain_on_a(a, 4, 16 << 10, 5)  # sealed with k2
    client = redis_client(rc)
    assert key_id_of(client.get(redis_key(rc, old_keys[0]))) == "k1"
    assert key_id_of(client.get(redis_key(rc, new_keys[0]))) == "k2"
    fetch(b, [12345])
    b.rekey("k1", [("k1", k["k1"]), ("k2", k["k2"])])
    r = fetch(b, old_keys)
    assert r["committed"] == 4, r
    r = fetch(b, new_keys)
    assert r["committed"] == 4, r
    assert read_back(b, old_keys) == old_datas
    assert read_back(b, new_keys) == new_datas
    assert b.remote()["rejected"] == {n: 0 for n in b.remote()["rejected"]}
    assert_clean(b)


def test_engines_on_both_hosts_give_identical_logits(world: Any, tmp_path: Path) -> None:
    from e2e_support import engine, tokens

    rc, a, b, _ = world
    prompt, suffix = tokens(4 * BLOCK + 5, 21), tokens(9, 22)
    base = a.remote()["uploads"]
    stored = engine("store", tmp_path, a.pool_path, [prompt])
    assert stored["stats"][0]["saved_blocks"] >= 4
    wait_uploaded(a, base + 4)
    variant = {"extra": {"remote_fetch": True, "control_socket": str(b.sock)}}
    rb = engine("reuse", tmp_path, b.pool_path, [prompt], suffix=suffix, variant=variant,
                max_tokens=6)
    assert rb["pool"]["stats"]["remote_blocks"] == 4, rb["pool"]["stats"]
    import torch

    assert torch.equal(rb["pool"]["logits"], rb["local"]["logits"]), \
        "host B's logits after an encrypted remote fetch differ from its own computation"
    assert rb["pool"]["tokens"] == rb["full"]["tokens"]
    assert_clean(b)
