// SPDX-License-Identifier: MIT
//
// The KV-event publisher (kv_events.h). The encoding follows msgspec's
// output for vLLM's structs in vllm/distributed/kv_events.py: an
// array_like struct is a msgpack array of its fields in order, a tagged
// array_like struct puts the class name first; a tagged map struct is a
// map with "type" first. Required fields are always written (None as nil);
// fields with defaults that vLLM leaves at None are omitted, as msgspec's
// omit_defaults does.
#include "kv_events.h"

#include "clock.h"
#include "log.h"
#include "pool_manager.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <msgpack.h>
#include <sys/epoll.h>
#include <zmq.h>

namespace kv::daemon {

namespace {

constexpr const char *kComp = "events";
KvEventPublisher *g_current = nullptr;

// msgpack_sbuffer freed on scope exit.
struct Buffer {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    Buffer() {
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    }
    ~Buffer() { msgpack_sbuffer_destroy(&sb); }
    Buffer(const Buffer &) = delete;
    Buffer &operator=(const Buffer &) = delete;

    void str(std::string_view s) {
        msgpack_pack_str(&pk, s.size());
        msgpack_pack_str_body(&pk, s.data(), s.size());
    }
    void key(std::string_view k) { str(k); }
};

void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = uint8_t(v);
        v >>= 8;
    }
}

uint64_t get_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

// vLLM's ExternalBlockHash of a kvpool key (doc/vllm-keys.md: the key is
// the last 16 bytes of vLLM's hash). Int: maybe_convert_block_hash's
// int.from_bytes(hash, "big") & (2**64 - 1), the hash's last 8 bytes, so
// key.lo. Bytes: the key's 16 bytes, big-endian.
void pack_hash(Buffer &b, HashForm form, const kv_key &k) {
    if (form == HashForm::Int) {
        msgpack_pack_uint64(&b.pk, k.lo);
        return;
    }
    uint8_t raw[16];
    put_be64(raw, k.hi);
    put_be64(raw + 8, k.lo);
    msgpack_pack_bin(&b.pk, sizeof raw);
    msgpack_pack_bin_body(&b.pk, raw, sizeof raw);
}

bool same_key(const kv_key &a, const kv_key &b) {
    return a.lo == b.lo && a.hi == b.hi;
}

// One vLLM event: a run [first, last] of feed events of one kind.
struct Run {
    size_t first, last;
};

// Where runs end: a different kind; a Stored that does not continue the
// chain of the one before it (namespace, parent) or differs in whether it
// carries token ids; a Removed of another namespace does not matter to
// vLLM's BlockRemoved (no namespace in it) but keeps runs readable.
std::vector<Run> runs_of(std::span<const FeedEvent> ev) {
    std::vector<Run> out;
    for (size_t i = 0; i < ev.size(); i++) {
        if (!out.empty()) {
            Run &r = out.back();
            const FeedEvent &prev = ev[r.last];
            const FeedEvent &e = ev[i];
            bool joins = false;
            if (e.kind == FeedKind::Stored && prev.kind == FeedKind::Stored)
                joins = e.ns == prev.ns && e.has_parent && same_key(e.parent, prev.key) &&
                        e.token_ids.empty() == prev.token_ids.empty();
            else if (e.kind == FeedKind::Removed && prev.kind == FeedKind::Removed)
                joins = e.ns == prev.ns;
            if (joins) {
                r.last = i;
                continue;
            }
        }
        out.push_back(Run{i, i});
    }
    return out;
}

} // namespace

