// SPDX-License-Identifier: MIT
#include "remote_tier.h"

#include "clock.h"
#include "keyring.h"
#include "log.h"
#include "redis_cluster.h"
#include "remote_io.h"
#include "units.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstring>
#include <kvpool/control.h>
#include <unistd.h>

namespace kv::daemon {

namespace {

constexpr const char *kComp = "remote";
// One upload_blocks call: at most this many blocks or bytes, so that the
// uploader notices a stop or a full queue between calls.
constexpr size_t kUploadBatchBlocks = 32;
constexpr uint64_t kUploadBatchBytes = 64ULL << 20;
// One fetch_into_pool call: at most this many blocks, so that a request's
// timeout_ms is checked between calls.
constexpr size_t kFetchChunk = 32;

RemoteTiers *g_tiers = nullptr;

void wake(int fd) {
    if (fd < 0) return;
    const uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r; // EAGAIN: the counter is already non-zero, the loop wakes anyway
}

uint64_t load(const std::atomic<uint64_t> &a) {
    return a.load(std::memory_order_relaxed); // counters: see the header
}

void add(std::atomic<uint64_t> &a, uint64_t v) {
    a.fetch_add(v, std::memory_order_relaxed);
}

ClusterOptions cluster_options(const RemoteConfig &c, const std::string &password) {
    ClusterOptions o;
    o.seeds = c.seeds;
    o.username = c.username;
    o.password = password;
    // Each worker has its own client; together they keep to the cap.
    o.max_connections = std::max<uint32_t>(1, c.max_connections / 2);
    o.timeout_ms = c.timeout_ms;
    return o;
}

} // namespace

// ---- RemoteTier ------------------------------------------------------------

RemoteTier::RemoteTier(const Pool &p, kv_pool *own)
    : pool_(p.cfg.name), cfg_(p.cfg.remote), keyring_(p.keyring), own_(own) {
    const kv_region_header *h = kv_pool_header(own);
    pool_id_lo_ = h->pool_id_lo;
    pool_id_hi_ = h->pool_id_hi;
}

std::expected<std::unique_ptr<RemoteTier>, std::string>
RemoteTier::start(const Pool &p, const std::string &password, int wake_fd) {
    if (!p.handle) return std::unexpected("pool " + p.cfg.name + " is not open");
    if (p.cfg.encryption.enabled && !p.keyring)
        return std::unexpected("pool " + p.cfg.name +
                               ": remote tier: [pool.encryption] is configured but its keys are "
                               "not loaded; not started (it would upload in the clear)");
    std::unique_ptr<RemoteTier> t(new RemoteTier(p, p.handle));
    t->wake_fd_ = wake_fd;
    t->uploader_ = std::thread([raw = t.get(), password] { raw->upload_loop(password); });
    t->fetcher_ = std::thread([raw = t.get(), password] { raw->fetch_loop(password); });
    return t;
}

RemoteTier::~RemoteTier() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    up_cv_.notify_all();
    fetch_cv_.notify_all();
    if (uploader_.joinable()) uploader_.join();
    if (fetcher_.joinable()) fetcher_.join();
}

bool RemoteTier::ns_allowed(uint32_t ns) {
    if (auto it = ns_ok_.find(ns); it != ns_ok_.end()) return it->second;
    kv_manifest m{};
    if (kv_ns_get(own_, ns, &m, nullptr) != 0) return false; // not registered (yet): ask again
    bool ok = cfg_.namespaces.empty();
    const std::string model(
        reinterpret_cast<const char *>(m.model_name),
        strnlen(reinterpret_cast<const char *>(m.model_name), sizeof m.model_name));
    for (const std::string &n : cfg_.namespaces)
        ok |= n == model;
    ns_ok_[ns] = ok; // a registered manifest never changes
    return ok;
}

