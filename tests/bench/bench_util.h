// SPDX-License-Identifier: MIT
//
// Helpers for the kvpool benchmarks: pools under /dev/shm that are removed
// when the benchmark process exits (normally or on SIGINT/SIGTERM), a shared
// control page for forked workers, and a cheap deterministic PRNG.
//
// Forked workers: run_workers() maps one MAP_SHARED anonymous page before
// fork(), so parent and children see the same control words. Each child
// does its own setup (attaching to the pool: a kv_pool is bound to the
// process that attached it), reports ready, spins until the parent says go,
// runs until the parent says stop, writes its op count and the time it
// measured itself, and leaves with _exit() so that none of the parent's
// atexit handlers or stdio buffers run twice.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <expected>
#include <kv/kv.h>
#include <memory>
#include <new>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace kvbench {

inline uint64_t now_ns() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
}

// CPU time of the calling thread. A syscall (~0.2 us), so only for spans
// of tens of microseconds or more. On a shared machine it leaves out the
// time other tenants held the core, which wall time does not.
inline uint64_t thread_cpu_ns() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

// splitmix64: one multiply-xorshift chain per value; cheap enough (~1-2 ns)
// that drawing a key index inside the timed loop costs the same in every
// benchmark that compares against a baseline.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    // Uniform in [0, n) (Lemire's multiply-shift, bias < n / 2^32).
    uint32_t below(uint32_t n) {
        return static_cast<uint32_t>(((next() >> 32) * static_cast<uint64_t>(n)) >> 32);
    }
};

inline uint64_t mix64(uint64_t x) {
    Rng r(x);
    return r.next();
}

// Key i of key set `set`: random-looking, distinct across sets.
inline kv_key make_key(uint64_t set, uint64_t i) {
    return kv_key{mix64((set << 40) ^ (2 * i)), mix64((set << 40) ^ (2 * i + 1))};
}

// ---- Files removed at exit ------------------------------------------------

// Paths are kept in fixed storage so the signal handler can unlink them
// without allocating. Only the process that registered a path unlinks it:
// forked workers inherit the table and must leave it alone.
class Cleanup {
  public:
    static constexpr int kMax = 64;
    static constexpr int kPathMax = 128;

    static void add(const std::string &path) {
        State &s = state();
        install();
        for (auto &e : s.entries) {
            if (e.pid == 0) {
                std::snprintf(e.path, sizeof e.path, "%s", path.c_str());
                e.pid = getpid();
                return;
            }
        }
    }
    static void remove(const std::string &path) {
        for (auto &e : state().entries) {
            if (e.pid == getpid() && path == e.path) {
                unlink(e.path);
                e.pid = 0;
            }
        }
    }

  private:
    struct Entry {
        pid_t pid = 0;
        char path[kPathMax] = {};
    };
    struct State {
        Entry entries[kMax];
        bool installed = false;
    };
    static State &state() {
        static State s;
        return s;
    }
    static void unlink_all() {
        for (auto &e : state().entries) {
            if (e.pid != 0 && e.pid == getpid()) {
                unlink(e.path);
                e.pid = 0;
            }
        }
    }
    static void on_signal(int sig) {
        unlink_all();
        std::signal(sig, SIG_DFL);
        std::raise(sig);
    }
    static void install() {
        State &s = state();
        if (s.installed) return;
        s.installed = true;
        std::atexit(unlink_all);
        std::signal(SIGINT, on_signal);
        std::signal(SIGTERM, on_signal);
        std::signal(SIGHUP, on_signal);
    }
};

inline std::string unique_name(const char *what) {
    static std::atomic<uint32_t> seq{0};
    // Relaxed: only uniqueness within this process matters.
    uint32_t n = seq.fetch_add(1, std::memory_order_relaxed);
    return std::string("kvpool-bench-") + what + "-" + std::to_string(getpid()) + "-" +
           std::to_string(n);
}

// ---- Pools -------------------------------------------------------------------

struct PoolSpec {
    uint64_t size = 256ULL << 20;
    uint64_t avg_block_size = 0; // 0: library default
    uint64_t slab_size = 0;      // 0: library default
    uint32_t pins_per_client = 0;
    bool prefault = true;    // fault every page in at creation: no first-touch faults while timing
    uint32_t feed_slots = 0; // the change feed's slots; 0: none
    bool secure_erase = false; // KV_CREATE_F_SECURE_ERASE: frees zero the block
};

