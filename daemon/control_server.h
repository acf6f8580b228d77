// SPDX-License-Identifier: MIT
//
// The control socket (protocol: uapi/kvpool/control.h) and the metrics
// endpoint's connections, served from the daemon's single epoll loop. Every
// socket is non-blocking and every length is checked before it is trusted,
// so a slow, malformed or hostile peer costs one connection, never the loop.
#pragma once

#include "audit.h"
#include "pool_manager.h"
#include "pool_report.h"

#include <cstdint>
#include <expected>
#include <kvpool/control.h>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace kv::daemon {

class ControlServer {
  public:
    ControlServer(int epfd, PoolManager &pm, DaemonCounters &counters);
    ~ControlServer();
    ControlServer(const ControlServer &) = delete;
    ControlServer &operator=(const ControlServer &) = delete;

    // Bind the control socket (mode 0666: authorization is per request).
    std::expected<void, std::string> listen_control(const std::string &path);
    void add_metrics_listener(int fd);

    // Dispatch an epoll event; false if fd is not one of ours.
    bool handle(int fd, uint32_t events);
    // Close connections idle for longer than idle_ms (not those waiting
    // for a persist or restore to finish), and those holding part of a
    // request begun more than kRequestDeadlineMs ago.
    void expire(uint64_t now_ms, uint64_t idle_ms);
    // Send the answer of a deferred request (persist, restore) if its
    // connection is still open.
    void deliver(uint64_t conn_id, uint16_t op, uint32_t seq, int error, const std::string &body);
    // The eventfd snapshot workers signal when they finish.
    void set_job_wake_fd(int fd) { wake_fd_ = fd; }

    static constexpr size_t kMaxConnections = 256;
    static constexpr size_t kMaxPerUser =
        32; // control connections of one uid (root: see kRootReserve)
    static constexpr size_t kRootReserve = 16;
    static constexpr uint64_t kIdleMs = 60000; // what main's expire() calls use
    // A request (or a metrics request's head) must arrive whole within
    // this of its first byte, or the connection is closed: a peer that
    // trickles bytes never looks idle.
    static constexpr uint64_t kRequestDeadlineMs = 10000;

  private:
    enum class Kind { Control, Metrics };
    struct Peer {
        uid_t uid = uid_t(-1);
        pid_t pid = 0;
        std::vector<gid_t> groups; // primary and supplementary
    };
    struct EvictJob { // an EVICT under way (step_evict)
        std::string pool;
        uint64_t want = 0, freed = 0, percent = 0;
        uint32_t seq = 0;
    };
    struct VerifyJob { // a VERIFY under way (step_verify)
        std::string pool;
        bool remove = false;
        uint32_t seq = 0;
        uint64_t cursor = 0; // the next entry-table index to examine
        uint64_t checked = 0, checked_bytes = 0, bad_count = 0, removed = 0, skipped = 0;
        uint64_t start_ms = 0;
        nlohmann::json bad = nlohmann::json::array(); // the first KV_CTL_VERIFY_MAX_LISTED
    };
    struct Conn {
        Kind kind;
        Peer peer;
        std::string in, out;
        bool close_after_flush = false;
        uint64_t last_ms = 0;
        uint64_t id = 0;      // unique for the daemon's life: fds are reused, ids are not
        unsigned waiting = 0; // deferred requests not yet answered
        std::optional<EvictJob> evict;
        std::optional<VerifyJob> verify;
        uint64_t partial_since_ms = 0; // first byte of the request being received (0: none)
    };
    // Most bytes of input buffered for one connection: one maximal message.
    static constexpr size_t kMaxInput = sizeof(kv_ctl_hdr) + KV_CTL_MAX_BODY;
    static constexpr int kDeferred = -1; // dispatch: the answer comes later through deliver()

    void accept_on(int lfd, Kind kind);
    void send_refusal(int fd, uint32_t uid, size_t mine, bool root);
    bool shed_idle_for(uid_t uid, size_t mine);
    void on_io(int fd, uint32_t events);
    static void track_partial(Conn &c, uint64_t now_ms);
    static bool input_full(const Conn &c);
    static bool ready(const Conn &c);
    static bool busy(const Conn &c) { return c.evict || c.verify; } // a job answers first
    void process(int fd, Conn &c);
    bool send_out(int fd, Conn &c);
    void flush(int fd, Conn &c);
    void answer(Conn &c, uint16_t op, uint32_t seq, int err, std::string reply);
    void step_evict(Conn &c);
    void step_verify(Conn &c);
    void drop(int fd);
    // Handle one request; returns the response body (JSON or message) and error.
    std::pair<int, std::string> dispatch(Conn &c, uint16_t op, uint32_t seq,
                                         const kv_ctl_request &req, std::string_view payload);
    std::pair<int, std::string> remote_fetch(Conn &c, const Pool &p, uint32_t seq,
                                             std::string_view payload);
    bool allowed(const Peer &p, gid_t gid) const;
    // Root, the pool's group or the admin group: may read the pool's usage,
    // entries, clients and metrics (Access::PoolReader).
    bool may_read(const Peer &peer, const Pool &p) const;
    void identify_metrics_peer(int fd, Peer &peer);
    void audit(const Peer &peer, uint16_t op, std::string_view pool, int err,
               std::string_view reply);
    void audit_done(uint64_t conn_id, uint16_t op, uint32_t seq, int err, std::string_view reply);

    int epfd_;
    PoolManager &pm_;
    DaemonCounters &counters_;
    int control_fd_ = -1;
    std::string control_path_;
    ino_t control_ino_ = 0; // the socket file we bound (unlinked at stop only if still ours)
    uint64_t refused_ = 0, refused_logged_ms_ = 0; // connections refused since the last log line
    uint64_t shed_ = 0, shed_logged_ms_ = 0;       // idle connections closed to make room, likewise
    std::vector<int> metrics_fds_;
    std::map<int, Conn> conns_;
    uint64_t next_id_ = 1;
    int wake_fd_ = -1;
    uint64_t unidentified_logged_ms_ = 0; // metrics peers tcp_peer_uid could not identify
    AuditTrail audit_;
    struct PendingAudit { // a deferred audited op, until its answer
        uint64_t conn_id;
        uint16_t op;
        uint32_t seq;
        std::string pool;
        Peer peer;
    };
    std::vector<PendingAudit> pending_audit_;
};

} // namespace kv::daemon
