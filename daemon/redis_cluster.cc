// SPDX-License-Identifier: MIT
#include "redis_cluster.h"

#include "remote_value.h" // strf

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstring>
// sds.h (the send buffer's string type) has no extern "C" of its own;
// hiredis.h includes it, so it comes first, wrapped.
extern "C" {
#include <hiredis/sds.h>
}
#include <hiredis/hiredis.h>
#include <map>
#include <sys/time.h>
#include <unordered_map>

namespace kv::daemon {

namespace {

// CRC16-CCITT (XMODEM: polynomial 0x1021, init 0), as the cluster
// specification defines the key hash.
constexpr std::array<uint16_t, 256> make_crc_table() {
    std::array<uint16_t, 256> t{};
    for (uint32_t i = 0; i < 256; i++) {
        uint16_t c = uint16_t(i << 8);
        for (int b = 0; b < 8; b++)
            c = (c & 0x8000) ? uint16_t((c << 1) ^ 0x1021) : uint16_t(c << 1);
        t[i] = c;
    }
    return t;
}
constexpr auto kCrcTable = make_crc_table();

uint16_t crc16(std::string_view s) {
    uint16_t crc = 0;
    for (unsigned char ch : s)
        crc = uint16_t((crc << 8) ^ kCrcTable[((crc >> 8) ^ ch) & 0xff]);
    return crc;
}

timeval to_timeval(uint32_t ms) {
    return timeval{time_t(ms / 1000), suseconds_t((ms % 1000) * 1000)};
}

// Splits "host:port" / "[v6]:port". False if malformed.
bool split_addr(std::string_view addr, std::string &host, int &port) {
    size_t colon = addr.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    std::string_view h = addr.substr(0, colon), p = addr.substr(colon + 1);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    int v = 0;
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (ec != std::errc() || ptr != p.data() + p.size() || v <= 0 || v > 65535) return false;
    host.assign(h);
    port = v;
    return true;
}

std::string join_addr(std::string_view host, long long port) {
    if (host.find(':') != std::string_view::npos)
        return strf("[%.*s]:%lld", int(host.size()), host.data(), port);
    return strf("%.*s:%lld", int(host.size()), host.data(), port);
}

enum class Cmd { Get, Set };

// One key's command in flight.
struct Op {
    size_t idx = 0;       // index into the caller's keys/items
    uint16_t slot = 0;    // its hash slot
    uint32_t hops = 0;    // redirects followed so far
    bool asking = false;  // send ASKING first (an -ASK redirect)
    bool retried = false; // already retried once after a connection error
    bool resent = false;  // already sent again on a new connection (a stale one failed)
    std::string target;   // node address for this round
    std::string error;    // why its last attempt failed to reach the node
};

} // namespace

uint16_t key_slot(std::string_view key) {
    size_t s = key.find('{');
    if (s != std::string_view::npos) {
        size_t e = key.find('}', s + 1);
        if (e != std::string_view::npos && e > s + 1) key = key.substr(s + 1, e - s - 1);
    }
    return uint16_t(crc16(key) % kClusterSlots);
}

void ReplyDeleter::operator()(redisReply *r) const {
    if (r) freeReplyObject(r);
}

std::span<const uint8_t> GetResult::value() const {
    if (status != KeyStatus::Ok || !reply) return {};
    return {reinterpret_cast<const uint8_t *>(reply->str), reply->len};
}

struct ClusterClient::Impl {
    struct Conn {
        redisContext *ctx = nullptr;
        uint64_t last_used = 0;
    };

    ClusterOptions opts;
    ClusterStats stats;
    std::vector<std::string> addrs;              // node addresses the map names
    std::array<int16_t, kClusterSlots> owner{};  // slot -> index in addrs, -1: unknown
    std::unordered_map<std::string, Conn> conns; // open connections by address
    uint64_t clock = 0;                          // LRU stamps
    bool stale = true;                           // refresh before the next round
    using Clock = std::chrono::steady_clock;
    Clock::time_point user_deadline = Clock::time_point::max(); // set_deadline
    Clock::time_point deadline = Clock::time_point::max();      // of the call in progress
    std::unordered_map<redisContext *, uint32_t> armed;         // socket timeout set, ms
    std::unordered_map<std::string, Clock::time_point> failed;  // last connect/I/O failure
    uint64_t get_limit = 0; // of the get_many in progress: read at most this many bytes

