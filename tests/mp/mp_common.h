// SPDX-License-Identifier: MIT
//
// Helpers shared by the multi-process tests: pool paths, block contents that
// are a function of the key (so any process can check any block it reads),
// child-process plumbing, the random workload the stress and crash tests run
// in forked workers, and the invariants of a quiescent pool.
//
// Children never return into GoogleTest: they report through the shared
// Board (counters and the first failure messages) and their exit status, and
// leave with _exit().
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <new>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <unordered_set>
#include <vector>
#include <xxhash.h>

namespace kvmp {

// ---- Randomness and block contents -----------------------------------------

inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

// splitmix64: small, fast, and good enough to make every byte of a block
// depend on its key.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        s += 0x9e3779b97f4a7c15ULL;
        return mix64(s);
    }
    uint64_t below(uint64_t n) { return n ? next() % n : 0; }
    bool chance(unsigned percent) { return below(100) < percent; }
};

inline uint64_t env_u64(const char *name, uint64_t dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    return strtoull(v, nullptr, 0);
}

// Seed for a test: KV_MP_SEED when set, else the clock; always printed so a
// failing run can be repeated.
inline uint64_t test_seed(const char *what) {
    uint64_t s = env_u64("KV_MP_SEED", 0);
    if (!s)
        s = mix64(
            static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
            static_cast<uint64_t>(getpid()));
    fprintf(stderr, "[%s] seed 0x%016" PRIx64 " (set KV_MP_SEED to repeat)\n", what, s);
    return s;
}

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;
constexpr uint64_t kMinBlock = 4 * kKiB, kMaxBlock = 512 * kKiB;

// The length of the block stored under a key: 4 KiB..512 KiB, byte-granular,
// mostly small (70% <= 32 KiB, 25% <= 128 KiB, 5% up to 512 KiB).
inline uint64_t block_len(const kv_key &k) {
    uint64_t h = mix64(k.lo ^ mix64(k.hi ^ 0x5bd1e995ULL));
    uint64_t r = h % 100, lo, hi;
    if (r < 70) {
        lo = kMinBlock;
        hi = 32 * kKiB;
    } else if (r < 95) {
        lo = 32 * kKiB;
        hi = 128 * kKiB;
    } else {
        lo = 128 * kKiB;
        hi = kMaxBlock;
    }
    return lo + (h >> 8) % (hi - lo + 1);
}

inline kv_meta block_meta(const kv_key &k) {
    kv_meta m{};
    m.tokens = 1 + static_cast<uint32_t>(k.hi % 64);
    m.priority = static_cast<uint32_t>(k.lo % 4);
    m.user_tag = mix64(k.lo + 0x1234) ^ k.hi;
    return m;
}

inline uint64_t content_seed(const kv_key &k) {
    return k.lo ^ (k.hi << 17 | k.hi >> 47);
}

// Fill len bytes with the stream of a PRNG seeded from the key.
inline void fill_block(const kv_key &k, void *dst, uint64_t len) {
    Rng r(content_seed(k));
    auto *p = static_cast<unsigned char *>(dst);
    uint64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = r.next();
        memcpy(p + i, &w, 8);
    }
    if (i < len) {
        uint64_t w = r.next();
        memcpy(p + i, &w, len - i);
    }
}

// Offset of the first byte that differs from fill_block's stream, or -1.
inline int64_t check_block(const kv_key &k, const void *src, uint64_t len) {
    Rng r(content_seed(k));
    auto *p = static_cast<const unsigned char *>(src);
    uint64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = r.next(), got;
        memcpy(&got, p + i, 8);
        if (got != w) {
            for (uint64_t j = 0; j < 8; j++)
                if (p[i + j] != reinterpret_cast<const unsigned char *>(&w)[j])
                    return static_cast<int64_t>(i + j);
        }
    }
    if (i < len) {
        uint64_t w = r.next();
        for (uint64_t j = 0; i + j < len; j++)
            if (p[i + j] != reinterpret_cast<const unsigned char *>(&w)[j])
                return static_cast<int64_t>(i + j);
    }
    return -1;
}

