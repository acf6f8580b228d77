// SPDX-License-Identifier: MIT
// Internals shared by the extension's translation units (not for other
// parts of the package: pool.h is their interface).
#pragma once

#include "pool.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvpool_py {

/* Calls over at least this many blocks run without the GIL; below it the
 * cost of dropping and taking the GIL back outweighs what it frees. */
inline constexpr size_t kGilFreeMinBlocks = 16;

/* Each item of a sequence (or iterable) of keys, as to_key converts it. */
std::vector<kv_key> to_keys(py::handle seq);
/* A list of the int forms of keys. */
py::list keys_to_list(const kv_key *keys, size_t n);
/* Token ids from a sequence of ints or a buffer of 4- or 8-byte integers;
 * OverflowError for one outside [0, 2**32). */
std::vector<uint32_t> to_tokens(py::handle obj);
/* Token ids of n blocks for the pool's change feed: None (none recorded), or
 * a sequence of n items, each None or token ids as to_tokens takes them.
 * ValueError when the count differs. */
std::vector<std::vector<uint32_t>> to_block_tokens(py::handle obj, size_t n);
/* kv_hash_chain over tokens (without the GIL for many blocks). */
std::vector<kv_key> hash_chain_keys(const std::vector<uint32_t> &tokens, uint32_t block_tokens,
                                    uint64_t seed);

/* The PoolState of a View, Reservation or BlockMemory object, or nullptr
 * (no error set) for other objects. */
PoolState *view_pool_state(PyObject *obj) noexcept;

/* pool.namespace(arg): register the namespace of a kvpool.Manifest, or look
 * up a registered one by id (int). */
py::object make_namespace(py::object pool_obj, py::handle arg);

/* Release every View of an iterable (None skipped); nullptr with an error. */
PyObject *view_release_all(PyObject *views) noexcept;

} // namespace kvpool_py
