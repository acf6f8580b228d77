# SPDX-License-Identifier: MIT
"""The exception hierarchy: libkv's -errno codes as kvpool.Error classes
carrying the code and libkv's message."""

import errno

import pytest

import kvpool

CLASSES = {
    kvpool.PoolFullError: [errno.ENOSPC],
    kvpool.NotFoundError: [errno.ENOENT],
    kvpool.BusyError: [errno.EBUSY],
    kvpool.NoPinsError: [errno.ENOBUFS],
    kvpool.TooLargeError: [errno.EMSGSIZE],
    kvpool.BadRegionError: [errno.EPROTO, errno.EBADMSG, errno.ENODATA],
    kvpool.TooManyClientsError: [errno.EUSERS],
}


def test_hierarchy():
    assert issubclass(kvpool.Error, OSError)
    for cls in CLASSES:
        assert issubclass(cls, kvpool.Error), cls
        assert cls.__module__ == "kvpool"
        assert cls.__doc__
    assert kvpool.Error.__module__ == "kvpool"


@pytest.mark.parametrize("cls", list(CLASSES))
def test_classes_carry_errno_and_message(cls):
    e = cls(CLASSES[cls][0], "what: detail")
    assert e.errno == CLASSES[cls][0]
    assert e.strerror == "what: detail"
    with pytest.raises(kvpool.Error):
        raise e


def test_raised_errors_name_the_call_and_libkv_message(pool_factory, tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 8192)
    with pytest.raises(kvpool.BadRegionError) as ei:
        kvpool.Pool(str(junk))
    e = ei.value
    assert e.errno in CLASSES[kvpool.BadRegionError]
    assert str(e).startswith(f"[Errno {e.errno}] attach {junk}: ")
    assert "expected" in str(e)  # libkv names the value seen and the one expected


def test_unmapped_codes_are_plain_errors(pool_factory):
    with pytest.raises(kvpool.Error) as ei:
        kvpool.create_pool("/dev/shm/kvpool-pytest-einval", 1 << 20, max_clients=1 << 30)
    assert type(ei.value) is kvpool.Error
    assert ei.value.errno == errno.EINVAL
    assert "max_clients" in str(ei.value)


def test_catch_as_oserror(pool_factory):
    with pytest.raises(OSError):
        kvpool.destroy_pool("/dev/shm/kvpool-pytest-never-existed")
