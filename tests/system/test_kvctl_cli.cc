// SPDX-License-Identifier: MIT
//
// kvctl without a daemon: argument handling, exit codes and messages, and its
// protocol client against a fake kvpoold that this test runs on a temporary
// unix socket and that answers one request the way each test asks (a valid
// document, a bad magic, an error, a truncated message, silence).
//
// The kvctl binary is taken from $KVCTL (meson passes kvctl.full_path()):
//   KVCTL=build/tools/kvctl ./test_kvctl_cli
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <gtest/gtest.h>
#include <kvpool/control.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char **environ;

namespace {

constexpr const char *kNoSocket = "/nonexistent/kvctl-test/control";

struct Outcome {
    int code = -1; // exit status, or 128 + signal
    std::string out, err;
};

std::string kvctl_path() {
    const char *p = std::getenv("KVCTL");
    return p ? p : "";
}

// Run kvctl with args; KVPOOL_SOCKET is removed from its environment unless
// socket_env is given, so the host's daemon is never reached by accident.
Outcome run_kvctl(const std::vector<std::string> &args, const char *socket_env = nullptr) {
    Outcome r;
    const std::string bin = kvctl_path();
    std::vector<std::string> env_store;
    for (char **e = environ; *e; e++)
        if (std::strncmp(*e, "KVPOOL_SOCKET=", 14) != 0) env_store.emplace_back(*e);
    if (socket_env) env_store.push_back(std::string("KVPOOL_SOCKET=") + socket_env);
    std::vector<char *> argv{const_cast<char *>(bin.c_str())}, envp;
    for (const std::string &a : args)
        argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    for (std::string &e : env_store)
        envp.push_back(e.data());
    envp.push_back(nullptr);

    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
        ADD_FAILURE() << "pipe2: " << std::strerror(errno);
        return r;
    }
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        execve(argv[0], argv.data(), envp.data());
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    pollfd pfd[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    std::string *dst[2] = {&r.out, &r.err};
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(pfd, 2, 20000) <= 0) break; // a hung kvctl is a failure below, not a hang
        for (int i = 0; i < 2; i++) {
            if (pfd[i].fd < 0 || !pfd[i].revents) continue;
            char buf[4096];
            const ssize_t n = read(pfd[i].fd, buf, sizeof buf);
            if (n > 0) {
                dst[i]->append(buf, size_t(n));
            } else if (n == 0 || errno != EINTR) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
                open_fds--;
            }
        }
    }
    if (open_fds > 0) kill(pid, SIGKILL);
    for (pollfd &p : pfd)
        if (p.fd >= 0) close(p.fd);
    int status = 0;
    waitpid(pid, &status, 0);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

std::string describe(const std::vector<std::string> &args, const Outcome &r) {
    std::string s = "kvctl";
    for (const std::string &a : args)
        s += " " + a;
    return s + "\n exit " + std::to_string(r.code) + "\n stdout: " + r.out + "\n stderr: " + r.err;
}

bool read_full(int fd, void *buf, size_t n) {
    auto *p = static_cast<char *>(buf);
    while (n) {
        const ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        p += k;
        n -= size_t(k);
    }
    return true;
}

bool write_full(int fd, const void *buf, size_t n) {
    const auto *p = static_cast<const char *>(buf);
    while (n) {
        const ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        p += k;
        n -= size_t(k);
    }
    return true;
}

// One well-formed response message: header, kv_ctl_response, body.
std::string response(const kv_ctl_hdr &req, uint32_t error, const std::string &body) {
    kv_ctl_hdr h{KV_CTL_MAGIC, KV_CTL_VERSION, req.op,
                 uint32_t(sizeof(kv_ctl_response) + body.size()), req.seq};
    kv_ctl_response r{error, uint32_t(body.size()), 0};
    std::string msg(reinterpret_cast<const char *>(&h), sizeof h);
    msg.append(reinterpret_cast<const char *>(&r), sizeof r);
    return msg + body;
}

// A kvpoold stand-in: listens on a socket in a fresh temporary directory,
// accepts one connection, reads one request and lets the test answer it.
class FakeDaemon {
  public:
    // Called with the connection and the request read; writes whatever it likes.
    using Answer = std::function<void(int fd, const kv_ctl_hdr &, const kv_ctl_request &)>;