// Everything a reader can check about a view of key k: "" when all is well.
inline std::string check_view(const kv_key &k, const kv_view &v) {
    char buf[256];
    int rc = kv_view_verify(&v);
    if (rc != 0) {
        snprintf(buf, sizeof buf, "kv_view_verify = %d (%s), want 0", rc, kv_strerror(rc));
        return buf;
    }
    uint64_t want_len = block_len(k);
    if (v.length != want_len || v.data == nullptr) {
        snprintf(buf, sizeof buf, "view length %" PRIu64 " data %p, want length %" PRIu64, v.length,
                 v.data, want_len);
        return buf;
    }
    int64_t off = check_block(k, v.data, v.length);
    if (off >= 0) {
        snprintf(buf, sizeof buf, "content differs at byte %" PRId64 " of %" PRIu64, off, v.length);
        return buf;
    }
    uint64_t sum = XXH3_64bits(v.data, v.length);
    if (v.checksum != sum) {
        snprintf(buf, sizeof buf, "view checksum 0x%" PRIx64 ", XXH3-64 of the data is 0x%" PRIx64,
                 v.checksum, sum);
        return buf;
    }
    kv_meta m = block_meta(k);
    if (v.meta.tokens != m.tokens || v.meta.priority != m.priority ||
        v.meta.user_tag != m.user_tag) {
        snprintf(buf, sizeof buf, "meta {%u,%u,0x%" PRIx64 "}, want {%u,%u,0x%" PRIx64 "}",
                 v.meta.tokens, v.meta.priority, v.meta.user_tag, m.tokens, m.priority, m.user_tag);
        return buf;
    }
    return "";
}

struct KeyHash {
    size_t operator()(const kv_key &k) const {
        return static_cast<size_t>(mix64(k.lo ^ mix64(k.hi)));
    }
};
struct KeyEq {
    bool operator()(const kv_key &a, const kv_key &b) const { return a.lo == b.lo && a.hi == b.hi; }
};
using KeySet = std::unordered_set<kv_key, KeyHash, KeyEq>;

// ---- Pool files ----------------------------------------------------------------

inline std::string unique_pool_path(const char *dir, const char *tag) {
    static std::atomic<unsigned> counter{0};
    char buf[256];
    snprintf(buf, sizeof buf, "%s/kvpool-mp-%s-%d-%u", dir, tag, static_cast<int>(getpid()),
             counter.fetch_add(1, std::memory_order_relaxed));
    return buf;
}

inline kv_create_opts pool_opts(uint64_t size, uint64_t slab_size) {
    kv_create_opts o{};
    kv_create_opts_init(&o, size);
    o.struct_size = sizeof o;
    o.slab_size = slab_size;
    o.flags |= KV_CREATE_F_EXCL;
    return o;
}

inline kv_manifest test_manifest() {
    kv_manifest m{};
    kv_manifest_init(&m, "kvpool-mp-test-model", 16);
    m.dtype = KV_DTYPE_BF16;
    m.tp_world = 1;
    m.hash_scheme = KV_HASH_XXH3_128_CHAINED;
    return m;
}

inline std::string usage_str(const kv_usage &u) {
    char buf[768];
    snprintf(buf, sizeof buf,
             "committed=%" PRIu64 " reserved=%" PRIu64 " dead=%" PRIu64 " free=%" PRIu64
             " bytes_committed=%" PRIu64 " blocks_free=%" PRIu64 " blocks_used=%" PRIu64
             " block_bytes_used=%" PRIu64 " pins=%" PRIu64 " journal_pins=%" PRIu64
             " slabs_free=%" PRIu64 " slabs_active=%" PRIu64 " orphan_blocks=%" PRIu64
             " bad_links=%" PRIu64 " unreachable=%" PRIu64,
             u.entries_committed, u.entries_reserved, u.entries_dead, u.entries_free,
             u.bytes_committed, u.blocks_free, u.blocks_used, u.block_bytes_used, u.pins,
             u.journal_pins, u.slabs_free, u.slabs_active, u.orphan_blocks, u.bad_links,
             u.unreachable);
    return buf;
}

inline std::string stats_str(const kv_stats &s) {
    char buf[512];
    snprintf(buf, sizeof buf,
             "clients=%u gets=%" PRIu64 " hits=%" PRIu64 " misses=%" PRIu64 " puts=%" PRIu64
             " dedups=%" PRIu64 " evictions=%" PRIu64 " removes=%" PRIu64
             " bytes_committed=%" PRIu64 " bytes_freed=%" PRIu64 " reaps=%" PRIu64,
             s.clients, s.gets, s.hits, s.misses, s.puts, s.dedups, s.evictions, s.removes,
             s.bytes_committed, s.bytes_freed, s.reaps);
    return buf;
}

