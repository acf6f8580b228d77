// SPDX-License-Identifier: MIT
#include "control_server.h"

#include "audit.h"
#include "clock.h"
#include "control_protocol.h"
#include "detail.h"
#include "housekeeping.h"
#include "inspect.h"
#include "log.h"
#include "metrics.h"
#include "remote_tier.h"
#include "snapshot_jobs.h"
#include "units.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <grp.h>
#include <iterator>
#include <numa.h>
#include <pwd.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <unordered_map>

namespace kv::daemon {

namespace {

constexpr const char *kComp = "control";
constexpr size_t kMaxMetricsRequest = 8192;

using control::frame;
using control::op_name;
using control::valid_pool_name;

// DIR/POOL.kvsnap or DIR/POOL@TAG.kvsnap (dir ends with '/').
bool own_snapshot_file(const std::string &path, const std::string &dir, const std::string &pool) {
    constexpr std::string_view ext = ".kvsnap";
    std::string_view rest = path;
    if (!rest.starts_with(dir)) return false;
    rest.remove_prefix(dir.size());
    if (rest.size() < pool.size() + ext.size() || !rest.starts_with(pool) || !rest.ends_with(ext))
        return false;
    rest.remove_prefix(pool.size());
    rest.remove_suffix(ext.size());
    if (rest.empty()) return true;
    return rest.front() == '@' && valid_pool_name(rest.substr(1));
}

std::string dump(const nlohmann::json &j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The ops that read or change a pool's data: each gets an audit entry
// (audit.h), refused ones included.
bool audited(uint16_t op) {
    switch (op) {
    case KV_CTL_OP_CREATE:
    case KV_CTL_OP_DESTROY:
    case KV_CTL_OP_ENTRIES:
    case KV_CTL_OP_EVICT:
    case KV_CTL_OP_PERSIST:
    case KV_CTL_OP_RESTORE:
    case KV_CTL_OP_DETACH:
    case KV_CTL_OP_VERIFY:
    case KV_CTL_OP_REMOTE_FETCH:
        return true;
    }
    return false;
}

// The groups of uid as the user database has them (primary first): the
// metrics endpoint's TCP peers, whose socket tells only the uid.
std::vector<gid_t> groups_of(uid_t uid) {
    std::vector<char> buf(16384);
    passwd pw{}, *res = nullptr;
    if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &res) != 0 || !res) return {};
    std::vector<gid_t> g(64);
    int n = int(g.size());
    if (getgrouplist(pw.pw_name, pw.pw_gid, g.data(), &n) < 0) {
        g.resize(size_t(n));
        if (getgrouplist(pw.pw_name, pw.pw_gid, g.data(), &n) < 0) return {pw.pw_gid};
    }
    g.resize(size_t(n));
    return g;
}

// uid, gid and groups of a unix-socket peer (SO_PEERCRED, SO_PEERGROUPS).
bool unix_peer(int fd, uid_t *uid, pid_t *pid, std::vector<gid_t> *groups) {
    ucred cr{};
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) return false;
    *uid = cr.uid;
    *pid = cr.pid;
    groups->push_back(cr.gid);
    gid_t more[256];
    len = sizeof more;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, more, &len) == 0)
        groups->insert(groups->end(), more, more + len / sizeof(gid_t));
    return true;
}

} // namespace

ControlServer::ControlServer(int epfd, PoolManager &pm, DaemonCounters &counters)
    : epfd_(epfd), pm_(pm), counters_(counters) {}

ControlServer::~ControlServer() {
    for (auto &[fd, c] : conns_)
        close(fd);
    for (int fd : metrics_fds_)
        close(fd);
    if (control_fd_ >= 0) {
        close(control_fd_);
        struct stat sb{}; // only our own socket: never one another daemon bound since
        if (stat(control_path_.c_str(), &sb) == 0 && sb.st_ino == control_ino_)
            unlink(control_path_.c_str());
    }
}