    explicit FakeDaemon(Answer answer) : answer_(std::move(answer)) {
        char tmpl[] = "/tmp/kvctl-test-XXXXXX";
        if (!mkdtemp(tmpl)) {
            ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
            return;
        }
        dir_ = tmpl;
        path_ = dir_ + "/control";
        listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
        if (bind(listen_fd_, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
            listen(listen_fd_, 4) != 0) {
            ADD_FAILURE() << "bind/listen " << path_ << ": " << std::strerror(errno);
            return;
        }
        if (pipe2(stop_, O_CLOEXEC) != 0) {
            ADD_FAILURE() << "pipe2: " << std::strerror(errno);
            return;
        }
        thread_ = std::thread([this] { serve(); });
    }

    ~FakeDaemon() {
        join();
        for (int fd : stop_)
            if (fd >= 0) close(fd);
        if (listen_fd_ >= 0) close(listen_fd_);
        if (!path_.empty()) unlink(path_.c_str());
        if (!dir_.empty()) rmdir(dir_.c_str());
    }

    const std::string &path() const { return path_; }

    // Call once kvctl has exited: a connection it made is then queued, and
    // the server stops waiting for one that never came.
    void join() {
        if (!thread_.joinable()) return;
        const char b = 0;
        (void)!write(stop_[1], &b, 1);
        thread_.join();
    }
    // Valid after join().
    bool got_request = false;
    kv_ctl_hdr hdr{};
    kv_ctl_request req{};

  private:
    void serve() {
        pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
        if (poll(p, 2, 20000) <= 0 || !(p[0].revents & POLLIN)) return; // kvctl never connected
        const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        if (read_full(fd, &hdr, sizeof hdr) && hdr.length == sizeof req &&
            read_full(fd, &req, sizeof req)) {
            got_request = true;
            answer_(fd, hdr, req);
        }
        close(fd);
    }

    Answer answer_;
    std::string dir_, path_;
    int listen_fd_ = -1;
    int stop_[2] = {-1, -1};
    std::thread thread_;
};

FakeDaemon::Answer reply(uint32_t error, std::string body) {
    return [error, body](int fd, const kv_ctl_hdr &h, const kv_ctl_request &) {
        const std::string msg = response(h, error, body);
        write_full(fd, msg.data(), msg.size());
    };
}

const char *kPoolJson = R"({
  "name": "llama", "path": "/dev/shm/kvpool/llama", "size": 17179869184,
  "capacity": 17000000000, "used_bytes": 1073741824, "used_pct": 6.3157,
  "entries": 1234, "entry_slots": 1037597, "bytes_committed": 1073741824,
  "hits": 863, "misses": 137, "hit_rate": 0.863, "puts": 1500, "dedups": 3,
  "evictions": 10, "removes": 2, "pins": 4, "clients": 3, "policy": "clock",
  "page_size": 2097152, "backing": "hugetlbfs", "numa_node": -1, "group": "kvpool",
  "mode": "0660", "high_watermark": 0.95, "low_watermark": 0.85,
  "origin": "config", "state": "created"})";

class KvctlCli : public ::testing::Test {
  protected:
    void SetUp() override {
        if (kvctl_path().empty())
            GTEST_FAIL() << "set KVCTL to the kvctl binary (meson's test() does)";
        if (access(kvctl_path().c_str(), X_OK) != 0)
            GTEST_FAIL() << "KVCTL=" << kvctl_path() << ": " << std::strerror(errno);
    }
};

// ---- Usage errors: exit 2, and the message names what was wrong ------------------

struct BadArgs {
    std::vector<std::string> args;
    std::string names; // must appear in stderr
};

TEST_F(KvctlCli, BadArgumentsAreUsageErrors) {
    const std::vector<BadArgs> cases = {
        {{}, "missing verb"},
        {{"frobnicate"}, "\"frobnicate\""},
        {{"--bogus", "list"}, "\"--bogus\""},
        {{"--timeout", "soon", "list"}, "--timeout \"soon\""},
        {{"--timeout", "-1", "list"}, "--timeout \"-1\""},
        {{"list", "--timeout"}, "--timeout: missing value"},
        {{"list", "--json=yes"}, "--json"},
        {{"--socket", "", "list"}, "--socket"},
        {{"--socket", "/tmp/" + std::string(200, 's'), "list"}, "--socket"},
        {{"list", "extra"}, "\"extra\""},
        {{"list", "--limit", "3"}, "\"--limit\""},
        {{"status", "a", "b"}, "\"b\""},
        {{"status", "bad/name"}, "POOL \"bad/name\""},
        {{"create"}, "missing POOL"},
        {{"create", "p"}, "missing --size"},
        {{"create", "p", "--size"}, "--size: missing value"},
        {{"create", "p", "--size", "12Q"}, "--size \"12Q\": expected"},
        {{"create", "p", "--size", "1,5G"}, "--size \"1,5G\": expected"},
        {{"create", "p", "--size", "0.1"}, "--size \"0.1\": expected a size above 0"},
        {{"create", "p", "--size", "0"}, "--size \"0\""},
        {{"create", "p", "--size", "1G", "--hugepages", "sometimes"}, "--hugepages \"sometimes\""},
        {{"create", "p", "--size", "1G", "--numa", "far"}, "--numa \"far\""},
        {{"create", "p", "--size", "1G", "--numa", "-3"}, "--numa \"-3\""},
        {{"create", "p", "--size", "1G", "--mode", "0999"}, "--mode \"0999\""},
        {{"create", "p", "--size", "1G", "--mode", "0"}, "--mode \"0\""},
        {{"create", "p", "--size", "1G", "--prefault=yes"}, "--prefault"},
        {{"create", "p", "--size", "1G", "--size", "2G"}, "--size: given more than once"},
        {{"create", std::string(64, 'n'), "--size", "1G"}, "64 bytes long"},
        {{"create", "..", "--size", "1G"}, "POOL \"..\""},
        {{"destroy"}, "missing POOL"},
        {{"destroy", "p", "--force"}, "\"--force\""},
        {{"entries"}, "missing POOL"},
        {{"entries", "p", "--limit", "0"}, "--limit \"0\""},
        {{"entries", "p", "--limit", "many"}, "--limit \"many\""},
        {{"health"}, "missing POOL"},
        {{"health", "p", "q"}, "\"q\""},
        {{"evict", "p"}, "missing --percent"},
        {{"evict", "p", "--percent", "-1"}, "--percent \"-1\""},
        {{"evict", "p", "--percent", "101"}, "--percent \"101\""},
        {{"evict", "p", "--percent", "half"}, "--percent \"half\""},
        {{"persist"}, "missing POOL"},
        {{"persist", "p", "--path"}, "--path: missing value"},
        {{"persist", "p", "--path", "/" + std::string(300, 'f')}, "--path"},
        {{"restore"}, "missing POOL"},
        {{"restore", "p", "--path", ""}, "--path \"\""},
        {{"clients"}, "missing POOL"},
        {{"verify"}, "missing POOL"},
        {{"verify", "p", "--remove=yes"}, "--remove"},
        {{"verify", "p", "--kill"}, "\"--kill\""},
        {{"clients", "p", "--all"}, "\"--all\""},
        {{"detach", "p"}, "missing --pid"},
        {{"detach", "p", "--pid", "0"}, "--pid \"0\""},
        {{"detach", "p", "--pid", "12x"}, "--pid \"12x\""},
        {{"detach", "p", "--pid", "1", "--kill=now"}, "--kill"},
        {{"stats", "p"}, "\"p\""},
        {{"version", "--pid", "1"}, "\"--pid\""},
        {{"help", "frobnicate"}, "\"frobnicate\""},
    };
    for (const BadArgs &c : cases) {
        std::vector<std::string> args = {"--socket", kNoSocket};
        if (c.args.size() >= 2 && c.args[0] == "--socket") args.clear();
        args.insert(args.end(), c.args.begin(), c.args.end());
        const Outcome r = run_kvctl(args);
        EXPECT_EQ(r.code, 2) << describe(args, r);
        EXPECT_NE(r.err.find(c.names), std::string::npos)
            << "expected stderr to name " << c.names << "\n"
            << describe(args, r);
        EXPECT_EQ(r.err.rfind("kvctl: ", 0), 0u) << describe(args, r);
        EXPECT_TRUE(r.out.empty()) << describe(args, r);
    }
}