// The invariants of a pool with no operation in flight, no live client but
// the caller (who holds no pins), and no reservation: nothing leaked, nothing
// pinned, the index consistent, every used block owned by a committed entry.
// held_pins: pins the caller itself holds (one per pinned view, each on a
// distinct committed entry that nobody removed).
inline ::testing::AssertionResult quiescent(const kv_usage &u, uint64_t held_pins = 0) {
    std::string bad;
    auto need = [&](bool ok, const char *what) {
        if (!ok) {
            bad += ' ';
            bad += what;
        }
    };
    need(u.orphan_blocks == 0, "orphan_blocks!=0");
    need(u.bad_links == 0, "bad_links!=0");
    need(u.unreachable == 0, "unreachable!=0");
    need(u.pins == held_pins, "pins!=held");
    need(u.journal_pins == held_pins, "journal_pins!=held");
    need(u.entries_reserved == 0, "entries_reserved!=0");
    need(u.entries_dead == 0, "entries_dead!=0 (removed, unpinned, yet not freed)");
    need(u.block_bytes_used >= u.bytes_committed, "block_bytes_used<bytes_committed");
    need(u.blocks_used == u.entries_committed, "blocks_used!=entries_committed");
    need(u.block_bytes_used >= u.blocks_used * kMinBlock, "block_bytes_used<blocks_used*4KiB");
    need(u.entries_committed == 0 || u.bytes_committed > 0, "committed entries with zero bytes");
    if (bad.empty()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "usage violates quiescent invariants:" << bad << " (caller holds " << held_pins
           << " pins)\n  " << usage_str(u);
}

// Chain links of a quiescent pool (PROTOCOL.md section 10): every entry's
// kids word carries its own generation and counts exactly the entries whose
// parent word names it at that generation (saturated counts excepted).
// Wrong CAS tags or a double uncount at free make this fail.
inline ::testing::AssertionResult kids_consistent(kv_pool *p) {
    const kv_region_header *h = kv_pool_header(p);
    const auto *base = reinterpret_cast<const uint8_t *>(h);
    const auto *ents = reinterpret_cast<const kv_entry *>(base + h->entry_off);
    const uint32_t n = h->n_entries;
    std::vector<uint32_t> expect(n, 0);
    uint64_t linked = 0;
    auto gen = [&](uint32_t i) {
        return uint32_t(__atomic_load_n(&ents[i].ctl, __ATOMIC_ACQUIRE) >> 32);
    };
    auto state = [&](uint32_t i) {
        return uint32_t(__atomic_load_n(&ents[i].ctl, __ATOMIC_ACQUIRE) >> 24) & 0xff;
    };
    for (uint32_t i = 0; i < n; i++) {
        if (state(i) == KV_ENTRY_FREE) {
            if (ents[i].parent != 0)
                return ::testing::AssertionFailure()
                       << "free entry " << i << " still names a parent";
            continue;
        }
        if (ents[i].parent == 0) continue; // [63:32] parent index + 1, 0: none
        uint32_t pi = uint32_t(ents[i].parent >> 32) - 1, pg = uint32_t(ents[i].parent);
        if (pi >= n)
            return ::testing::AssertionFailure() << "entry " << i << " names parent " << pi;
        if (state(pi) != KV_ENTRY_FREE && gen(pi) == pg) {
            expect[pi]++;
            linked++;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (state(i) == KV_ENTRY_FREE) continue;
        uint32_t k = ents[i].kids;
        if ((k >> 16) != (gen(i) & 0xffff))
            return ::testing::AssertionFailure()
                   << "entry " << i << " kids tag " << (k >> 16) << ", generation " << gen(i)
                   << " (low 16 bits " << (gen(i) & 0xffff) << ")";
        if ((k & 0xffff) != 0xffff && (k & 0xffff) != expect[i])
            return ::testing::AssertionFailure() << "entry " << i << " counts " << (k & 0xffff)
                                                 << " children, " << expect[i] << " name it";
    }
    fprintf(stderr, "kids_consistent: %" PRIu64 " live parent links\n", linked);
    return ::testing::AssertionSuccess();
}

inline const kv_client *client_table(kv_pool *p) {
    const kv_region_header *h = kv_pool_header(p);
    return reinterpret_cast<const kv_client *>(reinterpret_cast<const char *>(h) + h->client_off);
}

// Diagnostics for a failed invariant: every entry that is not plainly FREE
// or unpinned COMMITTED, and every client slot in use, straight from the
// shared tables (racy reads; the pool is expected to be quiescent).
inline std::string dump_suspects(kv_pool *p, size_t max_lines = 24) {
    const kv_region_header *h = kv_pool_header(p);
    const char *base = reinterpret_cast<const char *>(h);
    const auto *ents = reinterpret_cast<const kv_entry *>(base + h->entry_off);
    std::string out;
    char line[256];
    size_t n = 0;
    for (uint32_t e = 0; e < h->n_entries; e++) {
        uint64_t c = __atomic_load_n(&ents[e].ctl, __ATOMIC_ACQUIRE);
        uint64_t x = __atomic_load_n(&ents[e].aux, __ATOMIC_ACQUIRE);
        uint32_t st = (c >> 24) & 0xff, pins = c & 0xffffff;
        if (st == KV_ENTRY_FREE || (st == KV_ENTRY_COMMITTED && pins == 0)) continue;
        if (n++ >= max_lines) continue;
        snprintf(line, sizeof line,
                 "  entry %u: gen %u state %u pins %u | aux op %u client+1 %u slot %u seq %u | key "
                 "%016" PRIx64 " len %" PRIu64 "\n",
                 e, static_cast<uint32_t>(c >> 32), st, pins, static_cast<uint32_t>(x & 0xf),
                 static_cast<uint32_t>((x >> 4) & 0xfff), static_cast<uint32_t>((x >> 16) & 0xffff),
                 static_cast<uint32_t>(x >> 32), ents[e].key_lo, ents[e].length);
        out += line;
    }
    if (n > max_lines) out += "  ... " + std::to_string(n - max_lines) + " more entries\n";
    const auto *cl = reinterpret_cast<const kv_client *>(base + h->client_off);
    for (uint32_t i = 0; i < h->max_clients; i++) {
        uint64_t c = __atomic_load_n(&cl[i].ctl, __ATOMIC_ACQUIRE);
        if ((c & 0xff) == KV_CLIENT_FREE) continue;
        snprintf(line, sizeof line,
                 "  client %u: state %u pid %u start_time %" PRIu64 " reaps %" PRIu64 "%s\n", i,
                 static_cast<uint32_t>(c & 0xff), static_cast<uint32_t>(c >> 32), cl[i].start_time,
                 cl[i].stats.reaps, i == kv_pool_client_index(p) ? " (me)" : "");
        out += line;
    }
    return out;
}

// ---- Children --------------------------------------------------------------------

// Fork; the child runs fn() and _exit()s with its result. A child left
// running by a hung library dies from its alarm.
template <class Fn>
pid_t spawn(unsigned alarm_s, Fn &&fn) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(alarm_s);
        int rc = 1;
        rc = fn();
        _exit(rc);
    }
    return pid;
}

