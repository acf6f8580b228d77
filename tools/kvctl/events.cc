// SPDX-License-Identifier: MIT
#include "events.h"

#include "args.h"
#include "common.h"
#include "output.h"
#include "requests.h"

#include <chrono>
#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <msgpack.h>
#include <optional>
#include <set>
#include <zmq.h>

namespace kvctl {

namespace {

struct Options {
    Command cmd; // socket, json, timeout, and the status request for the pool
    std::string pool;
    std::optional<uint64_t> from;
    std::optional<uint64_t> count;
    double timeout_s = 0; // 0: until interrupted
};

constexpr const char *kUsage =
    "Usage: kvctl [--socket PATH] events tail POOL [--json] [--from SEQ] [--count N] "
    "[--timeout SECONDS]\n\n"
    "Subscribe to the pool's vLLM-format KV events (its [pool.events] table) and print\n"
    "each event on a line; --json prints one JSON object per event.\n"
    "  --from SEQ         first replay the batches from SEQ (needs replay_endpoint)\n"
    "  --count N          stop after N events\n"
    "  --timeout SECONDS  stop after SECONDS (default: run until interrupted)\n";

Result<uint64_t> number(const Command &c, std::string_view opt, const std::string &v) {
    char *end = nullptr;
    errno = 0;
    const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || v[0] == '-' || errno || *end)
        return std::unexpected(usage_error(
            c, std::string(opt) + ": expected a non-negative integer, got " + quote(v)));
    return uint64_t(n);
}

Result<Options> parse(int argc, char **argv) {
    Options o;
    if (const char *env = std::getenv("KVPOOL_SOCKET"); env && *env) {
        o.cmd.socket = env;
        o.cmd.socket_source = "$KVPOOL_SOCKET";
    }
    std::vector<std::string> pos;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        std::optional<std::string> inl;
        if (size_t eq = a.find('='); a.starts_with("--") && eq != std::string::npos) {
            inl = a.substr(eq + 1);
            a = a.substr(0, eq);
        }
        auto value = [&]() -> Result<std::string> {
            if (inl) return *inl;
            if (i + 1 >= argc) return std::unexpected(usage_error(o.cmd, a + ": missing value"));
            return std::string(argv[++i]);
        };
        if (a == "--json") {
            o.cmd.json = true;
        } else if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            std::exit(kExitOk);
        } else if (a == "--socket") {
            auto v = value();
            if (!v) return std::unexpected(v.error());
            o.cmd.socket = *v;
            o.cmd.socket_source = "--socket";
        } else if (a == "--timeout") {
            auto v = value();
            if (!v) return std::unexpected(v.error());
            char *end = nullptr;
            const double t = std::strtod(v->c_str(), &end);
            if (v->empty() || *end || !(t >= 0) || t > kMaxTimeout)
                return std::unexpected(
                    usage_error(o.cmd, "--timeout: expected seconds >= 0, got " + quote(*v)));
            o.timeout_s = t;
        } else if (a == "--from" || a == "--count") {
            auto v = value();
            if (!v) return std::unexpected(v.error());
            auto n = number(o.cmd, a, *v);
            if (!n) return std::unexpected(n.error());
            (a == "--from" ? o.from : o.count) = *n;
        } else if (a.size() > 1 && a[0] == '-') {
            return std::unexpected(usage_error(
                o.cmd, "unknown option " + quote(a) +
                           " for events tail; expected --json, --from, --count, --timeout"));
        } else {
            pos.push_back(a);
        }
    }
    if (pos.size() != 3 || pos[0] != "events" || pos[1] != "tail")
        return std::unexpected(
            usage_error(o.cmd, "expected: events tail POOL [--json] [--from SEQ] [--count N] "
                               "[--timeout SECONDS]"));
    o.pool = pos[2];
    o.cmd.verb = find_verb("status");
    o.cmd.positional = {o.pool};
    return o;
}