void RemoteTier::on_events(std::span<const FeedEvent> events) {
    if (cfg_.write != WritePolicy::WriteBehind) return;
    const uint64_t now = realtime_ns();
    bool queued = false;
    {
        std::lock_guard lk(mu_);
        for (const FeedEvent &e : events) {
            if (e.kind != FeedKind::Stored) continue;
            const auto id = std::make_tuple(e.ns, e.key.lo, e.key.hi);
            if (fetched_.contains(id)) { // it came from the tier
                add(n_.upload_skipped, 1);
                continue;
            }
            if (!ns_allowed(e.ns)) continue;
            if (upq_bytes_ + e.length > cfg_.queue_bytes) {
                // A resync re-announces what the pool holds: those that do
                // not fit are not lost uploads, only ones already made.
                add(e.cause == FeedCause::Resync ? n_.upload_skipped : n_.upload_dropped, 1);
                continue;
            }
            upq_.push_back(Pending{e, now});
            upq_.back().ev.token_ids.clear(); // not needed for the upload
            upq_bytes_ += e.length;
            queued = true;
        }
    }
    if (queued) up_cv_.notify_one();
}

std::expected<void, std::pair<int, std::string>> RemoteTier::submit(FetchRequest req) {
    {
        std::lock_guard lk(mu_);
        if (fetchq_.size() >= kMaxQueuedFetches)
            return std::unexpected(
                std::make_pair(EBUSY, "pool " + pool_ + ": " + std::to_string(fetchq_.size()) +
                                          " remote fetches are already queued; try again later"));
        fetchq_.push_back(std::move(req));
    }
    fetch_cv_.notify_one();
    return {};
}

std::vector<JobAnswer> RemoteTier::take_answers() {
    std::lock_guard lk(mu_);
    return std::exchange(answers_, {});
}

std::vector<FeedEvent> RemoteTier::take_uploaded() {
    std::lock_guard lk(mu_);
    return std::exchange(uploaded_, {});
}

void RemoteTier::note_error(const std::string &what) {
    std::lock_guard lk(mu_);
    // One log line per distinct error: a dead master would otherwise log
    // every batch.
    if (what != last_error_) KV_LOGW(kComp, "pool %s: %s", pool_.c_str(), what.c_str());
    last_error_ = what;
    last_error_ns_ = realtime_ns();
}

void RemoteTier::remember_fetched(uint32_t ns, std::span<const kv_key> keys, bool add_them) {
    std::lock_guard lk(mu_);
    for (const kv_key &k : keys) {
        const auto id = std::make_tuple(ns, k.lo, k.hi);
        if (!add_them) {
            fetched_.erase(id); // its entry in fetched_order_ goes when it comes up
            continue;
        }
        if (fetched_.insert(id).second) fetched_order_.push_back(id);
        while (fetched_order_.size() > kMaxFetchedMemo) {
            fetched_.erase(fetched_order_.front());
            fetched_order_.pop_front();
        }
    }
}