// waitpid with a deadline; on timeout the child is SIGKILLed and false
// returned (and *status says it was killed).
inline bool wait_child(pid_t pid, int timeout_ms, int *status) {
    for (int waited = 0;; waited++) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return true;
        if (r < 0 && errno != EINTR) {
            *status = -1;
            return false;
        }
        if (waited >= timeout_ms * 5) {
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            return false;
        }
        usleep(200);
    }
}

inline std::string status_str(int st) {
    char buf[96];
    if (st == -1)
        snprintf(buf, sizeof buf, "waitpid failed");
    else if (WIFEXITED(st))
        snprintf(buf, sizeof buf, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, sizeof buf, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, sizeof buf, "status 0x%x", st);
    return buf;
}

// Anonymous shared memory that survives fork: the children's report card.
template <class T>
T *shared_new() {
    void *p = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    return new (p) T();
}
template <class T>
void shared_delete(T *p) {
    if (!p) return;
    p->~T();
    munmap(p, sizeof(T));
}

inline uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

// ---- The random workload ---------------------------------------------------------

// Counters of one worker, written only by that worker.
struct WorkerCounters {
    std::atomic<uint64_t> ops, puts_stored, dedups, busy, nospc, reserves, commits, aborts, gets,
        get_hits, get_misses, releases, removes_ok, removes_noent, contains_yes, matches,
        matched_blocks, reaps, reaped, evict_calls, bytes_committed, bytes_aborted, bytes_raced,
        max_held, fails;
    std::atomic<int32_t> attached;      // 1 once kv_pool_attach returned
    std::atomic<uint32_t> client_index; // kv_pool_client_index after attach
    std::atomic<int32_t> detaching;     // 1 from just before kv_pool_detach
    std::atomic<int32_t> done;          // 1 once detached
};

constexpr int kMaxWorkers = 8;
constexpr int kMaxMsgs = 24;

struct Board {
    std::atomic<uint32_t> stop;    // parent -> workers: finish, clean up, detach
    std::atomic<uint32_t> no_reap; // parent -> workers: do not call kv_reap
    std::atomic<uint32_t> failures;
    std::atomic<uint32_t> nmsgs;
    char msgs[kMaxMsgs][320];
    WorkerCounters w[kMaxWorkers];

    void fail(int worker, const char *fmt, ...) __attribute__((format(printf, 3, 4))) {
        char buf[300];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        failures.fetch_add(1, std::memory_order_relaxed);
        if (worker >= 0 && worker < kMaxWorkers)
            w[worker].fails.fetch_add(1, std::memory_order_relaxed);
        uint32_t i = nmsgs.fetch_add(1, std::memory_order_relaxed);
        if (i < kMaxMsgs)
            snprintf(msgs[i], sizeof msgs[i], "worker %d (pid %d): %s", worker, getpid(), buf);
        fprintf(stderr, "worker %d (pid %d): FAIL %s\n", worker, getpid(), buf);
    }
    std::string messages() const {
        std::string s;
        uint32_t n = nmsgs.load();
        for (uint32_t i = 0; i < n && i < kMaxMsgs; i++) {
            s += "  ";
            s += msgs[i];
            s += '\n';
        }
        return s;
    }
};

// Keys every worker draws from. Random keys are a fixed set; chain keys come
// from token sequences in families that share prefixes, so match_prefix finds
// blocks other workers stored.
struct KeySpace {
    std::vector<kv_key> rand;
    std::vector<std::vector<kv_key>> chains;
    uint32_t ns = 0;
    uint64_t seed = 0;

