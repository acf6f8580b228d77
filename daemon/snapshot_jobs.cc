// SPDX-License-Identifier: MIT
#include "snapshot_jobs.h"

#include "log.h"
#include "pool_report.h"
#include "units.h"

#include <kvpool/control.h>

#include <unistd.h>

#include <cstdlib>

namespace kv::daemon {

namespace {

constexpr const char *kComp = "snapshot";

const char *op_word(uint16_t op) { return op == KV_CTL_OP_PERSIST ? "persist" : "restore"; }

double rate_gib(uint64_t bytes, double s) { return s > 0 ? double(bytes) / s / double(1ULL << 30) : 0; }

nlohmann::json result_json(const Pool &p, uint16_t op, const std::string &path, const snapshot::Result &r) {
    return {{"pool", p.cfg.name},
            {"op", op_word(op)},
            {"path", path},
            {"blocks", r.blocks},
            {"bytes", r.bytes},
            {"file_bytes", r.file_bytes},
            {"seconds", r.seconds},
            {"gib_per_s", rate_gib(r.file_bytes ? r.file_bytes : r.bytes, r.seconds)},
            {"dropped", r.dropped},
            {"skipped", r.skipped},
            {"truncated", r.truncated},
            {"damaged_segments", r.damaged_segments},
            {"fixed_buffers", r.fixed_buffers},
            {"recycled_spare", r.recycled}};
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
        KV_LOGE(kComp, "%s of pool %s failed: %s", op_word(op), p.cfg.name.c_str(), res.error().message.c_str());
        return;
    }
    const snapshot::Result &r = *res;
    KV_LOGN(kComp, "%s pool %s %s %s: %llu blocks, %s in %.2f s (%.2f GiB/s)%s%s", op_word(op), p.cfg.name.c_str(),
            op == KV_CTL_OP_PERSIST ? "to" : "from", path.c_str(), (unsigned long long)r.blocks,
            kv::detail::format_size(r.bytes).c_str(), r.seconds, rate_gib(r.file_bytes ? r.file_bytes : r.bytes, r.seconds),
            r.dropped ? (", " + std::to_string(r.dropped) + " dropped (failed verification or no room)").c_str() : "",
            r.truncated ? ", file truncated or damaged: its verified part was restored" : "");
}

// Progress for logs and systemd: a line every ~10% of the work.
std::function<void(uint64_t, uint64_t)> status_progress(const Pool &p, uint16_t op,
                                                        const std::function<void(const std::string &)> &status) {
    auto last = std::make_shared<int>(-1);
    std::string name = p.cfg.name;
    return [=](uint64_t done, uint64_t total) {
        int tenth = total ? int(done * 10 / total) : 0;
        if (tenth == *last) return;
        *last = tenth;
        std::string line = std::string(op_word(op)) + " " + name + ": " + kv::detail::format_size(done) + " of " +
                           kv::detail::format_size(total);
        KV_LOGI(kComp, "%s", line.c_str());
        if (status) status(line);
    };
}

} // namespace

snapshot::Options snapshot_options(std::function<void(uint64_t, uint64_t)> progress) {
    snapshot::Options o;
    if (const char *f = getenv("KVPOOL_FAULT_IO_NTH"); f && *f) o.fail_nth_io = strtoull(f, nullptr, 10);
    o.progress = std::move(progress);
    return o;
}

void restore_at_start(Pool &p, const std::function<void(const std::string &)> &status) {
    snapshot::Options o = snapshot_options(status_progress(p, KV_CTL_OP_RESTORE, status));
    o.expect_pool = p.cfg.name;
    o.allow_unnamed = true;
    auto res = snapshot::restore(p.handle, p.snapshot_path, o);
    record(p.last_restore, p.snapshot_path, res);
    log_result(p, KV_CTL_OP_RESTORE, p.snapshot_path, res);
    if (res) p.state = "restored";
}