    explicit Impl(ClusterOptions o) : opts(std::move(o)) {
        owner.fill(-1);
        if (opts.max_connections == 0) opts.max_connections = 1;
    }
    ~Impl() {
        for (auto &[a, c] : conns)
            redisFree(c.ctx);
    }

    void drop(const std::string &addr) {
        failed[addr] = Clock::now();
        auto it = conns.find(addr);
        if (it == conns.end()) return;
        armed.erase(it->second.ctx);
        redisFree(it->second.ctx);
        conns.erase(it);
    }

    int16_t addr_index(const std::string &addr) {
        auto it = std::find(addrs.begin(), addrs.end(), addr);
        if (it != addrs.end()) return int16_t(it - addrs.begin());
        addrs.push_back(addr);
        return int16_t(addrs.size() - 1);
    }

    // Sets the deadline of the call it spans.
    struct CallScope {
        Impl &im;
        explicit CallScope(Impl &i) : im(i) {
            im.deadline = im.user_deadline;
            if (im.opts.call_timeout_ms)
                im.deadline = std::min(
                    im.deadline, Clock::now() + std::chrono::milliseconds(im.opts.call_timeout_ms));
        }
        ~CallScope() { im.deadline = Clock::time_point::max(); }
    };

    // How long the next blocking step may take: timeout_ms, or less when the
    // call's deadline is nearer. 0: the deadline has passed.
    uint32_t step_ms() const {
        if (deadline == Clock::time_point::max()) return opts.timeout_ms;
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return 0;
        return uint32_t(std::min<long long>(left, opts.timeout_ms));
    }

    // Sets c's socket timeouts for the next step (a system call only when
    // they change, i.e. near the deadline). False, with c's error set, if
    // the deadline has passed.
    bool arm(redisContext *c) {
        uint32_t ms = step_ms();
        if (ms == 0) {
            c->err = REDIS_ERR_IO;
            std::snprintf(c->errstr, sizeof c->errstr, "the call's deadline passed");
            return false;
        }
        uint32_t &cur = armed[c];
        if (cur != ms) {
            if (redisSetTimeout(c, to_timeval(ms)) != REDIS_OK) return false;
            cur = ms;
        }
        return true;
    }

    // Why c failed, in words: a socket timeout (EAGAIN from a blocking
    // socket) reads "Resource temporarily unavailable" in hiredis.
    std::string why(const redisContext *c) const {
        if (deadline != Clock::time_point::max() && Clock::now() >= deadline)
            return "the call's deadline passed";
        if (c->err == REDIS_ERR_IO && std::strstr(c->errstr, "temporarily unavailable"))
            return strf("no progress in %u ms", opts.timeout_ms);
        return c->errstr;
    }

    // Whether c failed because the node closed or reset it (EOF, ECONNRESET,
    // EPIPE), as a restarted node or an idle timeout does to an old
    // connection; not a timeout (a slow or stopped node: sending again would
    // only wait again).
    static bool closed_by_peer(const redisContext *c) {
        return c->err == REDIS_ERR_EOF ||
               (c->err == REDIS_ERR_IO &&
                (std::strstr(c->errstr, "reset by peer") || std::strstr(c->errstr, "Broken pipe")));
    }

    // redisGetReply with each receive bounded by arm().
    bool get_reply(redisContext *c, void **out) {
        *out = nullptr;
        if (redisGetReplyFromReader(c, out) != REDIS_OK) return false;
        while (!*out) {
            if (!arm(c) || redisBufferRead(c) != REDIS_OK) return false;
            if (redisGetReplyFromReader(c, out) != REDIS_OK) return false;
        }
        return true;
    }

    // Sends c's output buffer, each send bounded by arm().
    bool flush(redisContext *c) {
        int done = 0;
        while (!done)
            if (!arm(c) || redisBufferWrite(c, &done) != REDIS_OK) return false;
        return true;
    }

