// SPDX-License-Identifier: MIT
//
// The JSON documents the control socket returns (shapes documented in
// uapi/kvpool/control.h next to each op) and the Prometheus exposition.
// Everything here reads pools; nothing changes them.
#pragma once

#include "pool_manager.h"

#include <nlohmann/json.hpp>

namespace kv::daemon {

struct DaemonCounters {
    uint64_t start_ns = 0;
    uint64_t requests = 0;
    uint64_t request_errors = 0;
    uint64_t reaped_clients = 0;
    uint64_t background_evicted_bytes = 0;
};

nlohmann::json pool_json(const Pool &p);
// One page of ENTRIES from table index cursor (<= n_entries): at most
// max_rows rows (0 or more than KV_CTL_ENTRIES_MAX_ROWS: that many).
nlohmann::json entries_json(const Pool &p, uint64_t cursor, uint64_t max_rows);
nlohmann::json clients_json(const Pool &p);
nlohmann::json health_json(const Pool &p);
nlohmann::json daemon_json(const DaemonCounters &c);
// Prometheus text exposition format 0.0.4.
std::string prometheus_text(const PoolManager &pm, const DaemonCounters &c);

// Bytes of committed, unpinned entries: what `evict --percent` is a share of.
uint64_t unpinned_bytes(const Pool &p);
uint64_t rss_bytes();
uint64_t realtime_ns();

} // namespace kv::daemon