std::string EventEncoder::batch(double ts, std::span<const FeedEvent> events,
                                std::string_view medium, size_t *n_out) const {
    const std::vector<Run> runs = runs_of(events);
    const bool map = encoding == EventEncoding::Map;
    Buffer b;
    msgpack_pack_array(&b.pk, 3);
    msgpack_pack_double(&b.pk, ts);
    msgpack_pack_array(&b.pk, runs.size());
    for (const Run &r : runs) {
        const FeedEvent &first = events[r.first];
        const size_t n = r.last - r.first + 1;
        auto hashes = [&] {
            msgpack_pack_array(&b.pk, n);
            for (size_t i = r.first; i <= r.last; i++)
                pack_hash(b, hash_form, events[i].key);
        };
        switch (first.kind) {
        case FeedKind::Stored: {
            // BlockStored(block_hashes, parent_block_hash, token_ids,
            // block_size, lora_id, medium, lora_name)
            const uint32_t bs = block_size ? block_size(first.ns) : 0;
            size_t n_ids = 0;
            for (size_t i = r.first; i <= r.last; i++)
                n_ids += events[i].token_ids.size();
            if (map) {
                msgpack_pack_map(&b.pk, 8);
                b.key("type");
                b.str("BlockStored");
                b.key("block_hashes");
            } else {
                msgpack_pack_array(&b.pk, 8);
                b.str("BlockStored");
            }
            hashes();
            if (map) b.key("parent_block_hash");
            if (first.has_parent)
                pack_hash(b, hash_form, first.parent);
            else
                msgpack_pack_nil(&b.pk);
            if (map) b.key("token_ids");
            msgpack_pack_array(&b.pk, n_ids);
            for (size_t i = r.first; i <= r.last; i++)
                for (uint32_t t : events[i].token_ids)
                    msgpack_pack_uint32(&b.pk, t);
            if (map) b.key("block_size");
            msgpack_pack_uint32(&b.pk, bs ? bs : first.tokens);
            if (map) b.key("lora_id");
            msgpack_pack_nil(&b.pk);
            if (map) b.key("medium");
            b.str(medium);
            if (map) b.key("lora_name");
            msgpack_pack_nil(&b.pk);
            break;
        }
        case FeedKind::Removed:
            // BlockRemoved(block_hashes, medium)
            if (map) {
                msgpack_pack_map(&b.pk, 3);
                b.key("type");
                b.str("BlockRemoved");
                b.key("block_hashes");
            } else {
                msgpack_pack_array(&b.pk, 3);
                b.str("BlockRemoved");
            }
            hashes();
            if (map) b.key("medium");
            b.str(medium);
            break;
        case FeedKind::Cleared:
            if (map) {
                msgpack_pack_map(&b.pk, 1);
                b.key("type");
            } else {
                msgpack_pack_array(&b.pk, 1);
            }
            b.str("AllBlocksCleared");
            break;
        }
    }
    msgpack_pack_int(&b.pk, 0); // data_parallel_rank
    if (n_out) *n_out = runs.size();
    return std::string(b.sb.data, b.sb.size);
}

// ---- Channels -------------------------------------------------------------

struct KvEventPublisher::Channel {
    std::string pool;
    EventsConfig cfg;
    std::string topic;
    kv_pool *handle = nullptr;
    void *pub = nullptr;
    void *replay = nullptr;
    int replay_fd = -1;
    EventsStats st;
    std::deque<std::pair<uint64_t, std::string>> buffer; // (seq, payload), oldest first
    std::map<uint32_t, uint32_t> block_size;             // ns -> the manifest's block_tokens
    std::string error;                                   // why it is not open; "" when open
    uint64_t retry_ms = 0; // a channel that failed to open is tried again from then (mono_ms)
    EventEncoder enc;
};

namespace {

bool same_config(const EventsConfig &a, const EventsConfig &b) {
    return a.enabled == b.enabled && a.endpoint == b.endpoint &&
           a.replay_endpoint == b.replay_endpoint && a.topic == b.topic &&
           a.encoding == b.encoding && a.hash_form == b.hash_form &&
           a.buffer_steps == b.buffer_steps && a.hwm == b.hwm && a.max_batch == b.max_batch &&
           a.medium == b.medium;
}

// vLLM's rule: bind an endpoint with a wildcard host or a local transport,
// connect to any other (a stable subscriber that binds).
bool binds(const std::string &ep) {
    return ep.find('*') != std::string::npos || ep.find("::") != std::string::npos ||
           ep.starts_with("ipc://") || ep.starts_with("inproc://");
}

std::string zmq_err(const std::string &what) {
    return what + ": " + zmq_strerror(zmq_errno());
}

} // namespace

KvEventPublisher::KvEventPublisher(int epfd) : epfd_(epfd) {}

KvEventPublisher::~KvEventPublisher() {
    for (auto &[name, c] : channels_)
        close_channel(*c);
    channels_.clear();
    if (ctx_) zmq_ctx_term(ctx_);
    if (g_current == this) g_current = nullptr;
}

KvEventPublisher *KvEventPublisher::current() {
    return g_current;
}

void KvEventPublisher::set_current(KvEventPublisher *p) {
    g_current = p;
}