    // An authenticated connection to addr, or nullptr with err set. Closes
    // the least recently used connection not in keep when at the limit.
    // *reused: the connection was open before this call; it may have gone
    // stale since (the node restarted or closed it idle).
    redisContext *connect(const std::string &addr, const std::vector<std::string> &keep,
                          std::string &err, bool *reused = nullptr) {
        if (reused) *reused = false;
        auto it = conns.find(addr);
        if (it != conns.end()) {
            it->second.last_used = ++clock;
            if (reused) *reused = true;
            return it->second.ctx;
        }
        while (conns.size() >= opts.max_connections) {
            auto victim = conns.end();
            for (auto i = conns.begin(); i != conns.end(); ++i) {
                if (std::find(keep.begin(), keep.end(), i->first) != keep.end()) continue;
                if (victim == conns.end() || i->second.last_used < victim->second.last_used)
                    victim = i;
            }
            if (victim == conns.end()) {
                err = strf("%s: no connection free (max_connections %u)", addr.c_str(),
                           opts.max_connections);
                return nullptr;
            }
            armed.erase(victim->second.ctx);
            redisFree(victim->second.ctx);
            conns.erase(victim);
        }
        std::string host;
        int port = 0;
        if (!split_addr(addr, host, port)) {
            err = strf("%s: not host:port", addr.c_str());
            stats.connect_errors++;
            failed[addr] = Clock::now();
            return nullptr;
        }
        const uint32_t ms = step_ms();
        if (ms == 0) {
            err = strf("%s: the call's deadline passed", addr.c_str());
            return nullptr;
        }
        redisContext *c = redisConnectWithTimeout(host.c_str(), port, to_timeval(ms));
        if (!c || c->err) {
            err = strf("%s: connect: %s", addr.c_str(), c ? c->errstr : "out of memory");
            redisFree(c);
            stats.connect_errors++;
            failed[addr] = Clock::now();
            return nullptr;
        }
        if (redisSetTimeout(c, to_timeval(ms)) != REDIS_OK) {
            err = strf("%s: set timeout: %s", addr.c_str(), c->errstr);
            redisFree(c);
            stats.connect_errors++;
            failed[addr] = Clock::now();
            return nullptr;
        }
        if (!opts.password.empty()) {
            const char *argv[3];
            size_t argl[3];
            int n = 0;
            argv[n] = "AUTH", argl[n++] = 4;
            if (!opts.username.empty())
                argv[n] = opts.username.data(), argl[n++] = opts.username.size();
            argv[n] = opts.password.data(), argl[n++] = opts.password.size();
            auto *r = static_cast<redisReply *>(redisCommandArgv(c, n, argv, argl));
            ReplyPtr rp(r);
            if (!r || r->type == REDIS_REPLY_ERROR) {
                err = strf("%s: AUTH: %s", addr.c_str(),
                           r ? std::string(r->str, r->len).c_str() : why(c).c_str());
                redisFree(c);
                stats.connect_errors++;
                failed[addr] = Clock::now();
                return nullptr;
            }
        }
        stats.connects++;
        armed[c] = ms;
        conns[addr] = Conn{c, ++clock};
        return c;
    }

