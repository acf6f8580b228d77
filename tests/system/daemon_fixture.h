// SPDX-License-Identifier: MIT
//
// Runs a real kvpoold on a private config, socket and pool directory, and
// runs the real kvctl against it. Everything the fixture makes (processes,
// files under /dev/shm and /tmp, a test user) is removed in TearDown even
// when a test fails. The binaries come from the environment: KVPOOLD and
// KVCTL (set by tests/system/meson.build).
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace kvtest {

inline std::string env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

inline uint64_t mono_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

inline std::string slurp(const std::string &path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

inline void spit(const std::string &path, const std::string &text) {
    std::ofstream f(path, std::ios::trunc);
    f << text;
}

struct Proc {
    int code = -1; // exit status, or 128 + signal
    std::string out, err;
};

// Proc argv, capturing stdout and stderr; as_uid >= 0 drops to that uid/gid first.
inline Proc run(const std::vector<std::string> &argv, int as_uid = -1, int as_gid = -1,
                int timeout_s = 30) {
    Proc r;
    char outp[] = "/tmp/kvpool-run-out-XXXXXX", errp[] = "/tmp/kvpool-run-err-XXXXXX";
    int of = mkstemp(outp), ef = mkstemp(errp);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(of, 1);
        dup2(ef, 2);
        if (as_gid >= 0 && (setgroups(0, nullptr) != 0 || setgid(gid_t(as_gid)) != 0)) _exit(126);
        if (as_uid >= 0 && setuid(uid_t(as_uid)) != 0) _exit(126);
        std::vector<char *> a;
        for (const auto &s : argv)
            a.push_back(const_cast<char *>(s.c_str()));
        a.push_back(nullptr);
        execv(a[0], a.data());
        _exit(127);
    }
    int st = 0;
    uint64_t deadline = mono_ms() + uint64_t(timeout_s) * 1000;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (mono_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        usleep(2000);
    }
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    close(of);
    close(ef);
    r.out = slurp(outp);
    r.err = slurp(errp);
    unlink(outp);
    unlink(errp);
    return r;
}

// A datagram socket standing in for systemd's NOTIFY_SOCKET.
class NotifyListener {
  public:
    explicit NotifyListener(const std::string &path) : path_(path) {
        fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
        unlink(path.c_str());
        bind(fd_, reinterpret_cast<sockaddr *>(&sa), sizeof sa);
    }
    ~NotifyListener() {
        close(fd_);
        unlink(path_.c_str());
    }
    // Wait until a message containing `what` arrives; everything received is kept.
    bool wait_for(const std::string &what, int timeout_ms) {
        uint64_t deadline = mono_ms() + uint64_t(timeout_ms);
        while (all_.find(what) == std::string::npos) {
            int64_t left = int64_t(deadline) - int64_t(mono_ms());
            if (left <= 0) return false;
            pollfd p{fd_, POLLIN, 0};
            if (poll(&p, 1, int(left)) <= 0) continue;
            char buf[4096];
            ssize_t n;
            while ((n = recv(fd_, buf, sizeof buf - 1, 0)) > 0)
                all_.append(buf, size_t(n)).push_back('\n');
        }
        return true;
    }
    const std::string &received() const { return all_; }

  private:
    std::string path_;
    int fd_;
    std::string all_;
};

class DaemonTest : public ::testing::Test {
  protected:
    void SetUp() override {
        static std::atomic<int> n{0};
        tag_ = std::to_string(getpid()) + "-" + std::to_string(n++);
        dir_ = "/tmp/kvpool-dtest-" + tag_;
        shm_ = "/dev/shm/kvpool-dtest-" + tag_;
        mkdir(dir_.c_str(), 0755);
        chmod(dir_.c_str(), 0755); // the unprivileged test user must reach the socket
        sock_ = dir_ + "/control";
        kvpoold_ = env_or("KVPOOLD", "build/daemon/kvpoold");
        kvctl_ = env_or("KVCTL", "build/tools/kvctl");
    }

    void TearDown() override {
        stop_daemon();
        for (auto it = cleanups_.rbegin(); it != cleanups_.rend(); ++it)
            (*it)();
        for (pid_t c : children_) {
            kill(c, SIGKILL);
            waitpid(c, nullptr, 0);
        }
        if (!test_user_.empty()) run({"/usr/sbin/userdel", test_user_});
        run({"/bin/rm", "-rf", dir_, shm_});
    }

    // The default config: one 64 MiB pool "alpha" on 4 KiB pages.
    std::string config(const std::string &extra_daemon = "",
                       const std::string &extra_pools = "") const {
        return "[daemon]\ncontrol_socket = \"" + sock_ + "\"\nshm_dir = \"" + shm_ +
               "\"\nhugepage_dir = \"" + dir_ + "/huge\"\nstate_dir = \"" + dir_ +
               "/state\"\nadmin_group = \"root\"\n" +
               "reap_interval_ms = 100\nevict_interval_ms = 50\nlog_level = \"debug\"\n" +
               extra_daemon +
               "\n[[pool]]\nname = \"alpha\"\nsize = \"64M\"\nhugepages = \"never\"\nprefault = "
               "false\n"
               "group = \"root\"\nmode = \"0660\"\n" +
               extra_pools;
    }

    // Start kvpoold on the given config text and wait for READY=1.
    ::testing::AssertionResult start_daemon(const std::string &cfg_text) {
        cfg_path_ = dir_ + "/kvpoold.toml";
        spit(cfg_path_, cfg_text);
        log_path_ = dir_ + "/kvpoold.log";
        NotifyListener notify(dir_ + "/notify");
        daemon_ = fork();
        if (daemon_ == 0) {
            int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            dup2(fd, 2);
            std::string ns = "NOTIFY_SOCKET=" + dir_ + "/notify";
            putenv(const_cast<char *>(ns.c_str()));
            for (std::string &e : daemon_env_)
                putenv(e.data());
            execl(kvpoold_.c_str(), kvpoold_.c_str(), "--config", cfg_path_.c_str(), nullptr);
            _exit(127);
        }
        if (!notify.wait_for("READY=1", 20000)) {
            int st = 0;
            pid_t w = waitpid(daemon_, &st, WNOHANG);
            std::string why =
                w == daemon_ ? "kvpoold exited with " + std::to_string(WEXITSTATUS(st)) : "timeout";
            if (w == daemon_) daemon_ = -1;
            return ::testing::AssertionFailure() << "no READY=1 (" << why << "); log:\n"
                                                 << slurp(log_path_);
        }
        notified_ = notify.received();
        return ::testing::AssertionSuccess();
    }

    // SIGTERM and wait; returns the exit status (or -1 when it had to be killed).
    int stop_daemon() {
        if (daemon_ <= 0) return 0;
        kill(daemon_, SIGTERM);
        int st = 0;
        uint64_t deadline = mono_ms() + 20000;
        while (waitpid(daemon_, &st, WNOHANG) == 0) {
            if (mono_ms() > deadline) {
                kill(daemon_, SIGKILL);
                waitpid(daemon_, &st, 0);
                daemon_ = -1;
                return -1;
            }
            usleep(5000);
        }
        daemon_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }

    Proc ctl(std::vector<std::string> args, int as_uid = -1, int as_gid = -1) {
        args.insert(args.begin(), {kvctl_, "--socket", sock_});
        return run(args, as_uid, as_gid);
    }

    // Create a system user for this test (removed in TearDown); false when
    // useradd fails (the caller skips).
    bool make_test_user(int *uid, int *gid, std::string *why) {
        test_user_ = "kvpt" + std::to_string(getpid() % 100000);
        Proc add = run({"/usr/sbin/useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", test_user_});
        if (add.code != 0) {
            test_user_.clear();
            *why = "useradd failed: " + add.err;
            return false;
        }
        passwd *pw = getpwnam(test_user_.c_str());
        if (!pw) {
            *why = "getpwnam " + test_user_ + " failed after useradd";
            return false;
        }
        *uid = int(pw->pw_uid), *gid = int(pw->pw_gid);
        return true;
    }

    std::string pool_path(const std::string &name) const { return shm_ + "/" + name; }
    std::string log() const { return slurp(log_path_); }

    // Poll cond every 10 ms for up to timeout_ms.
    static bool eventually(const std::function<bool()> &cond, int timeout_ms) {
        uint64_t deadline = mono_ms() + uint64_t(timeout_ms);
        do {
            if (cond()) return true;
            usleep(10000);
        } while (mono_ms() < deadline);
        return cond();
    }

    std::string tag_, dir_, shm_, sock_, cfg_path_, log_path_, kvpoold_, kvctl_, notified_;
    std::string test_user_;
    std::vector<std::string> daemon_env_; // extra NAME=VALUE for the next start_daemon
    pid_t daemon_ = -1;
    std::vector<pid_t> children_;
    std::vector<std::function<void()>> cleanups_; // run in reverse order in TearDown, pass or fail
};

} // namespace kvtest