    static std::vector<uint32_t> prompt_tokens(unsigned p, unsigned families,
                                               uint32_t block_tokens) {
        unsigned fam = p % families;
        unsigned shared_blocks = 2 + fam % 6;
        unsigned blocks = shared_blocks + 1 + (p / families) % 10;
        std::vector<uint32_t> t(blocks * block_tokens + block_tokens / 2); // a partial last block
        for (size_t j = 0; j < t.size(); j++) {
            bool shared = j < shared_blocks * block_tokens;
            t[j] =
                static_cast<uint32_t>(mix64((shared ? fam : 1000 + p) * 1000003ULL + j) % 128000);
        }
        return t;
    }

    void build(uint64_t chain_seed, uint32_t ns_id, size_t n_rand, unsigned n_prompts,
               unsigned families) {
        seed = chain_seed;
        ns = ns_id;
        rand.resize(n_rand);
        for (size_t i = 0; i < n_rand; i++)
            rand[i] = kv_key{mix64(i * 2 + 1), mix64(i * 2 + 2) | 1};
        chains.clear();
        for (unsigned p = 0; p < n_prompts; p++) {
            std::vector<uint32_t> t = prompt_tokens(p, families, 16);
            std::vector<kv_key> keys(t.size() / 16 + 1);
            size_t n = kv_hash_chain(chain_seed, t.data(), t.size(), 16, keys.data(), keys.size());
            keys.resize(n);
            chains.push_back(std::move(keys));
        }
    }

    KeySet all() const {
        KeySet s(rand.begin(), rand.end());
        for (auto &c : chains)
            s.insert(c.begin(), c.end());
        return s;
    }
};

struct WorkloadCfg {
    uint64_t max_ops = 20000;
    uint64_t deadline_ns = 0; // absolute CLOCK_MONOTONIC
    unsigned max_held = 32;   // views kept pinned across operations
    unsigned max_open = 4;    // reservations kept open across operations
    unsigned hold_percent = 30;
    bool allow_reap = true;
};

class Worker {
  public:
    Worker(Board *b, int idx, const KeySpace &ks, const WorkloadCfg &cfg, uint64_t seed)
        : b_(b), c_(b->w[idx]), idx_(idx), ks_(ks), cfg_(cfg), rng_(seed), buf_(kMaxBlock) {}

    // Attach, run, clean up, detach. Returns the exit status for the child.
    int run(const char *path, int fd = -1) {
        char err[256] = "";
        int rc = fd >= 0 ? kv_pool_attach_fd(fd, 0, &p_, err, sizeof err)
                         : kv_pool_attach(path, 0, &p_, err, sizeof err);
        if (rc != 0) {
            b_->fail(idx_, "kv_pool_attach = %d (%s): %s", rc, kv_strerror(rc), err);
            return 2;
        }
        c_.client_index.store(kv_pool_client_index(p_));
        c_.attached.store(1);
        kv_manifest m = test_manifest();
        uint32_t ns = ~0u;
        uint64_t seed = 0;
        rc = kv_ns_register(p_, &m, &ns, &seed);
        if (rc != 0 || ns != ks_.ns || seed != ks_.seed)
            b_->fail(idx_,
                     "kv_ns_register = %d, ns %u seed 0x%" PRIx64 "; want 0, ns %u seed 0x%" PRIx64,
                     rc, ns, seed, ks_.ns, ks_.seed);
        while (!b_->stop.load(std::memory_order_relaxed) &&
               c_.ops.load(std::memory_order_relaxed) < cfg_.max_ops &&
               (cfg_.deadline_ns == 0 || now_ns() < cfg_.deadline_ns)) {
            step();
            c_.ops.fetch_add(1, std::memory_order_relaxed);
        }
        cleanup();
        c_.detaching.store(1);
        rc = kv_pool_detach(p_);
        if (rc != 0) b_->fail(idx_, "kv_pool_detach = %d", rc);
        c_.done.store(1);
        return c_.fails.load() ? 1 : 0;
    }

  private:
    struct Open {
        kv_reservation r;
        kv_key k;
    };
    struct Held {
        kv_view v;
        kv_key k;
    };

    const kv_key &rand_key() { return ks_.rand[rng_.below(ks_.rand.size())]; }
    const std::vector<kv_key> &chain() { return ks_.chains[rng_.below(ks_.chains.size())]; }
    const kv_key &any_key() {
        if (rng_.chance(70)) return rand_key();
        auto &c = chain();
        return c[rng_.below(c.size())];
    }

    void counted_ok(std::atomic<uint64_t> &c) { c.fetch_add(1, std::memory_order_relaxed); }