// With --json a failure is a JSON document on stdout too, whatever failed:
// the command line (--json before or after the bad argument), the
// connection, the daemon (its errno is in the document), or its response.
// stderr keeps the message and the exit code is the one without --json.
TEST_F(KvctlCli, JsonFailuresAreJsonOnStdout) {
    auto check = [](const std::vector<std::string> &args, const Outcome &r, int code, int error,
                    const std::string &names) {
        EXPECT_EQ(r.code, code) << describe(args, r);
        const auto doc = nlohmann::json::parse(r.out, nullptr, false);
        ASSERT_TRUE(doc.is_object() && doc.contains("error")) << describe(args, r);
        const auto &e = doc["error"];
        EXPECT_EQ(e["exit"], code) << describe(args, r);
        if (error)
            EXPECT_EQ(e["errno"], error) << describe(args, r);
        else
            EXPECT_TRUE(e["errno"].is_null()) << describe(args, r);
        ASSERT_TRUE(e["message"].is_string()) << describe(args, r);
        EXPECT_NE(e["message"].get<std::string>().find(names), std::string::npos)
            << describe(args, r);
        EXPECT_NE(r.err.find("kvctl: "), std::string::npos) << describe(args, r);
        EXPECT_NE(r.err.find(names), std::string::npos) << describe(args, r);
    };
    for (const std::vector<std::string> &args : std::vector<std::vector<std::string>>{
             {"--socket", kNoSocket, "--json", "create", "p"},
             {"--socket", kNoSocket, "create", "p", "--size", "12Q", "--json"},
             {"--json", "--socket", kNoSocket, "evict", "p", "--percent", "101"},
             {"--socket", kNoSocket, "frobnicate", "--json"}}) {
        const Outcome r = run_kvctl(args);
        check(args, r, 2, 0, args.back() == "p" ? "missing --size" : "\"");
        EXPECT_EQ(r.out.find("Try 'kvctl"), std::string::npos) << "the hint is for humans\n"
                                                               << r.out;
    }
    {
        const std::vector<std::string> args = {"--json", "--socket", kNoSocket, "list"};
        check(args, run_kvctl(args), 3, 0, kNoSocket);
    }
    {
        FakeDaemon d(reply(ENOENT, "no pool named \"x\""));
        const std::vector<std::string> args = {"--socket", d.path(), "--json", "status", "x"};
        const Outcome r = run_kvctl(args);
        d.join();
        check(args, r, 5, ENOENT, "status x: no pool named \"x\"");
    }
    {
        FakeDaemon d(reply(0, "not json"));
        const std::vector<std::string> args = {"--socket", d.path(), "--json", "list"};
        const Outcome r = run_kvctl(args);
        d.join();
        check(args, r, 7, 0, "malformed");
    }
    // Without --json stdout stays empty.
    const Outcome r = run_kvctl({"--socket", kNoSocket, "create", "p"});
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(r.out, "");
}

TEST_F(KvctlCli, HelpExitsZero) {
    for (const std::vector<std::string> &args :
         std::vector<std::vector<std::string>>{{"--help"},
                                               {"-h"},
                                               {"help"},
                                               {"help", "create"},
                                               {"create", "--help"},
                                               {"list", "-h"}}) {
        const Outcome r = run_kvctl(args);
        EXPECT_EQ(r.code, 0) << describe(args, r);
        EXPECT_NE(r.out.find("Usage: kvctl"), std::string::npos) << describe(args, r);
        EXPECT_TRUE(r.err.empty()) << describe(args, r);
    }
    const Outcome r = run_kvctl({"--help"});
    for (const char *verb :
         {"list", "status", "create", "destroy", "entries", "health", "evict", "persist", "restore",
          "clients", "detach", "stats", "version", "verify"}) {
        EXPECT_NE(r.out.find(std::string("\n  ") + verb), std::string::npos) << verb;
        const Outcome v = run_kvctl({"help", verb});
        EXPECT_EQ(v.code, 0) << verb << "\n" << v.err;
    }
    // The exit codes are documented.
    for (const char *code :
         {"  0  ", "  1  ", "  2  ", "  3  ", "  4  ", "  5  ", "  6  ", "  7  ", "  8  ", "  9  "})
        EXPECT_NE(r.out.find(code), std::string::npos) << code;
}

