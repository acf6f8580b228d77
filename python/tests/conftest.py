# SPDX-License-Identifier: MIT
"""Shared fixtures: pools in /dev/shm with unique names, removed even when a
test fails; a namespace in such a pool."""

import os
import uuid
from typing import Callable, Iterator

import pytest

import kvpool

SHM = "/dev/shm"


@pytest.fixture
def pool_factory() -> Iterator[Callable[..., str]]:
    """create(size=..., **create_pool options) -> path of a new pool file;
    every file made is removed at teardown."""
    paths: list[str] = []

    def create(size: int = 64 << 20, **opts: object) -> str:
        path = os.path.join(SHM, f"kvpool-pytest-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        paths.append(path)
        kvpool.create_pool(path, size, **opts)
        return path

    yield create
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@pytest.fixture
def pool_path(pool_factory: Callable[..., str]) -> str:
    return pool_factory()


@pytest.fixture
def pool(pool_path: str) -> Iterator[kvpool.Pool]:
    p = kvpool.Pool(pool_path)
    yield p
    p.detach()


@pytest.fixture
def manifest() -> kvpool.Manifest:
    return kvpool.Manifest("test-model", 16, dtype="fp16")


@pytest.fixture
def ns(pool: kvpool.Pool, manifest: kvpool.Manifest) -> kvpool.Namespace:
    return pool.namespace(manifest)
