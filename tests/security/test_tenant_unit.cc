// SPDX-License-Identifier: MIT
//
// The pieces of tenant isolation and the audit trail that need no daemon:
// the metrics filter (which pool's series a peer gets), the TCP peer
// lookup through inet_diag, the audit rate limit and the entries' fields.
#include "audit.h"
#include "metrics.h"

#include <algorithm>
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

using namespace kv::daemon;

namespace {

const std::string kText = "# HELP kvpool_used_bytes Bytes of live blocks.\n"
                          "# TYPE kvpool_used_bytes gauge\n"
                          "kvpool_used_bytes{pool=\"alpha\"} 1\n"
                          "kvpool_used_bytes{pool=\"beta\"} 2\n"
                          "kvpool_remote_rejected_total{pool=\"beta\",reason=\"key\"} 3\n"
                          "kvpool_info{policy=\"lru\",pool=\"alpha\"} 1\n"
                          "kvpoold_requests_total 7\n";

std::string only(std::string_view allowed) {
    return filter_pool_series(kText, [&](std::string_view p) { return p == allowed; });
}

} // namespace

TEST(MetricsFilter, KeepsOnlyTheVisiblePoolsSeries) {
    const std::string a = only("alpha");
    EXPECT_NE(a.find("kvpool_used_bytes{pool=\"alpha\"} 1"), std::string::npos) << a;
    EXPECT_NE(a.find("kvpool_info{policy=\"lru\",pool=\"alpha\"} 1"), std::string::npos) << a;
    EXPECT_EQ(a.find("beta"), std::string::npos) << a;
    EXPECT_NE(a.find("kvpoold_requests_total 7"), std::string::npos) << "daemon-wide series kept";
    EXPECT_NE(a.find("# TYPE kvpool_used_bytes gauge"), std::string::npos);
    const std::string none = only("");
    EXPECT_EQ(none.find("pool=\""), std::string::npos) << none;
    EXPECT_EQ(filter_pool_series(kText, [](std::string_view) { return true; }), kText);
}

TEST(MetricsFilter, FailsClosedOnLabelsItCannotParse) {
    const std::string bad = "x{pool=\"alpha\" 1\n"               // no closing brace
                            "y{pool=alpha} 1\n"                  // unquoted
                            "z{pool=\"a\",pool=\"b\"} 1\n"       // two pool labels
                            "w{le=\"0.5\",pool=\"a\\\"b\"} 1\n"; // escaped quote: pool a"b
    std::vector<std::string> asked;
    const std::string out = filter_pool_series(bad, [&](std::string_view p) {
        asked.emplace_back(p);
        return true;
    });
    EXPECT_EQ(out, "w{le=\"0.5\",pool=\"a\\\"b\"} 1\n");
    EXPECT_EQ(asked, std::vector<std::string>{"a\"b"});
}

// A loopback connection's client socket is found by inet_diag and is ours.
TEST(TcpPeer, FindsTheUidOfALoopbackClient) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(l, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    ASSERT_EQ(bind(l, reinterpret_cast<sockaddr *>(&sa), sizeof sa), 0);
    ASSERT_EQ(listen(l, 1), 0);
    ASSERT_EQ(getsockname(l, reinterpret_cast<sockaddr *>(&sa), &len), 0);
    // As root, the client socket is made as another uid (a socket's owner
    // is its creator's), so that the answer is not 0 by chance.
    const uid_t want = geteuid() == 0 ? 65534 : geteuid();
    const bool as_other = want != geteuid();
    ASSERT_EQ(as_other ? seteuid(want) : 0, 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(as_other ? seteuid(0) : 0, 0);
    ASSERT_EQ(connect(c, reinterpret_cast<sockaddr *>(&sa), sizeof sa), 0);
    int a = accept(l, nullptr, nullptr);
    ASSERT_GE(a, 0);
    auto uid = tcp_peer_uid(a);
    if (!uid && uid.error().find("Protocol not supported") != std::string::npos) {
        close(a), close(c), close(l);
        GTEST_SKIP() << "no inet_diag in this kernel: " << uid.error();
    }
    ASSERT_TRUE(uid.has_value()) << uid.error();
    EXPECT_EQ(*uid, want);
    close(a);
    close(c);
    close(l);
}

TEST(AuditLimiter, BurstThenRate) {
    AuditLimiter l;
    l.configure(5, 1000);
    int admitted = 0;
    for (int i = 0; i < 100; i++)
        admitted += l.admit(1000);
    EXPECT_EQ(admitted, 50) << "the burst is 10x the rate";
    EXPECT_EQ(l.take_suppressed(), 50u);
    EXPECT_EQ(l.take_suppressed(), 0u);
    EXPECT_FALSE(l.admit(1100)) << "0.5 tokens after 100 ms";
    EXPECT_TRUE(l.admit(1200)) << "one token after 200 ms";
    EXPECT_FALSE(l.admit(1200));
    EXPECT_EQ(l.take_suppressed(), 2u);
}

TEST(AuditTrail, WritesTheFieldsAndCountsWhatItDropped) {
    std::vector<std::vector<std::string>> got;
    AuditTrail t([&](const std::vector<std::string> &f) { got.push_back(f); });
    t.configure(true, 1, 0);
    AuditRecord r;
    r.op = "entries";
    r.pool = "alpha";
    r.uid = 1001, r.gid = 1002, r.pid = 42;
    r.error = EPERM;
    r.detail = "entries alpha needs root\nor membership";
    for (int i = 0; i < 15; i++)
        t.record(r, 0);
    ASSERT_EQ(got.size(), 10u) << "burst of 10 at audit_rate 1";
    auto has = [](const std::vector<std::string> &f, const std::string &kv) {
        return std::find(f.begin(), f.end(), kv) != f.end();
    };
    const auto &e = got[0];
    for (const char *kv :
         {"KVPOOL_OP=entries", "KVPOOL_POOL=alpha", "KVPOOL_PEER_UID=1001", "KVPOOL_PEER_GID=1002",
          "KVPOOL_PEER_PID=42", "KVPOOL_RESULT=error", "KVPOOL_ERRNO=1",
          "SYSLOG_IDENTIFIER=kvpoold", "PRIORITY=5", "MESSAGE_ID=43768fdbab114cd1afbf3b9c474c7b69",
          "MESSAGE=entries alpha by uid 1001 gid 1002 pid 42: error: EPERM: "
          "entries alpha needs root or membership"})
        EXPECT_TRUE(has(e, kv)) << kv;
    r.error = 0;
    t.record(r, 1000); // a token back: the count of the 5 dropped goes first
    ASSERT_EQ(got.size(), 12u);
    EXPECT_TRUE(has(got[10], "KVPOOL_SUPPRESSED=5"));
    EXPECT_TRUE(has(got[10], "MESSAGE_ID=41d77a21d2de4b3e8405800bd45a2b3c"));
    EXPECT_TRUE(has(got[11], "KVPOOL_RESULT=ok"));
    EXPECT_TRUE(has(got[11], "MESSAGE=entries alpha by uid 1001 gid 1002 pid 42: ok"));
    t.configure(false, 1, 5000);
    t.record(r, 5000);
    EXPECT_EQ(got.size(), 12u) << "audit = false writes nothing";
}