void RemoteTier::upload_loop(std::string password) {
    ClusterClient client(cluster_options(cfg_, password));
    UploadOptions uo;
    uo.key_prefix = cfg_.key_prefix;
    uo.ttl_s = cfg_.ttl_s;
    uo.keyring = keyring_.get();
    std::map<uint32_t, NsDigest> digests;
    using clock = std::chrono::steady_clock;
    // Token bucket: a batch waits until the bytes sent stay within
    // bandwidth * elapsed, with at most one second of burst.
    clock::time_point paced = clock::now();
    std::unique_lock lk(mu_);
    for (;;) {
        up_cv_.wait(lk, [&] { return stop_ || !upq_.empty(); });
        if (stop_) return;
        std::vector<Pending> batch;
        uint64_t bytes = 0;
        while (!upq_.empty() && batch.size() < kUploadBatchBlocks &&
               (batch.empty() || bytes + upq_.front().ev.length <= kUploadBatchBytes)) {
            bytes += upq_.front().ev.length;
            batch.push_back(std::move(upq_.front()));
            upq_.pop_front();
        }
        upq_bytes_ -= std::min(upq_bytes_, bytes);
        if (cfg_.bandwidth) {
            // At most one second of burst: the pace never lags now by more.
            const auto now = clock::now();
            paced = std::max(paced, now - std::chrono::seconds(1));
            paced +=
                std::chrono::nanoseconds(uint64_t(double(bytes) * 1e9 / double(cfg_.bandwidth)));
            if (paced > now && up_cv_.wait_until(lk, paced, [&] { return stop_; })) return;
        }
        lk.unlock();

        std::vector<UploadItem> items;
        items.reserve(batch.size());
        for (const Pending &b : batch) {
            auto d = digests.find(b.ev.ns);
            if (d == digests.end()) {
                kv_manifest m{};
                if (kv_ns_get(own_, b.ev.ns, &m, nullptr) != 0) {
                    add(n_.upload_skipped, 1); // cannot happen: the block was committed in it
                    continue;
                }
                d = digests.emplace(b.ev.ns, ns_digest(m)).first; // manifests never change
            }
            UploadItem it;
            it.ns = b.ev.ns;
            it.key = b.ev.key;
            it.digest = d->second;
            it.entry = b.ev.entry;
            it.gen = b.ev.gen;
            it.length = b.ev.length;
            items.push_back(it);
        }
        const UploadResult r = upload_blocks(client, own_, items, uo);
        add(n_.uploads, r.uploaded);
        add(n_.upload_bytes, r.bytes);
        add(n_.upload_errors, r.errors);
        add(n_.upload_corrupt, r.corrupt);
        add(n_.upload_skipped, r.gone + r.changed);
        if ((r.errors || r.corrupt) && !r.error.empty()) note_error("upload: " + r.error);

        lk.lock();
        for (size_t i = 0; i < items.size() && i < r.status.size(); i++) {
            if (r.status[i] != UploadStatus::Uploaded) continue;
            FeedEvent ev;
            ev.kind = FeedKind::Stored;
            ev.ns = items[i].ns;
            ev.key = items[i].key;
            ev.length = items[i].length;
            ev.entry = items[i].entry;
            ev.gen = items[i].gen;
            for (const Pending &b : batch) // the original event: parent, tokens, time
                if (b.ev.ns == ev.ns && b.ev.key.lo == ev.key.lo && b.ev.key.hi == ev.key.hi) {
                    ev = b.ev;
                    break;
                }
            uploaded_.push_back(std::move(ev));
        }
        if (r.uploaded) wake(wake_fd_);
        // Idle: give back the sealing buffer (as large as the largest
        // batch) rather than hold it until the next burst.
        if (keyring_ && upq_.empty()) {
            lk.unlock();
            release_upload_buffer();
            lk.lock();
        }
    }
}

void RemoteTier::fetch_loop(std::string password) {
    ClusterClient client(cluster_options(cfg_, password));
    std::unique_lock lk(mu_);
    for (;;) {
        fetch_cv_.wait(lk, [&] { return stop_ || !fetchq_.empty(); });
        if (stop_) {
            for (FetchRequest &q : fetchq_)
                answers_.push_back(JobAnswer{q.conn_id, KV_CTL_OP_REMOTE_FETCH, q.seq, ECANCELED,
                                             "kvpoold is stopping"});
            fetchq_.clear();
            return;
        }
        FetchRequest q = std::move(fetchq_.front());
        fetchq_.pop_front();
        lk.unlock();

        add(n_.fetches, 1);
        const uint64_t start_ns = mono_ns();
        const uint64_t timeout_ms = q.timeout_ms ? q.timeout_ms : kDefaultFetchTimeoutMs;
        const uint64_t deadline_ns = start_ns + timeout_ms * 1000000;
        uint64_t present = 0, fetched = 0, bytes = 0, missing = 0, rejected = 0, errors = 0;
        std::string stopped = "end";
        int err = 0;
        std::string fail;

        kv_manifest m{};
        NsDigest digest{};
        if (kv_ns_get(own_, q.ns, &m, nullptr) != 0) {
            err = ENOENT;
            fail = "namespace " + std::to_string(q.ns) + " is not registered in pool " + pool_;
        } else {
            digest = ns_digest(m);
        }
        size_t pos = q.first;
        FetchOptions fo;
        fo.key_prefix = cfg_.key_prefix;
        fo.keyring = keyring_.get();
        while (!err && pos < q.keys.size()) {
            if (mono_ns() >= deadline_ns) {
                stopped = "timeout";
                break;
            }
            const size_t end = std::min(q.keys.size(), pos + kFetchChunk);
            // The chunk's keys are marked as coming from the tier before
            // they are committed: the drainer may hand their Stored events
            // to on_events before fetch_into_pool returns. Those not
            // committed are unmarked after, so that an engine's own commit
            // of them is uploaded.
            remember_fetched(q.ns, std::span<const kv_key>(q.keys.data() + pos, end - pos), true);
            const FetchResult r = fetch_into_pool(
                client, own_, q.ns, digest, std::span<const kv_key>(q.keys.data(), end), pos, fo);
            remember_fetched(
                q.ns,
                std::span<const kv_key>(q.keys.data() + pos + r.committed, end - pos - r.committed),
                false);
            fetched += r.fetched;
            present += r.present;
            bytes += r.bytes;
            for (size_t i = 0; i < kRejectCount; i++)
                add(n_.rejected[i], r.rejected_by[i]);
            rejected += r.rejected;
            missing += r.missing;
            errors += r.errors;
            if ((r.errors || r.rejected) && !r.error.empty()) note_error("fetch: " + r.error);
            pos += r.committed;
            if (pos < end) { // stopped short of the chunk
                stopped = r.missing ? "missing" : r.rejected ? "rejected" : "error";
                break;
            }
        }
        add(n_.fetched_blocks, fetched);
        add(n_.fetched_bytes, bytes);
        add(n_.fetch_missing, missing);
        add(n_.fetch_errors, errors);
        add(n_.fetch_present, present);

        nlohmann::json body;
        if (!err) {
            body = {{"pool", pool_},
                    {"ns", q.ns},
                    {"first", q.first},
                    {"requested", q.keys.size() - q.first},
                    {"committed", pos - q.first},
                    {"present", present},
                    {"fetched", fetched},
                    {"fetched_bytes", bytes},
                    {"missing", missing},
                    {"rejected", rejected},
                    {"errors", errors},
                    {"stopped", stopped},
                    {"seconds", double(mono_ns() - start_ns) / 1e9}};
        }
        lk.lock();
        answers_.push_back(JobAnswer{
            q.conn_id, KV_CTL_OP_REMOTE_FETCH, q.seq, err,
            err ? fail : body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)});
        wake(wake_fd_);
    }
}