// A pool file under /dev/shm that this process created and is attached to;
// detached and removed when destroyed (or at exit / on a signal).
class BenchPool {
  public:
    static std::expected<std::unique_ptr<BenchPool>, std::string> create(const PoolSpec &spec,
                                                                         const char *what) {
        std::string path = "/dev/shm/" + unique_name(what);
        kv_create_opts o;
        kv_create_opts_init(&o, spec.size);
        o.flags |= KV_CREATE_F_EXCL | (spec.prefault ? KV_CREATE_F_PREFAULT : 0U);
        if (spec.avg_block_size) o.avg_block_size = spec.avg_block_size;
        if (spec.slab_size) o.slab_size = spec.slab_size;
        if (spec.pins_per_client) o.pins_per_client = spec.pins_per_client;
        o.feed_slots = spec.feed_slots;
        if (spec.secure_erase) o.flags |= KV_CREATE_F_SECURE_ERASE;
        char msg[256] = "";
        int rc = kv_pool_create(path.c_str(), &o, msg, sizeof msg);
        if (rc < 0)
            return std::unexpected("kv_pool_create(" + path + "): " + kv_strerror(rc) + ": " + msg);
        Cleanup::add(path);
        kv_pool *p = nullptr;
        rc = kv_pool_attach(path.c_str(), 0, &p, msg, sizeof msg);
        if (rc < 0) {
            Cleanup::remove(path);
            return std::unexpected("kv_pool_attach(" + path + "): " + kv_strerror(rc) + ": " + msg);
        }
        std::unique_ptr<BenchPool> bp(new BenchPool(std::move(path), p));
        kv_manifest m;
        kv_manifest_init(&m, "kvpool-bench", 16);
        rc = kv_ns_register(p, &m, &bp->ns_, &bp->seed_);
        if (rc < 0) return std::unexpected(std::string("kv_ns_register: ") + kv_strerror(rc));
        return bp;
    }
    ~BenchPool() {
        // A forked worker never gets here (it leaves with _exit), so this is
        // always the creator's own client slot.
        if (pool_) kv_pool_detach(pool_);
        kv_pool_destroy(path_.c_str());
        Cleanup::remove(path_);
    }
    BenchPool(const BenchPool &) = delete;
    BenchPool &operator=(const BenchPool &) = delete;

    kv_pool *get() const { return pool_; }
    const std::string &path() const { return path_; }
    uint32_t ns() const { return ns_; }
    uint64_t seed() const { return seed_; }

  private:
    BenchPool(std::string path, kv_pool *p) : path_(std::move(path)), pool_(p) {}
    std::string path_;
    kv_pool *pool_ = nullptr;
    uint32_t ns_ = 0;
    uint64_t seed_ = 0;
};

// ---- Forked workers ----------------------------------------------------------------

constexpr unsigned kMaxWorkers = 8;

// One page shared by the parent and its forked workers. Each worker writes
// only its own slot; the parent writes go and stop. std::atomic on
// lock-free integer types is address-free, so it works across processes.
struct alignas(64) WorkerSlot {
    std::atomic<uint64_t> ops;
    std::atomic<uint64_t> ns;     // wall time between go and stop as the worker saw them
    std::atomic<uint64_t> cpu_ns; // CPU time the worker got in that span
    std::atomic<int32_t> rc;
    char msg[160];
};

struct Control {
    alignas(64) std::atomic<uint32_t> ready; // fetch_add by each worker after its setup
    alignas(64) std::atomic<uint32_t> go;    // parent: 0 -> 1 once every worker is ready
    alignas(64) std::atomic<uint32_t> stop;  // parent: 0 -> 1 when the time is up
    WorkerSlot slot[kMaxWorkers];
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(sizeof(Control) <= 4096);

// What a worker body sees.
class Worker {
  public:
    Worker(Control *c, unsigned idx) : c_(c), idx_(idx) {}
    unsigned index() const { return idx_; }

    // Record a failure. Before start() it also counts as ready, so the
    // parent does not wait for this worker. Returns 1 (the body's result).
    int fail(int rc, const std::string &what) {
        WorkerSlot &s = c_->slot[idx_];
        std::snprintf(s.msg, sizeof s.msg, "worker %u: %s: %d (%s)", idx_, what.c_str(), rc,
                      rc < 0 ? kv_strerror(rc) : "unexpected value");
        // Relaxed: published by the release below (BENCH-R1), or by the worker's
        // exit when already running (the parent reads it after waitpid()).
        s.rc.store(rc < 0 ? rc : -EIO, std::memory_order_relaxed);
        // BENCH-R1: release pairs with BENCH-A1 in run_workers: the parent sees msg and rc.
        if (!started_) c_->ready.fetch_add(1, std::memory_order_release);
        return 1;
    }

    // Setup done: wait for the common start. Returns the start time.
    uint64_t start() {
        // BENCH-R1 (see fail).
        c_->ready.fetch_add(1, std::memory_order_release);
        // BENCH-A2: acquire pairs with BENCH-R2 in run_workers (nothing else is published by go;
        // acquire keeps the start-time read after it).
        while (c_->go.load(std::memory_order_acquire) == 0)
            std::this_thread::yield();
        started_ = true;
        cpu0_ = thread_cpu_ns();
        t0_ = now_ns();
        return t0_;
    }

    // Polled every few operations. Relaxed: the stop flag carries no data.
    bool stopped() const { return c_->stop.load(std::memory_order_relaxed) != 0; }

