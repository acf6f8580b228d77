// SPDX-License-Identifier: MIT
//
// The daemon's pools: creating or re-attaching each configured pool at
// start, runtime create/destroy from the control socket, config reloads,
// and the periodic passes (reap dead clients, watermark eviction) that the
// main loop drives. Single-threaded: only the main loop calls it.
#pragma once

#include "config.h"
#include "keyring.h"
#include "snapshot.h"

#include <atomic>
#include <cerrno>
#include <expected>
#include <functional>
#include <kv/kv.h>
#include <memory>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace kv::daemon {

// A failed request: kv::Error (<kv/kv.hpp>), code -errno as the C API
// returns it, message for people.
using Error = kv::Error;

// A persist or restore in progress, run by snapshot_jobs.cc in a thread
// of its own; the pool holds it while it runs.
struct SnapshotJob {
    uint16_t op = 0; // KV_CTL_OP_PERSIST or KV_CTL_OP_RESTORE
    std::string path;
    uint64_t conn_id = 0; // the connection to answer; 0: nobody
    uint32_t seq = 0;
    uint64_t start_ns = 0;
    std::atomic<uint64_t> done_bytes{0},
        total_bytes{0};                // progress, written by the worker (relaxed)
    std::atomic<bool> finished{false}; // SJOB-R1 by the worker, SJOB-A1 by collect_jobs
    std::expected<snapshot::Result, snapshot::Error> result{
        std::unexpected(snapshot::Error{-EINPROGRESS, ""})};
    std::thread thread;
};

// The outcome of the last persist or restore of a pool (main thread only).
struct SnapshotRecord {
    bool done = false; // false: never ran since the daemon started
    bool ok = false;
    std::string path, error;
    std::string quarantined; // restore: where the damaged file was moved, else empty
    uint64_t blocks = 0, bytes = 0, dropped = 0;
    double seconds = 0;
    uint64_t finished_ns = 0;
    bool truncated = false;
};

struct Pool {
    PoolConfig cfg;
    std::string path;          // the backing file clients attach to
    kv_pool *handle = nullptr; // the daemon's own client slot
    gid_t gid = 0;             // owner group of the file; may change pools
    std::string group_name;
    std::string origin;         // "config" or "runtime"
    std::string state;          // "created" or "reattached"
    std::string config_differs; // how a reattached region differs from its config; empty if not
    uint64_t bg_evicted_bytes = 0;
    uint64_t reaped_clients = 0;
    std::string snapshot_path;        // default snapshot file: snapshot_dir/NAME.kvsnap
    std::shared_ptr<SnapshotJob> job; // a persist or restore in progress, else null
    // The keys of [pool.encryption]; null when the pool writes in the clear.
    // Replaced whole on a reload: a job or tier holds its own reference.
    std::shared_ptr<const Keyring> keyring;
    SnapshotRecord last_persist, last_restore;
};

class PoolManager {
  public:
    explicit PoolManager(DaemonConfig cfg);
    ~PoolManager(); // detaches every pool; the regions stay for a warm restart
    PoolManager(const PoolManager &) = delete;
    PoolManager &operator=(const PoolManager &) = delete;

    // Create or re-attach every configured pool, then every runtime pool
    // remembered in the state directory. The first failure is returned and
    // the daemon refuses to start (pools already opened stay).
    std::expected<void, std::string> open_all();

    // A pool made at runtime (kvctl create): remembered in the state
    // directory before it is reported made, so it survives restarts (a pool
    // that cannot be remembered is not made: EIO).
    std::expected<Pool *, Error> create(const PoolConfig &pc, const char *origin);
    // Unlink the pool's file and forget it (a runtime pool also from the
    // state directory); attached clients keep their mapping.
    std::expected<void, Error> destroy(const std::string &name);
    Pool *find(std::string_view name);
    const std::vector<std::unique_ptr<Pool>> &pools() const { return pools_; }
    const DaemonConfig &config() const { return cfg_; }
    gid_t admin_gid() const { return admin_gid_; }

    // Reap dead clients of every pool; returns how many were reaped. Also
    // tries again to open configured pools whose region could not be
    // attached yet.
    int reap_pass();
    // Evict down to the low watermark in pools above the high one, at most
    // max_bytes per pool per call so the loop stays responsive.
    uint64_t watermark_pass(uint64_t max_bytes);
    // Apply a new config: add new pools, apply safe changes, refuse the
    // rest. Returns one line per refused or notable change, for the log.
    std::vector<std::string> reload(const DaemonConfig &next);
    // Called with a line for systemd's STATUS= while a long step runs.
    void set_status_hook(std::function<void(const std::string &)> hook) {
        status_hook_ = std::move(hook);
    }
    using StatusHook = std::function<void(const std::string &)>;
    // Called to refill a pool created afresh from its snapshot file (when its
    // config asks for that and the file exists), with the status hook; set
    // before open_all. The snapshot engine sits above this class
    // (snapshot_jobs.h: restore_at_start), so it is handed in.
    void set_restore_hook(std::function<void(Pool &, const StatusHook &)> hook) {
        restore_hook_ = std::move(hook);
    }

  private:
    std::expected<gid_t, std::string> resolve_group(const std::string &name) const;
    // Create the pool's region, or serve the one that exists. A region that
    // differs from pc is served as it is when adopt_mismatch (a configured
    // pool: logged), refused with EEXIST otherwise (kvctl create), unless it
    // holds nothing. EAGAIN: an existing region cannot be attached for now
    // (it is left alone; open it again later).
    std::expected<std::unique_ptr<Pool>, Error> open_pool(const PoolConfig &pc, const char *origin,
                                                          bool adopt_mismatch);
    static void remove_stale_creations(const std::string &dir, const std::string &name);

    DaemonConfig cfg_;
    gid_t admin_gid_ = 0;
    std::vector<std::unique_ptr<Pool>> pools_;
    // Pools whose existing region could not be attached (EAGAIN from
    // open_pool): left alone, tried again by every reap_pass.
    struct Waiting {
        PoolConfig cfg;
        const char *origin; // "config" or "runtime"
    };
    std::vector<Waiting> waiting_;
    void open_waiting();
    bool is_waiting(const std::string &name) const;
    // Open one pool at start (or when it stops waiting) and refill it from
    // its snapshot if it was created afresh and asks for that.
    std::expected<void, Error> start_pool(const PoolConfig &pc, const char *origin);
    // Write the runtime pools (origin "runtime", waiting ones included) to
    // state_dir/runtime-pools.toml.
    std::expected<void, std::string> save_runtime() const;
    std::function<void(const std::string &)> status_hook_;
    std::function<void(Pool &, const StatusHook &)> restore_hook_;
};

// Live data bytes (kv_pool_live_bytes): exact, and cheap enough for every
// watermark tick.
uint64_t pool_live_bytes(kv_pool *p);
// Hugepages the config's hugepage pools need beyond those already backing
// existing pool files; used by --reserve-hugepages.
uint64_t hugepages_needed(const DaemonConfig &cfg, uint64_t page_size);

} // namespace kv::daemon