nlohmann::json RemoteTier::status_json() const {
    std::lock_guard lk(mu_);
    nlohmann::json rejected = nlohmann::json::object();
    for (size_t i = 1; i < kRejectCount; i++) // 0 is Reject::None
        rejected[reject_name(Reject(i))] = load(n_.rejected[i]);
    const uint64_t now = realtime_ns();
    const double oldest =
        upq_.empty() ? 0.0 : double(now - std::min(now, upq_.front().queued_ns)) / 1e9;
    return {
        {"enabled", true},
        {"seeds", cfg_.seeds},
        {"key_prefix", cfg_.key_prefix},
        {"write", cfg_.write == WritePolicy::WriteBehind ? "write-behind" : "none"},
        {"namespaces", cfg_.namespaces},
        {"bandwidth", cfg_.bandwidth},
        {"ttl_s", cfg_.ttl_s},
        {"medium", cfg_.medium},
        {"encrypted", keyring_ != nullptr},
        {"key", keyring_ ? nlohmann::json(keyring_->current_id()) : nlohmann::json(nullptr)},
        {"queue",
         {{"blocks", upq_.size()},
          {"bytes", upq_bytes_},
          {"limit_bytes", cfg_.queue_bytes},
          {"oldest_age_s", oldest}}},
        {"uploads", load(n_.uploads)},
        {"upload_bytes", load(n_.upload_bytes)},
        {"upload_errors", load(n_.upload_errors)},
        {"upload_dropped", load(n_.upload_dropped)},
        {"upload_skipped", load(n_.upload_skipped)},
        {"upload_corrupt", load(n_.upload_corrupt)},
        {"fetches", load(n_.fetches)},
        {"fetched_blocks", load(n_.fetched_blocks)},
        {"fetched_bytes", load(n_.fetched_bytes)},
        {"fetch_present", load(n_.fetch_present)},
        {"fetch_missing", load(n_.fetch_missing)},
        {"fetch_errors", load(n_.fetch_errors)},
        {"rejected", rejected},
        {"last_error", last_error_.empty() ? nlohmann::json(nullptr) : nlohmann::json(last_error_)},
        {"last_error_age_s", last_error_ns_
                                 ? nlohmann::json(double(now - std::min(now, last_error_ns_)) / 1e9)
                                 : nlohmann::json(nullptr)}};
}

