// SPDX-License-Identifier: MIT
#include "metrics.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace kv::daemon {

namespace {

std::expected<int, std::string> listen_on(int family, const sockaddr *sa, socklen_t len,
                                          const std::string &spec) {
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::unexpected("metrics " + spec + ": socket: " + strerror(errno));
    int one = 1;
    if (family != AF_UNIX) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, sa, len) != 0 || listen(fd, 16) != 0) {
        std::string e = strerror(errno);
        close(fd);
        return std::unexpected("metrics " + spec + ": " + e);
    }
    return fd;
}

bool label_name_char(char ch, bool first) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
           (!first && ch >= '0' && ch <= '9');
}

// A sample line's pool label (text format 0.0.4: NAME{L="V",...} VALUE):
// 1 and *pool set when it has one, 0 when it has none, -1 when its label
// set does not parse.
int pool_label(std::string_view line, std::string *pool) {
    const size_t brace = line.find_first_of("{ ");
    if (brace == std::string_view::npos || line[brace] == ' ') return 0;
    size_t i = brace + 1;
    int found = 0;
    for (;;) {
        if (i < line.size() && line[i] == '}') return found;
        const size_t start = i;
        while (i < line.size() && label_name_char(line[i], i == start))
            i++;
        if (i == start || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') return -1;
        const std::string_view name = line.substr(start, i - start);
        i += 2;
        std::string value;
        for (;; i++) {
            if (i >= line.size()) return -1;
            if (line[i] == '"') break;
            if (line[i] == '\\') {
                if (++i >= line.size()) return -1;
                value += line[i] == 'n' ? '\n' : line[i];
                continue;
            }
            value += line[i];
        }
        i++; // the closing quote
        if (name == "pool") {
            if (found) return -1; // two pool labels: not a series this daemon writes
            *pool = std::move(value);
            found = 1;
        }
        if (i < line.size() && line[i] == ',')
            i++;
        else if (i >= line.size() || line[i] != '}')
            return -1;
    }
}

} // namespace

std::string filter_pool_series(std::string_view text,
                               const std::function<bool(std::string_view)> &visible) {
    std::string out;
    out.reserve(text.size());
    std::string pool;
    while (!text.empty()) {
        const size_t nl = text.find('\n');
        const std::string_view line = text.substr(0, nl == std::string_view::npos ? nl : nl + 1);
        text.remove_prefix(line.size());
        if (!line.starts_with('#')) {
            const int r = pool_label(line, &pool);
            if (r < 0 || (r > 0 && !visible(pool))) continue;
        }
        out += line;
    }
    return out;
}

std::expected<uid_t, std::string> tcp_peer_uid(int fd) {
    sockaddr_storage local{}, peer{};
    socklen_t llen = sizeof local, plen = sizeof peer;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&local), &llen) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr *>(&peer), &plen) != 0)
        return std::unexpected(std::string("getsockname/getpeername: ") + strerror(errno));
    if (local.ss_family != peer.ss_family ||
        (local.ss_family != AF_INET && local.ss_family != AF_INET6))
        return std::unexpected("not a TCP/IP connection");
    struct {
        nlmsghdr nlh;
        inet_diag_req_v2 req;
    } msg{};
    msg.nlh.nlmsg_len = sizeof msg;
    msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nlh.nlmsg_flags = NLM_F_REQUEST;
    msg.req.sdiag_family = uint8_t(local.ss_family);
    msg.req.sdiag_protocol = IPPROTO_TCP;
    msg.req.idiag_states = ~0U;
    msg.req.id.idiag_cookie[0] = msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    // The client's socket, as seen from its side: its source is our peer,
    // its destination us (ports and addresses stay in network order).
    if (local.ss_family == AF_INET) {
        const auto &l = reinterpret_cast<const sockaddr_in &>(local);
        const auto &p = reinterpret_cast<const sockaddr_in &>(peer);
        msg.req.id.idiag_sport = p.sin_port;
        msg.req.id.idiag_dport = l.sin_port;
        msg.req.id.idiag_src[0] = p.sin_addr.s_addr;
        msg.req.id.idiag_dst[0] = l.sin_addr.s_addr;
    } else {
        const auto &l = reinterpret_cast<const sockaddr_in6 &>(local);
        const auto &p = reinterpret_cast<const sockaddr_in6 &>(peer);
        msg.req.id.idiag_sport = p.sin6_port;
        msg.req.id.idiag_dport = l.sin6_port;
        memcpy(msg.req.id.idiag_src, &p.sin6_addr, sizeof p.sin6_addr);
        memcpy(msg.req.id.idiag_dst, &l.sin6_addr, sizeof l.sin6_addr);
    }
    const int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) return std::unexpected(std::string("netlink sock_diag: ") + strerror(errno));
    // The kernel answers an exact lookup before send returns; the timeout
    // only bounds a kernel that does not answer at all.
    timeval tv{0, 200000};
    setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (sendto(nl, &msg, sizeof msg, 0, reinterpret_cast<sockaddr *>(&kernel), sizeof kernel) !=
        ssize_t(sizeof msg)) {
        std::string e = strerror(errno);
        close(nl);
        return std::unexpected("netlink sock_diag send: " + e);
    }
    alignas(nlmsghdr) char buf[8192];
    const ssize_t n = recv(nl, buf, sizeof buf, 0);
    const int rerr = errno;
    close(nl);
    if (n < 0) return std::unexpected(std::string("netlink sock_diag recv: ") + strerror(rerr));
    int len = int(n);
    for (auto *h = reinterpret_cast<nlmsghdr *>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_ERROR) {
            const auto *e = static_cast<const nlmsgerr *>(NLMSG_DATA(h));
            return std::unexpected(std::string("inet_diag lookup: ") + strerror(-e->error));
        }
        if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
            h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
            continue;
        const auto *m = static_cast<const inet_diag_msg *>(NLMSG_DATA(h));
        if (m->id.idiag_sport != msg.req.id.idiag_sport ||
            m->id.idiag_dport != msg.req.id.idiag_dport)
            continue;
        return uid_t(m->idiag_uid);
    }
    return std::unexpected("inet_diag lookup: no answer for the connection");
}