    // put or reserve result that is not a success with data written
    bool put_result_ok(int rc, const char *what, const kv_key &k) {
        // A put that lost a race may have allocated (and freed) a block.
        if (rc == KV_DEDUP || rc == -EBUSY)
            c_.bytes_raced.fetch_add(block_len(k), std::memory_order_relaxed);
        if (rc == KV_DEDUP) {
            counted_ok(c_.dedups);
            return true;
        }
        if (rc == -EBUSY) {
            counted_ok(c_.busy);
            return true;
        }
        if (rc == -ENOSPC) {
            counted_ok(c_.nospc);
            return true;
        }
        b_->fail(idx_, "%s(key %016" PRIx64 ":%016" PRIx64 ", len %" PRIu64 ") = %d (%s)", what,
                 k.lo, k.hi, block_len(k), rc, kv_strerror(rc));
        return false;
    }

    // parent: the previous block of k's chain (prefix-aware eviction), or null.
    void put(const kv_key &k, const kv_key *parent = nullptr) {
        uint64_t len = block_len(k);
        fill_block(k, buf_.data(), len);
        kv_put_opts po{};
        po.struct_size = sizeof po;
        po.meta = block_meta(k);
        if (parent) {
            po.flags = KV_PUT_F_PARENT;
            po.parent = *parent;
        }
        int rc = kv_put_ex(p_, ks_.ns, &k, buf_.data(), len, &po);
        if (rc == 0) {
            counted_ok(c_.puts_stored);
            c_.bytes_committed.fetch_add(len, std::memory_order_relaxed);
        } else {
            put_result_ok(rc, "kv_put", k);
        }
    }

    // 0: reservation in *o; 1: not reserved (dedup, busy, nospc)
    int reserve(const kv_key &k, Open *o, const kv_key *parent = nullptr) {
        uint64_t len = block_len(k);
        kv_put_opts po{};
        po.struct_size = sizeof po;
        po.meta = block_meta(k);
        if (parent) {
            po.flags = KV_PUT_F_PARENT;
            po.parent = *parent;
        }
        o->k = k;
        int rc = kv_reserve_ex(p_, ks_.ns, &k, len, &po, &o->r);
        if (rc == 0) {
            counted_ok(c_.reserves);
            if (o->r.data == nullptr || o->r.length < len) {
                b_->fail(idx_,
                         "kv_reserve gave data %p length %" PRIu64 ", want length >= %" PRIu64,
                         o->r.data, o->r.length, len);
                return 1;
            }
            fill_block(k, o->r.data, len);
            return 0;
        }
        put_result_ok(rc, "kv_reserve", k);
        return 1;
    }

    void commit(Open &o) {
        uint64_t len = block_len(o.k);
        int rc;
        if (rng_.chance(50))
            rc = kv_commit(p_, &o.r, KV_COMMIT_F_CHECKSUM, XXH3_64bits(o.r.data, len));
        else
            rc = kv_commit(p_, &o.r, 0, 0);
        if (rc != 0) {
            b_->fail(idx_, "kv_commit = %d (%s), want 0", rc, kv_strerror(rc));
            return;
        }
        counted_ok(c_.commits);
        c_.bytes_committed.fetch_add(len, std::memory_order_relaxed);
    }

    void abort_res(Open &o) {
        int rc = kv_abort(p_, &o.r);
        if (rc != 0) {
            b_->fail(idx_, "kv_abort = %d (%s), want 0", rc, kv_strerror(rc));
            return;
        }
        counted_ok(c_.aborts);
        c_.bytes_aborted.fetch_add(block_len(o.k), std::memory_order_relaxed);
    }

    void check(const kv_key &k, const kv_view &v, const char *what) {
        std::string e = check_view(k, v);
        if (!e.empty())
            b_->fail(idx_, "%s(key %016" PRIx64 ":%016" PRIx64 "): %s", what, k.lo, k.hi,
                     e.c_str());
    }

    void release(kv_view &v) {
        int rc = kv_release(p_, &v);
        if (rc != 0) b_->fail(idx_, "kv_release = %d (%s), want 0", rc, kv_strerror(rc));
        counted_ok(c_.releases);
    }

    void hold_or_release(const kv_key &k, kv_view &v) {
        if (held_.size() < cfg_.max_held && rng_.chance(cfg_.hold_percent)) {
            held_.push_back({v, k});
            uint64_t n = held_.size();
            if (n > c_.max_held.load(std::memory_order_relaxed))
                c_.max_held.store(n, std::memory_order_relaxed);
        } else {
            release(v);
        }
    }

    void get(const kv_key &k) {
        kv_view v{};
        counted_ok(c_.gets);
        int rc = kv_get(p_, ks_.ns, &k, &v);
        if (rc == 0) {
            counted_ok(c_.get_hits);
            check(k, v, "kv_get");
            hold_or_release(k, v);
        } else if (rc == -ENOENT) {
            counted_ok(c_.get_misses);
        } else {
            b_->fail(idx_, "kv_get = %d (%s) with %zu pins held", rc, kv_strerror(rc),
                     held_.size());
        }
    }