    // CLUSTER SLOTS from addr into a fresh map. "" on success.
    std::string load_slots(const std::string &addr) {
        std::string err;
        redisContext *c = connect(addr, {}, err);
        if (!c) return err;
        void *raw = nullptr;
        redisAppendCommand(c, "CLUSTER SLOTS");
        if (flush(c)) get_reply(c, &raw);
        ReplyPtr r(static_cast<redisReply *>(raw));
        if (!r) {
            err = strf("%s: CLUSTER SLOTS: %s", addr.c_str(), why(c).c_str());
            drop(addr);
            return err;
        }
        if (r->type != REDIS_REPLY_ARRAY)
            return strf("%s: CLUSTER SLOTS: %s", addr.c_str(),
                        r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len).c_str()
                                                     : "not an array");
        std::string host_of_addr;
        int port_unused = 0;
        split_addr(addr, host_of_addr, port_unused);
        std::array<int16_t, kClusterSlots> next;
        next.fill(-1);
        std::vector<std::string> next_addrs;
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
                e->element[0]->type != REDIS_REPLY_INTEGER ||
                e->element[1]->type != REDIS_REPLY_INTEGER ||
                e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
                return strf("%s: CLUSTER SLOTS: malformed entry %zu", addr.c_str(), i);
            long long lo = e->element[0]->integer, hi = e->element[1]->integer;
            const redisReply *m = e->element[2];
            if (lo < 0 || hi >= kClusterSlots || lo > hi ||
                m->element[0]->type != REDIS_REPLY_STRING ||
                m->element[1]->type != REDIS_REPLY_INTEGER)
                return strf("%s: CLUSTER SLOTS: malformed entry %zu", addr.c_str(), i);
            // An empty host (or "?") means "the node you asked".
            std::string host(m->element[0]->str, m->element[0]->len);
            if (host.empty() || host == "?") host = host_of_addr;
            std::string a = join_addr(host, m->element[1]->integer);
            auto it = std::find(next_addrs.begin(), next_addrs.end(), a);
            int16_t idx = int16_t(it - next_addrs.begin());
            if (it == next_addrs.end()) next_addrs.push_back(a);
            for (long long s = lo; s <= hi; s++)
                next[size_t(s)] = idx;
        }
        addrs = std::move(next_addrs);
        owner = next;
        stale = false;
        stats.refreshes++;
        return "";
    }

    std::string refresh() {
        // Nodes with an open connection first (likely alive), then the rest
        // of the map, then the seeds.
        std::vector<std::string> order;
        for (auto &[a, c] : conns)
            order.push_back(a);
        for (auto &a : addrs)
            if (std::find(order.begin(), order.end(), a) == order.end()) order.push_back(a);
        for (auto &a : opts.seeds)
            if (std::find(order.begin(), order.end(), a) == order.end()) order.push_back(a);
        // Nodes that failed lately go last: a stopped node would cost a
        // whole timeout before the next one is asked.
        const auto recent = Clock::now() - std::chrono::seconds(30);
        // (Not std::stable_partition: libstdc++ 12's takes a deprecated
        // temporary buffer, which clang refuses with -Werror.)
        std::vector<std::string> first, later;
        for (std::string &a : order) {
            auto f = failed.find(a);
            (f == failed.end() || f->second < recent ? first : later).push_back(std::move(a));
        }
        first.insert(first.end(), std::make_move_iterator(later.begin()),
                     std::make_move_iterator(later.end()));
        order = std::move(first);
        std::string errors;
        for (auto &a : order) {
            std::string e = load_slots(a);
            if (e.empty()) {
                failed.erase(a);
                return "";
            }
            if (!errors.empty()) errors += "; ";
            errors += e;
        }
        stats.refresh_errors++;
        if (order.empty()) return "no seed nodes";
        return "no node gave the slot map: " + errors;
    }

    std::string owner_of(uint16_t slot) const {
        int16_t i = owner[slot];
        return i < 0 ? std::string() : addrs[size_t(i)];
    }

    // Appends one command for op to c's output buffer.
    void append(redisContext *c, Cmd cmd, const Op &op, std::span<const std::string> keys,
                std::span<const SetItem> items, std::string_view ttl) {
        if (op.asking) redisAppendCommand(c, "ASKING");
        if (cmd == Cmd::Get && get_limit) {
            // GETRANGE clamps to the value: a huge value costs at most
            // get_limit bytes here. A missing key reads as "".
            const std::string &k = keys[op.idx];
            const std::string last = std::to_string(get_limit - 1);
            const char *argv[4] = {"GETRANGE", k.data(), "0", last.data()};
            size_t argl[4] = {8, k.size(), 1, last.size()};
            redisAppendCommandArgv(c, 4, argv, argl);
            return;
        }
        if (cmd == Cmd::Get) {
            const std::string &k = keys[op.idx];
            const char *argv[2] = {"GET", k.data()};
            size_t argl[2] = {3, k.size()};
            redisAppendCommandArgv(c, 2, argv, argl);
            return;
        }
        // SET key head||body [EX ttl], formatted here so that the value's two
        // parts go into the send buffer without being joined first.
        const SetItem &it = items[op.idx];
        std::string pre = strf("*%d\r\n$3\r\nSET\r\n$%zu\r\n", ttl.empty() ? 3 : 5, it.key.size());
        c->obuf = sdscatlen(c->obuf, pre.data(), pre.size());
        c->obuf = sdscatlen(c->obuf, it.key.data(), it.key.size());
        pre = strf("\r\n$%zu\r\n", it.head.size() + it.body.size());
        c->obuf = sdscatlen(c->obuf, pre.data(), pre.size());
        c->obuf = sdscatlen(c->obuf, it.head.data(), it.head.size());
        c->obuf = sdscatlen(c->obuf, it.body.data(), it.body.size());
        if (ttl.empty()) {
            c->obuf = sdscatlen(c->obuf, "\r\n", 2);
        } else {
            pre = strf("\r\n$2\r\nEX\r\n$%zu\r\n%.*s\r\n", ttl.size(), int(ttl.size()), ttl.data());
            c->obuf = sdscatlen(c->obuf, pre.data(), pre.size());
        }
    }

    // Sends cmd for every key, following redirects. Fills get/set results.
    void run(Cmd cmd, size_t n, std::span<const std::string> keys, std::span<const SetItem> items,
             uint32_t ttl_s, std::vector<GetResult> *gets, std::vector<SetResult> *sets) {
        auto fail = [&](const Op &op, std::string why) {
            stats.key_errors++;
            if (gets) {
                (*gets)[op.idx].status = KeyStatus::Error;
                (*gets)[op.idx].error = std::move(why);
            } else {
                (*sets)[op.idx].status = KeyStatus::Error;
                (*sets)[op.idx].error = std::move(why);
            }
        };
        CallScope scope(*this);
        const std::string ttl = ttl_s ? std::to_string(ttl_s) : std::string();
        std::vector<Op> pending;
        pending.reserve(n);
        for (size_t i = 0; i < n; i++) {
            Op op;
            op.idx = i;
            op.slot = key_slot(gets ? std::string_view(keys[i]) : items[i].key);
            pending.push_back(std::move(op));
        }
        // Each round sends every pending op once; redirected ops come back
        // pending with their hop count raised, so rounds are bounded.
        while (!pending.empty()) {
            if (stale) {
                std::string e = refresh();
                if (!e.empty() && addrs.empty()) {
                    for (auto &op : pending)
                        fail(op, e);
                    return;
                }
            }
            std::map<std::string, std::vector<Op>> by_node;
            for (auto &op : pending) {
                if (!op.asking) op.target = owner_of(op.slot);
                if (op.target.empty()) {
                    fail(op, strf("slot %u has no node", unsigned(op.slot)));
                    continue;
                }
                std::string t = op.target;
                by_node[t].push_back(std::move(op));
            }
            pending.clear();
            std::vector<Op> retry_after_refresh;
            // At most max_connections nodes at a time: send to each of a
            // chunk, then read each one's replies.
            auto node_it = by_node.begin();
            while (node_it != by_node.end()) {
                std::vector<std::pair<std::string, std::vector<Op> *>> chunk;
                std::vector<std::string> keep;
                for (; node_it != by_node.end() && chunk.size() < opts.max_connections; ++node_it) {
                    chunk.emplace_back(node_it->first, &node_it->second);
                    keep.push_back(node_it->first);
                }
                std::vector<redisContext *> ctx(chunk.size(), nullptr);
                std::vector<char> reused(chunk.size(), 0);
                for (size_t k = 0; k < chunk.size(); k++) {
                    auto &[addr, ops] = chunk[k];
                    std::string err;
                    bool was_open = false;
                    redisContext *c = connect(addr, keep, err, &was_open);
                    reused[k] = was_open;
                    if (!c) {
                        stale = true;
                        for (auto &op : *ops) {
                            if (!op.retried) {
                                op.retried = true;
                                op.asking = false;
                                op.error = err;
                                retry_after_refresh.push_back(std::move(op));
                            } else {
                                fail(op, err);
                            }
                        }
                        continue;
                    }
                    for (auto &op : *ops) {
                        append(c, cmd, op, keys, items, ttl);
                        stats.commands++;
                    }
                    // Flush now so every node works on its batch while we
                    // read the others' replies.
                    if (!flush(c)) {
                        std::string e = strf("%s: send: %s", addr.c_str(), why(c).c_str());
                        const bool stale_conn = was_open && closed_by_peer(c);
                        stats.io_errors++;
                        drop(addr);
                        stale = true;
                        for (auto &op : *ops)
                            resend_or_fail(op, stale_conn, e, pending, fail);
                        continue;
                    }
                    ctx[k] = c;
                }
                for (size_t k = 0; k < chunk.size(); k++) {
                    if (!ctx[k]) continue;
                    auto &[addr, ops] = chunk[k];
                    read_replies(cmd, addr, ctx[k], reused[k], *ops, pending, gets, sets, fail);
                }
            }
            if (!retry_after_refresh.empty()) {
                // A node did not answer: the map may have moved on (a
                // reshard, a failover). Retry a key only if it did.
                if (stale) refresh();
                for (auto &op : retry_after_refresh) {
                    std::string now = owner_of(op.slot);
                    if (!now.empty() && now != op.target) {
                        pending.push_back(std::move(op));
                    } else {
                        fail(op, std::move(op.error));
                    }
                }
            }
        }
    }

    // An op whose connection the node closed goes round once more, on a
    // new connection, when that connection was open before this call
    // (stale_conn): a node that restarted, or closed an idle connection,
    // since the last call fails the first use of the old one though it is
    // up. GET and SET are idempotent, so sending one again is harmless even
    // if the node had executed it. Otherwise (a timeout, a new connection
    // failed, or the op was already sent again) the op fails.
    template <class Fail>
    void resend_or_fail(Op &op, bool stale_conn, const std::string &e, std::vector<Op> &pending,
                        Fail &fail) {
        if (stale_conn && !op.resent) {
            op.resent = true;
            stats.resends++;
            pending.push_back(std::move(op));
        } else {
            fail(op, e);
        }
    }

    template <class Fail>
    void read_replies(Cmd cmd, const std::string &addr, redisContext *c, bool was_open,
                      std::vector<Op> &ops, std::vector<Op> &pending, std::vector<GetResult> *gets,
                      std::vector<SetResult> *sets, Fail &fail) {
        size_t i = 0;
        auto io_error = [&](const char *what) {
            std::string e = strf("%s: %s: %s", addr.c_str(), what, why(c).c_str());
            const bool stale_conn = was_open && closed_by_peer(c);
            stats.io_errors++;
            drop(addr);
            stale = true;
            for (; i < ops.size(); i++)
                resend_or_fail(ops[i], stale_conn, e, pending, fail);
        };
        for (; i < ops.size(); i++) {
            Op &op = ops[i];
            void *raw = nullptr;
            if (op.asking) {
                if (!get_reply(c, &raw)) return io_error("receive");
                ReplyPtr asking(static_cast<redisReply *>(raw));
                raw = nullptr;
            }
            if (!get_reply(c, &raw)) return io_error("receive");
            ReplyPtr r(static_cast<redisReply *>(raw));
            if (!r) return io_error("receive");
            if (r->type == REDIS_REPLY_ERROR) {
                std::string_view msg(r->str, r->len);
                redirect(addr, op, msg, pending, fail);
                continue;
            }
            if (cmd == Cmd::Get) {
                GetResult &g = (*gets)[op.idx];
                if (r->type == REDIS_REPLY_NIL ||
                    (get_limit && r->type == REDIS_REPLY_STRING && r->len == 0)) {
                    g.status = KeyStatus::Missing;
                } else if (r->type == REDIS_REPLY_STRING) {
                    g.status = KeyStatus::Ok;
                    g.reply = std::move(r);
                } else {
                    fail(op, strf("%s: GET: reply type %d", addr.c_str(), r->type));
                }
            } else {
                if (r->type == REDIS_REPLY_STATUS && r->len == 2 &&
                    std::memcmp(r->str, "OK", 2) == 0)
                    (*sets)[op.idx].status = KeyStatus::Ok;
                else
                    fail(op, strf("%s: SET: reply type %d", addr.c_str(), r->type));
            }
        }
    }

    // Handles an error reply: MOVED, ASK and TRYAGAIN requeue op; anything
    // else (CLUSTERDOWN, NOAUTH, OOM, ...) fails it.
    template <class Fail>
    void redirect(const std::string &addr, Op &op, std::string_view msg, std::vector<Op> &pending,
                  Fail &fail) {
        auto word = [&](size_t n) {
            size_t pos = 0;
            for (size_t k = 0; k < n; k++) {
                pos = msg.find(' ', pos);
                if (pos == std::string_view::npos) return std::string_view();
                pos++;
            }
            size_t end = msg.find(' ', pos);
            return msg.substr(pos, end == std::string_view::npos ? msg.size() - pos : end - pos);
        };
        bool moved = msg.starts_with("MOVED "), ask = msg.starts_with("ASK ");
        bool again = msg.starts_with("TRYAGAIN");
        if (!(moved || ask || again)) {
            fail(op, strf("%s: %.*s", addr.c_str(), int(msg.size()), msg.data()));
            return;
        }
        if (++op.hops > opts.max_redirects) {
            fail(op, strf("%s: %.*s after %u redirects", addr.c_str(), int(msg.size()), msg.data(),
                          opts.max_redirects));
            return;
        }
        if (again) {
            stats.tryagain++;
            op.asking = false;
            pending.push_back(std::move(op));
            return;
        }
        std::string target(word(2));
        std::string host;
        int port = 0;
        // "MOVED 3999 :6381" (empty host) means the node that answered.
        if (!target.empty() && target.front() == ':') {
            std::string h;
            int p = 0;
            split_addr(addr, h, p);
            target = join_addr(h, std::stoll(target.substr(1)));
        }
        if (!split_addr(target, host, port)) {
            fail(op, strf("%s: bad redirect: %.*s", addr.c_str(), int(msg.size()), msg.data()));
            return;
        }
        if (moved) {
            stats.moved++;
            owner[op.slot] = addr_index(target);
            stale = true; // the whole map likely changed (a reshard)
            op.asking = false;
        } else {
            stats.ask++;
            op.asking = true;
            op.target = target;
        }
        pending.push_back(std::move(op));
    }
};