RemoteTier::Snapshot RemoteTier::snapshot() const {
    Snapshot s;
    s.v[0] = load(n_.uploads);
    s.v[1] = load(n_.upload_bytes);
    s.v[2] = load(n_.upload_errors);
    s.v[3] = load(n_.upload_dropped);
    s.v[4] = load(n_.upload_skipped);
    s.v[5] = load(n_.fetches);
    s.v[6] = load(n_.fetched_blocks);
    s.v[7] = load(n_.fetched_bytes);
    s.v[8] = load(n_.fetch_missing);
    s.v[9] = load(n_.fetch_errors);
    s.v[10] = load(n_.upload_corrupt);
    for (size_t i = 0; i < kRejectCount; i++)
        s.rejected[i] = load(n_.rejected[i]);
    std::lock_guard lk(mu_);
    s.queue_blocks = upq_.size();
    s.queue_bytes = upq_bytes_;
    const uint64_t now = realtime_ns();
    s.oldest_s = upq_.empty() ? 0.0 : double(now - std::min(now, upq_.front().queued_ns)) / 1e9;
    return s;
}

// ---- RemoteTiers -----------------------------------------------------------

void RemoteTiers::sync(PoolManager &pm) {
    // Stop the tiers of pools that are gone, lost or changed their
    // [pool.remote] or their keys (a reload: started again below with the
    // new ones), or now name another region. A reload replaces
    // Pool::keyring exactly when [pool.encryption] changed.
    for (auto it = tiers_.begin(); it != tiers_.end();) {
        const Pool *p = pm.find(it->first);
        bool keep = p && p->cfg.remote.enabled && p->handle &&
                    p->cfg.remote == it->second->config() && p->keyring == it->second->keyring();
        if (keep) {
            const kv_region_header *h = kv_pool_header(p->handle);
            keep = h->pool_id_lo == it->second->pool_id_lo() &&
                   h->pool_id_hi == it->second->pool_id_hi();
        }
        if (keep) {
            ++it;
            continue;
        }
        KV_LOGI(kComp, "pool %s: remote tier stopped", it->first.c_str());
        it = tiers_.erase(it);
    }
    for (const auto &p : pm.pools()) {
        if (!p->cfg.remote.enabled || !p->handle || tiers_.contains(p->cfg.name)) continue;
        const uint64_t now = mono_ms();
        auto &logged = failed_logged_ms_[p->cfg.name];
        auto pw = read_remote_password(p->cfg.remote);
        auto t = pw ? RemoteTier::start(*p, *pw, wake_fd_)
                    : std::expected<std::unique_ptr<RemoteTier>, std::string>(
                          std::unexpected("pool " + p->cfg.name + ": remote tier: " + pw.error()));
        if (!t) {
            if (!logged || now - logged >= 60000) {
                KV_LOGE(kComp, "%s", t.error().c_str());
                logged = now;
            }
            continue;
        }
        KV_LOGI(kComp, "pool %s: remote tier on %zu seed%s, prefix %s, write %s, %s%s",
                p->cfg.name.c_str(), p->cfg.remote.seeds.size(),
                p->cfg.remote.seeds.size() == 1 ? "" : "s", p->cfg.remote.key_prefix.c_str(),
                p->cfg.remote.write == WritePolicy::WriteBehind ? "write-behind" : "none",
                p->keyring ? "sealed with key " : "in the clear",
                p->keyring ? p->keyring->current_id().c_str() : "");
        failed_logged_ms_.erase(p->cfg.name);
        tiers_.emplace(p->cfg.name, std::move(*t));
    }
}

void RemoteTiers::stop(const std::string &pool) {
    if (tiers_.erase(pool)) KV_LOGI(kComp, "pool %s: remote tier stopped", pool.c_str());
}

RemoteTier *RemoteTiers::find(const std::string &pool) {
    auto it = tiers_.find(pool);
    return it == tiers_.end() ? nullptr : it->second.get();
}

void RemoteTiers::on_feed(const std::string &pool, kv_pool *, std::span<const FeedEvent> events) {
    if (RemoteTier *t = find(pool)) t->on_events(events);
}

std::vector<JobAnswer> RemoteTiers::take_answers() {
    std::vector<JobAnswer> out;
    for (auto &[name, t] : tiers_)
        for (JobAnswer &a : t->take_answers())
            out.push_back(std::move(a));
    return out;
}

