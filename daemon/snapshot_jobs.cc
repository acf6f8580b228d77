// SPDX-License-Identifier: MIT
#include "snapshot_jobs.h"

#include "clock.h"
#include "log.h"
#include "units.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <kvpool/control.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

namespace kv::daemon {

namespace {

constexpr const char *kComp = "snapshot";

const char *op_word(uint16_t op) {
    return op == KV_CTL_OP_PERSIST ? "persist" : "restore";
}

double rate_gib(uint64_t bytes, double s) {
    return s > 0 ? double(bytes) / s / double(1ULL << 30) : 0;
}

nlohmann::json result_json(const Pool &p, uint16_t op, const std::string &path,
                           const snapshot::Result &r) {
    return {{"pool", p.cfg.name},
            {"op", op_word(op)},
            {"path", path},
            {"blocks", r.blocks},
            {"bytes", r.bytes},
            {"file_bytes", r.file_bytes},
            {"seconds", r.seconds},
            {"gib_per_s", rate_gib(r.file_bytes ? r.file_bytes : r.bytes, r.seconds)},
            {"dropped", r.dropped},
            {"dropped_corrupt", r.corrupt},
            {"dropped_no_room", r.no_room},
            {"evicted", r.evicted},
            {"expired", r.expired},
            {"skipped", r.skipped},
            {"truncated", r.truncated},
            {"trailer_damaged", r.trailer_damaged},
            {"trailing_bytes", r.trailing_bytes},
            {"damaged_segments", r.damaged_segments},
            {"fixed_buffers", r.fixed_buffers},
            {"recycled_spare", r.recycled},
            {"key_id", r.key_id}};
}

void record(SnapshotRecord &rec, const std::string &path,
            const std::expected<snapshot::Result, snapshot::Error> &res) {
    rec = SnapshotRecord{};
    rec.done = true;
    rec.path = path;
    rec.finished_ns = realtime_ns();
    if (res) {
        rec.ok = true;
        rec.blocks = res->blocks;
        rec.bytes = res->bytes;
        rec.dropped = res->dropped;
        rec.seconds = res->seconds;
        rec.truncated = res->truncated;
    } else {
        rec.error = res.error().message;
    }
}

void log_result(const Pool &p, uint16_t op, const std::string &path,
                const std::expected<snapshot::Result, snapshot::Error> &res) {
    if (!res) {
        KV_LOGE(kComp, "%s of pool %s failed: %s", op_word(op), p.cfg.name.c_str(),
                res.error().message.c_str());
        return;
    }
    const snapshot::Result &r = *res;
    std::string dropped;
    if (r.dropped) {
        dropped = ", " + std::to_string(r.dropped) + " dropped (" + std::to_string(r.corrupt) +
                  " failed verification, " + std::to_string(r.no_room) + " found no room, " +
                  std::to_string(r.dropped - r.corrupt - r.no_room) + " refused by the pool)";
    }
    if (r.evicted)
        dropped += ", " + std::to_string(r.evicted) + " blocks of the pool evicted to make room";
    if (r.trailer_damaged)
        dropped += ", every block of the file read but its trailer is damaged (" +
                   r.trailer_problem + "): the file cannot prove it is complete";
    if (r.trailing_bytes)
        dropped += ", " + std::to_string(r.trailing_bytes) +
                   " bytes after the trailer ignored (not written by a persist)";
    const std::string sealed = r.key_id.empty() ? "" : " (encrypted, key " + r.key_id + ")";
    ::kv::daemon::log(
        r.trailer_damaged || r.trailing_bytes ? LogLevel::Warning : LogLevel::Notice, kComp,
        "%s pool %s %s %s%s: %llu blocks, %s in %.2f s (%.2f GiB/s)%s%s", op_word(op),
        p.cfg.name.c_str(), op == KV_CTL_OP_PERSIST ? "to" : "from", path.c_str(), sealed.c_str(),
        (unsigned long long)r.blocks, kv::detail::format_size(r.bytes).c_str(), r.seconds,
        rate_gib(r.file_bytes ? r.file_bytes : r.bytes, r.seconds), dropped.c_str(),
        r.truncated ? ", file truncated or damaged: its verified part was restored" : "");
}

// The file itself is at fault: a header or segment head that failed its
// checks, a block whose copy did not verify or could not be read, a file
// cut short or a trailer that does not match. Not: another pool's file, a
// missing one, a full pool, a cancel.
// An encrypted file whose key is not configured (ENOKEY) or does not open
// it (EKEYREJECTED) is moved aside too: the next persist would otherwise
// replace it, and it may still be read once the right key is configured.
bool file_damaged(const std::expected<snapshot::Result, snapshot::Error> &res) {
    if (!res) {
        const int c = -res.error().code;
        return c == EBADMSG || c == EPROTO || c == ENODATA || c == EIO || c == ENOKEY ||
               c == EKEYREJECTED;
    }
    return res->truncated || res->corrupt || res->damaged_segments || res->trailer_damaged;
}

// Move a snapshot that did not restore whole aside, as
// PATH.bad-YYYYmmddTHHMMSSZ: the next persist then writes a new file at
// PATH instead of replacing this one (and making it the spare the persist
// after recycles); nothing ever writes to a .bad- file. What is left of
// its blocks stays for a person to look at or salvage. Returns the new
// path, or "" when it could not be moved (logged).
std::string quarantine(const Pool &p, const std::string &path) {
    const time_t now = time_t(realtime_ns() / 1000000000ULL);
    tm t{};
    gmtime_r(&now, &t);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &t);
    const std::string base = path + ".bad-" + stamp;
    int err = 0;
    for (int i = 1; i <= 100; i++) {
        const std::string to = i == 1 ? base : base + "-" + std::to_string(i);
        int rc = renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE);
        if (rc != 0 && errno == EINVAL) { // no RENAME_NOREPLACE here: check, then rename
            struct stat sb{};
            if (lstat(to.c_str(), &sb) == 0) {
                errno = EEXIST;
            } else {
                rc = rename(path.c_str(), to.c_str());
            }
        }
        if (rc == 0) {
            KV_LOGW(kComp,
                    "pool %s: snapshot %s did not restore whole: moved to %s, which no persist "
                    "writes over "
                    "(remove it once it is no longer needed)",
                    p.cfg.name.c_str(), path.c_str(), to.c_str());
            return to;
        }
        err = errno;
        if (err != EEXIST) break;
    }
    KV_LOGE(kComp,
            "pool %s: snapshot %s did not restore whole, and moving it aside failed: %s; the next "
            "persist "
            "may replace it",
            p.cfg.name.c_str(), path.c_str(), strerror(err));
    return "";
}