// ---- Cannot connect: exit 3, naming the socket ------------------------------------

TEST_F(KvctlCli, MissingSocketExits3) {
    const Outcome r = run_kvctl({"--socket", kNoSocket, "list"});
    EXPECT_EQ(r.code, 3) << r.err;
    EXPECT_NE(r.err.find(kNoSocket), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(std::strerror(ENOENT)), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("systemctl start kvpoold"), std::string::npos) << r.err;

    // $KVPOOL_SOCKET is the default; --socket overrides it.
    const Outcome e = run_kvctl({"status"}, "/nonexistent/from-env");
    EXPECT_EQ(e.code, 3) << e.err;
    EXPECT_NE(e.err.find("/nonexistent/from-env"), std::string::npos) << e.err;
    const Outcome o = run_kvctl({"--socket", kNoSocket, "status"}, "/nonexistent/from-env");
    EXPECT_NE(o.err.find(kNoSocket), std::string::npos) << o.err;
}

TEST_F(KvctlCli, UsageIsCheckedBeforeConnecting) {
    // With no daemon, a bad argument is still a usage error, not a connect error.
    const Outcome r = run_kvctl({"--socket", kNoSocket, "evict", "p", "--percent", "200"});
    EXPECT_EQ(r.code, 2) << r.err;
}

// ---- Against a fake daemon ----------------------------------------------------------

TEST_F(KvctlCli, ListRendersTable) {
    FakeDaemon d(reply(0, std::string(R"({"pools": [)") + kPoolJson + "]}"));
    const Outcome r = run_kvctl({"--socket", d.path(), "list"});
    d.join();
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_TRUE(d.got_request);
    EXPECT_EQ(d.hdr.magic, KV_CTL_MAGIC);
    EXPECT_EQ(d.hdr.version, KV_CTL_VERSION);
    EXPECT_EQ(d.hdr.op, KV_CTL_OP_LIST);
    EXPECT_EQ(d.hdr.length, sizeof(kv_ctl_request));
    EXPECT_EQ(d.req.pool[0], 0);
    for (const char *col : {"NAME", "SIZE", "USED", "USED%", "ENTRIES", "HIT RATE", "POLICY",
                            "PAGE", "NUMA", "CLIENTS"})
        EXPECT_NE(r.out.find(col), std::string::npos) << col << "\n" << r.out;
    for (const char *cell :
         {"llama", "16.0 GiB", "1.0 GiB", "6.3%", "1234", "86.3%", "clock", "2.0 MiB", "none"})
        EXPECT_NE(r.out.find(cell), std::string::npos) << cell << "\n" << r.out;
    // Header and row line up: both lines are as long (right-aligned last column).
    const size_t nl = r.out.find('\n');
    ASSERT_NE(nl, std::string::npos);
    EXPECT_EQ(r.out.find('\n', nl + 1) - nl - 1, nl) << r.out;
}

TEST_F(KvctlCli, ListWithMissingKeysPrintsDashes) {
    FakeDaemon d(reply(0, R"({"pools": [{"name": "bare"}, 42, {"size": "big"}]})"));
    const Outcome r = run_kvctl({"--socket", d.path(), "list"});
    d.join();
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("bare"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" -"), std::string::npos) << r.out;
}

TEST_F(KvctlCli, JsonPrintsTheDocument) {
    FakeDaemon d(reply(0, std::string(R"({"pools": [)") + kPoolJson + "]}"));
    const Outcome r = run_kvctl({"--socket", d.path(), "--json", "list"});
    d.join();
    ASSERT_EQ(r.code, 0) << r.err;
    const auto doc = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << r.out;
    EXPECT_EQ(doc["pools"][0]["name"], "llama");
    EXPECT_NE(r.out.find("\n  \"pools\""), std::string::npos) << "2-space indent\n" << r.out;
}

TEST_F(KvctlCli, StatusOfOnePool) {
    FakeDaemon d(reply(0, kPoolJson));
    const Outcome r = run_kvctl({"--socket", d.path(), "status", "llama"});
    d.join();
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(d.hdr.op, KV_CTL_OP_STATUS);
    EXPECT_STREQ(reinterpret_cast<const char *>(d.req.pool), "llama");
    EXPECT_NE(r.out.find("17179869184 bytes"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("high 95.0%, low 85.0%"), std::string::npos) << r.out;
}

// A restore that kept only part of its snapshot exits 8, with or without
// --json, and says on stderr what was lost; a whole restore exits 0.
TEST_F(KvctlCli, PartialRestoreExits8) {
    struct Case {
        const char *body;
        int code;
        const char *err; // in stderr ("" = stderr empty)
    } cases[] = {
        {R"({"pool": "llama", "path": "/s", "blocks": 7, "bytes": 7, "seconds": 0.1, "dropped": 0,
             "truncated": false})",
         0, ""},
        {R"({"pool": "llama", "path": "/s", "blocks": 7, "bytes": 7, "seconds": 0.1, "dropped": 0,
             "truncated": true})",
         8, "7 blocks restored; the snapshot is truncated or damaged"},
        {R"({"pool": "llama", "path": "/s", "blocks": 0, "bytes": 0, "seconds": 0.1, "dropped": 3,
             "truncated": false})",
         8, "0 blocks restored; 3 block(s) dropped"},
    };
    for (const Case &cs : cases) {
        for (bool as_json : {false, true}) {
            SCOPED_TRACE(std::string(cs.body) + (as_json ? " --json" : ""));
            FakeDaemon d(reply(0, cs.body));
            std::vector<std::string> args = {"--socket", d.path()};
            if (as_json) args.push_back("--json");
            args.insert(args.end(), {"restore", "llama"});
            const Outcome r = run_kvctl(args);
            d.join();
            EXPECT_EQ(r.code, cs.code) << r.err;
            EXPECT_EQ(d.hdr.op, KV_CTL_OP_RESTORE);
            if (*cs.err)
                EXPECT_NE(r.err.find(std::string("kvctl: restore llama: ") + cs.err),
                          std::string::npos)
                    << r.err;
            else
                EXPECT_EQ(r.err, "");
            EXPECT_NE(r.out.find("llama"), std::string::npos) << "the summary is still printed\n"
                                                              << r.out;
        }
    }
}