std::expected<void, std::string> ControlServer::listen_control(const std::string &path) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path)
        return std::unexpected("control_socket " + path + ": longer than " +
                               std::to_string(sizeof sa.sun_path - 1) + " bytes");
    memcpy(sa.sun_path, path.c_str(), path.size());
    std::string dir = path.substr(0, path.rfind('/'));
    if (!dir.empty()) mkdir(dir.c_str(), 0755);
    // A socket someone answers on belongs to a running kvpoold: taking the
    // path over would cut it off from every client (and unlinking it at our
    // stop would leave none). Only a socket nobody listens on is stale.
    if (int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0); probe >= 0) {
        const bool live = connect(probe, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0;
        ucred cr{};
        socklen_t crlen = sizeof cr;
        if (live) getsockopt(probe, SOL_SOCKET, SO_PEERCRED, &cr, &crlen);
        close(probe);
        if (live)
            return std::unexpected(
                "control socket " + path + ": another kvpoold (pid " + std::to_string(cr.pid) +
                ") is serving it; stop it first, or give this one another control_socket");
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::unexpected(std::string("control socket: ") + strerror(errno));
    unlink(path.c_str()); // a stale socket of a previous daemon
    if (bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0 || listen(fd, 64) != 0) {
        std::string e = strerror(errno);
        close(fd);
        return std::unexpected("control socket " + path + ": " + e);
    }
    chmod(path.c_str(), 0666);
    struct stat sb{};
    if (stat(path.c_str(), &sb) == 0) control_ino_ = sb.st_ino;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
    control_fd_ = fd;
    control_path_ = path;
    return {};
}

void ControlServer::add_metrics_listener(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
    metrics_fds_.push_back(fd);
}

bool ControlServer::handle(int fd, uint32_t events) {
    if (fd == control_fd_) {
        accept_on(fd, Kind::Control);
        return true;
    }
    if (std::find(metrics_fds_.begin(), metrics_fds_.end(), fd) != metrics_fds_.end()) {
        accept_on(fd, Kind::Metrics);
        return true;
    }
    if (!conns_.contains(fd)) return false;
    on_io(fd, events);
    return true;
}

void ControlServer::accept_on(int lfd, Kind kind) {
    for (;;) {
        int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; // EAGAIN, or a transient error: try at the next event
        Conn c{kind, {}, {}, {}, false, mono_ms(), next_id_++, 0, std::nullopt, std::nullopt, 0};
        if (kind == Kind::Control) unix_peer(fd, &c.peer.uid, &c.peer.pid, &c.peer.groups);
        // The socket is open to every local user: one user may hold at most
        // kMaxPerUser connections, so nobody can lock the others out, and
        // root keeps kRootReserve of its own beyond kMaxConnections. When
        // all kMaxConnections are taken (8 users at their cap), a user who
        // holds fewer than the largest holder gets one of that holder's idle
        // connections (shed_idle_for): fair shares, not first come.
        size_t mine = 0;
        for (const auto &[ofd, o] : conns_)
            mine += o.kind == Kind::Control && o.peer.uid == c.peer.uid;
        const bool root = kind == Kind::Control && c.peer.uid == 0;
        bool over = conns_.size() >= kMaxConnections + (root ? kRootReserve : 0) ||
                    (kind == Kind::Control && !root && mine >= kMaxPerUser);
        if (over && kind == Kind::Control && !root && mine < kMaxPerUser)
            over = !shed_idle_for(c.peer.uid, mine);
        if (over) {
            const uint64_t now = mono_ms();
            refused_++;
            if (now - refused_logged_ms_ >= 10000) { // one line per 10 s, with the count
                KV_LOGW(kComp,
                        "refused %" PRIu64
                        " connection(s) in the last 10 s: %zu open, uid %u holds %zu",
                        refused_, conns_.size(), unsigned(c.peer.uid), mine);
                refused_logged_ms_ = now, refused_ = 0;
            }
            if (kind == Kind::Control) send_refusal(fd, c.peer.uid, mine, root);
            close(fd);
            continue;
        }
        if (kind == Kind::Metrics) identify_metrics_peer(fd, c.peer);
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.fd = fd;
        epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
        conns_.emplace(fd, std::move(c));
    }
}

// Make room for a connection of uid, which holds mine: close the oldest
// idle control connection (no request buffered, none being answered) of the
// uid that holds the most, if that is more than mine + 1 (so the shares only
// ever get more even, and two users cannot take turns evicting each other).
// False if there is none to close.
bool ControlServer::shed_idle_for(uid_t uid, size_t mine) {
    std::unordered_map<uid_t, size_t> held;
    for (const auto &[fd, o] : conns_)
        if (o.kind == Kind::Control) held[o.peer.uid]++;
    uid_t top = uid;
    size_t most = 0;
    for (const auto &[u, n] : held)
        if (u != 0 && n > most) top = u, most = n;
    if (top == uid || most <= mine + 1) return false;
    int victim = -1;
    uint64_t oldest = UINT64_MAX;
    for (const auto &[fd, o] : conns_)
        if (o.kind == Kind::Control && o.peer.uid == top && o.waiting == 0 && o.in.empty() &&
            o.out.empty() && o.last_ms < oldest)
            victim = fd, oldest = o.last_ms;
    if (victim < 0) return false;
    drop(victim);
    shed_++;
    const uint64_t now = mono_ms();
    if (now - shed_logged_ms_ >= 10000) {
        KV_LOGN(kComp,
                "all %zu connections taken: closed %" PRIu64
                " idle one(s) in the last 10 s, the last of uid %u "
                "(held %zu) to serve uid %u (held %zu)",
                kMaxConnections, shed_, unsigned(top), most, unsigned(uid), mine);
        shed_logged_ms_ = now, shed_ = 0;
    }
    return true;
}

// The reason a refused control connection gets on the wire (control.h,
// KV_CTL_OP_REFUSED), written before any request is read: one small
// non-blocking send into a fresh socket's empty buffer; if it does not fit,
// the client sees the connection closed, as it would without it.
void ControlServer::send_refusal(int fd, uint32_t uid, size_t mine, bool root) {
    char why[256];
    if (!root && mine >= kMaxPerUser)
        snprintf(why, sizeof why,
                 "too many connections: uid %u holds %zu, the most one user may (close idle ones, "
                 "or wait "
                 "%llu s for them to expire)",
                 unsigned(uid), mine, (unsigned long long)(kIdleMs / 1000));
    else
        snprintf(why, sizeof why,
                 "too many connections: %zu open, the most kvpoold serves (idle ones expire after "
                 "%llu s)",
                 conns_.size(), (unsigned long long)(kIdleMs / 1000));
    const size_t len = strlen(why);
    struct {
        kv_ctl_hdr hdr;
        kv_ctl_response resp;
        char text[sizeof why];
    } msg{};
    msg.hdr.magic = KV_CTL_MAGIC;
    msg.hdr.version = KV_CTL_VERSION;
    msg.hdr.op = KV_CTL_OP_REFUSED;
    msg.hdr.length = uint32_t(sizeof msg.resp + len);
    msg.hdr.seq = 0;
    msg.resp.error = EUSERS;
    msg.resp.body_len = uint32_t(len);
    memcpy(msg.text, why, len);
    (void)!send(fd, &msg, sizeof msg.hdr + sizeof msg.resp + len, MSG_NOSIGNAL | MSG_DONTWAIT);
}

void ControlServer::drop(int fd) {
    // An EVICT or VERIFY ends with its connection (persists, restores and
    // fetches run on and are answered through deliver()).
    if (auto it = conns_.find(fd); it != conns_.end()) {
        const Conn &c = it->second;
        if (c.evict)
            audit_done(c.id, KV_CTL_OP_EVICT, c.evict->seq, ECONNRESET,
                       "connection closed before the answer");
        if (c.verify)
            audit_done(c.id, KV_CTL_OP_VERIFY, c.verify->seq, ECONNRESET,
                       "connection closed before the answer");
    }
    epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    conns_.erase(fd);
}

void ControlServer::expire(uint64_t now_ms, uint64_t idle_ms) {
    std::vector<int> old;
    for (auto &[fd, c] : conns_) {
        if (c.partial_since_ms && now_ms - c.partial_since_ms > kRequestDeadlineMs) {
            KV_LOGN(kComp,
                    "%s peer pid %d uid %u: closed: a request begun %.1f s ago is still incomplete "
                    "(%zu bytes received; a request must arrive within %llu s)",
                    c.kind == Kind::Control ? "control" : "metrics", int(c.peer.pid),
                    unsigned(c.peer.uid), double(now_ms - c.partial_since_ms) / 1000.0, c.in.size(),
                    (unsigned long long)(kRequestDeadlineMs / 1000));
            old.push_back(fd);
        } else if (now_ms - c.last_ms > idle_ms && c.waiting == 0) {
            old.push_back(fd);
        }
    }
    for (int fd : old)
        drop(fd);
}

// Start or stop the request deadline: it runs while the input holds part
// of a request (a whole one is answered at the connection's next turn; the
// metrics head is whole at its blank line).
void ControlServer::track_partial(Conn &c, uint64_t now_ms) {
    bool partial = !c.in.empty();
    if (partial && c.kind == Kind::Control)
        partial = control::next_message(c.in).kind == control::Message::Kind::NeedMore;
    else if (partial)
        partial =
            c.in.find("\r\n\r\n") == std::string::npos && c.in.find("\n\n") == std::string::npos;
    if (!partial)
        c.partial_since_ms = 0;
    else if (!c.partial_since_ms)
        c.partial_since_ms = now_ms;
}

// Input is buffered up to one maximal message (and the read that
// completed it); past that the connection stops being read until requests
// are taken off (kMaxInput).
bool ControlServer::input_full(const Conn &c) {
    return c.in.size() >= kMaxInput;
}

// A request is waiting to be answered: a whole message (or a bad header) is
// buffered, no reply is still being sent, and no EVICT or VERIFY of the
// connection is still under way (its answer comes first).
bool ControlServer::ready(const Conn &c) {
    if (c.kind != Kind::Control || c.close_after_flush || !c.out.empty() || busy(c)) return false;
    return control::next_message(c.in).kind != control::Message::Kind::NeedMore;
}

void ControlServer::on_io(int fd, uint32_t events) {
    Conn &c = conns_.at(fd);
    c.last_ms = mono_ms();
    if ((events & EPOLLIN) && !input_full(c)) {
        char buf[16384];
        for (;;) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n > 0) {
                c.in.append(buf, size_t(n));
                if (input_full(c)) break;
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                if (c.out.empty() && !busy(c)) {
                    drop(fd);
                    return;
                }
                c.close_after_flush = true;
            }
            break;
        }
    }
    track_partial(c, c.last_ms);
    // Send what is pending first: a request is taken only once the reply
    // before it is in the kernel's hands, so a peer that does not read its
    // replies holds at most one in the daemon's memory.
    if (!c.out.empty() && !send_out(fd, c)) return;
    process(fd, c);
    if (!conns_.contains(fd)) return;
    if ((events & (EPOLLHUP | EPOLLERR)) && c.out.empty() && !busy(c)) {
        drop(fd);
        return;
    }
    flush(fd, c);
}

