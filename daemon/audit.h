// SPDX-License-Identifier: MIT
//
// The audit trail: one structured journal entry (sd_journal_send) per
// control operation that reads or changes a pool's data (create, destroy,
// persist, restore, evict, detach, verify, remote fetch, entries), refused
// ones included, so that `journalctl KVPOOL_POOL=alpha` lists who did what
// to a pool. Fields (doc/security.md, "The audit trail"):
//   MESSAGE_ID        kAuditMessageId (kAuditSuppressedId for the
//                     "N audit entries suppressed" entry)
//   MESSAGE           "persist alpha by uid 1001 gid 1001 pid 4242: ok"
//   PRIORITY          6 (info) when the op succeeded, 5 (notice) otherwise
//   SYSLOG_IDENTIFIER kvpoold
//   KVPOOL_OP         the op's name (control_protocol.h), e.g. "remote fetch"
//   KVPOOL_POOL       the pool named in the request
//   KVPOOL_PEER_UID, KVPOOL_PEER_GID, KVPOOL_PEER_PID  SO_PEERCRED of the caller
//   KVPOOL_RESULT     "ok" or "error"
//   KVPOOL_ERRNO      0, or the positive errno of the answer (EPERM: refused)
// The rate is bounded by a token bucket (rate entries a second, bursts of
// 10x rate): an entry over the limit is counted, and the next entry that
// passes is preceded by one "N audit entries suppressed" entry, so a peer
// that floods the socket cannot flood the journal, and the trail still
// says that something was left out.
//
// Not thread-safe: the control server's loop is its only caller.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace kv::daemon {

// Fixed journal message ids (sd-id128 form, 32 hex digits), for
// `journalctl MESSAGE_ID=...`.
inline constexpr const char *kAuditMessageId = "43768fdbab114cd1afbf3b9c474c7b69";
inline constexpr const char *kAuditSuppressedId = "41d77a21d2de4b3e8405800bd45a2b3c";

struct AuditRecord {
    std::string_view op;   // "persist", "entries", ...
    std::string_view pool; // as the request named it (may name no pool that exists)
    uid_t uid = uid_t(-1);
    gid_t gid = gid_t(-1);
    pid_t pid = 0;
    int error = 0;           // 0 or a positive errno
    std::string_view detail; // the answer's message when error != 0 (truncated in MESSAGE)
};

// A token bucket: rate tokens a second, at most burst held.
class AuditLimiter {
  public:
    // rate 0 is taken as 1.
    void configure(uint32_t rate, uint64_t now_ms);
    // True if an entry may be written now (a token is taken), else false
    // and the entry is counted as suppressed.
    bool admit(uint64_t now_ms);
    // Entries suppressed since the last call; resets the count.
    uint64_t take_suppressed();

  private:
    double tokens_ = 0, rate_ = 0, burst_ = 0;
    uint64_t last_ms_ = 0;
    uint64_t suppressed_ = 0;
};

class AuditTrail {
  public:
    // One journal entry: "FIELD=value" strings. The default sink is
    // sd_journal_sendv; tests pass their own.
    using Sink = std::function<void(const std::vector<std::string> &fields)>;

    AuditTrail();
    explicit AuditTrail(Sink sink);

    // enabled and rate come from [daemon] audit and audit_rate; may be
    // called on every record (a change of rate refills the bucket).
    void configure(bool enabled, uint32_t rate, uint64_t now_ms);
    void record(const AuditRecord &r, uint64_t now_ms);

    // The entry's MESSAGE, e.g. "evict alpha by uid 0 gid 0 pid 7: error:
    // EPERM: evict alpha needs root or membership of group tenant-a".
    static std::string message(const AuditRecord &r);

  private:
    Sink sink_;
    AuditLimiter limiter_;
    bool enabled_ = true;
    uint32_t rate_ = 0;
};

} // namespace kv::daemon