TEST_F(KvctlCli, CreateEncodesTheRequest) {
    FakeDaemon d(reply(EEXIST, "pool \"llama\" already exists"));
    const Outcome r =
        run_kvctl({"--socket", d.path(), "create", "llama", "--size", "512M", "--hugepages=require",
                   "--numa", "local", "--mode", "0640", "--prefault"});
    d.join();
    EXPECT_EQ(r.code, 6) << r.err;
    EXPECT_NE(r.err.find("kvctl: create llama: pool \"llama\" already exists"), std::string::npos)
        << r.err;
    ASSERT_TRUE(d.got_request);
    EXPECT_EQ(d.hdr.op, KV_CTL_OP_CREATE);
    EXPECT_STREQ(reinterpret_cast<const char *>(d.req.pool), "llama");
    EXPECT_EQ(d.req.size, 512ULL << 20);
    EXPECT_EQ(d.req.hugepages, 2u);
    EXPECT_EQ(d.req.numa_node, KV_CTL_NUMA_LOCAL);
    EXPECT_EQ(d.req.mode, 0640u);
    EXPECT_EQ(d.req.flags, KV_CTL_F_PREFAULT);
    for (uint64_t r64 : d.req.reserved)
        EXPECT_EQ(r64, 0u);
}

// A size with a fraction is sent rounded down to whole bytes.
TEST_F(KvctlCli, CreateTakesAFractionalSize) {
    FakeDaemon d(reply(EEXIST, "pool \"llama\" already exists"));
    const Outcome r = run_kvctl({"--socket", d.path(), "create", "llama", "--size", "1.5G"});
    d.join();
    EXPECT_EQ(r.code, 6) << r.err;
    ASSERT_TRUE(d.got_request) << r.err;
    EXPECT_EQ(d.req.size, 1610612736u);
}

TEST_F(KvctlCli, DetachEncodesPidAndKill) {
    FakeDaemon d(reply(0, R"({"pool": "p", "pid": 4242, "killed": true, "reaped": 1})"));
    const Outcome r = run_kvctl({"detach", "p", "--pid", "4242", "--kill", "--socket", d.path()});
    d.join();
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(d.req.arg, 4242u);
    EXPECT_EQ(d.req.flags, KV_CTL_F_KILL);
    EXPECT_NE(r.out.find("4242"), std::string::npos) << r.out;
}

TEST_F(KvctlCli, RestoreEncodesForce) {
    FakeDaemon d(reply(0, R"({"pool": "p", "path": "/x/q.kvsnap", "bytes": 0, "seconds": 0.1})"));
    const Outcome r =
        run_kvctl({"restore", "p", "--path", "/x/q.kvsnap", "--force", "--socket", d.path()});
    d.join();
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(d.hdr.op, KV_CTL_OP_RESTORE);
    EXPECT_EQ(d.req.flags, KV_CTL_F_FORCE);
    EXPECT_STREQ(reinterpret_cast<const char *>(d.req.path), "/x/q.kvsnap");
    const Outcome p = run_kvctl({"persist", "p", "--force", "--socket", d.path()});
    EXPECT_EQ(p.code, 2) << p.err;
    EXPECT_NE(p.err.find("unknown option \"--force\" for persist"), std::string::npos) << p.err;
}

TEST_F(KvctlCli, BadMagicExits7) {
    FakeDaemon d([](int fd, const kv_ctl_hdr &h, const kv_ctl_request &) {
        std::string msg = response(h, 0, "{}");
        msg[0] ^= 0x20; // "kCTL"
        write_full(fd, msg.data(), msg.size());
    });
    const Outcome r = run_kvctl({"--socket", d.path(), "list"});
    d.join();
    EXPECT_EQ(r.code, 7) << r.err;
    EXPECT_NE(r.err.find("magic"), std::string::npos) << r.err;
}

TEST_F(KvctlCli, EpermExits4WithTheMessage) {
    FakeDaemon d(reply(EPERM, "uid 1000 is not in group kvpool-admin\n"));
    const Outcome r = run_kvctl({"--socket", d.path(), "destroy", "llama"});
    d.join();
    EXPECT_EQ(r.code, 4) << r.err;
    EXPECT_EQ(d.hdr.op, KV_CTL_OP_DESTROY);
    EXPECT_EQ(r.err, "kvctl: destroy llama: uid 1000 is not in group kvpool-admin\n");
}