// Write what the socket takes; false if the connection was dropped.
bool ControlServer::send_out(int fd, Conn &c) {
    while (!c.out.empty()) {
        ssize_t n = send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n > 0) {
            c.out.erase(0, size_t(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
        drop(fd); // peer gone
        return false;
    }
    return true;
}

void ControlServer::flush(int fd, Conn &c) {
    if (!send_out(fd, c)) return;
    if (c.out.empty() && c.close_after_flush && !busy(c)) {
        drop(fd);
        return;
    }
    // EPOLLOUT also while a request is ready or an EVICT or VERIFY is under way: the
    // socket is writable, so the loop comes back to this connection on its
    // next turn, after the other events that are due. One request per
    // connection per turn: a pipeline of thousands cannot hold the loop.
    const bool more = !c.out.empty() || ready(c) || busy(c);
    epoll_event ev{};
    // Not read while its input is full (nor watched for a hang-up, which
    // would wake the loop on every turn until the reply drains): a peer
    // that sends without reading costs one buffer and no CPU.
    const bool reading = !input_full(c) && !c.close_after_flush;
    ev.events = (reading ? uint32_t(EPOLLIN | EPOLLRDHUP) : 0u) | (more ? uint32_t(EPOLLOUT) : 0u);
    ev.data.fd = fd;
    epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
}

void ControlServer::process(int fd, Conn &c) {
    if (c.kind == Kind::Metrics) {
        size_t end = c.in.find("\r\n\r\n");
        if (end == std::string::npos && c.in.find("\n\n") == std::string::npos) {
            if (c.in.size() > kMaxMetricsRequest) {
                c.out = http_response(431, "request too large\n");
                c.close_after_flush = true;
            }
            return;
        }
        c.out = http_answer(c.in, [&] {
            // Per-pool series only of the pools the peer may read (root,
            // the admin group, the pool's group); daemon-wide ones for all.
            return filter_pool_series(prometheus_text(pm_, counters_), [&](std::string_view n) {
                const Pool *p = pm_.find(std::string(n));
                return p ? may_read(c.peer, *p) : allowed(c.peer, pm_.admin_gid());
            });
        });
        c.in.clear();
        c.close_after_flush = true;
        return;
    }
    if (c.evict) {
        step_evict(c);
        return;
    }
    if (c.verify) {
        step_verify(c);
        return;
    }
    if (!ready(c)) return;
    control::Message m = control::next_message(c.in);
    if (m.kind == control::Message::Kind::BadHeader) {
        // The stream cannot be resynchronized after a bad header: answer and close.
        counters_.requests++;
        counters_.request_errors++;
        KV_LOGN(kComp, "peer pid %d uid %u: %s", int(c.peer.pid), unsigned(c.peer.uid),
                m.message.c_str());
        c.out += frame(m.hdr.op, m.hdr.seq, m.error, m.message);
        c.in.clear();
        c.close_after_flush = true;
        return;
    }
    const kv_ctl_hdr h = m.hdr;
    c.in.erase(0, m.consumed);
    c.partial_since_ms = 0; // what follows, if anything, arrived with it or since
    track_partial(c, mono_ms());
    counters_.requests++;
    int err = m.error;
    std::string reply = std::move(m.message);
    if (!err) {
        try {
            std::tie(err, reply) = dispatch(c, h.op, h.seq, m.req, m.payload);
        } catch (const std::exception
                     &e) { // JSON or allocation failure: one request fails, not the daemon
            err = EIO;
            reply = std::string("internal error: ") + e.what();
        }
    }
    if (audited(h.op)) {
        const char *pool = reinterpret_cast<const char *>(m.req.pool);
        if (err == kDeferred)
            pending_audit_.push_back({c.id, h.op, h.seq, pool, c.peer});
        else
            audit(c.peer, h.op, pool, err, reply);
    }
    if (err == kDeferred) {
        c.waiting++;
        return;
    }
    answer(c, h.op, h.seq, err, std::move(reply));
    (void)fd;
}

// Frame an answer, counting it. No reply may exceed a frame (a peer would
// drop the connection): one that would is replaced by an error naming both
// sizes, so an op that outgrows the limit fails visibly instead.
void ControlServer::answer(Conn &c, uint16_t op, uint32_t seq, int err, std::string reply) {
    constexpr size_t kMaxReply = control::kMaxReplyBody;
    if (reply.size() > kMaxReply) {
        KV_LOGW(kComp, "%s reply of %zu bytes exceeds the %zu a frame holds: answered EMSGSIZE",
                op_name(op), reply.size(), kMaxReply);
        reply = std::string(op_name(op)) + " reply of " + std::to_string(reply.size()) +
                " bytes exceeds the protocol's limit of " + std::to_string(kMaxReply);
        err = EMSGSIZE;
    }
    if (err) {
        counters_.request_errors++;
        KV_LOGD(kComp, "%s from pid %d uid %u: %s", op_name(op), int(c.peer.pid),
                unsigned(c.peer.uid), reply.c_str());
    }
    c.out += frame(op, seq, err, reply);
}

// One turn of a running EVICT: at most kEvictChunkBytes, as the watermark
// pass does per tick, so evicting most of a large pool never holds the loop.
void ControlServer::step_evict(Conn &c) {
    EvictJob &j = *c.evict;
    Pool *p = pm_.find(j.pool);
    int err = 0;
    std::string reply;
    if (!p) {
        err = ENOENT;
        reply = "pool \"" + j.pool + "\" was destroyed during the evict (" +
                kv::detail::format_size(j.freed) + " freed)";
    } else {
        const uint64_t chunk =
            std::min<uint64_t>(j.want - std::min(j.freed, j.want), kEvictChunkBytes);
        const int64_t got = chunk ? kv_evict_bytes(p->handle, chunk) : 0;
        if (got > 0) j.freed += uint64_t(got);
        if (got > 0 && j.freed < j.want) return; // more next turn
        KV_LOGI(kComp, "pool %s: evicted %s of %s requested (%llu%% of unpinned) for pid %d",
                j.pool.c_str(), kv::detail::format_size(j.freed).c_str(),
                kv::detail::format_size(j.want).c_str(), (unsigned long long)j.percent,
                int(c.peer.pid));
        reply = dump({{"pool", j.pool}, {"requested_bytes", j.want}, {"freed_bytes", j.freed}});
    }
    const uint16_t op = KV_CTL_OP_EVICT;
    const uint32_t seq = j.seq;
    audit_done(c.id, op, seq, err, reply);
    c.evict.reset();
    if (c.waiting) c.waiting--;
    answer(c, op, seq, err, std::move(reply));
}

// One turn of a running VERIFY: examine the entry table from the cursor,
// at most KV_CTL_ENTRIES_MAX_SCAN slots and about KV_CTL_VERIFY_CHUNK_BYTES
// of block data (the block that crosses it is finished), pinning each block
// while its checksum is computed so that it cannot be freed and reused
// under the read. The answer goes out once the cursor reaches the end.
void ControlServer::step_verify(Conn &c) {
    VerifyJob &j = *c.verify;
    Pool *p = pm_.find(j.pool);
    int err = 0;
    std::string reply;
    if (!p) {
        err = ENOENT;
        reply = "pool \"" + j.pool + "\" was destroyed during the verify (" +
                std::to_string(j.checked) + " blocks checked, " + std::to_string(j.bad_count) +
                " bad)";
    } else {
        const uint64_t slots = kv_pool_header(p->handle)->n_entries;
        const uint64_t end = std::min(slots, j.cursor + KV_CTL_ENTRIES_MAX_SCAN);
        uint64_t budget = KV_CTL_VERIFY_CHUNK_BYTES;
        kv_entry_info rows[64];
        while (j.cursor < end && budget) {
            uint64_t at = j.cursor;
            const int k = kv::detail::pool_entries_upto(p->handle, &at, end, rows, std::size(rows));
            if (k < 0) {
                at = end; // cannot happen for a valid cursor; never loop on it
                break;
            }
            int i = 0;
            for (; i < k && budget; i++) {
                const kv_entry_info &e = rows[i];
                if (e.state != KV_ENTRY_COMMITTED) continue;
                kv_view v;
                if (kv::detail::pin_for_snapshot(p->handle, e.ns, e.key, &v) != 0) {
                    j.skipped++; // removed since the scan, or no pin to be had
                    continue;
                }
                j.checked++;
                j.checked_bytes += v.length;
                budget -= std::min(budget, v.length);
                if (kv_view_verify(&v) != 0) {
                    // Removed while still pinned: the entry under the key is
                    // the block just read (a committed key is immutable).
                    const bool removed = j.remove && kv_remove(p->handle, e.ns, &e.key) == 0;
                    j.removed += removed;
                    char key[33], sum[17];
                    snprintf(key, sizeof key, "%016" PRIx64 "%016" PRIx64, e.key.hi, e.key.lo);
                    snprintf(sum, sizeof sum, "%016" PRIx64, v.checksum);
                    if (j.bad_count++ < KV_CTL_VERIFY_MAX_LISTED)
                        j.bad.push_back({{"index", e.index},
                                         {"ns", e.ns},
                                         {"key", key},
                                         {"length", v.length},
                                         {"checksum", sum},
                                         {"removed", removed}});
                    KV_LOGW(kComp,
                            "pool %s: block %s (ns %u, entry %u, %llu bytes) fails its checksum%s",
                            j.pool.c_str(), key, e.ns, e.index, (unsigned long long)v.length,
                            removed ? ": removed" : "");
                }
                kv_release(p->handle, &v);
            }
            j.cursor = i < k ? uint64_t(rows[i].index) : at; // the first row not examined
        }
        if (j.cursor < slots) return; // more next turn
        const double seconds = double(mono_ms() - j.start_ms) / 1000.0;
        KV_LOGI(kComp,
                "pool %s: verified %llu blocks (%s) in %.2f s for pid %d: %llu bad, %llu removed",
                j.pool.c_str(), (unsigned long long)j.checked,
                kv::detail::format_size(j.checked_bytes).c_str(), seconds, int(c.peer.pid),
                (unsigned long long)j.bad_count, (unsigned long long)j.removed);
        reply = dump({{"pool", j.pool},
                      {"checked", j.checked},
                      {"checked_bytes", j.checked_bytes},
                      {"bad_count", j.bad_count},
                      {"bad", std::move(j.bad)},
                      {"removed", j.removed},
                      {"skipped", j.skipped},
                      {"seconds", seconds}});
    }
    const uint32_t seq = j.seq;
    audit_done(c.id, KV_CTL_OP_VERIFY, seq, err, reply);
    c.verify.reset();
    if (c.waiting) c.waiting--;
    answer(c, KV_CTL_OP_VERIFY, seq, err, std::move(reply));
}

bool ControlServer::allowed(const Peer &p, gid_t gid) const {
    if (p.uid == 0) return true;
    return std::find(p.groups.begin(), p.groups.end(), gid) != p.groups.end();
}

bool ControlServer::may_read(const Peer &peer, const Pool &p) const {
    return allowed(peer, p.gid) || allowed(peer, pm_.admin_gid());
}

// Who reads the metrics. A unix socket tells (SO_PEERCRED); a loopback TCP
// connection is looked up in the kernel's socket table (tcp_peer_uid), its
// groups in the user database. A peer that cannot be identified gets the
// series of no pool: the endpoint fails closed.
void ControlServer::identify_metrics_peer(int fd, Peer &peer) {
    sockaddr_storage sa{};
    socklen_t len = sizeof sa;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&sa), &len) != 0) return;
    if (sa.ss_family == AF_UNIX) {
        unix_peer(fd, &peer.uid, &peer.pid, &peer.groups);
        return;
    }
    auto uid = tcp_peer_uid(fd);
    if (!uid) {
        const uint64_t now = mono_ms();
        if (now - unidentified_logged_ms_ >= 10000) {
            KV_LOGN(kComp, "metrics: cannot tell who connected (%s): per-pool series withheld",
                    uid.error().c_str());
            unidentified_logged_ms_ = now;
        }
        return;
    }
    peer.uid = *uid;
    peer.groups = groups_of(*uid);
}

