// SPDX-License-Identifier: MIT
//
// kvpoold's TOML config parser (daemon/config.h) on arbitrary text: it must
// return a config or an error message, never crash, hang or throw. A config
// it accepts must keep every promise config.h makes about the values (so the
// daemon can apply it without checking again), and its metrics string must
// parse again with parse_metrics. The raw bytes also go to parse_metrics
// alone, the entry point the metrics server calls.
#include "config.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <kvpool/region.h>
#include <set>
#include <string>
#include <string_view>

namespace {

using kv::daemon::DaemonConfig;
using kv::daemon::PoolConfig;

[[noreturn]] void fail(const std::string &what) {
    fprintf(stderr, "fuzz_config: accepted config breaks a promise: %s\n", what.c_str());
    abort();
}

void check_path(const std::string &key, const std::string &v, bool may_be_empty) {
    if (v.empty() && may_be_empty) return;
    if (v.empty() || v.front() != '/') fail(key + " not absolute: \"" + v + "\"");
}

bool valid_name(const std::string &n) {
    if (n.empty() || n.size() > 63 || n == "." || n == "..") return false;
    for (char c : n)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    return true;
}

void check_config(const DaemonConfig &cfg) {
    check_path("control_socket", cfg.control_socket, false);
    check_path("shm_dir", cfg.shm_dir, false);
    check_path("hugepage_dir", cfg.hugepage_dir, false);
    check_path("state_dir", cfg.state_dir, false);
    if (cfg.reap_interval_ms < 10 || cfg.reap_interval_ms > 1000)
        fail("reap_interval_ms " + std::to_string(cfg.reap_interval_ms));
    if (cfg.evict_interval_ms < 10 || cfg.evict_interval_ms > 10000)
        fail("evict_interval_ms " + std::to_string(cfg.evict_interval_ms));
    if (!cfg.metrics.empty() && !kv::daemon::parse_metrics(cfg.metrics))
        fail("metrics \"" + cfg.metrics + "\" does not parse again");
    std::set<std::string> names;
    for (const PoolConfig &p : cfg.pools) {
        if (!valid_name(p.name)) fail("pool name \"" + p.name + "\"");
        if (!names.insert(p.name).second) fail("duplicate pool name \"" + p.name + "\"");
        if (p.size < kv::daemon::kMinPoolSize) fail("pool size " + std::to_string(p.size));
        if (uint32_t(p.hugepages) > 2) fail("hugepages " + std::to_string(uint32_t(p.hugepages)));
        if (p.numa_node < kv::daemon::kNumaLocal) fail("numa_node " + std::to_string(p.numa_node));
        if (p.mode > 07777) fail("mode " + std::to_string(p.mode));
        if (!(p.low_watermark > 0 && p.low_watermark < p.high_watermark && p.high_watermark <= 1))
            fail("watermarks " + std::to_string(p.low_watermark) + " " +
                 std::to_string(p.high_watermark));
        if (p.slab_size && (p.slab_size & (p.slab_size - 1) || p.slab_size < (64u << 10) ||
                            p.slab_size > (1ull << 30)))
            fail("slab_size " + std::to_string(p.slab_size));
        if (p.max_clients > KV_MAX_CLIENTS) fail("max_clients " + std::to_string(p.max_clients));
        check_path("snapshot_dir", p.snapshot_dir, false);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string_view text(reinterpret_cast<const char *>(data), size);
    auto cfg = kv::daemon::parse_config(text, "fuzz.toml");
    if (cfg) {
        check_config(*cfg);
        const std::string d = kv::daemon::describe(*cfg);
        if (d.empty()) fail("describe() is empty");
    } else if (cfg.error().empty()) {
        fail("an error without a message");
    }
    auto ep = kv::daemon::parse_metrics(text);
    if (!ep && ep.error().empty()) fail("parse_metrics: an error without a message");
    return 0;
}