    void match(bool pin, bool fill) {
        const std::vector<kv_key> &keys = chain();
        std::vector<kv_view> views(pin ? keys.size() : 0);
        int m = kv_match_prefix(p_, ks_.ns, keys.data(), keys.size(), pin ? KV_MATCH_F_PIN : 0,
                                pin ? views.data() : nullptr);
        counted_ok(c_.matches);
        if (m < 0 || static_cast<size_t>(m) > keys.size()) {
            b_->fail(idx_, "kv_match_prefix(n=%zu, pin=%d) = %d (%s)", keys.size(), pin, m,
                     m < 0 ? kv_strerror(m) : "more than n");
            return;
        }
        c_.matched_blocks.fetch_add(static_cast<uint64_t>(m), std::memory_order_relaxed);
        for (int i = 0; pin && i < m; i++) {
            check(keys[i], views[i], "kv_match_prefix view");
            hold_or_release(keys[i], views[i]);
        }
        // An engine stores the blocks it had to compute.
        for (size_t i = static_cast<size_t>(m); fill && i < keys.size(); i++) {
            const kv_key *parent = i ? &keys[i - 1] : nullptr;
            if (rng_.chance(30)) {
                Open o;
                if (reserve(keys[i], &o, parent) == 0) commit(o);
            } else {
                put(keys[i], parent);
            }
        }
    }

    void step() {
        unsigned op = static_cast<unsigned>(rng_.below(1000));
        if (op < 180) {
            put(rand_key());
        } else if (op < 280) { // reserve, write, commit
            Open o;
            if (reserve(any_key(), &o) == 0) commit(o);
        } else if (op < 330) { // reserve and keep it open
            if (open_.size() < cfg_.max_open) {
                Open o;
                if (reserve(any_key(), &o) == 0) open_.push_back(o);
            } else {
                finish_open(rng_.below(open_.size()));
            }
        } else if (op < 370) {
            if (!open_.empty()) finish_open(rng_.below(open_.size()));
        } else if (op < 390) { // reserve and abort
            Open o;
            if (reserve(any_key(), &o) == 0) abort_res(o);
        } else if (op < 590) {
            get(any_key());
        } else if (op < 650) { // release a held view, checking it did not change meanwhile
            if (!held_.empty()) {
                size_t i = rng_.below(held_.size());
                check(held_[i].k, held_[i].v, "held view before kv_release");
                release(held_[i].v);
                held_[i] = held_.back();
                held_.pop_back();
            }
        } else if (op < 700) {
            const kv_key &k = any_key();
            int rc = kv_remove(p_, ks_.ns, &k);
            if (rc == 0)
                counted_ok(c_.removes_ok);
            else if (rc == -ENOENT)
                counted_ok(c_.removes_noent);
            else if (rc == -EBUSY)
                counted_ok(c_.busy);
            else
                b_->fail(idx_, "kv_remove = %d (%s)", rc, kv_strerror(rc));
        } else if (op < 750) {
            const kv_key &k = any_key();
            int rc = kv_contains(p_, ks_.ns, &k);
            if (rc == 1)
                counted_ok(c_.contains_yes);
            else if (rc != 0)
                b_->fail(idx_, "kv_contains = %d, want 0 or 1", rc);
        } else if (op < 900) {
            match(rng_.chance(50), true);
        } else if (op < 970) {
            match(true, false);
        } else if (op < 990) {
            if (!cfg_.allow_reap || b_->no_reap.load(std::memory_order_relaxed)) return;
            int rc = kv_reap(p_);
            counted_ok(c_.reaps);
            if (rc < 0)
                b_->fail(idx_, "kv_reap = %d (%s)", rc, kv_strerror(rc));
            else
                c_.reaped.fetch_add(static_cast<uint64_t>(rc), std::memory_order_relaxed);
        } else if (op < 995) {
            int64_t rc = kv_evict_bytes(p_, 1 * kMiB);
            counted_ok(c_.evict_calls);
            if (rc < 0) b_->fail(idx_, "kv_evict_bytes = %" PRId64, rc);
        } else {
            get(chain()[0]); // first blocks of shared prefixes: mostly hits
        }
    }

    void finish_open(size_t i) {
        if (rng_.chance(70))
            commit(open_[i]);
        else
            abort_res(open_[i]);
        open_[i] = open_.back();
        open_.pop_back();
    }

    void cleanup() {
        for (auto &h : held_) {
            check(h.k, h.v, "held view at cleanup");
            release(h.v);
        }
        held_.clear();
        // Half of the open reservations are left for kv_pool_detach to abort.
        while (!open_.empty() && rng_.chance(50))
            finish_open(open_.size() - 1);
        for (auto &o : open_)
            c_.bytes_aborted.fetch_add(block_len(o.k), std::memory_order_relaxed);
        c_.aborts.fetch_add(open_.size(), std::memory_order_relaxed);
        open_.clear();
    }