void ControlServer::audit(const Peer &peer, uint16_t op, std::string_view pool, int err,
                          std::string_view reply) {
    const uint64_t now = mono_ms();
    audit_.configure(pm_.config().audit, pm_.config().audit_rate, now);
    AuditRecord r;
    r.op = op_name(op);
    r.pool = pool;
    r.uid = peer.uid;
    r.gid = peer.groups.empty() ? gid_t(-1) : peer.groups.front();
    r.pid = peer.pid;
    r.error = err;
    if (err) r.detail = reply;
    audit_.record(r, now);
}

// The answer of a deferred op (persist, restore, evict, verify, remote
// fetch) for the audit trail, whether or not its connection is still open.
void ControlServer::audit_done(uint64_t conn_id, uint16_t op, uint32_t seq, int err,
                               std::string_view reply) {
    for (auto it = pending_audit_.begin(); it != pending_audit_.end(); ++it) {
        if (it->conn_id != conn_id || it->op != op || it->seq != seq) continue;
        audit(it->peer, op, it->pool, err, reply);
        pending_audit_.erase(it);
        return;
    }
}

void ControlServer::deliver(uint64_t conn_id, uint16_t op, uint32_t seq, int error,
                            const std::string &body) {
    audit_done(conn_id, op, seq, error, body);
    for (auto &[fd, c] : conns_) {
        if (c.id != conn_id) continue;
        if (c.waiting) c.waiting--;
        answer(c, op, seq, error, body);
        c.last_ms = mono_ms();
        int f = fd;
        flush(f, c);
        return;
    }
    if (error) counters_.request_errors++; // its connection is gone
}