TEST_F(KvctlCli, ErrnoToExitCode) {
    struct Case {
        uint32_t error;
        int code;
    };
    for (const Case c : {Case{ENOENT, 5}, Case{EEXIST, 6}, Case{EACCES, 4}, Case{EINVAL, 1},
                         Case{EOPNOTSUPP, 1}, Case{ESRCH, 9}}) {
        FakeDaemon d(reply(c.error, ""));
        const Outcome r = run_kvctl({"--socket", d.path(), "persist", "llama"});
        d.join();
        EXPECT_EQ(r.code, c.code) << c.error << ": " << r.err;
        // No message from the daemon: strerror stands in.
        EXPECT_NE(r.err.find(std::strerror(int(c.error))), std::string::npos) << r.err;
    }
}

TEST_F(KvctlCli, TruncatedResponsesExit7) {
    // Half a header, then close.
    {
        FakeDaemon d([](int fd, const kv_ctl_hdr &h, const kv_ctl_request &) {
            const std::string msg = response(h, 0, "{}");
            write_full(fd, msg.data(), 8);
        });
        const Outcome r = run_kvctl({"--socket", d.path(), "list"});
        d.join();
        EXPECT_EQ(r.code, 7) << r.err;
        EXPECT_NE(r.err.find("closed"), std::string::npos) << r.err;
    }
    // A header promising more body than is sent.
    {
        FakeDaemon d([](int fd, const kv_ctl_hdr &h, const kv_ctl_request &) {
            const std::string msg = response(h, 0, R"({"pools": []})");
            write_full(fd, msg.data(), msg.size() - 4);
        });
        const Outcome r = run_kvctl({"--socket", d.path(), "list"});
        d.join();
        EXPECT_EQ(r.code, 7) << r.err;
        EXPECT_NE(r.err.find("closed"), std::string::npos) << r.err;
    }
    // Closed without a byte.
    {
        FakeDaemon d([](int, const kv_ctl_hdr &, const kv_ctl_request &) {});
        const Outcome r = run_kvctl({"--socket", d.path(), "stats"});
        d.join();
        EXPECT_EQ(r.code, 7) << r.err;
    }
}

TEST_F(KvctlCli, MalformedHeadersExit7) {
    struct Case {
        const char *what;
        std::function<void(kv_ctl_hdr &, kv_ctl_response &)> mutate;
        const char *names;
    };
    const std::vector<Case> cases = {
        {"version", [](kv_ctl_hdr &h, kv_ctl_response &) { h.version = 2; }, "version 2"},
        {"op", [](kv_ctl_hdr &h, kv_ctl_response &) { h.op = KV_CTL_OP_STATS; }, "op"},
        {"seq", [](kv_ctl_hdr &h, kv_ctl_response &) { h.seq ^= 1; }, "seq"},
        {"huge length", [](kv_ctl_hdr &h, kv_ctl_response &) { h.length = KV_CTL_MAX_BODY + 1; },
         "length"},
        {"short length", [](kv_ctl_hdr &h, kv_ctl_response &) { h.length = 8; }, "length 8"},
        {"body_len", [](kv_ctl_hdr &, kv_ctl_response &r) { r.body_len += 1; }, "body_len"},
    };
    for (const Case &c : cases) {
        FakeDaemon d([&c](int fd, const kv_ctl_hdr &req, const kv_ctl_request &) {
            std::string body = R"({"pools": []})";
            kv_ctl_hdr h{KV_CTL_MAGIC, KV_CTL_VERSION, req.op,
                         uint32_t(sizeof(kv_ctl_response) + body.size()), req.seq};
            kv_ctl_response r{0, uint32_t(body.size()), 0};
            c.mutate(h, r);
            std::string msg(reinterpret_cast<const char *>(&h), sizeof h);
            msg.append(reinterpret_cast<const char *>(&r), sizeof r);
            msg += body;
            write_full(fd, msg.data(), msg.size());
        });
        const Outcome r = run_kvctl({"--socket", d.path(), "list"});
        d.join();
        EXPECT_EQ(r.code, 7) << c.what << ": " << r.err;
        EXPECT_NE(r.err.find(c.names), std::string::npos) << c.what << ": " << r.err;
    }
}

TEST_F(KvctlCli, BadJsonExits7) {
    for (const char *body : {"{\"pools\": [", "not json", "[1, 2]", "{\"pools\": 3}",
                             "{\"pools\": [{\"name\": \"\xff\"}]}"}) {
        FakeDaemon d(reply(0, body));
        const Outcome r = run_kvctl({"--socket", d.path(), "list"});
        d.join();
        EXPECT_EQ(r.code, 7) << body << ": " << r.err;
        EXPECT_NE(r.err.find("malformed"), std::string::npos) << body << ": " << r.err;
        EXPECT_EQ(r.err.find('\xff'), std::string::npos)
            << "a raw invalid byte reached the terminal";
    }
}