    // Record the result; the parent reads it after waitpid() (which orders it).
    void finish(uint64_t ops) {
        uint64_t t1 = now_ns();
        uint64_t cpu1 = thread_cpu_ns();
        WorkerSlot &s = c_->slot[idx_];
        s.ops.store(ops, std::memory_order_relaxed);
        s.ns.store(t1 - t0_, std::memory_order_relaxed);
        s.cpu_ns.store(cpu1 - cpu0_, std::memory_order_relaxed);
    }

  private:
    Control *c_;
    unsigned idx_;
    uint64_t t0_ = 0;
    uint64_t cpu0_ = 0;
    bool started_ = false;
};

struct WorkerResult {
    uint64_t ops = 0;
    uint64_t ns = 0;
    uint64_t cpu_ns = 0;
    double ops_per_s() const {
        return ns ? static_cast<double>(ops) * 1e9 / static_cast<double>(ns) : 0;
    }
    // The rate had the worker owned a core for the whole span.
    double ops_per_cpu_s() const {
        return cpu_ns ? static_cast<double>(ops) * 1e9 / static_cast<double>(cpu_ns) : 0;
    }
    // Fraction of the span the worker was on a CPU (< ~0.95: the machine was busy).
    double cpu_share() const {
        return ns ? static_cast<double>(cpu_ns) / static_cast<double>(ns) : 0;
    }
};

// Fork n workers running body(Worker&) -> int (0: ok), let them run together
// for `seconds`, and collect what each reported.
template <class Body>
std::expected<std::vector<WorkerResult>, std::string> run_workers(unsigned n, double seconds,
                                                                  Body &&body) {
    if (n == 0 || n > kMaxWorkers) return std::unexpected("bad worker count");
    void *page =
        mmap(nullptr, sizeof(Control), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return std::unexpected(std::string("mmap: ") + std::strerror(errno));
    auto *c = new (page) Control{};
    std::fflush(nullptr); // nothing buffered may be written twice

    std::vector<pid_t> pids;
    std::string err;
    for (unsigned i = 0; i < n; ++i) {
        pid_t pid = fork();
        if (pid == 0) {
            Worker w(c, i);
            int rc = body(w);
            _exit(rc == 0 ? 0 : 1);
        }
        if (pid < 0) {
            err = std::string("fork: ") + std::strerror(errno);
            break;
        }
        pids.push_back(pid);
    }

    // Wait for every worker's setup (bounded: a worker that dies without
    // reporting would otherwise hang the benchmark).
    uint64_t deadline = now_ns() + 60ULL * 1000000000ULL;
    // BENCH-A1: acquire pairs with BENCH-R1 in Worker::start/fail.
    while (err.empty() && c->ready.load(std::memory_order_acquire) < pids.size()) {
        if (now_ns() > deadline) {
            err = "workers did not become ready within 60 s";
            break;
        }
        int st = 0;
        for (pid_t p : pids) {
            if (waitpid(p, &st, WNOHANG) == p) {
                err = "a worker exited before it was ready";
                break;
            }
        }
        usleep(200);
    }
    for (unsigned i = 0; i < pids.size() && err.empty(); ++i) {
        if (c->slot[i].rc.load(std::memory_order_relaxed) != 0) err = c->slot[i].msg;
    }
    // BENCH-R2: release pairs with BENCH-A2 in Worker::start. On error the workers see
    // go and stop together and leave at once.
    if (!err.empty()) c->stop.store(1, std::memory_order_relaxed);
    c->go.store(1, std::memory_order_release);
    if (err.empty()) {
        std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
        c->stop.store(1, std::memory_order_relaxed);
    }

    for (pid_t p : pids) {
        int st = 0;
        while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
        }
        if (err.empty() && (!WIFEXITED(st) || WEXITSTATUS(st) != 0))
            err = WIFSIGNALED(st) ? "a worker died of signal " + std::to_string(WTERMSIG(st))
                                  : "a worker failed";
    }
    std::vector<WorkerResult> out;
    for (unsigned i = 0; i < pids.size(); ++i) {
        if (err.empty() && c->slot[i].rc.load(std::memory_order_relaxed) != 0) err = c->slot[i].msg;
        // Relaxed: waitpid() above ordered the worker's stores before these loads.
        out.push_back({c->slot[i].ops.load(std::memory_order_relaxed),
                       c->slot[i].ns.load(std::memory_order_relaxed),
                       c->slot[i].cpu_ns.load(std::memory_order_relaxed)});
    }
    c->~Control();
    munmap(page, sizeof(Control));
    if (!err.empty()) return std::unexpected(err);
    return out;
}

// Sums over the workers of one phase.
struct PhaseTotals {
    double ops_per_s = 0;     // wall-clock throughput of all workers together
    double ops_per_cpu_s = 0; // the same had each worker owned a core
    double cpu_share = 0;     // summed; divide by worker count for the mean
    void add(const std::vector<WorkerResult> &r) {
        for (const auto &w : r) {
            ops_per_s += w.ops_per_s();
            ops_per_cpu_s += w.ops_per_cpu_s();
            cpu_share += w.cpu_share();
        }
    }
};

} // namespace kvbench