std::expected<int, std::string> metrics_listen(const std::string &spec) {
    if (spec.rfind("unix:", 0) == 0) {
        std::string path = spec.substr(5);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        if (path.empty() || path.size() >= sizeof sa.sun_path)
            return std::unexpected("metrics \"" + spec +
                                   "\": unix socket path empty or longer than " +
                                   std::to_string(sizeof sa.sun_path - 1) + " bytes");
        memcpy(sa.sun_path, path.c_str(), path.size());
        unlink(path.c_str());
        auto fd = listen_on(AF_UNIX, reinterpret_cast<sockaddr *>(&sa), sizeof sa, spec);
        // Anyone may connect: per-pool series go only to the pools' readers
        // (SO_PEERCRED, filter_pool_series).
        if (fd) chmod(path.c_str(), 0666);
        return fd;
    }
    if (spec.rfind("tcp:", 0) != 0)
        return std::unexpected("metrics \"" + spec + "\": expected tcp:HOST:PORT or unix:PATH");
    std::string hp = spec.substr(4);
    size_t colon = hp.rfind(':');
    if (colon == std::string::npos)
        return std::unexpected("metrics \"" + spec + "\": expected tcp:HOST:PORT (no port)");
    std::string host = hp.substr(0, colon), port_s = hp.substr(colon + 1);
    char *end = nullptr;
    long port = strtol(port_s.c_str(), &end, 10);
    if (port_s.empty() || *end || port < 1 || port > 65535)
        return std::unexpected("metrics \"" + spec + "\": port \"" + port_s +
                               "\": expected 1..65535");
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        sockaddr_in6 sa{};
        sa.sin6_family = AF_INET6;
        sa.sin6_port = htons(uint16_t(port));
        if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &sa.sin6_addr) != 1 ||
            !IN6_IS_ADDR_LOOPBACK(&sa.sin6_addr))
            return std::unexpected("metrics \"" + spec + "\": host " + host +
                                   ": expected a loopback address");
        return listen_on(AF_INET6, reinterpret_cast<sockaddr *>(&sa), sizeof sa, spec);
    }
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(uint16_t(port));
    if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1 ||
        (ntohl(sa.sin_addr.s_addr) >> 24) != 127)
        return std::unexpected("metrics \"" + spec + "\": host " + host +
                               ": expected a loopback address (127.0.0.0/8 or [::1])");
    return listen_on(AF_INET, reinterpret_cast<sockaddr *>(&sa), sizeof sa, spec);
}

std::string http_response(int status, const std::string &body, bool head) {
    const char *reason = status == 200   ? "OK"
                         : status == 404 ? "Not Found"
                         : status == 405 ? "Method Not Allowed"
                         : status == 431 ? "Request Header Fields Too Large"
                                         : "Bad Request";
    std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
    h += status == 200 ? "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                       : "Content-Type: text/plain; charset=utf-8\r\n";
    if (status == 405) h += "Allow: GET, HEAD\r\n";
    h += "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    return head ? h : h + body;
}

std::string http_answer(std::string_view request, const std::function<std::string()> &metrics) {
    const std::string_view line = request.substr(0, request.find_first_of("\r\n"));
    const size_t sp1 = line.find(' ');
    const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || sp1 == 0 || sp2 == sp1 + 1 ||
        line.substr(sp2 + 1).rfind("HTTP/", 0) != 0)
        return http_response(400, "expected a request line: METHOD /metrics HTTP/1.1\n");
    const std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    target = target.substr(0, target.find('?'));
    const bool head = method == "HEAD";
    if (method != "GET" && !head)
        return http_response(405, "method " + std::string(method.substr(0, 32)) +
                                      ": expected GET or HEAD\n");
    if (target != "/metrics")
        return http_response(404, "no such path; the metrics are at /metrics\n", head);
    return http_response(200, metrics(), head);
}

} // namespace kv::daemon