// REMOTE_FETCH (control.h): check the payload, hand the request to the
// pool's tier; the tier's fetch thread leaves the answer for deliver().
std::pair<int, std::string> ControlServer::remote_fetch(Conn &c, const Pool &p, uint32_t seq,
                                                        std::string_view payload) {
    kv_ctl_remote_fetch f;
    if (payload.size() < sizeof f)
        return {EINVAL, "remote fetch payload of " + std::to_string(payload.size()) +
                            " bytes: expected at least " + std::to_string(sizeof f)};
    std::memcpy(&f, payload.data(), sizeof f);
    if (f.reserved[0] || f.reserved[1])
        return {EINVAL, "remote fetch payload has non-zero reserved fields"};
    if (f.n_keys == 0 || f.n_keys > KV_CTL_REMOTE_FETCH_MAX_KEYS)
        return {EINVAL, "remote fetch of " + std::to_string(f.n_keys) + " keys: expected 1.." +
                            std::to_string(KV_CTL_REMOTE_FETCH_MAX_KEYS)};
    if (payload.size() != sizeof f + uint64_t(f.n_keys) * sizeof(kv_key))
        return {EINVAL, "remote fetch payload of " + std::to_string(payload.size()) +
                            " bytes: expected " +
                            std::to_string(sizeof f + uint64_t(f.n_keys) * sizeof(kv_key)) +
                            " for " + std::to_string(f.n_keys) + " keys"};
    if (f.first >= f.n_keys)
        return {EINVAL, "remote fetch from key " + std::to_string(f.first) + " of " +
                            std::to_string(f.n_keys) + ": expected first < n_keys"};
    RemoteTiers *tiers = remote_tiers();
    RemoteTier *t = tiers ? tiers->find(p.cfg.name) : nullptr;
    if (!t)
        return {ENODEV, "pool " + p.cfg.name +
                            (p.cfg.remote.enabled
                                 ? " has a remote tier that is not running (see kvpoold's log)"
                                 : " has no remote tier ([pool.remote] in kvpoold.toml)")};
    if ((f.pool_id_lo || f.pool_id_hi) &&
        (f.pool_id_lo != t->pool_id_lo() || f.pool_id_hi != t->pool_id_hi()))
        return {ESTALE, "pool " + p.cfg.name +
                            ": the client's region is not the one kvpoold serves under that "
                            "name (recreated since the client attached?)"};
    FetchRequest q;
    q.conn_id = c.id;
    q.seq = seq;
    q.ns = f.ns;
    q.first = f.first;
    q.timeout_ms = f.timeout_ms;
    q.keys.resize(f.n_keys);
    std::memcpy(q.keys.data(), payload.data() + sizeof f, f.n_keys * sizeof(kv_key));
    if (auto r = t->submit(std::move(q)); !r) return r.error();
    return {kDeferred, ""};
}

