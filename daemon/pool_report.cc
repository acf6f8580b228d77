// SPDX-License-Identifier: MIT
#include "pool_report.h"

#include "clock.h"
#include "feed_drain.h"
#include "inspect.h"
#include "kv_events.h"
#include "remote_tier.h"
#include "snapshot_jobs.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <kvpool/control.h>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace kv::daemon {

namespace {

const char *backing_name(uint32_t b) {
    switch (b) {
    case KV_BACKING_SHM:
        return "shm";
    case KV_BACKING_HUGETLBFS:
        return "hugetlbfs";
    case KV_BACKING_MEMFD_HUGETLB:
        return "memfd-hugetlb";
    }
    return "unknown";
}

std::string hex(uint64_t v, int digits) {
    char b[40];
    snprintf(b, sizeof b, "%0*" PRIx64, digits, v);
    return b;
}

std::string comm_of(uint32_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
    std::string s;
    std::getline(f, s);
    return s;
}

const char *entry_state(uint32_t st) {
    switch (st) {
    case KV_ENTRY_RESERVED:
        return "reserved";
    case KV_ENTRY_COMMITTED:
        return "committed";
    default:
        return "dead";
    }
}

// "2024-05-01T12:34:56Z" (UTC) for CLOCK_REALTIME ns; "" for 0.
std::string iso_time(uint64_t ns) {
    if (!ns) return "";
    const time_t t = time_t(ns / 1000000000ULL);
    tm utc{};
    char b[32];
    if (!gmtime_r(&t, &utc) || !strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &utc)) return "";
    return b;
}

template <typename F>
void for_each_entry(kv_pool *h, F &&f) {
    std::vector<kv_entry_info> rows(1024);
    uint64_t cursor = 0;
    const uint64_t n = kv_pool_header(h)->n_entries;
    while (cursor < n) {
        int k = kv_pool_entries(h, &cursor, rows.data(), rows.size());
        if (k < 0) return;
        for (int i = 0; i < k; i++)
            if (!f(rows[size_t(i)])) return;
    }
}

// The access clock's rate, measured against CLOCK_MONOTONIC since the
// daemon started (the clock is a CPU counter of fixed rate; libkv only
// compares its values). 0 until a millisecond has passed.
struct TickSample {
    uint64_t tick, ns;
};
TickSample sample_tick() {
    return {kv::detail::access_tick(), mono_ns()};
}
const TickSample kStartTick = sample_tick();
double ticks_per_second() {
    const TickSample now = sample_tick();
    if (now.ns - kStartTick.ns < 1000000 || now.tick <= kStartTick.tick) return 0;
    return double(now.tick - kStartTick.tick) * 1e9 / double(now.ns - kStartTick.ns);
}

// What the entry's eviction hints say about its use, by policy: the time
// since its last access (LRU, PRIORITY and PREFIX stamp the access clock
// on every get, and at reserve), its LFU count (LFU: commit and accesses,
// aged by the pool's floor), or its CLOCK reference bit (a get since the
// hand last passed). FIFO records no access. null where the policy keeps
// no such thing.
void access_fields(nlohmann::json &row, const Pool &p, uint32_t index, uint64_t now_tick,
                   double rate) {
    const kv::detail::EntryHints h = kv::detail::entry_hints(p.handle, index);
    const uint32_t policy = kv_pool_header(p.handle)->evict_policy;
    const bool stamped =
        policy == KV_EVICT_LRU || policy == KV_EVICT_PRIORITY || policy == KV_EVICT_PREFIX;
    row["rank"] = h.rank;
    row["last_access_s"] = nullptr;
    if (stamped && rate > 0)
        row["last_access_s"] = now_tick > h.rank ? double(now_tick - h.rank) / rate : 0.0;
    row["access_count"] = policy == KV_EVICT_LFU ? nlohmann::json(h.rank) : nlohmann::json(nullptr);
    row["referenced"] =
        policy == KV_EVICT_CLOCK ? nlohmann::json(h.referenced != 0) : nlohmann::json(nullptr);
}

} // namespace