void KvEventPublisher::close_channel(Channel &c) {
    if (c.replay_fd >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, c.replay_fd, nullptr);
    c.replay_fd = -1;
    if (c.pub) zmq_close(c.pub);
    if (c.replay) zmq_close(c.replay);
    c.pub = c.replay = nullptr;
}

// A channel whose pool is still served by that very handle: a pool
// destroyed (or re-created) since the last sync() has no channel here.
KvEventPublisher::Channel *KvEventPublisher::find(const std::string &pool) {
    auto it = channels_.find(pool);
    if (it == channels_.end() || !it->second->pub) return nullptr;
    if (pm_) {
        bool live = false;
        for (const auto &p : pm_->pools())
            live |= p->cfg.name == pool && p->handle == it->second->handle;
        if (!live) return nullptr;
    }
    return it->second.get();
}

void KvEventPublisher::sync(const PoolManager &pm) {
    pm_ = &pm;
    try {
        // Close the channels of pools that went away or lost their table.
        for (auto it = channels_.begin(); it != channels_.end();) {
            bool keep = false;
            for (const auto &p : pm.pools())
                keep |= p->cfg.name == it->first && p->cfg.events.enabled;
            if (keep) {
                ++it;
                continue;
            }
            close_channel(*it->second);
            next_seq_[it->first] = it->second->st.next_seq;
            KV_LOGI(kComp, "pool %s: events closed", it->first.c_str());
            it = channels_.erase(it);
        }
        for (const auto &p : pm.pools()) {
            const EventsConfig &ec = p->cfg.events;
            if (!ec.enabled) continue;
            auto it = channels_.find(p->cfg.name);
            if (it != channels_.end()) {
                Channel &c = *it->second;
                const bool changed = !same_config(c.cfg, ec) || c.handle != p->handle;
                if (!changed && (c.pub || mono_ms() < c.retry_ms)) continue;
                // The same sockets: take the new settings in place (zmq_close
                // releases an address only later, so a rebind would fail).
                if (c.pub && c.handle == p->handle && c.cfg.endpoint == ec.endpoint &&
                    c.cfg.replay_endpoint == ec.replay_endpoint) {
                    const int hwm = int(ec.hwm);
                    zmq_setsockopt(c.pub, ZMQ_SNDHWM, &hwm, sizeof hwm); // new connections
                    if (c.replay) {
                        const int rh =
                            int(std::min<uint64_t>(uint64_t(ec.buffer_steps) + 16, INT32_MAX));
                        zmq_setsockopt(c.replay, ZMQ_SNDHWM, &rh, sizeof rh);
                    }
                    c.cfg = ec;
                    c.topic = ec.topic.empty() ? p->cfg.name : ec.topic;
                    c.enc.encoding = ec.encoding;
                    c.enc.hash_form = ec.hash_form;
                    while (c.buffer.size() > ec.buffer_steps)
                        c.buffer.pop_front();
                    KV_LOGI(kComp, "pool %s: events reconfigured", c.pool.c_str());
                    resync(c);
                    continue;
                }
                // New endpoints, or failed to open a while ago: open afresh.
                if (c.pub) KV_LOGI(kComp, "pool %s: events reopened", c.pool.c_str());
                close_channel(c);
                last_error_[c.pool] = c.error;
                next_seq_[c.pool] = c.st.next_seq;
                channels_.erase(it);
            }
            auto c = std::make_unique<Channel>();
            c->pool = p->cfg.name;
            c->cfg = ec;
            c->topic = ec.topic.empty() ? p->cfg.name : ec.topic;
            c->handle = p->handle;
            c->st.next_seq = next_seq_[c->pool];
            c->enc.encoding = ec.encoding;
            c->enc.hash_form = ec.hash_form;
            Channel *raw = c.get();
            c->enc.block_size = [raw](uint32_t ns) -> uint32_t {
                auto f = raw->block_size.find(ns);
                if (f != raw->block_size.end()) return f->second;
                kv_manifest m{};
                if (!raw->handle || kv_ns_get(raw->handle, ns, &m, nullptr) != 0) return 0;
                raw->block_size[ns] = m.block_tokens;
                return m.block_tokens;
            };
            if (!ctx_) ctx_ = zmq_ctx_new();
            auto fail = [&](const std::string &why) {
                c->error = why;
                c->retry_ms = mono_ms() + 1000;
                close_channel(*c);
                // Once per distinct error, not once per retry.
                if (last_error_[c->pool] != why)
                    KV_LOGE(kComp, "pool %s: %s; trying again every second", c->pool.c_str(),
                            why.c_str());
                last_error_[c->pool] = why;
            };
            if (!ctx_) {
                fail(zmq_err("zmq_ctx_new"));
                channels_[c->pool] = std::move(c);
                continue;
            }
            c->pub = zmq_socket(ctx_, ZMQ_PUB);
            const int hwm = int(ec.hwm), zero = 0;
            if (!c->pub || zmq_setsockopt(c->pub, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
                zmq_setsockopt(c->pub, ZMQ_LINGER, &zero, sizeof zero) != 0) {
                fail(zmq_err("PUB socket"));
                channels_[c->pool] = std::move(c);
                continue;
            }
            const int rc = binds(ec.endpoint) ? zmq_bind(c->pub, ec.endpoint.c_str())
                                              : zmq_connect(c->pub, ec.endpoint.c_str());
            if (rc != 0) {
                fail(zmq_err((binds(ec.endpoint) ? "bind " : "connect ") + ec.endpoint));
                channels_[c->pool] = std::move(c);
                continue;
            }
            if (!ec.replay_endpoint.empty()) {
                c->replay = zmq_socket(ctx_, ZMQ_ROUTER);
                int fd = -1;
                size_t fdlen = sizeof fd;
                // A ROUTER drops what exceeds a peer's high-water mark (END_SEQ
                // included): room for a whole buffer and its end per peer, which
                // also bounds what a client that never reads can pin.
                const int replay_hwm =
                    int(std::min<uint64_t>(uint64_t(ec.buffer_steps) + 16, INT32_MAX));
                if (!c->replay || zmq_setsockopt(c->replay, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
                    zmq_setsockopt(c->replay, ZMQ_SNDHWM, &replay_hwm, sizeof replay_hwm) != 0 ||
                    zmq_bind(c->replay, ec.replay_endpoint.c_str()) != 0 ||
                    zmq_getsockopt(c->replay, ZMQ_FD, &fd, &fdlen) != 0) {
                    fail(zmq_err("replay socket " + ec.replay_endpoint));
                    channels_[c->pool] = std::move(c);
                    continue;
                }
                epoll_event ev{};
                ev.events = EPOLLIN;
                ev.data.fd = fd;
                if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0) c->replay_fd = fd;
            }
            c->error.clear();
            last_error_.erase(c->pool);
            KV_LOGN(kComp, "pool %s: events on %s%s%s, topic \"%s\", %s encoding, %s hashes",
                    c->pool.c_str(), ec.endpoint.c_str(),
                    ec.replay_endpoint.empty() ? "" : ", replay on ", ec.replay_endpoint.c_str(),
                    c->topic.c_str(), ec.encoding == EventEncoding::Map ? "map" : "array",
                    ec.hash_form == HashForm::Int ? "int" : "bytes");
            Channel &ref = *c;
            channels_[c->pool] = std::move(c);
            resync(ref);
        }
    } catch (const std::exception &e) {
        KV_LOGE(kComp, "sync: %s", e.what());
    }
}

// AllBlocksCleared, then every committed block as Stored (no parents, no
// token ids: the entry table keeps neither).
void KvEventPublisher::resync(Channel &c) {
    std::vector<FeedEvent> evs;
    FeedEvent clear;
    clear.kind = FeedKind::Cleared;
    clear.cause = FeedCause::Resync;
    evs.push_back(clear);
    std::vector<kv_entry_info> rows(1024);
    uint64_t cursor = 0;
    const uint64_t n = kv_pool_header(c.handle)->n_entries;
    while (cursor < n) {
        const int k = kv_pool_entries(c.handle, &cursor, rows.data(), rows.size());
        if (k < 0) break;
        for (int i = 0; i < k; i++) {
            const kv_entry_info &e = rows[size_t(i)];
            if (e.state != KV_ENTRY_COMMITTED) continue;
            FeedEvent s;
            s.kind = FeedKind::Stored;
            s.cause = FeedCause::Resync;
            s.ns = e.ns;
            s.key = e.key;
            s.length = e.length;
            s.tokens = e.meta.tokens;
            s.time_ns = e.commit_ns;
            s.entry = e.index;
            evs.push_back(std::move(s));
        }
        // Publish as the scan goes, so a pool of millions of blocks does not
        // hold them all in memory at once; whole batches only, so the
        // batches are those one publish() of everything would make.
        const size_t max = c.cfg.max_batch ? c.cfg.max_batch : 512;
        if (evs.size() >= 4 * max) {
            const size_t whole = evs.size() - evs.size() % max;
            publish(c, std::span<const FeedEvent>(evs).first(whole), c.cfg.medium);
            evs.erase(evs.begin(), evs.begin() + std::ptrdiff_t(whole));
        }
    }
    publish(c, evs, c.cfg.medium);
}

void KvEventPublisher::send_batch(Channel &c, std::string payload, size_t n_vllm, size_t n_feed) {
    const uint64_t seq = c.st.next_seq++;
    uint8_t seqb[8];
    put_be64(seqb, seq);
    const bool ok =
        zmq_send(c.pub, c.topic.data(), c.topic.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        zmq_send(c.pub, seqb, sizeof seqb, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        zmq_send(c.pub, payload.data(), payload.size(), ZMQ_DONTWAIT) >= 0;
    if (!ok) c.st.send_errors++;
    c.st.batches++;
    c.st.events += n_vllm;
    c.st.feed_events += n_feed;
    if (c.cfg.buffer_steps > 0) {
        c.buffer.emplace_back(seq, std::move(payload));
        while (c.buffer.size() > c.cfg.buffer_steps)
            c.buffer.pop_front();
    }
    c.st.buffered = c.buffer.size();
}

void KvEventPublisher::publish(Channel &c, std::span<const FeedEvent> events,
                               std::string_view medium) {
    const size_t max = c.cfg.max_batch ? c.cfg.max_batch : 512;
    for (size_t at = 0; at < events.size(); at += max) {
        const auto part = events.subspan(at, std::min(max, events.size() - at));
        for (const FeedEvent &e : part) {
            if (e.kind != FeedKind::Cleared) continue;
            c.st.resyncs++;
            c.block_size.clear(); // namespaces may have been registered anew
        }
        size_t n = 0;
        std::string payload = c.enc.batch(double(realtime_ns()) / 1e9, part, medium, &n);
        send_batch(c, std::move(payload), n, part.size());
    }
}

void KvEventPublisher::on_feed(const std::string &pool, kv_pool *handle,
                               std::span<const FeedEvent> events) {
    try {
        Channel *c = find(pool);
        if (c && c->handle == handle && !events.empty()) publish(*c, events, c->cfg.medium);
        service_all();
    } catch (const std::exception &e) {
        KV_LOGE(kComp, "pool %s: %s", pool.c_str(), e.what());
    }
}

void KvEventPublisher::publish_remote(const std::string &pool, std::span<const FeedEvent> events,
                                      std::string_view medium) {
    try {
        Channel *c = find(pool);
        if (!c || events.empty()) return;
        std::vector<FeedEvent> stored;
        for (const FeedEvent &e : events)
            if (e.kind == FeedKind::Stored) stored.push_back(e);
        if (stored.empty()) return;
        publish(*c, stored, medium);
        c->st.remote_events += stored.size();
    } catch (const std::exception &e) {
        KV_LOGE(kComp, "pool %s: remote events: %s", pool.c_str(), e.what());
    }
}

bool KvEventPublisher::owns_fd(int fd) const {
    for (const auto &[name, c] : channels_)
        if (c->replay_fd == fd) return true;
    return false;
}

void KvEventPublisher::on_fd(int fd) {
    for (auto &[name, c] : channels_)
        if (c->replay_fd == fd) service(*c);
}

void KvEventPublisher::service_all() {
    for (auto &[name, c] : channels_)
        if (c->replay) service(*c);
}

// Answer waiting replay requests. ZMQ_EVENTS both says whether a message
// waits and re-arms ZMQ_FD's edge, so it is read until it says none.
void KvEventPublisher::service(Channel &c) {
    for (int budget = 64; budget > 0; budget--) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(c.replay, ZMQ_EVENTS, &events, &len) != 0 || !(events & ZMQ_POLLIN))
            return;
        std::vector<std::string> frames;
        for (;;) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, c.replay, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            frames.emplace_back(static_cast<const char *>(zmq_msg_data(&m)), zmq_msg_size(&m));
            const bool more = zmq_msg_more(&m);
            zmq_msg_close(&m);
            if (!more) break;
        }
        // [identity, "", seq] from REQ (vLLM's shape), [identity, seq] from DEALER.
        const bool delim = frames.size() == 3 && frames[1].empty();
        if (!(delim || frames.size() == 2) || frames.back().size() != 8) {
            c.st.bad_requests++;
            continue;
        }
        const std::string &id = frames[0];
        const uint64_t start = get_be64(reinterpret_cast<const uint8_t *>(frames.back().data()));
        auto reply = [&](const void *seq, const void *body, size_t body_len) {
            zmq_send(c.replay, id.data(), id.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT);
            if (delim) zmq_send(c.replay, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
            zmq_send(c.replay, seq, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
            zmq_send(c.replay, body, body_len, ZMQ_DONTWAIT);
        };
        c.st.replays++;
        for (const auto &[seq, payload] : c.buffer) {
            if (seq < start) continue;
            uint8_t seqb[8];
            put_be64(seqb, seq);
            reply(seqb, payload.data(), payload.size());
            c.st.replay_batches++;
        }
        uint8_t end[8];
        put_be64(end, UINT64_MAX); // -1, signed
        reply(end, "", 0);
    }
}

nlohmann::json KvEventPublisher::status_json(const std::string &pool) const {
    auto it = channels_.find(pool);
    if (it == channels_.end()) return nullptr;
    const Channel &c = *it->second;
    return {
        {"endpoint", c.cfg.endpoint},
        {"replay_endpoint", c.cfg.replay_endpoint.empty() ? nlohmann::json(nullptr)
                                                          : nlohmann::json(c.cfg.replay_endpoint)},
        {"topic", c.topic},
        {"encoding", c.cfg.encoding == EventEncoding::Map ? "map" : "array"},
        {"hash_form", c.cfg.hash_form == HashForm::Int ? "int" : "bytes"},
        {"medium", c.cfg.medium},
        {"open", c.pub != nullptr},
        {"error", c.error},
        {"next_seq", c.st.next_seq},
        {"batches", c.st.batches},
        {"events", c.st.events},
        {"feed_events", c.st.feed_events},
        {"remote_events", c.st.remote_events},
        {"send_errors", c.st.send_errors},
        {"resyncs", c.st.resyncs},
        {"replays", c.st.replays},
        {"replay_batches", c.st.replay_batches},
        {"bad_replay_requests", c.st.bad_requests},
        {"buffered", c.st.buffered},
        {"buffer_steps", c.cfg.buffer_steps},
    };
}

void KvEventPublisher::prometheus(std::string &out) const {
    struct Fam {
        const char *name, *type, *help;
        uint64_t EventsStats::*field;
    };
    static constexpr Fam kFams[] = {
        {"kvpool_events_batches_total", "counter", "KV-event batches published.",
         &EventsStats::batches},
        {"kvpool_events_total", "counter", "vLLM KV events published (in batches).",
         &EventsStats::events},
        {"kvpool_events_feed_total", "counter", "Feed events turned into KV events.",
         &EventsStats::feed_events},
        {"kvpool_events_remote_total", "counter", "Remote-tier Stored events published.",
         &EventsStats::remote_events},
        {"kvpool_events_send_errors_total", "counter", "Batches the PUB socket refused.",
         &EventsStats::send_errors},
        {"kvpool_events_resyncs_total", "counter", "AllBlocksCleared published (resyncs).",
         &EventsStats::resyncs},
        {"kvpool_events_replays_total", "counter", "Replay requests answered.",
         &EventsStats::replays},
        {"kvpool_events_replay_batches_total", "counter", "Batches sent by replays.",
         &EventsStats::replay_batches},
        {"kvpool_events_next_seq", "gauge", "Sequence number of the next batch.",
         &EventsStats::next_seq},
        {"kvpool_events_buffered", "gauge", "Batches held for replay.", &EventsStats::buffered},
    };
    if (channels_.empty()) return;
    for (const Fam &f : kFams) {
        out += std::string("# HELP ") + f.name + " " + f.help + "\n# TYPE " + f.name + " " +
               f.type + "\n";
        for (const auto &[name, c] : channels_)
            out += std::string(f.name) + "{pool=\"" + name + "\"} " +
                   std::to_string(c->st.*(f.field)) + "\n";
    }
}

} // namespace kv::daemon
