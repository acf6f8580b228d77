// SPDX-License-Identifier: MIT
/*
 * The C++ side of the Python package kvpool, shared by the translation units
 * of the extension kvpool._kvpool (module.cc calls each TU's init_<name>).
 *
 * Every function here runs with the GIL held. Functions that return a
 * Python error through pybind11 throw py::error_already_set (or a pybind11
 * exception); the *_noexcept forms return false / nullptr with the Python
 * error set, for CPython slots that must not throw.
 *
 * Lifetimes (why no pointer into a pool can dangle):
 *  - A kvpool.Pool owns one libkv client (struct kv_pool). Every object that
 *    needs the mapping (a Namespace, a View, a Reservation, the memory
 *    object behind an exported buffer, a call running without the GIL)
 *    holds a reference to the Pool object, and pins, reservations and
 *    GIL-free calls are counted in PoolState::holds. Pool.detach() marks
 *    the pool closed at once; libkv's detach (which unmaps) runs when the
 *    last hold is dropped.
 *  - A View owns its pin until a buffer is first exported from it; then the
 *    pin moves to a kvpool._kvpool.BlockMemory object, which is the
 *    exporter every memoryview, numpy array or torch tensor refers to. The
 *    pin is released when the View is released (or collected) AND the last
 *    of those is gone.
 *  - A Reservation's memory is a BlockMemory too; commit() refuses
 *    (BufferError) while anything else refers to it, and an abort (or the
 *    collection of an uncommitted Reservation) frees the space only when
 *    the last buffer over it is gone.
 */
#pragma once

#include <cstdint>
#include <kv/kv.h>
#include <pybind11/pybind11.h>
#include <string>

namespace kvpool_py {

namespace py = pybind11;

/* ---- Errors --------------------------------------------------------------- */

/*
 * Raise the kvpool exception for libkv return code rc (< 0): the class
 * follows the errno (PoolFullError for -ENOSPC, NotFoundError for -ENOENT,
 * ...; kvpool.Error otherwise), .errno is -rc, and the message is
 * "<what>: <detail>" when detail (an errbuf libkv filled) is non-empty,
 * "<what>: <kv_strerror(rc)>" otherwise.
 */
[[noreturn]] void raise_kv(int rc, const char *what);
[[noreturn]] void raise_kv(int rc, const char *what, const char *detail);
/* The same, setting the Python error and returning nullptr. */
PyObject *set_kv_error(int rc, const char *what, const char *detail = nullptr) noexcept;

/* ---- Keys ----------------------------------------------------------------- */

/*
 * A kvpool key from an int in [0, 2**128) (hi << 64 | lo; any object with
 * __index__) or a bytes-like object of 16 or 32 bytes (an engine block hash:
 * its last 16 bytes, big-endian). TypeError, OverflowError or ValueError
 * otherwise.
 */
kv_key to_key(py::handle obj);
bool to_key_noexcept(PyObject *obj, kv_key *out) noexcept;
/* The int form of a key (new reference; nullptr with an error set). */
PyObject *key_to_int(kv_key key) noexcept;
py::object key_object(kv_key key);

/* ---- Pools ---------------------------------------------------------------- */

/*
 * Incremented in the child of every fork(). A libkv client belongs to the
 * process that attached: a child that inherits a kvpool.Pool must neither
 * use it nor release its pins or slot (they are the parent's), so such a
 * pool is "foreign" there: every call raises ValueError and releases are
 * skipped. The child attaches again to use the pool.
 */
extern uint64_t fork_generation;

/* The C++ object of a kvpool.Pool. */
struct PoolState {
    kv_pool *pool = nullptr; /* null once libkv's detach ran */
    std::string path;
    /* The attached file's st_dev and st_ino, from an fstat of the descriptor
     * the mapping was made from: the file this client maps, whatever path
     * names now. While the mapping lives the file's inode is not freed, so
     * no other file on that filesystem can be given the same pair. */
    uint64_t file_dev = 0;
    uint64_t file_ino = 0;
    uint64_t holds = 0;                    /* pins, reservations and GIL-free calls outstanding */
    bool closed = false;                   /* detach() was called: no new operations */
    uint64_t generation = fork_generation; /* fork_generation at attach */

    /* Inherited through fork(): the parent's client, not ours. */
    bool foreign() const noexcept { return generation != fork_generation; }
    /* The client to release pins and reservations through, or nullptr in a
     * forked child (whose releases would be the parent's). */
    kv_pool *owned() const noexcept { return foreign() ? nullptr : pool; }

    PoolState() = default;
    PoolState(const PoolState &) = delete;
    PoolState &operator=(const PoolState &) = delete;
    ~PoolState();

    /* ValueError if closed or foreign. */
    void check_open() const;
    bool check_open_noexcept() const noexcept;
    void hold() noexcept { ++holds; }
    /* Drop a hold; the last one after detach() detaches from libkv. */
    void unhold() noexcept;
    /* Mark closed; detach now if nothing is held. */
    void detach() noexcept;
};

/* The libkv client of a kvpool.Pool, Namespace, View or Reservation
 * (ValueError if that pool was detached, TypeError for other objects). */
kv_pool *pool_handle(py::handle obj);
/* The PoolState of a kvpool.Pool object (TypeError otherwise). */
PoolState &pool_state(py::handle pool_obj);

/*
 * Keeps the pool attached while a call runs without the GIL: construct it
 * with the GIL held, then release the GIL (py::gil_scoped_release), and let
 * it be destroyed after the GIL is taken back.
 */
class PoolHold {
  public:
    explicit PoolHold(PoolState &ps) : ps_(ps) { ps_.hold(); }
    ~PoolHold() { ps_.unhold(); }
    PoolHold(const PoolHold &) = delete;
    PoolHold &operator=(const PoolHold &) = delete;

  private:
    PoolState &ps_;
};

/* ---- Namespaces ----------------------------------------------------------- */

/* The C++ object of a kvpool.Namespace. */
struct Namespace {
    py::object pool_obj; /* the kvpool.Pool */
    PoolState *pool;
    uint32_t id;
    uint64_t seed;
    kv_manifest manifest;
};

/* The Namespace behind a kvpool.Namespace object (TypeError otherwise). */
Namespace &namespace_of(py::handle ns_obj);

/* ---- Views and reservations ----------------------------------------------- */

/*
 * Wrap a pin this code holds (from kv_get or kv_match_prefix on pool) into
 * a new kvpool.View, which then owns it. On failure the pin is released
 * and nullptr returned with the error set.
 */
PyObject *view_new(PyObject *pool_obj, PoolState &ps, const kv_view &view, kv_key key) noexcept;
/* The pinned view of a live kvpool.View (ValueError once released,
 * TypeError for other objects). Valid while the View is not released. */
const kv_view &view_of(py::handle view_obj);
/* Wrap a reservation this code holds into a new kvpool.Reservation, which
 * then owns it (aborts it on failure). */
py::object reservation_new(py::handle pool_obj, PoolState &ps, const kv_reservation &r, kv_key key);
/* The open reservation of a kvpool.Reservation (ValueError once committed
 * or aborted, TypeError for other objects). */
kv_reservation &reservation_of(py::handle res_obj);

/* ---- Module parts (module.cc calls these in order) ------------------------ */

void init_errors(py::module_ &m);
void init_keys(py::module_ &m);
void init_pool(py::module_ &m);
void init_views(py::module_ &m);
void init_namespace(py::module_ &m);
void init_hashes(py::module_ &m);
void init_paged(py::module_ &m);
void init_remote(py::module_ &m);

} // namespace kvpool_py
