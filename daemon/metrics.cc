// SPDX-License-Identifier: MIT
#include "metrics.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
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

} // namespace

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
        if (fd) chmod(path.c_str(), 0666); // metrics are read-only and public, like status
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