// After a restore: record and log it, and move the file aside if it is damaged.
void finish_restore(Pool &p, const std::string &path,
                    const std::expected<snapshot::Result, snapshot::Error> &res) {
    record(p.last_restore, path, res);
    log_result(p, KV_CTL_OP_RESTORE, path, res);
    if (file_damaged(res)) p.last_restore.quarantined = quarantine(p, path);
}

// Progress for logs and systemd: a line every ~10% of the work.
std::function<void(uint64_t, uint64_t)>
status_progress(const Pool &p, uint16_t op,
                const std::function<void(const std::string &)> &status) {
    auto last = std::make_shared<int>(-1);
    std::string name = p.cfg.name;
    return [=](uint64_t done, uint64_t total) {
        int tenth = total ? int(done * 10 / total) : 0;
        if (tenth == *last) return;
        *last = tenth;
        std::string line = std::string(op_word(op)) + " " + name + ": " +
                           kv::detail::format_size(done) + " of " + kv::detail::format_size(total);
        KV_LOGI(kComp, "%s", line.c_str());
        if (status) status(line);
    };
}

} // namespace

snapshot::Options snapshot_options(std::function<void(uint64_t, uint64_t)> progress) {
    snapshot::Options o;
    if (const char *f = getenv("KVPOOL_FAULT_IO_NTH"); f && *f)
        o.fail_nth_io = strtoull(f, nullptr, 10);
    o.progress = std::move(progress);
    return o;
}

void restore_at_start(Pool &p, const std::function<void(const std::string &)> &status) {
    snapshot::Options o = snapshot_options(status_progress(p, KV_CTL_OP_RESTORE, status));
    o.expect_pool = p.cfg.name;
    o.allow_unnamed = true;
    o.keyring = p.keyring.get();
    auto res = snapshot::restore(p.handle, p.snapshot_path, o);
    finish_restore(p, p.snapshot_path, res);
    if (res) p.state = "restored";
}

bool persist_at_stop(Pool &p, const std::function<void(const std::string &)> &status) {
    snapshot::Options o = snapshot_options(status_progress(p, KV_CTL_OP_PERSIST, status));
    o.file_gid = int(p.gid);
    o.keyring = p.keyring.get();
    auto res = snapshot::persist(p.handle, p.cfg.name, p.snapshot_path, o);
    record(p.last_persist, p.snapshot_path, res);
    log_result(p, KV_CTL_OP_PERSIST, p.snapshot_path, res);
    return res.has_value();
}

