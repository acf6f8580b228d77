// SPDX-License-Identifier: MIT
#include "audit.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <utility>

namespace kv::daemon {

namespace {

// A caller-chosen detail (a path, a pool name it made up) ends up in the
// journal: cut it short and keep it on one line, so one entry stays one
// readable line whatever a peer sends.
constexpr size_t kMaxDetail = 240;

std::string one_line(std::string_view s) {
    std::string out(s.substr(0, kMaxDetail));
    for (char &ch : out)
        if (ch == '\n' || ch == '\r' || (unsigned char)ch < 0x20) ch = ' ';
    if (s.size() > kMaxDetail) out += "...";
    return out;
}

void journal_send(const std::vector<std::string> &fields) {
    std::vector<iovec> iov;
    iov.reserve(fields.size());
    for (const std::string &f : fields)
        iov.push_back({const_cast<char *>(f.data()), f.size()});
    // A journal that is not there (no journald, tests without it) loses
    // the entry: the daemon must not stop serving because of it.
    (void)sd_journal_sendv(iov.data(), int(iov.size()));
}

} // namespace

void AuditLimiter::configure(uint32_t rate, uint64_t now_ms) {
    const double r = rate ? double(rate) : 1.0;
    if (r == rate_) return;
    rate_ = r;
    burst_ = 10 * r;
    tokens_ = burst_;
    last_ms_ = now_ms;
}

bool AuditLimiter::admit(uint64_t now_ms) {
    if (now_ms > last_ms_) {
        tokens_ = std::min(burst_, tokens_ + double(now_ms - last_ms_) * rate_ / 1000.0);
        last_ms_ = now_ms;
    }
    if (tokens_ >= 1.0) {
        tokens_ -= 1.0;
        return true;
    }
    suppressed_++;
    return false;
}

uint64_t AuditLimiter::take_suppressed() {
    return std::exchange(suppressed_, 0);
}

AuditTrail::AuditTrail() : AuditTrail(journal_send) {}

AuditTrail::AuditTrail(Sink sink) : sink_(std::move(sink)) {}

void AuditTrail::configure(bool enabled, uint32_t rate, uint64_t now_ms) {
    enabled_ = enabled;
    if (rate != rate_) {
        rate_ = rate;
        limiter_.configure(rate, now_ms);
    }
}

std::string AuditTrail::message(const AuditRecord &r) {
    std::string m = std::string(r.op) + " " + std::string(r.pool.empty() ? "-" : r.pool) +
                    " by uid " + std::to_string(r.uid) + " gid " + std::to_string(r.gid) + " pid " +
                    std::to_string(r.pid) + ": ";
    if (!r.error) return m + "ok";
    const char *name = strerrorname_np(r.error);
    m += "error: ";
    m += name ? name : std::to_string(r.error);
    if (!r.detail.empty()) m += ": " + one_line(r.detail);
    return m;
}

void AuditTrail::record(const AuditRecord &r, uint64_t now_ms) {
    if (!enabled_) return;
    if (!limiter_.admit(now_ms)) return;
    if (const uint64_t n = limiter_.take_suppressed())
        sink_({std::string("MESSAGE_ID=") + kAuditSuppressedId,
               "MESSAGE=" + std::to_string(n) + " audit entries suppressed (audit_rate " +
                   std::to_string(rate_) + "/s)",
               "PRIORITY=4", "SYSLOG_IDENTIFIER=kvpoold",
               "KVPOOL_SUPPRESSED=" + std::to_string(n)});
    sink_({std::string("MESSAGE_ID=") + kAuditMessageId, "MESSAGE=" + message(r),
           r.error ? "PRIORITY=5" : "PRIORITY=6", "SYSLOG_IDENTIFIER=kvpoold",
           "KVPOOL_OP=" + std::string(r.op), "KVPOOL_POOL=" + one_line(r.pool),
           "KVPOOL_PEER_UID=" + std::to_string(r.uid), "KVPOOL_PEER_GID=" + std::to_string(r.gid),
           "KVPOOL_PEER_PID=" + std::to_string(r.pid),
           std::string("KVPOOL_RESULT=") + (r.error ? "error" : "ok"),
           "KVPOOL_ERRNO=" + std::to_string(r.error)});
}

} // namespace kv::daemon
