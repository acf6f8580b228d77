// SPDX-License-Identifier: MIT
//
// Persist and restore as the daemon runs them: synchronously at start
// (restore before READY=1) and stop (persist after STOPPING=1), and on
// demand from the control socket in a worker thread per pool, so the event
// loop keeps reaping clients and answering status (with progress) while
// gigabytes stream to disk. The worker uses the daemon's own kv_pool handle,
// which libkv allows from many threads; the main thread never destroys a
// pool that has a job (EBUSY) and joins every job before it exits.
#pragma once

#include "pool_manager.h"
#include "snapshot.h"

#include <expected>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kv::daemon {

// A response the main loop must send for a finished job.
struct JobAnswer {
    uint64_t conn_id;
    uint16_t op;
    uint32_t seq;
    int error;
    std::string body;
};

// The errno a failed persist or restore answers with. A snapshot file's own
// failure (missing, not a snapshot, damaged) is a failed request, not "no
// such pool" (ENOENT) or "kvctl sent garbage" (EPROTO), which is what
// kvctl's exit codes make of those; the message keeps the real reason.
// Permission errors stay what they are.
inline int file_error_code(int e) {
    return e == ENOENT || e == EPROTO || e == EEXIST ? EIO : e;
}

// Options for the snapshot engine: queue depth, fault injection from the
// environment (KVPOOL_FAULT_IO_NTH), progress forwarding.
snapshot::Options snapshot_options(std::function<void(uint64_t, uint64_t)> progress);

// At start: refill a freshly created pool from its snapshot file. Failures
// are logged and the pool starts empty: a bad snapshot never blocks start-up.
void restore_at_start(Pool &p, const std::function<void(const std::string &)> &status);
// At stop: write the pool to its snapshot file. False (logged) on failure.
bool persist_at_stop(Pool &p, const std::function<void(const std::string &)> &status);

// Who asked for a job, for a restore's origin check: a snapshot written
// from another pool is refused unless root forces it; one that names no
// pool (an older kvpool's) is taken from root only. At start the daemon
// itself restores (root, never forced).
struct Requester {
    bool root = false;
    bool force = false;
};

// Start a background persist/restore of p into/from path. wake_fd (an
// eventfd) is written when it finishes. EBUSY if a job is running.
std::expected<void, Error> start_job(Pool &p, uint16_t op, const std::string &path,
                                     uint64_t conn_id, uint32_t seq, int wake_fd, Requester who);
// Join finished jobs, record their outcome in their pools, and return the
// responses to send.
std::vector<JobAnswer> collect_jobs(PoolManager &pm);
// Shutdown: wait for every running job (their answers are dropped).
void join_all_jobs(PoolManager &pm);

// The "snapshot" object of a pool's status: file, running job with
// progress, and the last persist and restore.
nlohmann::json snapshot_json(const Pool &p);

} // namespace kv::daemon
