// SPDX-License-Identifier: MIT
//
// Entry-table inspection beyond the public kv_pool_entries, for kvpoold
// (which links libkv's objects): a scan bounded in table slots, so that one
// call's work is bounded however large and sparse the table is. kvpoold
// pages `kvctl entries` through it (uapi/kvpool/control.h, ENTRIES).
#pragma once

#include <cstddef>
#include <cstdint>
#include <kv/kv.h>

namespace kv::detail {

// kv_pool_entries over the table indexes [*cursor, end) only (end is
// clamped to n_entries): copies out up to max rows of in-use entries and
// advances *cursor past the last index examined, so *cursor < end on return
// only when max rows were written. Returns the number of rows or -EINVAL.
int pool_entries_upto(kv_pool *p, uint64_t *cursor, uint64_t end, kv_entry_info *out,
                      size_t max) noexcept;

// The eviction hints of entry index (PROTOCOL.md section 10), as they are
// now: rank (the access tick in LRU, PRIORITY and PREFIX pools, the LFU
// count in LFU pools, the reserve tick in FIFO pools) and the CLOCK
// reference bit. Read relaxed, after the row: hints only, and they may
// already belong to the entry's next life if it was recycled since.
struct EntryHints {
    uint64_t rank;
    uint32_t referenced;
};
EntryHints entry_hints(kv_pool *p, uint32_t index) noexcept;

// The access clock ranks are stamped with (an invariant CPU counter, only
// compared, never converted by libkv).
uint64_t access_tick() noexcept;

} // namespace kv::detail