// Strings from the daemon reach the terminal as well-formed UTF-8 without
// control characters: stray and overlong bytes, surrogates, C0 and C1
// controls become '?'; real multi-byte characters pass.
TEST_F(KvctlCli, DaemonTextIsSanitizedForTheTerminal) {
    // Invalid bytes (an overlong '/', a UTF-16 surrogate, a lead byte past
    // U+10FFFF): the JSON parser refuses the document, exit 7, and its
    // message, which quotes what it read, reaches stderr sanitized.
    FakeDaemon d(reply(0, std::string(R"({"pools": [{"name": "x)") + "\xc0\xaf" +
                              "y\xed\xa0\x80z\xf5w\x1b" + R"("}]})"));
    const Outcome r = run_kvctl({"--socket", d.path(), "list"});
    d.join();
    EXPECT_EQ(r.code, 7) << r.err;
    for (unsigned char bad : {0xc0, 0xaf, 0xed, 0xa0, 0xf5, 0x1b})
        EXPECT_EQ(r.err.find(char(bad)), std::string::npos)
            << "byte " << int(bad) << " reached stderr: " << r.err;

    // Well-formed text: real multi-byte characters pass (é, U+2603, U+1F600);
    // ESC and U+0085 (C1, encoded C2 85) become '?'.
    FakeDaemon d2(
        reply(0, R"({"name": "caf\u00e9-\u2603-\ud83d\ude00", "group": "a\u001b[31mb\u0085c"})"));
    const Outcome r2 = run_kvctl({"--socket", d2.path(), "status", "x"});
    d2.join();
    EXPECT_EQ(r2.code, 0) << r2.err;
    EXPECT_NE(r2.out.find("caf\xc3\xa9-\xe2\x98\x83-\xf0\x9f\x98\x80"), std::string::npos)
        << "valid UTF-8 is kept: " << r2.out;
    EXPECT_NE(r2.out.find("a?[31mb?c"), std::string::npos)
        << "ESC and U+0085 become '?': " << r2.out;
    EXPECT_EQ(r2.out.find('\x1b'), std::string::npos);
}

TEST_F(KvctlCli, SilentDaemonTimesOut) {
    FakeDaemon d([](int fd, const kv_ctl_hdr &, const kv_ctl_request &) {
        // Hold the connection open without answering until kvctl gives up.
        pollfd p{fd, POLLIN, 0};
        poll(&p, 1, 10000);
    });
    const Outcome r = run_kvctl({"--socket", d.path(), "--timeout", "0.3", "list"});
    d.join();
    EXPECT_EQ(r.code, 7) << r.err;
    EXPECT_NE(r.err.find("no response"), std::string::npos) << r.err;
}

TEST_F(KvctlCli, UnhealthyExits1) {
    FakeDaemon d(reply(0, R"({"pool": "p", "healthy": false,
        "problems": ["2 index link inconsistencies"], "dead_clients": 0,
        "usage": {"entries_committed": 5, "bad_links": 2}})"));
    const Outcome r = run_kvctl({"--socket", d.path(), "health", "p"});
    d.join();
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.out.find("2 index link inconsistencies"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("entries committed"), std::string::npos) << r.out;
}

TEST_F(KvctlCli, PersistShowsRate) {
    FakeDaemon d(reply(0, R"({"pool": "p", "path": "/var/lib/kvpool/p.kvs",
        "bytes": 4294967296, "seconds": 2.0, "blocks": 7, "checksum": "ab"})"));
    const Outcome r = run_kvctl({"--socket", d.path(), "persist", "p", "--path", "/tmp/p.kvs"});
    d.join();
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_STREQ(reinterpret_cast<const char *>(d.req.path), "/tmp/p.kvs");
    EXPECT_NE(r.out.find("2.00 GiB/s"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("checksum"), std::string::npos) << "unknown keys are shown\n" << r.out;
}

// persist and restore print words, sizes and rates, never the daemon's
// keys: the documents below are what kvpoold sends (snapshot_jobs.cc).
TEST_F(KvctlCli, SnapshotResultsAreHumanText) {
    const std::string restore = R"({"pool": "alpha", "op": "restore", "path": "/s/alpha.kvsnap",
        "blocks": 127, "bytes": 1610612736, "file_bytes": 1611661312, "seconds": 2.117,
        "gib_per_s": 0.7599608850977909, "dropped": 3, "dropped_corrupt": 1, "dropped_no_room": 2,
        "evicted": 5, "skipped": 4, "truncated": true, "damaged_segments": 1, "fixed_buffers": false,
        "recycled_spare": false, "quarantined": "/s/alpha.kvsnap.bad-20260101T000000Z"})";
    FakeDaemon d(reply(0, restore));
    const Outcome r = run_kvctl({"--socket", d.path(), "restore", "alpha"});
    d.join();
    EXPECT_EQ(r.code, 8) << r.err; // partial: dropped blocks, a damaged file
    for (const char *want :
         {"restored pool alpha from /s/alpha.kvsnap", "127", "1.5 GiB (1610612736 bytes)",
          "2.117 s", "0.76 GiB/s",
          "3 blocks (1 failed verification, 2 found no room in the pool, 0 refused by the pool)",
          "5 blocks of the pool, to make room", "4 blocks already in the pool",
          "1 segment(s) of the file lost", "only its verified part was restored",
          "/s/alpha.kvsnap.bad-20260101T000000Z", "not registered"})
        EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
    for (const char *raw :
         {"gib_per_s", "0.7599608850977909", "dropped_corrupt", "dropped_no_room", "file_bytes",
          "damaged_segments", "fixed_buffers", "recycled_spare", "op:", "true", "false"})
        EXPECT_EQ(r.out.find(raw), std::string::npos) << raw << "\n" << r.out;

    const std::string persist = R"({"pool": "alpha", "op": "persist", "path": "/s/alpha.kvsnap",
        "blocks": 2, "bytes": 8192, "file_bytes": 16384, "seconds": 0.5, "gib_per_s": 3.0517578125e-05,
        "dropped": 0, "dropped_corrupt": 0, "dropped_no_room": 0, "evicted": 0, "skipped": 0,
        "truncated": false, "damaged_segments": 0, "fixed_buffers": true, "recycled_spare": true,
        "key_id": "alpha-2"})";
    FakeDaemon d2(reply(0, persist));
    const Outcome p = run_kvctl({"--socket", d2.path(), "persist", "alpha"});
    d2.join();
    EXPECT_EQ(p.code, 0) << p.err;
    for (const char *want :
         {"persisted pool alpha to /s/alpha.kvsnap", "8.0 KiB (8192 bytes)",
          "16.0 KiB (16384 bytes)", "0.500 s", "0.00 GiB/s", "previous snapshot's blocks",
          "registered with io_uring", "AES-256-GCM, pool key alpha-2"})
        EXPECT_NE(p.out.find(want), std::string::npos) << want << "\n" << p.out;
    for (const char *raw :
         {"gib_per_s", "e-05", "dropped", "evicted", "recycled_spare", "true", "key_id"})
        EXPECT_EQ(p.out.find(raw), std::string::npos) << raw << "\n" << p.out;
}

} // namespace