std::vector<std::pair<std::string, std::vector<FeedEvent>>> RemoteTiers::take_uploaded() {
    std::vector<std::pair<std::string, std::vector<FeedEvent>>> out;
    for (auto &[name, t] : tiers_)
        if (auto ev = t->take_uploaded(); !ev.empty()) out.emplace_back(name, std::move(ev));
    return out;
}

void set_remote_tiers(RemoteTiers *t) {
    g_tiers = t;
}

RemoteTiers *remote_tiers() {
    return g_tiers;
}

nlohmann::json remote_json(const std::string &pool) {
    RemoteTier *t = g_tiers ? g_tiers->find(pool) : nullptr;
    return t ? t->status_json() : nlohmann::json{{"enabled", false}};
}

std::string remote_prometheus_text() {
    if (!g_tiers || g_tiers->tiers().empty()) return {};
    struct Family {
        const char *name, *type, *help;
    };
    // In Snapshot::v order.
    static constexpr Family kCounters[] = {
        {"kvpool_remote_uploads_total", "counter", "Blocks uploaded to the remote tier."},
        {"kvpool_remote_upload_bytes_total", "counter", "Bytes uploaded to the remote tier."},
        {"kvpool_remote_upload_errors_total", "counter",
         "Block uploads that failed (Redis errors, timeouts)."},
        {"kvpool_remote_upload_dropped_total", "counter",
         "Committed blocks not queued for upload: the queue was full."},
        {"kvpool_remote_upload_skipped_total", "counter",
         "Blocks not uploaded: gone before their turn, or fetched from the tier."},
        {"kvpool_remote_fetches_total", "counter", "Fetch requests served."},
        {"kvpool_remote_fetched_blocks_total", "counter",
         "Blocks fetched from the remote tier and committed."},
        {"kvpool_remote_fetched_bytes_total", "counter", "Bytes fetched and committed."},
        {"kvpool_remote_fetch_missing_total", "counter",
         "Fetched blocks the remote tier did not hold."},
        {"kvpool_remote_fetch_errors_total", "counter", "Fetch errors (Redis errors, timeouts)."},
        {"kvpool_remote_upload_corrupt_total", "counter",
         "Blocks not uploaded because their bytes fail their own checksum."},
    };
    std::vector<std::pair<std::string, RemoteTier::Snapshot>> snaps;
    for (const auto &[name, t] : g_tiers->tiers())
        snaps.emplace_back(name, t->snapshot());
    std::string out;
    auto head = [&](const char *name, const char *type, const char *help) {
        out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    };
    for (size_t f = 0; f < std::size(kCounters); f++) {
        head(kCounters[f].name, kCounters[f].type, kCounters[f].help);
        for (const auto &[pool, s] : snaps)
            out += std::string(kCounters[f].name) + "{pool=\"" + pool + "\"} " +
                   std::to_string(s.v[f]) + "\n";
    }
    head("kvpool_remote_rejected_total", "counter",
         "Fetched values refused by a check, by reason (plaintext, key_id and decrypt: by "
         "encryption); never committed.");
    for (const auto &[pool, s] : snaps)
        for (size_t i = 1; i < kRejectCount; i++)
            out += "kvpool_remote_rejected_total{pool=\"" + pool + "\",reason=\"" +
                   reject_name(Reject(i)) + "\"} " + std::to_string(s.rejected[i]) + "\n";
    head("kvpool_remote_queue_blocks", "gauge", "Blocks waiting for upload.");
    for (const auto &[pool, s] : snaps)
        out += "kvpool_remote_queue_blocks{pool=\"" + pool + "\"} " +
               std::to_string(s.queue_blocks) + "\n";
    head("kvpool_remote_queue_bytes", "gauge", "Bytes waiting for upload.");
    for (const auto &[pool, s] : snaps)
        out += "kvpool_remote_queue_bytes{pool=\"" + pool + "\"} " + std::to_string(s.queue_bytes) +
               "\n";
    head("kvpool_remote_queue_oldest_age_seconds", "gauge",
         "Age of the oldest block waiting for upload: the write-behind lag.");
    for (const auto &[pool, s] : snaps) {
        char v[64];
        snprintf(v, sizeof v, "%.3f", s.oldest_s);
        out += "kvpool_remote_queue_oldest_age_seconds{pool=\"" + pool + "\"} " + v + "\n";
    }
    return out;
}

} // namespace kv::daemon