uint64_t rss_bytes() {
    std::ifstream f("/proc/self/statm");
    uint64_t size = 0, rss = 0;
    f >> size >> rss;
    return rss * uint64_t(sysconf(_SC_PAGESIZE));
}

uint64_t unpinned_bytes(const Pool &p) {
    uint64_t sum = 0;
    for_each_entry(p.handle, [&](const kv_entry_info &e) {
        if (e.state == KV_ENTRY_COMMITTED && e.pins == 0) sum += e.length;
        return true;
    });
    return sum;
}

nlohmann::json pool_json(const Pool &p) {
    const kv_region_header *h = kv_pool_header(p.handle);
    kv_stats st{};
    kv_pool_stats(p.handle, &st);
    const uint64_t live = pool_live_bytes(p.handle);
    uint64_t entries = 0, pins = 0;
    for_each_entry(p.handle, [&](const kv_entry_info &e) {
        if (e.state == KV_ENTRY_COMMITTED) entries++;
        pins += e.pins;
        return true;
    });
    const uint64_t gets = st.hits + st.misses;
    char mode[8];
    snprintf(mode, sizeof mode, "%04o", p.cfg.mode);
    nlohmann::json doc = {
        {"name", p.cfg.name},
        {"path", p.path},
        {"size", h->region_size},
        {"capacity", h->data_len},
        {"used_bytes", live},
        {"used_pct", h->data_len ? 100.0 * double(live) / double(h->data_len) : 0.0},
        {"free_bytes", h->data_len - std::min(live, h->data_len)},
        {"entries", entries},
        {"entry_slots", h->n_entries},
        {"bytes_committed", st.bytes_committed},
        {"hits", st.hits},
        {"misses", st.misses},
        {"hit_rate", gets ? double(st.hits) / double(gets) : 0.0},
        {"puts", st.puts},
        {"dedups", st.dedups},
        {"evictions", st.evictions},
        {"removes", st.removes},
        {"pins", pins},
        {"clients", st.clients > 0 ? st.clients - 1 : 0}, // not the daemon's own slot
        {"policy", kv_evict_policy_name(kv_pool_header(p.handle)->evict_policy)},
        {"secure_erase", (h->incompat_features & KV_INCOMPAT_F_SECURE_ERASE) != 0},
        {"page_size", h->page_size},
        {"backing", backing_name(h->backing)},
        {"numa_node", h->numa_node == KV_NUMA_NONE ? -1 : int64_t(h->numa_node)},
        {"group", p.group_name},
        {"mode", mode},
        {"high_watermark", p.cfg.high_watermark},
        {"low_watermark", p.cfg.low_watermark},
        {"origin", p.origin},
        {"state", p.state},
        {"config_differs", p.config_differs},
        {"background_evicted_bytes", p.bg_evicted_bytes},
        {"reaped_clients", p.reaped_clients},
        {"snapshot", snapshot_json(p)},
        {"remote", remote_json(p.cfg.name)},
        {"create_time_ns", h->create_time_ns},
        {"created", iso_time(h->create_time_ns)},
    };
    // The change feed the daemon drains (feed_drain.h), for a pool with one.
    if (h->feed_slots) {
        const FeedDrainer *fd = FeedDrainer::current();
        const FeedCounters fc = fd ? fd->counters(p.cfg.name) : FeedCounters{};
        doc["feed"] = {{"slots", h->feed_slots}, {"drained", fd && fd->active()},
                       {"events", fc.events},    {"records", fc.records},
                       {"resyncs", fc.resyncs},  {"lost", fc.lost},
                       {"head", fc.head},        {"lag", fc.lag}};
    }
    // KV events (kv_events.h): only for a pool with a [pool.events] table.
    if (const KvEventPublisher *ev = KvEventPublisher::current())
        if (nlohmann::json e = ev->status_json(p.cfg.name); !e.is_null()) doc["events"] = e;
    return doc;
}