std::pair<int, std::string> ControlServer::dispatch(Conn &c, uint16_t op, uint32_t seq,
                                                    const kv_ctl_request &req,
                                                    std::string_view payload) {
    const std::string name(reinterpret_cast<const char *>(req.pool));
    // A pool the peer may not read shows as its public view (pool_report.h).
    auto view = [&](const Pool &p) {
        return may_read(c.peer, p) ? pool_json(p) : public_pool_json(p);
    };
    auto list = [&] {
        nlohmann::json pools = nlohmann::json::array();
        for (const auto &p : pm_.pools())
            pools.push_back(view(*p));
        return pools;
    };
    const control::OpInfo *info = control::find_op(op);
    if (!info) return {EOPNOTSUPP, "unknown op " + std::to_string(op)};
    if (op == KV_CTL_OP_VERSION)
        return {
            0, dump({{"daemon", KVPOOL_VERSION}, {"protocol", KV_CTL_VERSION}, {"pid", getpid()}})};
    if (op == KV_CTL_OP_LIST || ((op == KV_CTL_OP_STATUS) && name.empty()))
        return {0, dump({{"pools", list()}})};
    if (op == KV_CTL_OP_STATS)
        return {0, dump({{"daemon", daemon_json(counters_)}, {"pools", list()}})};
    if (op == KV_CTL_OP_REMOTE_STATUS && name.empty()) {
        nlohmann::json pools = nlohmann::json::array();
        for (const auto &p : pm_.pools())
            if (p->cfg.remote.enabled && may_read(c.peer, *p))
                pools.push_back({{"pool", p->cfg.name}, {"remote", remote_json(p->cfg.name)}});
        return {0, dump({{"pools", std::move(pools)}})};
    }

    if (op == KV_CTL_OP_CREATE) {
        if (info->access == control::Access::Admin && !allowed(c.peer, pm_.admin_gid()))
            return {EPERM, "create needs root or membership of the admin group " +
                               pm_.config().admin_group};
        if (!valid_pool_name(name))
            return {EINVAL,
                    "pool name \"" + name + "\": expected 1-63 characters of A-Z a-z 0-9 _ . -"};
        if (req.size < (16ULL << 20))
            return {EINVAL, "size " + std::to_string(req.size) + ": expected at least 16 MiB"};
        if (req.hugepages > 2)
            return {EINVAL, "hugepages " + std::to_string(req.hugepages) +
                                ": expected 0 (never), 1 (prefer) or 2 (require)"};
        if (req.mode & ~0777U) {
            char m[64];
            snprintf(m, sizeof m, "mode %04o: ", unsigned(req.mode));
            return {EINVAL,
                    m + std::string(req.mode > 07777
                                        ? "expected at most 0777 (octal)"
                                        : "setuid, setgid and sticky bits have no meaning on "
                                          "a pool file; expected 0..0777 (octal)")};
        }
        PoolConfig pc;
        pc.name = name;
        pc.size = req.size;
        pc.hugepages = HugepageMode(req.hugepages);
        if (req.numa_node == KV_CTL_NUMA_NONE)
            pc.numa_node = kNumaNone;
        else if (req.numa_node == KV_CTL_NUMA_LOCAL)
            pc.numa_node = kNumaLocal;
        else if (numa_available() < 0 || int64_t(req.numa_node) > numa_max_node())
            return {EINVAL, "numa node " + std::to_string(req.numa_node) + ": expected 0.." +
                                std::to_string(numa_available() < 0 ? 0 : numa_max_node())};
        else
            pc.numa_node = int(req.numa_node);
        pc.mode = req.mode ? req.mode : 0660;
        if (req.flags & KV_CTL_F_POLICY) {
            const char *policy = kv_evict_policy_name(req.evict_policy);
            if (!policy)
                return {EINVAL, "eviction policy " + std::to_string(req.evict_policy) +
                                    ": expected 0.." + std::to_string(KV_EVICT_MAX) +
                                    " (clock, lru, lfu, fifo, priority, prefix)"};
            pc.eviction = policy;
        } else if (req.evict_policy) {
            return {EINVAL, "evict_policy " + std::to_string(req.evict_policy) +
                                " without KV_CTL_F_POLICY"};
        }
        pc.prefault = req.flags & KV_CTL_F_PREFAULT;
        pc.secure_erase = req.flags & KV_CTL_F_SECURE_ERASE;
        if (req.max_entries && (req.max_entries < 64 || req.max_entries > 0xfffffff0U))
            return {EINVAL, "max_entries " + std::to_string(req.max_entries) + ": expected 64.." +
                                std::to_string(0xfffffff0U) + " (or 0: no cap)"};
        pc.max_entries = req.max_entries;
        // A runtime pool is kept across restarts like a configured one, its
        // blocks too unless the creator said otherwise.
        pc.persist_on_stop = pc.restore_on_start = !(req.flags & KV_CTL_F_NO_PERSIST);
        pc.snapshot_dir = pm_.config().state_dir;
        auto p = pm_.create(pc, "runtime");
        if (!p) return {-p.error().code, p.error().message};
        KV_LOGI(kComp, "pool %s created by pid %d uid %u", name.c_str(), int(c.peer.pid),
                unsigned(c.peer.uid));
        count_snapshot_runs(pm_, counters_); // its restore, if it had a snapshot
        return {0, dump(pool_json(**p))};
    }

    if ((req.flags & KV_CTL_F_REMOVE) && !(info->flags & KV_CTL_F_REMOVE))
        return {EINVAL, std::string(op_name(op)) + ": the remove flag applies to verify only"};
    if (name.empty()) return {EINVAL, std::string(op_name(op)) + " needs a pool name"};
    Pool *p = pm_.find(name);
    if (!p) return {ENOENT, "no pool named \"" + name + "\""};
    if (info->access == control::Access::PoolGroup && !allowed(c.peer, p->gid))
        return {EPERM, std::string(op_name(op)) + " " + name +
                           " needs root or membership of group " + p->group_name};
    if (info->access == control::Access::PoolReader && !may_read(c.peer, *p))
        return {EPERM, std::string(op_name(op)) + " " + name +
                           " needs root or membership of group " + p->group_name +
                           " or of the admin group " + pm_.config().admin_group};

    switch (op) {
    case KV_CTL_OP_STATUS:
        return {0, dump(view(*p))};
    case KV_CTL_OP_REMOTE_STATUS:
        return {0, dump({{"pool", name},
                         {"remote",
                          p->cfg.remote.enabled ? remote_json(name) : nlohmann::json(nullptr)}})};
    case KV_CTL_OP_REMOTE_FETCH:
        return remote_fetch(c, *p, seq, payload);
    case KV_CTL_OP_ENTRIES: {
        const uint64_t slots = kv_pool_header(p->handle)->n_entries;
        if (req.cursor > slots)
            return {EINVAL, "cursor " + std::to_string(req.cursor) + ": expected 0.." +
                                std::to_string(slots) + " (pool " + name + " has " +
                                std::to_string(slots) + " entry slots)"};
        return {0, dump(entries_json(*p, req.cursor, req.arg))};
    }
    case KV_CTL_OP_HEALTH:
        return {0, dump(health_json(*p))};
    case KV_CTL_OP_CLIENTS:
        return {0, dump(clients_json(*p))};
    case KV_CTL_OP_DESTROY: {
        if (RemoteTiers *t = remote_tiers()) t->stop(name); // its workers use the pool's handle
        auto r = pm_.destroy(name);
        if (!r) return {-r.error().code, r.error().message};
        return {0, dump({{"pool", name}, {"destroyed", true}})};
    }
    case KV_CTL_OP_EVICT: {
        if (req.arg > 100)
            return {EINVAL, "percent " + std::to_string(req.arg) + ": expected 0..100"};
        if (req.arg == 0) // nothing asked, nothing freed: answered now, like any other share
            return {0, dump({{"pool", name}, {"requested_bytes", 0}, {"freed_bytes", 0}})};
        // Done in chunks over the next turns of the loop (step_evict).
        c.evict = EvictJob{name, unpinned_bytes(*p) * req.arg / 100, 0, req.arg, seq};
        return {kDeferred, ""};
    }
    case KV_CTL_OP_VERIFY:
        // Done in chunks over the next turns of the loop (step_verify).
        c.verify = VerifyJob{};
        c.verify->pool = name;
        c.verify->remove = (req.flags & KV_CTL_F_REMOVE) != 0;
        c.verify->seq = seq;
        c.verify->start_ms = mono_ms();
        return {kDeferred, ""};
    case KV_CTL_OP_DETACH: {
        if (req.arg == 0 || req.arg > uint64_t(INT32_MAX))
            return {EINVAL, "pid " + std::to_string(req.arg) + ": expected a process id"};
        const uint32_t pid = uint32_t(req.arg);
        if (pid == uint32_t(getpid()))
            return {EINVAL, "pid " + std::to_string(pid) + " is kvpoold itself"};
        int rc = kv_reap_pid(p->handle, pid);
        bool killed = false;
        if (rc == -EBUSY) {
            if (!(req.flags & KV_CTL_F_KILL))
                return {EBUSY,
                        "process " + std::to_string(pid) +
                            " is alive and attached; pass --kill to SIGKILL it first (its pins and "
                            "reservations are then reclaimed)"};
            if (kill(pid_t(pid), SIGKILL) != 0)
                return {errno, "kill " + std::to_string(pid) + ": " + strerror(errno)};
            killed = true;
            // Wait (bounded) for the process to die; a zombie counts as dead.
            for (int i = 0; i < 200 && (rc = kv_reap_pid(p->handle, pid)) == -EBUSY; i++)
                usleep(10000);
            if (rc == -EBUSY)
                return {ETIMEDOUT,
                        "process " + std::to_string(pid) + " did not exit within 2 s of SIGKILL"};
        }
        if (rc < 0) return {-rc, std::string("reap: ") + kv_strerror(rc)};
        // ESRCH, not ENOENT: the pool exists, the process is not one of its clients.
        if (rc == 0 && !killed)
            return {ESRCH, "process " + std::to_string(pid) + " is not attached to pool " + name +
                               " (no client slot holds that pid; kvctl clients " + name +
                               " lists them)"};
        p->reaped_clients += uint64_t(rc);
        KV_LOGI(kComp, "pool %s: detached pid %u (%d slot%s%s) for pid %d", name.c_str(), pid, rc,
                rc == 1 ? "" : "s", killed ? ", killed" : "", int(c.peer.pid));
        return {0, dump({{"pool", name}, {"pid", pid}, {"killed", killed}, {"reaped", rc}})};
    }
    case KV_CTL_OP_PERSIST:
    case KV_CTL_OP_RESTORE: {
        std::string path(reinterpret_cast<const char *>(req.path));
        if (path.empty()) path = p->snapshot_path;
        if (path.front() != '/')
            return {EINVAL, "path \"" + path + "\": expected an absolute path"};
        // The daemon runs as root: a group member may only name this pool's
        // own snapshot files (control.h); root may name any path.
        const std::string dir = p->snapshot_path.substr(0, p->snapshot_path.rfind('/') + 1);
        if (c.peer.uid != 0 && !own_snapshot_file(path, dir, name))
            return {
                EPERM,
                "path " + path + ": a member of group " + p->group_name + " may only name pool " +
                    name + "'s snapshots, " + dir + name + ".kvsnap or " + dir + name +
                    "@TAG.kvsnap (TAG: 1-63 of A-Z a-z 0-9 _ . -); only root may name other files"};
        if ((req.flags & KV_CTL_F_FORCE) && !(info->flags & KV_CTL_F_FORCE))
            return {EINVAL, std::string(op_name(op)) + ": the force flag applies to restore only"};
        if ((req.flags & KV_CTL_F_FORCE) && c.peer.uid != 0)
            return {EPERM,
                    "restore " + name + " --force: only root may restore another pool's snapshot"};
        if (op == KV_CTL_OP_RESTORE && access(path.c_str(), R_OK) != 0)
            return {file_error_code(errno), path + ": " + strerror(errno)};
        if (op == KV_CTL_OP_PERSIST && path.rfind(dir, 0) == 0)
            mkdir(dir.c_str(), 0750); // the pool's own directory
        auto r = start_job(*p, op, path, c.id, seq, wake_fd_,
                           Requester{c.peer.uid == 0, (req.flags & KV_CTL_F_FORCE) != 0});
        if (!r) return {-r.error().code, r.error().message};
        return {kDeferred, ""};
    }
    }
    return {EOPNOTSUPP, "unknown op " + std::to_string(op)};
}

} // namespace kv::daemon