std::expected<void, Error> start_job(Pool &p, uint16_t op, const std::string &path,
                                     uint64_t conn_id, uint32_t seq, int wake_fd, Requester who) {
    if (p.job)
        return std::unexpected(Error{-EBUSY, "pool " + p.cfg.name + ": a " + op_word(p.job->op) +
                                                 " is already running"});
    auto job = std::make_shared<SnapshotJob>();
    job->op = op;
    job->path = path;
    job->conn_id = conn_id;
    job->seq = seq;
    job->start_ns = realtime_ns();
    kv_pool *handle = p.handle;
    std::string name = p.cfg.name;
    SnapshotJob *j = job.get();
    const int gid = int(p.gid);
    // The worker touches only the job, the pool handle and its own
    // reference to the keyring (a reload may replace the pool's); the Pool
    // object itself belongs to the main thread.
    std::shared_ptr<const Keyring> keyring = p.keyring;
    j->thread = std::thread([j, handle, name, wake_fd, who, gid, keyring] {
        auto progress = [j](uint64_t done, uint64_t total) {
            // Relaxed: figures for status only; nothing else is read through
            // them, and a status may pair a done with the previous total.
            j->done_bytes.store(done, std::memory_order_relaxed);
            j->total_bytes.store(total, std::memory_order_relaxed);
        };
        snapshot::Options o = snapshot_options(progress);
        o.file_gid = gid;
        o.expect_pool = name;
        o.allow_unnamed = who.root;
        o.allow_foreign = who.root && who.force;
        o.keyring = keyring.get();
        if (j->op == KV_CTL_OP_PERSIST)
            j->result = snapshot::persist(handle, name, j->path, o);
        else
            j->result = snapshot::restore(handle, j->path, o);
        // SJOB-R1: publishes the job's result; pairs with SJOB-A1
        // (collect_jobs), which reads it before joining this thread.
        j->finished.store(true, std::memory_order_release);
        uint64_t one = 1;
        ssize_t w = write(wake_fd, &one, sizeof one);
        (void)w; // an eventfd write only fails on overflow, and then the loop is awake anyway
    });
    KV_LOGI(kComp, "%s of pool %s %s %s started", op_word(op), name.c_str(),
            op == KV_CTL_OP_PERSIST ? "to" : "from", path.c_str());
    p.job = std::move(job);
    return {};
}

std::vector<JobAnswer> collect_jobs(PoolManager &pm) {
    std::vector<JobAnswer> out;
    for (const auto &pp : pm.pools()) {
        Pool &p = *pp;
        // SJOB-A1: observes the result SJOB-R1 (start_job's worker)
        // published; the join below then orders the rest of the thread.
        if (!p.job || !p.job->finished.load(std::memory_order_acquire)) continue;
        std::shared_ptr<SnapshotJob> j = std::move(p.job);
        j->thread.join();
        if (j->op == KV_CTL_OP_RESTORE) {
            finish_restore(p, j->path, j->result);
        } else {
            record(p.last_persist, j->path, j->result);
            log_result(p, j->op, j->path, j->result);
        }
        if (j->result && j->op == KV_CTL_OP_RESTORE) p.state = "restored";
        const std::string &moved = j->op == KV_CTL_OP_RESTORE ? p.last_restore.quarantined : "";
        if (j->result) {
            nlohmann::json doc = result_json(p, j->op, j->path, *j->result);
            if (!moved.empty()) doc["quarantined"] = moved;
            out.push_back({j->conn_id, j->op, j->seq, 0,
                           doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)});
        } else {
            out.push_back({j->conn_id, j->op, j->seq, file_error_code(-j->result.error().code),
                           j->result.error().message +
                               (moved.empty() ? "" : "; the file was moved to " + moved)});
        }
    }
    return out;
}

void join_all_jobs(PoolManager &pm) {
    for (const auto &pp : pm.pools()) {
        Pool &p = *pp;
        if (!p.job) continue;
        KV_LOGN(kComp, "waiting for the %s of pool %s to finish", op_word(p.job->op),
                p.cfg.name.c_str());
        p.job->thread.join();
        if (p.job->op == KV_CTL_OP_RESTORE) {
            finish_restore(p, p.job->path, p.job->result);
        } else {
            record(p.last_persist, p.job->path, p.job->result);
            log_result(p, p.job->op, p.job->path, p.job->result);
        }
        p.job.reset();
    }
}

nlohmann::json snapshot_json(const Pool &p) {
    auto rec = [](const SnapshotRecord &r) -> nlohmann::json {
        if (!r.done) return nullptr;
        nlohmann::json j = {{"ok", r.ok},
                            {"path", r.path},
                            {"blocks", r.blocks},
                            {"bytes", r.bytes},
                            {"seconds", r.seconds},
                            {"dropped", r.dropped},
                            {"truncated", r.truncated},
                            {"finished_ns", r.finished_ns}};
        if (!r.ok) j["error"] = r.error;
        if (!r.quarantined.empty()) j["quarantined"] = r.quarantined;
        return j;
    };
    nlohmann::json running = nullptr;
    if (p.job) {
        // Relaxed progress loads: see start_job's progress callback.
        running = {{"op", op_word(p.job->op)},
                   {"path", p.job->path},
                   {"done_bytes", p.job->done_bytes.load(std::memory_order_relaxed)},
                   {"total_bytes", p.job->total_bytes.load(std::memory_order_relaxed)},
                   {"seconds", double(realtime_ns() - p.job->start_ns) / 1e9}};
    }
    return {{"path", p.snapshot_path},
            {"persist_on_stop", p.cfg.persist_on_stop},
            {"restore_on_start", p.cfg.restore_on_start},
            {"running", running},
            {"last_persist", rec(p.last_persist)},
            {"last_restore", rec(p.last_restore)}};
}

} // namespace kv::daemon