// tcp://*:P and tcp://0.0.0.0:P are bound on every address: reach them on
// loopback (as [::1] for an IPv6 wildcard).
std::string connectable(const std::string &ep) {
    for (const char *wild : {"tcp://*:", "tcp://0.0.0.0:"})
        if (ep.starts_with(wild)) return "tcp://127.0.0.1:" + ep.substr(std::strlen(wild));
    if (ep.starts_with("tcp://[::]:")) return "tcp://[::1]:" + ep.substr(11);
    return ep;
}

json to_json(const msgpack_object &o) {
    switch (o.type) {
    case MSGPACK_OBJECT_NIL:
        return nullptr;
    case MSGPACK_OBJECT_BOOLEAN:
        return o.via.boolean;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o.via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return o.via.i64;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return o.via.f64;
    case MSGPACK_OBJECT_STR:
        return std::string(o.via.str.ptr, o.via.str.size);
    case MSGPACK_OBJECT_BIN: {
        std::string hex;
        for (uint32_t i = 0; i < o.via.bin.size; i++)
            hex += strf("%02x", unsigned(uint8_t(o.via.bin.ptr[i])));
        return hex;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json a = json::array();
        for (uint32_t i = 0; i < o.via.array.size; i++)
            a.push_back(to_json(o.via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json m = json::object();
        for (uint32_t i = 0; i < o.via.map.size; i++) {
            const msgpack_object &k = o.via.map.ptr[i].key;
            const std::string key = k.type == MSGPACK_OBJECT_STR
                                        ? std::string(k.via.str.ptr, k.via.str.size)
                                        : to_json(k).dump();
            m[key] = to_json(o.via.map.ptr[i].val);
        }
        return m;
    }
    default:
        return nullptr;
    }
}

// An event in either encoding as {"type": T, field: value, ...}, with the
// positional fields of the array form named as vLLM names them.
std::optional<json> normalize(const json &e) {
    if (e.is_object()) {
        if (!e.contains("type") || !e["type"].is_string()) return std::nullopt;
        return e;
    }
    if (!e.is_array() || e.empty() || !e[0].is_string()) return std::nullopt;
    static const std::vector<std::string> kStored{"block_hashes", "parent_block_hash", "token_ids",
                                                  "block_size",   "lora_id",           "medium",
                                                  "lora_name"};
    static const std::vector<std::string> kRemoved{"block_hashes", "medium"};
    const std::string tag = e[0];
    const std::vector<std::string> *names = tag == "BlockStored"    ? &kStored
                                            : tag == "BlockRemoved" ? &kRemoved
                                                                    : nullptr;
    json out = {{"type", tag}};
    for (size_t i = 1; i < e.size(); i++) {
        if (names && i - 1 < names->size())
            out[(*names)[i - 1]] = e[i];
        else
            out["field" + std::to_string(i)] = e[i];
    }
    return out;
}

std::string short_hash(const json &h) {
    if (h.is_number_unsigned()) return strf("%016" PRIx64, h.get<uint64_t>());
    if (h.is_number_integer()) return strf("%016" PRIx64, uint64_t(h.get<int64_t>()));
    if (h.is_string()) return h.get<std::string>();
    return h.dump();
}

// Print the events of one batch; returns how many, or nullopt if malformed.
std::optional<uint64_t> print_batch(const Options &o, uint64_t seq, const void *data, size_t len,
                                    uint64_t budget) {
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    const bool ok = msgpack_unpack_next(&up, static_cast<const char *>(data), len, &off) ==
                    MSGPACK_UNPACK_SUCCESS;
    json batch = ok ? to_json(up.data) : json();
    msgpack_unpacked_destroy(&up);
    json ts, evs;
    if (batch.is_array() && batch.size() >= 2) {
        ts = batch[0];
        evs = batch[1];
    } else if (batch.is_object() && batch.contains("events")) {
        ts = batch.value("ts", json());
        evs = batch["events"];
    }
    if (!evs.is_array()) return std::nullopt;
    uint64_t n = 0;
    for (const json &raw : evs) {
        if (n >= budget) break;
        auto e = normalize(raw);
        if (!e) return std::nullopt;
        n++;
        if (o.cmd.json) {
            json line = {{"seq", seq}, {"ts", ts}};
            for (auto it = e->begin(); it != e->end(); ++it)
                line[it.key()] = it.value();
            std::printf("%s\n", line.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
            continue;
        }
        std::string text = strf("%" PRIu64 " %.6f %s", seq, ts.is_number() ? ts.get<double>() : 0.0,
                                e->value("type", std::string("?")).c_str());
        if (e->contains("block_hashes") && (*e)["block_hashes"].is_array()) {
            text += " hashes=";
            bool first = true;
            for (const json &h : (*e)["block_hashes"]) {
                text += (first ? "" : ",") + short_hash(h);
                first = false;
            }
        }
        if (e->contains("parent_block_hash"))
            text += " parent=" + ((*e)["parent_block_hash"].is_null()
                                      ? std::string("-")
                                      : short_hash((*e)["parent_block_hash"]));
        if (e->contains("token_ids") && (*e)["token_ids"].is_array())
            text += strf(" tokens=%zu", (*e)["token_ids"].size());
        if (e->contains("block_size")) text += " block_size=" + (*e)["block_size"].dump();
        if (e->contains("medium") && (*e)["medium"].is_string())
            text += " medium=" + (*e)["medium"].get<std::string>();
        std::printf("%s\n", text.c_str());
    }
    std::fflush(stdout);
    return n;
}

uint64_t be64(const void *p) {
    const auto *b = static_cast<const uint8_t *>(p);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | b[i];
    return v;
}

struct Zmq {
    void *ctx = zmq_ctx_new();
    std::vector<void *> socks;
    ~Zmq() {
        for (void *s : socks)
            zmq_close(s);
        if (ctx) zmq_ctx_term(ctx);
    }
    void *socket(int type) {
        void *s = zmq_socket(ctx, type);
        if (s) {
            const int zero = 0;
            zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
            socks.push_back(s);
        }
        return s;
    }
};

// Receive one multipart message; frames empty when nothing came in wait_ms.
std::vector<std::string> recv_parts(void *s, long wait_ms) {
    std::vector<std::string> frames;
    zmq_pollitem_t it{s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, wait_ms) <= 0) return frames;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        frames.emplace_back(static_cast<const char *>(zmq_msg_data(&m)), zmq_msg_size(&m));
        const bool more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (!more) break;
    }
    return frames;
}

Result<int> tail(const Options &o) {
    if (auto r = check_socket_path(o.cmd); !r) return std::unexpected(r.error());
    auto req = build_request(o.cmd);
    if (!req) return std::unexpected(req.error());
    auto resp = transact(o.cmd, *req);
    if (!resp) return std::unexpected(resp.error());
    if (resp->error != 0) return std::unexpected(daemon_failure("status " + o.pool, *resp));
    json doc;
    try {
        doc = json::parse(resp->body);
    } catch (const json::exception &e) {
        return std::unexpected(
            Failure{kExitProtocol, std::string("status: not JSON: ") + e.what()});
    }
    const json *pool = &doc;
    if (doc.contains("pools") && doc["pools"].is_array() && !doc["pools"].empty())
        pool = &doc["pools"][0];
    if (!pool->contains("events") || !(*pool)["events"].is_object())
        return std::unexpected(Failure{
            kExitFailed, "pool " + quote(o.pool) + " publishes no KV events (no [pool.events])"});
    const json &ev = (*pool)["events"];
    const std::string endpoint = connectable(ev.value("endpoint", std::string()));
    const std::string topic = ev.value("topic", std::string());
    const std::string replay = ev["replay_endpoint"].is_string()
                                   ? connectable(ev["replay_endpoint"].get<std::string>())
                                   : std::string();
    if (o.from && replay.empty())
        return std::unexpected(
            Failure{kExitFailed, "pool " + quote(o.pool) + " has no replay_endpoint for --from"});

    Zmq z;
    void *sub = z.ctx ? z.socket(ZMQ_SUB) : nullptr;
    if (!sub || zmq_setsockopt(sub, ZMQ_SUBSCRIBE, topic.data(), topic.size()) != 0 ||
        zmq_connect(sub, endpoint.c_str()) != 0)
        return std::unexpected(
            Failure{kExitConnect, "connect " + endpoint + ": " + zmq_strerror(zmq_errno())});

    const auto t0 = std::chrono::steady_clock::now();
    auto left_ms = [&]() -> long {
        if (o.timeout_s <= 0) return 1000;
        const double gone =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return gone >= o.timeout_s ? -1 : long((o.timeout_s - gone) * 1000) + 1;
    };
    const uint64_t want = o.count.value_or(UINT64_MAX);
    uint64_t printed = 0;
    // The last batch the replay printed: live batches up to it are skipped
    // until the live stream passes it (after that a smaller seq means the
    // daemon restarted, and is printed).
    bool skip = false;
    uint64_t replayed = 0;

    if (o.from) {
        // DEALER with REQ's empty delimiter: the request looks like vLLM's
        // REQ request, and a DEALER, unlike a REQ, takes every message of
        // the multi-message answer.
        void *req_s = z.socket(ZMQ_DEALER);
        uint8_t start[8];
        for (int i = 0; i < 8; i++)
            start[i] = uint8_t(*o.from >> (56 - 8 * i));
        if (!req_s || zmq_connect(req_s, replay.c_str()) != 0 ||
            zmq_send(req_s, "", 0, ZMQ_SNDMORE) != 0 || zmq_send(req_s, start, 8, 0) != 8)
            return std::unexpected(
                Failure{kExitConnect, "replay " + replay + ": " + zmq_strerror(zmq_errno())});
        for (;;) {
            const long w = left_ms();
            if (w < 0) return kExitOk;
            auto f = recv_parts(req_s, std::min(w, 1000L));
            if (f.empty()) continue;
            if (f.size() != 3 || !f[0].empty() || f[1].size() != 8)
                return std::unexpected(Failure{kExitProtocol, "malformed replay message"});
            const uint64_t seq = be64(f[1].data());
            if (seq == UINT64_MAX) break; // END_SEQ
            auto n = print_batch(o, seq, f[2].data(), f[2].size(), want - printed);
            if (!n) return std::unexpected(Failure{kExitProtocol, "malformed replayed batch"});
            printed += *n;
            skip = true;
            replayed = seq;
            if (printed >= want) return kExitOk;
        }
    }
    for (;;) {
        const long w = left_ms();
        if (w < 0) return kExitOk;
        auto f = recv_parts(sub, std::min(w, 1000L));
        if (f.empty()) continue;
        if (f.size() != 3 || f[1].size() != 8) continue; // not a KV-event message
        const uint64_t seq = be64(f[1].data());
        if (skip && seq <= replayed) continue; // already replayed
        skip = false;
        auto n = print_batch(o, seq, f[2].data(), f[2].size(), want - printed);
        if (!n) return std::unexpected(Failure{kExitProtocol, "malformed batch"});
        printed += *n;
        if (printed >= want) return kExitOk;
    }
}

} // namespace

bool is_events_command(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const std::string_view a = argv[i];
        if (a == "--") return i + 1 < argc && std::string_view(argv[i + 1]) == "events";
        if (a == "--socket" || a == "--timeout") {
            i++;
            continue;
        }
        if (a.starts_with("-")) continue;
        return a == "events";
    }
    return false;
}

int events_main(int argc, char **argv) {
    auto o = parse(argc, argv);
    if (!o) return report(o.error(), false);
    auto r = tail(*o);
    return r ? *r : report(r.error(), o->cmd.json);
}

} // namespace kvctl