ClusterClient::ClusterClient(ClusterOptions opts)
    : impl_(std::make_unique<Impl>(std::move(opts))) {}
ClusterClient::~ClusterClient() = default;

std::vector<GetResult> ClusterClient::get_many(std::span<const std::string> keys,
                                               uint64_t max_bytes) {
    std::vector<GetResult> out(keys.size());
    try {
        impl_->get_limit = max_bytes;
        impl_->run(Cmd::Get, keys.size(), keys, {}, 0, &out, nullptr);
    } catch (const std::exception &e) {
        for (auto &g : out)
            if (g.status == KeyStatus::Error && g.error.empty()) g.error = e.what();
    }
    return out;
}

std::vector<SetResult> ClusterClient::set_many(std::span<const SetItem> items, uint32_t ttl_s) {
    std::vector<SetResult> out(items.size());
    try {
        impl_->run(Cmd::Set, items.size(), {}, items, ttl_s, nullptr, &out);
    } catch (const std::exception &e) {
        for (auto &s : out)
            if (s.status == KeyStatus::Error && s.error.empty()) s.error = e.what();
    }
    return out;
}

std::string ClusterClient::refresh() {
    try {
        Impl::CallScope scope(*impl_);
        return impl_->refresh();
    } catch (const std::exception &e) {
        return e.what();
    }
}

void ClusterClient::set_deadline(std::chrono::steady_clock::time_point t) {
    impl_->user_deadline = t;
}

std::string ClusterClient::node_for(std::string_view key) const {
    return impl_->owner_of(key_slot(key));
}

const ClusterStats &ClusterClient::stats() const {
    return impl_->stats;
}
size_t ClusterClient::open_connections() const {
    return impl_->conns.size();
}
const ClusterOptions &ClusterClient::options() const {
    return impl_->opts;
}

} // namespace kv::daemon