nlohmann::json public_pool_json(const Pool &p) {
    return {
        {"name", p.cfg.name}, {"state", p.state}, {"group", p.group_name}, {"restricted", true}};
}

// One page of the ENTRIES op (control.h): the scan is bounded in table
// slots, the page in rows and in bytes, so a request costs the same on a
// table of millions as on a small one and its reply always fits a frame.
nlohmann::json entries_json(const Pool &p, uint64_t cursor, uint64_t max_rows) {
    const uint64_t slots = kv_pool_header(p.handle)->n_entries;
    if (max_rows == 0 || max_rows > KV_CTL_ENTRIES_MAX_ROWS) max_rows = KV_CTL_ENTRIES_MAX_ROWS;
    // The rows' share of a frame: what the envelope around them leaves.
    constexpr size_t kRowBytes = KV_CTL_MAX_BODY - sizeof(kv_ctl_response) - 512;
    const uint64_t end = std::min(slots, cursor + KV_CTL_ENTRIES_MAX_SCAN);
    nlohmann::json rows = nlohmann::json::array();
    const uint64_t now = realtime_ns();
    const uint64_t now_tick = kv::detail::access_tick();
    const double rate = ticks_per_second();
    size_t bytes = 0;
    std::vector<kv_entry_info> buf(256);
    uint64_t next = cursor; // the first index not reported
    bool full = false;
    while (!full && next < end) {
        uint64_t at = next;
        const int k = kv::detail::pool_entries_upto(
            p.handle, &at, end, buf.data(), std::min<uint64_t>(buf.size(), max_rows - rows.size()));
        if (k < 0) break;
        for (int i = 0; i < k && !full; i++) {
            const kv_entry_info &e = buf[size_t(i)];
            nlohmann::json row = {
                {"index", e.index},
                {"ns", e.ns},
                {"key", hex(e.key.hi, 16) + hex(e.key.lo, 16)},
                {"length", e.length},
                {"tokens", e.meta.tokens},
                {"priority", e.meta.priority},
                // A string: a JSON number past 2^53 loses digits in most parsers.
                {"user_tag", std::to_string(e.meta.user_tag)},
                {"pins", e.pins},
                {"state", entry_state(e.state)},
                {"checksum", hex(e.checksum, 16)},
                {"age_s", e.commit_ns && now > e.commit_ns ? double(now - e.commit_ns) / 1e9 : 0.0},
            };
            access_fields(row, p, e.index, now_tick, rate);
            const size_t len =
                row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size() + 1;
            if (bytes + len > kRowBytes) {
                full = true;
                next = e.index; // this row leads the next page
                break;
            }
            bytes += len;
            rows.push_back(std::move(row));
            next = uint64_t(e.index) + 1;
            full = rows.size() >= max_rows;
        }
        if (!full) next = at; // every slot up to at was examined
    }
    return {{"pool", p.cfg.name},
            {"entry_slots", slots},
            {"cursor", cursor},
            {"next_cursor", next < slots ? nlohmann::json(next) : nlohmann::json(nullptr)},
            {"truncated", next < slots},
            {"entries", std::move(rows)}};
}

nlohmann::json clients_json(const Pool &p) {
    std::vector<kv_client_info> rows(kv_pool_header(p.handle)->max_clients);
    int n = kv_pool_clients(p.handle, rows.data(), rows.size());
    nlohmann::json out = nlohmann::json::array();
    const uint64_t now = realtime_ns();
    const uint32_t self = kv_pool_client_index(p.handle);
    for (int i = 0; i < n && size_t(i) < rows.size(); i++) {
        const kv_client_info &c = rows[size_t(i)];
        if (c.slot == self) continue; // the daemon's own slot is not a client
        out.push_back({
            {"slot", c.slot},
            {"pid", c.pid},
            {"alive", c.alive != 0},
            {"comm", c.alive ? comm_of(c.pid) : std::string()},
            {"pins", c.pins},
            {"reservations", c.reservations},
            {"bytes_reserved", c.bytes_reserved},
            {"attached_s",
             c.attach_ns && now > c.attach_ns ? double(now - c.attach_ns) / 1e9 : 0.0},
        });
    }
    return {{"pool", p.cfg.name}, {"clients", out}};
}

