// SPDX-License-Identifier: MIT
//
// The JSON documents the control socket returns (shapes documented in
// uapi/kvpool/control.h next to each op) and the Prometheus exposition.
// Everything here reads pools; nothing changes them.
#pragma once

#include "pool_manager.h"

#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace kv::daemon {

// Persists or restores of one pool since the daemon started.
struct SnapshotTotals {
    uint64_t ok = 0, failed = 0;
    uint64_t last_ok_ns = 0; // CLOCK_REALTIME when the last successful one finished (0: none)
    uint64_t seen_ns = 0;    // finished_ns of the last run counted
};

struct DaemonCounters {
    uint64_t start_ns = 0;
    uint64_t requests = 0;
    uint64_t request_errors = 0;
    uint64_t reaped_clients = 0;
    uint64_t background_evicted_bytes = 0;
    std::map<std::string, SnapshotTotals> persists, restores; // by pool name
};

// Count the persists and restores that finished since the last call (each
// pool's last_persist and last_restore, told apart by finished_ns). Called
// wherever runs end: after the pools are opened, after finished jobs are
// collected, after a reload or a create, and before metrics are rendered.
void count_snapshot_runs(const PoolManager &pm, DaemonCounters &c);

nlohmann::json pool_json(const Pool &p);
// What a peer that may not read the pool (neither root, nor the pool's
// group, nor the admin group) learns of it from LIST, STATUS and STATS:
// {"name", "state", "group", "restricted": true}. Its usage, clients, keys,
// namespaces, paths and counters are left out (doc/security.md).
nlohmann::json public_pool_json(const Pool &p);
// One page of ENTRIES from table index cursor (<= n_entries): at most
// max_rows rows (0 or more than KV_CTL_ENTRIES_MAX_ROWS: that many).
nlohmann::json entries_json(const Pool &p, uint64_t cursor, uint64_t max_rows);
nlohmann::json clients_json(const Pool &p);
nlohmann::json health_json(const Pool &p);
nlohmann::json daemon_json(const DaemonCounters &c);
// Prometheus text exposition format 0.0.4.
std::string prometheus_text(const PoolManager &pm, DaemonCounters &c);

// Bytes of committed, unpinned entries: what `evict --percent` is a share of.
uint64_t unpinned_bytes(const Pool &p);
uint64_t rss_bytes();

} // namespace kv::daemon