bool persist_at_stop(Pool &p, const std::function<void(const std::string &)> &status) {
    snapshot::Options o = snapshot_options(status_progress(p, KV_CTL_OP_PERSIST, status));
    o.file_gid = int(p.gid);
    auto res = snapshot::persist(p.handle, p.cfg.name, p.snapshot_path, o);
    record(p.last_persist, p.snapshot_path, res);
    log_result(p, KV_CTL_OP_PERSIST, p.snapshot_path, res);
    return res.has_value();
}

std::expected<void, Error> start_job(Pool &p, uint16_t op, const std::string &path, uint64_t conn_id, uint32_t seq,
                                     int wake_fd, Requester who) {
    if (p.job)
        return std::unexpected(Error{EBUSY, "pool " + p.cfg.name + ": a " + op_word(p.job->op) + " is already running"});
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
    // The worker touches only the job and the pool handle; the Pool object
    // itself belongs to the main thread.
    j->thread = std::thread([j, handle, name, wake_fd, who, gid] {
        auto progress = [j](uint64_t done, uint64_t total) {
            j->done_bytes.store(done, std::memory_order_relaxed);
            j->total_bytes.store(total, std::memory_order_relaxed);
        };
        snapshot::Options o = snapshot_options(progress);
        o.file_gid = gid;
        o.expect_pool = name;
        o.allow_unnamed = who.root;
        o.allow_foreign = who.root && who.force;
        if (j->op == KV_CTL_OP_PERSIST)
            j->result = snapshot::persist(handle, name, j->path, o);
        else
            j->result = snapshot::restore(handle, j->path, o);
        // Pairs with the acquire in collect_jobs: result is complete before finished reads true.
        j->finished.store(true, std::memory_order_release);
        uint64_t one = 1;
        ssize_t w = write(wake_fd, &one, sizeof one);
        (void)w; // an eventfd write only fails on overflow, and then the loop is awake anyway
    });
    KV_LOGI(kComp, "%s of pool %s %s %s started", op_word(op), name.c_str(), op == KV_CTL_OP_PERSIST ? "to" : "from",
            path.c_str());
    p.job = std::move(job);
    return {};
}

std::vector<JobAnswer> collect_jobs(PoolManager &pm) {
    std::vector<JobAnswer> out;
    for (const auto &pp : pm.pools()) {
        Pool &p = *pp;
        if (!p.job || !p.job->finished.load(std::memory_order_acquire)) continue;
        std::shared_ptr<SnapshotJob> j = std::move(p.job);
        j->thread.join();
        record(j->op == KV_CTL_OP_PERSIST ? p.last_persist : p.last_restore, j->path, j->result);
        log_result(p, j->op, j->path, j->result);
        if (j->result && j->op == KV_CTL_OP_RESTORE) p.state = "restored";
        if (j->result)
            out.push_back({j->conn_id, j->op, j->seq, 0,
                           result_json(p, j->op, j->path, *j->result).dump(-1, ' ', false,
                                                                            nlohmann::json::error_handler_t::replace)});
        else
            out.push_back({j->conn_id, j->op, j->seq, file_error_code(j->result.error().code),
                           j->result.error().message});
    }
    return out;
}

void join_all_jobs(PoolManager &pm) {
    for (const auto &pp : pm.pools()) {
        Pool &p = *pp;
        if (!p.job) continue;
        KV_LOGN(kComp, "waiting for the %s of pool %s to finish", op_word(p.job->op), p.cfg.name.c_str());
        p.job->thread.join();
        record(p.job->op == KV_CTL_OP_PERSIST ? p.last_persist : p.last_restore, p.job->path, p.job->result);
        log_result(p, p.job->op, p.job->path, p.job->result);
        p.job.reset();
    }
}

nlohmann::json snapshot_json(const Pool &p) {
    auto rec = [](const SnapshotRecord &r) -> nlohmann::json {
        if (!r.done) return nullptr;
        nlohmann::json j = {{"ok", r.ok},       {"path", r.path},       {"blocks", r.blocks},
                            {"bytes", r.bytes}, {"seconds", r.seconds}, {"dropped", r.dropped},
                            {"truncated", r.truncated}, {"finished_ns", r.finished_ns}};
        if (!r.ok) j["error"] = r.error;
        return j;
    };
    nlohmann::json running = nullptr;
    if (p.job) {
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