nlohmann::json health_json(const Pool &p) {
    kv_usage u{};
    std::vector<std::string> problems;
    // Under load a scan sees transitional states; a problem must show in
    // two scans a moment apart to be reported.
    for (int attempt = 0; attempt < 2; attempt++) {
        problems.clear();
        kv_pool_usage(p.handle, &u);
        if (u.orphan_blocks)
            problems.push_back(std::to_string(u.orphan_blocks) +
                               " used blocks owned by no entry or live client");
        if (u.bad_links)
            problems.push_back(std::to_string(u.bad_links) + " index link inconsistencies");
        if (u.unreachable)
            problems.push_back(std::to_string(u.unreachable) +
                               " committed entries not reachable from the index");
        if (problems.empty()) break;
        usleep(20000);
    }
    std::vector<kv_client_info> rows(kv_pool_header(p.handle)->max_clients);
    int n = kv_pool_clients(p.handle, rows.data(), rows.size());
    uint64_t dead = 0;
    for (int i = 0; i < n && size_t(i) < rows.size(); i++)
        dead += rows[size_t(i)].alive ? 0 : 1;
    if (dead) problems.push_back(std::to_string(dead) + " dead clients not yet reaped");
    nlohmann::json usage = {
        {"entries_committed", u.entries_committed},
        {"entries_reserved", u.entries_reserved},
        {"entries_dead", u.entries_dead},
        {"entries_free", u.entries_free},
        {"bytes_committed", u.bytes_committed},
        {"blocks_free", u.blocks_free},
        {"blocks_used", u.blocks_used},
        {"block_bytes_used", u.block_bytes_used},
        {"pins", u.pins},
        {"journal_pins", u.journal_pins},
        {"slabs_free", u.slabs_free},
        {"slabs_active", u.slabs_active},
        {"orphan_blocks", u.orphan_blocks},
        {"bad_links", u.bad_links},
        {"unreachable", u.unreachable},
    };
    // The checks above read the tables, never block data: a byte scribbled
    // into a committed block goes unseen until VERIFY reads it.
    return {{"pool", p.cfg.name},   {"healthy", problems.empty()},
            {"problems", problems}, {"dead_clients", dead},
            {"usage", usage},       {"data_checked", false}};
}

nlohmann::json daemon_json(const DaemonCounters &c) {
    const uint64_t now = realtime_ns();
    return {
        {"version", KVPOOL_VERSION},
        {"pid", getpid()},
        {"uptime_s", now > c.start_ns ? double(now - c.start_ns) / 1e9 : 0.0},
        {"rss_bytes", rss_bytes()},
        {"requests", c.requests},
        {"request_errors", c.request_errors},
        {"reaped_clients", c.reaped_clients},
        {"background_evicted_bytes", c.background_evicted_bytes},
    };
}

void count_snapshot_runs(const PoolManager &pm, DaemonCounters &c) {
    auto count = [](SnapshotTotals &t, const SnapshotRecord &r) {
        if (!r.done || r.finished_ns == t.seen_ns) return;
        t.seen_ns = r.finished_ns;
        if (!r.ok) {
            t.failed++;
            return;
        }
        t.ok++;
        t.last_ok_ns = r.finished_ns;
    };
    for (const auto &p : pm.pools()) {
        count(c.persists[p->cfg.name], p->last_persist);
        count(c.restores[p->cfg.name], p->last_restore);
    }
}