    Board *b_;
    WorkerCounters &c_;
    int idx_;
    const KeySpace &ks_;
    WorkloadCfg cfg_;
    Rng rng_;
    std::vector<unsigned char> buf_;
    kv_pool *p_ = nullptr;
    std::vector<Held> held_;
    std::vector<Open> open_;
};

// Read every key that may ever have been stored and check each present block.
struct WalkResult {
    uint64_t found = 0, bytes = 0, bad = 0;
    std::string first_error;
};

inline WalkResult walk_all(kv_pool *p, const KeySpace &ks) {
    WalkResult w;
    for (const kv_key &k : ks.all()) {
        kv_view v{};
        int rc = kv_get(p, ks.ns, &k, &v);
        if (rc == -ENOENT) {
            if (kv_contains(p, ks.ns, &k) != 0 && w.bad++ == 0)
                w.first_error =
                    "kv_get says -ENOENT but kv_contains says present on a quiescent pool";
            continue;
        }
        if (rc != 0) {
            if (w.bad++ == 0)
                w.first_error =
                    std::string("kv_get = ") + std::to_string(rc) + " " + kv_strerror(rc);
            continue;
        }
        w.found++;
        w.bytes += v.length;
        std::string e = check_view(k, v);
        if (!e.empty() && w.bad++ == 0) w.first_error = e;
        if (kv_contains(p, ks.ns, &k) != 1 && w.bad++ == 0)
            w.first_error = "kv_contains != 1 for a block kv_get just pinned";
        rc = kv_release(p, &v);
        if (rc != 0 && w.bad++ == 0)
            w.first_error = std::string("kv_release = ") + std::to_string(rc);
    }
    return w;
}

} // namespace kvmp

namespace kvmp {

// Base fixture: owns the pool file, the parent's attachment, the shared board
// and every child; TearDown cleans all of them up whatever the test did.
class MpTest : public ::testing::Test {
  protected:
    void TearDown() override {
        for (pid_t pid : kids_) {
            if (pid <= 0) continue;
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
        kids_.clear();
        if (pool_) kv_pool_detach(pool_);
        pool_ = nullptr;
        if (!path_.empty()) {
            kv_pool_destroy(path_.c_str());
            unlink(path_.c_str());
        }
        shared_delete(board_);
        board_ = nullptr;
    }

    // Create a pool under /dev/shm; ASSERT-style: returns false on failure.
    ::testing::AssertionResult create_pool(const char *tag, uint64_t size, uint64_t slab,
                                           uint32_t policy = KV_EVICT_PREFIX,
                                           uint64_t avg_block_size = 0, uint32_t flags = 0) {
        path_ = unique_pool_path("/dev/shm", tag);
        kv_create_opts o = pool_opts(size, slab);
        o.evict_policy = policy;
        if (avg_block_size) o.avg_block_size = avg_block_size;
        o.flags |= flags;
        char err[256] = "";
        int rc = kv_pool_create(path_.c_str(), &o, err, sizeof err);
        if (rc != 0)
            return ::testing::AssertionFailure() << "kv_pool_create(" << path_ << ") = " << rc
                                                 << " (" << kv_strerror(rc) << "): " << err;
        return ::testing::AssertionSuccess();
    }

    ::testing::AssertionResult attach(uint32_t flags = 0) {
        char err[256] = "";
        int rc = kv_pool_attach(path_.c_str(), flags, &pool_, err, sizeof err);
        if (rc != 0)
            return ::testing::AssertionFailure() << "kv_pool_attach(" << path_ << ") = " << rc
                                                 << " (" << kv_strerror(rc) << "): " << err;
        return ::testing::AssertionSuccess();
    }

    void detach() {
        if (pool_) {
            EXPECT_EQ(kv_pool_detach(pool_), 0);
        }
        pool_ = nullptr;
    }

    // Register the test namespace and build the shared key space.
    ::testing::AssertionResult build_keys(KeySpace *ks, size_t n_rand, unsigned n_prompts,
                                          unsigned families) {
        kv_manifest m = test_manifest();
        uint32_t ns = 0;
        uint64_t seed = 0;
        int rc = kv_ns_register(pool_, &m, &ns, &seed);
        if (rc != 0)
            return ::testing::AssertionFailure()
                   << "kv_ns_register = " << rc << " " << kv_strerror(rc);
        if (seed != kv_manifest_seed(&m))
            return ::testing::AssertionFailure() << "kv_ns_register seed " << seed
                                                 << " != kv_manifest_seed " << kv_manifest_seed(&m);
        ks->build(seed, ns, n_rand, n_prompts, families);
        return ::testing::AssertionSuccess();
    }

    std::string path_;
    kv_pool *pool_ = nullptr;
    Board *board_ = nullptr;
    std::vector<pid_t> kids_;
};

} // namespace kvmp