namespace {

// Answers ENTRIES requests on one connection with the given pages, in
// order, recording the cursor and row count each request asked for.
struct Pager {
    std::vector<std::string> pages;
    std::vector<std::pair<uint64_t, uint64_t>> asked; // (cursor, arg)
    FakeDaemon::Answer answer() {
        return [this](int fd, const kv_ctl_hdr &first, const kv_ctl_request &req) {
            kv_ctl_hdr h = first;
            kv_ctl_request q = req;
            for (size_t i = 0; i < pages.size(); i++) {
                if (i > 0 && !(read_full(fd, &h, sizeof h) && h.length == sizeof q &&
                               read_full(fd, &q, sizeof q)))
                    return;
                asked.emplace_back(q.cursor, q.arg);
                const std::string msg = response(h, 0, pages[i]);
                write_full(fd, msg.data(), msg.size());
            }
        };
    }
};

std::string entry_row(int i) {
    return R"({"index": )" + std::to_string(i) + R"(, "ns": 1, "key": "k)" + std::to_string(i) +
           R"(", "length": 4096, "tokens": 16, "priority": 0, "user_tag": 0, "pins": 0, "state": "committed", "age_s": 1.5})";
}

std::string entry_page(int from, int n, const std::string &next) {
    std::string rows;
    for (int i = from; i < from + n; i++)
        rows += (rows.empty() ? "" : ", ") + entry_row(i);
    return R"({"pool": "p", "entry_slots": 1000, "next_cursor": )" + next + R"(, "entries": [)" +
           rows + "]}";
}

} // namespace

// entries follows next_cursor on one connection until it is null, and
// prints every page's rows under one header (or in one JSON document).
TEST_F(KvctlCli, EntriesPagesThroughNextCursor) {
    for (bool as_json : {false, true}) {
        Pager pager{
            {entry_page(0, 3, "300"), entry_page(300, 0, "700"), entry_page(700, 2, "null")}, {}};
        FakeDaemon d(pager.answer());
        std::vector<std::string> args = {"--socket", d.path()};
        if (as_json) args.push_back("--json");
        args.insert(args.end(), {"entries", "p"});
        const Outcome r = run_kvctl(args);
        d.join();
        ASSERT_EQ(r.code, 0) << describe(args, r);
        ASSERT_EQ(pager.asked.size(), 3u);
        EXPECT_EQ(pager.asked[0], (std::pair<uint64_t, uint64_t>{0, 0}));
        EXPECT_EQ(pager.asked[1].first, 300u);
        EXPECT_EQ(pager.asked[2].first, 700u);
        if (as_json) {
            const auto doc = nlohmann::json::parse(r.out, nullptr, false);
            ASSERT_FALSE(doc.is_discarded()) << r.out;
            ASSERT_TRUE(doc.contains("count") && doc.contains("entries")) << r.out;
            EXPECT_EQ(doc["count"], 5);
            EXPECT_EQ(doc["truncated"], false);
            ASSERT_EQ(doc["entries"].size(), 5u);
            EXPECT_EQ(doc["entries"][4]["key"], "k701");
        } else {
            EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 6) << r.out;
            EXPECT_EQ(r.out.rfind("  NS  KEY", 0), 0u) << r.out;
            EXPECT_NE(r.out.find("k701"), std::string::npos) << r.out;
        }
    }
    // --limit: asks for no more rows than are left, stops when they are shown.
    Pager pager{{entry_page(0, 3, "3"), entry_page(3, 1, "4")}, {}};
    FakeDaemon d(pager.answer());
    const Outcome r = run_kvctl({"--socket", d.path(), "--json", "entries", "p", "--limit", "4"});
    d.join();
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_EQ(pager.asked.size(), 2u);
    EXPECT_EQ(pager.asked[0].second, 4u);
    EXPECT_EQ(pager.asked[1].second, 1u);
    const auto doc = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << r.out;
    ASSERT_TRUE(doc.contains("count")) << r.out;
    EXPECT_EQ(doc["count"], 4);
    EXPECT_EQ(doc["truncated"], true);
}

// A daemon whose next_cursor does not move forward would loop kvctl
// forever: exit 7, and the --json document begun is closed with the error.
TEST_F(KvctlCli, EntriesRefusesACursorThatDoesNotAdvance) {
    Pager pager{{entry_page(0, 2, "5"), entry_page(5, 1, "5")}, {}};
    FakeDaemon d(pager.answer());
    const Outcome r = run_kvctl({"--socket", d.path(), "--json", "entries", "p"});
    d.join();
    EXPECT_EQ(r.code, 7) << r.err;
    EXPECT_NE(r.err.find("next_cursor 5 after cursor 5"), std::string::npos) << r.err;
    const auto doc = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << r.out;
    ASSERT_TRUE(doc.contains("error") && doc.contains("entries")) << r.out;
    EXPECT_EQ(doc["entries"].size(), 3u);
    EXPECT_EQ(doc["error"]["exit"], 7);
}