std::string prometheus_text(const PoolManager &pm, DaemonCounters &c) {
    count_snapshot_runs(pm, c);
    std::string out;
    auto metric = [&](const char *name, const char *type, const char *help) {
        out += "# HELP ";
        out += name;
        out += ' ';
        out += help;
        out += "\n# TYPE ";
        out += name;
        out += ' ';
        out += type;
        out += '\n';
    };
    auto sample = [&](const char *name, const std::string &pool, double v) {
        char b[256];
        if (pool.empty())
            snprintf(b, sizeof b, "%s %.17g\n", name, v);
        else
            snprintf(b, sizeof b, "%s{pool=\"%s\"} %.17g\n", name, pool.c_str(), v);
        out += b;
    };
    struct Row {
        std::string name;
        kv_stats st;
        uint64_t live, cap, pins, entries, bg;
        double persist_s, restore_s;
        uint64_t persist_bytes, restore_bytes, persist_failures;
        SnapshotTotals persists, restores;
    };
    std::vector<Row> rows;
    for (const auto &p : pm.pools()) {
        Row r{p->cfg.name,
              {},
              pool_live_bytes(p->handle),
              kv_pool_header(p->handle)->data_len,
              0,
              0,
              p->bg_evicted_bytes,
              p->last_persist.seconds,
              p->last_restore.seconds,
              p->last_persist.bytes,
              p->last_restore.bytes,
              p->last_persist.done && !p->last_persist.ok ? 1u : 0u,
              c.persists[p->cfg.name],
              c.restores[p->cfg.name]};
        kv_pool_stats(p->handle, &r.st);
        for_each_entry(p->handle, [&](const kv_entry_info &e) {
            r.pins += e.pins;
            r.entries += e.state == KV_ENTRY_COMMITTED;
            return true;
        });
        rows.push_back(r);
    }
    auto family = [&](const char *name, const char *type, const char *help, auto get) {
        metric(name, type, help);
        for (const Row &r : rows)
            sample(name, r.name, double(get(r)));
    };
    family("kvpool_capacity_bytes", "gauge", "Data bytes of the pool.",
           [](const Row &r) { return r.cap; });
    family("kvpool_used_bytes", "gauge", "Bytes of live blocks.",
           [](const Row &r) { return r.live; });
    family("kvpool_entries", "gauge", "Committed blocks.", [](const Row &r) { return r.entries; });
    family("kvpool_hits_total", "counter", "Lookups that found a block.",
           [](const Row &r) { return r.st.hits; });
    family("kvpool_misses_total", "counter", "Lookups that found nothing.",
           [](const Row &r) { return r.st.misses; });
    family("kvpool_puts_total", "counter", "Blocks committed.",
           [](const Row &r) { return r.st.puts; });
    family("kvpool_evictions_total", "counter", "Blocks evicted.",
           [](const Row &r) { return r.st.evictions; });
    family("kvpool_background_evicted_bytes_total", "counter",
           "Bytes evicted by the daemon's watermark pass.", [](const Row &r) { return r.bg; });
    family("kvpool_pins", "gauge", "Outstanding pins.", [](const Row &r) { return r.pins; });
    family("kvpool_dedups_total", "counter", "Puts that found the key already committed.",
           [](const Row &r) { return r.st.dedups; });
    family("kvpool_removes_total", "counter", "Blocks removed by clients.",
           [](const Row &r) { return r.st.removes; });
    family("kvpool_clients", "gauge", "Attached client processes (not the daemon's own slot).",
           [](const Row &r) { return r.st.clients > 0 ? r.st.clients - 1 : 0; });
    family("kvpool_reaps_total", "counter", "Dead clients reaped.",
           [](const Row &r) { return r.st.reaps; });
    family("kvpool_last_persist_seconds", "gauge", "Duration of the last persist (0: none yet).",
           [](const Row &r) { return r.persist_s; });
    family("kvpool_last_persist_bytes", "gauge", "Data bytes written by the last persist.",
           [](const Row &r) { return r.persist_bytes; });
    family("kvpool_last_persist_failed", "gauge", "1 if the last persist failed.",
           [](const Row &r) { return r.persist_failures; });
    family("kvpool_last_restore_seconds", "gauge", "Duration of the last restore (0: none yet).",
           [](const Row &r) { return r.restore_s; });
    family("kvpool_last_restore_bytes", "gauge", "Data bytes restored by the last restore.",
           [](const Row &r) { return r.restore_bytes; });
    family("kvpool_persists_total", "counter", "Persists that succeeded since kvpoold started.",
           [](const Row &r) { return r.persists.ok; });
    family("kvpool_persist_failures_total", "counter",
           "Persists that failed since kvpoold started.",
           [](const Row &r) { return r.persists.failed; });
    family("kvpool_last_persist_success_timestamp_seconds", "gauge",
           "Unix time the last successful persist finished (0: none since kvpoold started).",
           [](const Row &r) { return double(r.persists.last_ok_ns) / 1e9; });
    family("kvpool_restores_total", "counter", "Restores that succeeded since kvpoold started.",
           [](const Row &r) { return r.restores.ok; });
    family("kvpool_restore_failures_total", "counter",
           "Restores that failed since kvpoold started.",
           [](const Row &r) { return r.restores.failed; });
    family("kvpool_last_restore_success_timestamp_seconds", "gauge",
           "Unix time the last successful restore finished (0: none since kvpoold started).",
           [](const Row &r) { return double(r.restores.last_ok_ns) / 1e9; });
    metric("kvpool_info", "gauge", "Constant 1, labelled with the pool's eviction policy.");
    for (const auto &p : pm.pools()) {
        char b[256];
        snprintf(b, sizeof b, "kvpool_info{pool=\"%s\",policy=\"%s\"} 1\n", p->cfg.name.c_str(),
                 kv_evict_policy_name(kv_pool_header(p->handle)->evict_policy));
        out += b;
    }
    if (const FeedDrainer *fd = FeedDrainer::current(); fd && fd->active()) {
        struct FeedFamily {
            const char *name, *type, *help;
            uint64_t FeedCounters::*field;
        };
        static constexpr FeedFamily kFeed[] = {
            {"kvpool_feed_records_total", "counter",
             "Change-feed records the daemon read from the pool's ring.", &FeedCounters::records},
            {"kvpool_feed_events_total", "counter",
             "Change-feed events handed to the daemon's sinks, resyncs included.",
             &FeedCounters::events},
            {"kvpool_feed_resyncs_total", "counter",
             "Resyncs of the pool's feed (AllBlocksCleared, then every block held).",
             &FeedCounters::resyncs},
            {"kvpool_feed_lost_total", "counter",
             "Resyncs caused by lost records: ring overflow, drops, dead or slow producers.",
             &FeedCounters::lost},
            {"kvpool_feed_lag", "gauge", "Feed tickets taken by producers and not yet read.",
             &FeedCounters::lag},
        };
        for (const FeedFamily &f : kFeed) {
            metric(f.name, f.type, f.help);
            for (const auto &p : pm.pools())
                if (kv_pool_header(p->handle)->feed_slots)
                    sample(f.name, p->cfg.name, double(fd->counters(p->cfg.name).*f.field));
        }
    }
    if (const KvEventPublisher *ev = KvEventPublisher::current()) ev->prometheus(out);
    metric("kvpoold_requests_total", "counter", "Control requests served.");
    sample("kvpoold_requests_total", "", double(c.requests));
    metric("kvpoold_request_errors_total", "counter", "Control requests answered with an error.");
    sample("kvpoold_request_errors_total", "", double(c.request_errors));
    metric("kvpoold_resident_bytes", "gauge", "Resident set size of kvpoold.");
    sample("kvpoold_resident_bytes", "", double(rss_bytes()));
    out += remote_prometheus_text();
    return out;
}

} // namespace kv::daemon
