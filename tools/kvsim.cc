// SPDX-License-Identifier: MIT
//
// kvsim: synthetic traces of chained KV-block keys, replayed in exact
// offline models of each eviction policy and against real pools.
//
//   kvsim gen --family {system-prompt,multi-turn,rag,zipf} [--requests N]
//             [--seed N] [--zipf S] [--items N] [--block-tokens N] --out FILE
//   kvsim run --trace FILE [--policies all,opt|P,P...] [--sizes 10,25,50,100]
//             [--pool] [--json] [--plot FILE.png]
//             [--engines N [--engine-size PCT] [--seed N]]
//
// A trace is a list of requests, each a chain of block ids (root first).
// Block ids are nodes of a trie of block contents, so two requests share
// ids exactly as far as their token prefixes agree: what chained hashing
// gives an engine. Families:
//   system-prompt  100 system prompts of 32-128 blocks (Zipf popularity) + a
//                  unique question of 4-20 blocks
//   multi-turn     200 live conversations (Zipf popularity), 8 shared blocks of
//                  instructions, each turn adds 4-24 blocks, 2-10 turns each
//   rag            2 blocks of instructions + 1-3 of 200 documents of 8-32 blocks
//                  (Zipf) + a unique question of 1-2 blocks
//   zipf           2000 independent prompts of 4-32 blocks, Zipf popularity
// (--items changes the count of prompts, conversations or documents.)
//
// Replay of a request, as an engine does it: match the longest cached
// prefix (the blocks are read, which refreshes them), then put every block
// after it, each naming its predecessor as parent. Reported per policy and
// cache size (% of the trace's distinct blocks): hit ratio (blocks served
// from the cache / blocks requested), prefill tokens saved (served blocks x
// block_tokens) and evictions; with --pool, also the same replayed through
// libkv against a pool of exactly that many blocks, with the pool's
// approximate (sampled) policy.
//
// --policies opt adds the clairvoyant bound (opt_bound): the most blocks
// any policy, knowing the future, could serve from a cache of that size;
// an exact model only (no pool has it).
//
// --engines N puts N engines, each with its own prefix cache of PCT % of the
// trace's distinct blocks (default 5), in front of the cache, as a host-wide
// pool is used (see EngineTier): requests are routed at random (--seed), an
// engine asks the cache only for the blocks after the prefix it holds, and
// hit ratio and tokens saved then count only what the cache was asked for.
//
// File format (text): "# kvsim-trace v1 family=F block_tokens=N ...", then
// one line per request: "R SHARED N ID1 ... IDN"; the first SHARED blocks
// are the shared part (system prompt, documents) and get priority 1 under
// the priority policy, the rest 0.
//
// Exit codes: 0 ok, 1 a run failed (pool error), 2 bad arguments or input.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <kv/kv.h>
#include <list>
#include <map>
#include <set>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

namespace {

[[noreturn]] void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("kvsim: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

constexpr const char *kUsage =
    "usage: kvsim gen --family {system-prompt,multi-turn,rag,zipf} [--requests N] [--seed N]\n"
    "                 [--zipf S] [--items N] [--block-tokens N] --out FILE\n"
    "       kvsim run --trace FILE [--policies all,lru,lfu,fifo,priority,prefix,clock,opt]\n"
    "                 [--sizes 10,25,50,100] [--pool] [--json] [--plot FILE.png]\n"
    "                 [--engines N [--engine-size PCT] [--seed N]]\n";

uint64_t parse_u64(const std::string &opt, const std::string &v, uint64_t lo, uint64_t hi) {
    char *end = nullptr;
    errno = 0;
    unsigned long long x = strtoull(v.c_str(), &end, 10);
    if (v.empty() || *end || errno || x < lo || x > hi)
        die(2, "%s \"%s\": expected an integer %" PRIu64 "..%" PRIu64, opt.c_str(), v.c_str(), lo,
            hi);
    return x;
}

double parse_double(const std::string &opt, const std::string &v, double lo, double hi) {
    char *end = nullptr;
    double x = strtod(v.c_str(), &end);
    if (v.empty() || *end || !(x >= lo && x <= hi))
        die(2, "%s \"%s\": expected a number %g..%g", opt.c_str(), v.c_str(), lo, hi);
    return x;
}

// ---- Trace generation --------------------------------------------------------

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL) {}
    uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1DULL;
    }
    uint64_t below(uint64_t n) { return next() % n; }
    uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); } // inclusive
    double unit() { return double(next() >> 11) / double(1ULL << 53); }
};

// Zipf(s) over 0..n-1 by inverse CDF.
class Zipf {
  public:
    Zipf(uint64_t n, double s) : cdf_(n) {
        double sum = 0;
        for (uint64_t i = 0; i < n; i++)
            cdf_[i] = sum += 1.0 / std::pow(double(i + 1), s);
        for (double &c : cdf_)
            c /= sum;
    }
    uint64_t draw(Rng &r) const {
        auto it = std::lower_bound(cdf_.begin(), cdf_.end(), r.unit());
        return it == cdf_.end() ? cdf_.size() - 1 : uint64_t(it - cdf_.begin());
    }

  private:
    std::vector<double> cdf_;
};

// Block contents -> block ids: node of the trie of content sequences.
class Trie {
  public:
    uint64_t child(uint64_t parent, uint64_t content) {
        auto [it, fresh] = map_.try_emplace({parent, content}, next_);
        if (fresh) next_++;
        return it->second;
    }

  private:
    std::map<std::pair<uint64_t, uint64_t>, uint64_t> map_;
    uint64_t next_ = 1; // 0: the root (no parent)
};

struct Request {
    uint32_t shared = 0;
    std::vector<uint64_t> ids;
};

// Content tokens: kind in the top byte, then two 28-bit fields.
uint64_t content(uint64_t kind, uint64_t a, uint64_t b) {
    return (kind << 56) | ((a & 0xfffffff) << 28) | (b & 0xfffffff);
}
enum : uint64_t { kSys = 1, kDoc, kUser, kPrompt, kTurn };

std::vector<Request> generate(const std::string &family, uint64_t n_req, uint64_t seed, double s,
                              uint64_t items) {
    Rng r(seed);
    Trie trie;
    std::vector<Request> out;
    uint64_t unique = 0; // a counter for contents never seen again
    auto push = [&](Request &q, uint64_t c) {
        q.ids.push_back(trie.child(q.ids.empty() ? 0 : q.ids.back(), c));
    };

    if (family == "system-prompt") {
        // System prompts of 512-2048 tokens, questions of 64-320.
        const uint64_t n = items ? items : 100;
        std::vector<uint64_t> len(n);
        for (auto &l : len)
            l = r.range(32, 128);
        Zipf z(n, s);
        for (uint64_t i = 0; i < n_req; i++) {
            Request q;
            uint64_t p = z.draw(r);
            for (uint64_t b = 0; b < len[p]; b++)
                push(q, content(kSys, p, b));
            q.shared = uint32_t(q.ids.size());
            for (uint64_t b = 0, u = r.range(4, 20); b < u; b++)
                push(q, content(kUser, unique++, 0));
            out.push_back(std::move(q));
        }
    } else if (family == "multi-turn") {
        // items conversations live at once; one continues per request (Zipf
        // over the live ones); a finished one is replaced by a new one.
        const uint64_t n = items ? items : 200;
        struct Conv {
            std::vector<uint64_t> contents;
            uint64_t turns_left;
        };
        // Shared instructions of 128 tokens; each turn (question and answer)
        // adds 64-384 tokens; 2-10 turns.
        auto fresh = [&]() {
            Conv c{{}, r.range(2, 10)};
            for (uint64_t b = 0; b < 8; b++)
                c.contents.push_back(content(kSys, 0, b));
            return c;
        };
        std::vector<Conv> conv(n);
        for (auto &c : conv)
            c = fresh();
        Zipf z(n, s);
        for (uint64_t i = 0; i < n_req; i++) {
            Conv &c = conv[z.draw(r)];
            for (uint64_t b = 0, t = r.range(4, 24); b < t; b++)
                c.contents.push_back(content(kTurn, unique++, 0));
            Request q;
            for (uint64_t x : c.contents)
                push(q, x);
            q.shared = 8;
            out.push_back(std::move(q));
            if (--c.turns_left == 0) c = fresh();
        }
    } else if (family == "rag") {
        // Document chunks of 128-512 tokens.
        const uint64_t n = items ? items : 200;
        std::vector<uint64_t> len(n);
        for (auto &l : len)
            l = r.range(8, 32);
        Zipf z(n, s);
        for (uint64_t i = 0; i < n_req; i++) {
            Request q;
            for (uint64_t b = 0; b < 2; b++)
                push(q, content(kSys, 1, b));
            for (uint64_t d = 0, k = r.range(1, 3); d < k; d++) {
                uint64_t doc = z.draw(r);
                for (uint64_t b = 0; b < len[doc]; b++)
                    push(q, content(kDoc, doc, b));
            }
            q.shared = uint32_t(q.ids.size());
            for (uint64_t b = 0, u = r.range(1, 2); b < u; b++)
                push(q, content(kUser, unique++, 0));
            out.push_back(std::move(q));
        }
    } else if (family == "zipf") {
        const uint64_t n = items ? items : 2000;
        std::vector<uint64_t> len(n);
        for (auto &l : len)
            l = r.range(4, 32);
        Zipf z(n, s);
        for (uint64_t i = 0; i < n_req; i++) {
            Request q;
            uint64_t p = z.draw(r);
            for (uint64_t b = 0; b < len[p]; b++)
                push(q, content(kPrompt, p, b));
            q.shared = uint32_t(q.ids.size());
            out.push_back(std::move(q));
        }
    } else {
        die(2, "--family \"%s\": expected system-prompt, multi-turn, rag or zipf", family.c_str());
    }
    return out;
}

int cmd_gen(int argc, char **argv) {
    std::string family, out;
    uint64_t n_req = 5000, seed = 1, items = 0, block_tokens = 16;
    double s = 1.0;
    for (int i = 2; i < argc; i++) {
        std::string a = argv[i];
        if (i + 1 >= argc) die(2, "%s needs a value\n%s", a.c_str(), kUsage);
        std::string v = argv[++i];
        if (a == "--family")
            family = v;
        else if (a == "--out")
            out = v;
        else if (a == "--requests")
            n_req = parse_u64(a, v, 1, 10000000);
        else if (a == "--seed")
            seed = parse_u64(a, v, 0, UINT64_MAX);
        else if (a == "--items")
            items = parse_u64(a, v, 1, 1000000);
        else if (a == "--block-tokens")
            block_tokens = parse_u64(a, v, 1, 65536);
        else if (a == "--zipf")
            s = parse_double(a, v, 0.0, 4.0);
        else
            die(2, "unknown option %s\n%s", a.c_str(), kUsage);
    }
    if (family.empty()) die(2, "gen needs --family\n%s", kUsage);
    if (out.empty()) die(2, "gen needs --out FILE\n%s", kUsage);
    std::vector<Request> reqs = generate(family, n_req, seed, s, items);
    FILE *f = fopen(out.c_str(), "w");
    if (!f) die(2, "%s: %s", out.c_str(), strerror(errno));
    fprintf(f,
            "# kvsim-trace v1 family=%s block_tokens=%" PRIu64 " requests=%" PRIu64 " seed=%" PRIu64
            " zipf=%g items=%" PRIu64 "\n",
            family.c_str(), block_tokens, n_req, seed, s, items);
    for (const Request &q : reqs) {
        fprintf(f, "R %u %zu", q.shared, q.ids.size());
        for (uint64_t id : q.ids)
            fprintf(f, " %" PRIu64, id);
        fputc('\n', f);
    }
    if (fclose(f) != 0) die(2, "%s: %s", out.c_str(), strerror(errno));
    return 0;
}

// ---- Trace reading -------------------------------------------------------------

struct Trace {
    std::string family = "?";
    uint64_t block_tokens = 16;
    std::vector<Request> reqs;
    uint64_t distinct = 0;
    uint64_t max_chain = 0;
};

Trace read_trace(const std::string &path) {
    FILE *f = fopen(path.c_str(), "r");
    if (!f) die(2, "--trace %s: %s", path.c_str(), strerror(errno));
    Trace t;
    char *line = nullptr;
    size_t cap = 0;
    ssize_t n;
    uint64_t lineno = 0;
    bool header = false;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        std::string l(line, size_t(n));
        while (!l.empty() && (l.back() == '\n' || l.back() == '\r'))
            l.pop_back();
        if (l.empty()) continue;
        if (l[0] == '#') {
            if (l.rfind("# kvsim-trace v1", 0) == 0) {
                header = true;
                if (auto p = l.find("family="); p != std::string::npos)
                    t.family = l.substr(p + 7, l.find(' ', p) - (p + 7));
                if (auto p = l.find("block_tokens="); p != std::string::npos)
                    t.block_tokens = strtoull(l.c_str() + p + 13, nullptr, 10);
            }
            continue;
        }
        if (!header)
            die(2, "%s:%" PRIu64 ": expected the \"# kvsim-trace v1\" header first", path.c_str(),
                lineno);
        const char *c = l.c_str();
        char *end;
        if (c[0] != 'R' || c[1] != ' ')
            die(2, "%s:%" PRIu64 ": expected \"R SHARED N ID...\", got \"%.40s\"", path.c_str(),
                lineno, c);
        Request q;
        c += 2;
        unsigned long long shared = strtoull(c, &end, 10);
        if (end == c) die(2, "%s:%" PRIu64 ": SHARED is not a number", path.c_str(), lineno);
        c = end;
        unsigned long long cnt = strtoull(c, &end, 10);
        if (end == c || cnt == 0 || cnt > 100000 || shared > cnt)
            die(2, "%s:%" PRIu64 ": N must be 1..100000 and SHARED <= N", path.c_str(), lineno);
        c = end;
        q.shared = uint32_t(shared);
        for (unsigned long long i = 0; i < cnt; i++) {
            unsigned long long id = strtoull(c, &end, 10);
            if (end == c || id == 0)
                die(2, "%s:%" PRIu64 ": block %llu: expected an id >= 1", path.c_str(), lineno, i);
            c = end;
            q.ids.push_back(id);
        }
        while (*c == ' ')
            c++;
        if (*c) die(2, "%s:%" PRIu64 ": %llu ids announced, more found", path.c_str(), lineno, cnt);
        t.max_chain = std::max<uint64_t>(t.max_chain, q.ids.size());
        t.reqs.push_back(std::move(q));
    }
    free(line);
    fclose(f);
    if (t.reqs.empty()) die(2, "--trace %s: no requests", path.c_str());
    std::unordered_map<uint64_t, bool> seen;
    for (const Request &q : t.reqs)
        for (uint64_t id : q.ids)
            seen.emplace(id, true);
    t.distinct = seen.size();
    return t;
}

// ---- Engine tier (run --engines N) ---------------------------------------------------
//
// How an engine uses a host-wide cache behind its own: each of N engines
// keeps an exact prefix cache of B blocks (GPU memory), and a request is
// routed to one of them at random (seeded, so every policy and the pool see
// the same routing). The engine serves the longest prefix it holds itself
// and asks the shared cache only for the blocks after it (chained keys make
// a lookup from the middle of a chain valid), so the shared cache's copies
// of the prefix are not read, and not refreshed, while engines hold them.
// The engine then holds the whole request, stamped as vLLM and SGLang do:
// at one time, so its own eviction takes tails first. The tier does not
// depend on the shared cache's answers, only on the trace.
class EngineTier {
  public:
    EngineTier(uint32_t engines, uint64_t blocks, uint64_t seed)
        : lru_(engines), index_(engines), cap_(blocks), rng_(seed) {}

    // The blocks of q the engine chosen for it holds (a prefix length); 0
    // without a tier.
    size_t begin(const Request &q) {
        if (lru_.empty()) return 0;
        cur_ = size_t(rng_.below(lru_.size()));
        auto &idx = index_[cur_];
        size_t g = 0;
        while (g < q.ids.size() && idx.count(q.ids[g]))
            g++;
        return g;
    }
    // The engine now holds every block of q; its least recently used go.
    void end(const Request &q) {
        if (lru_.empty()) return;
        auto &lru = lru_[cur_];
        auto &idx = index_[cur_];
        for (size_t i = q.ids.size(); i-- > 0;) { // tail first: the root ends most recent
            auto it = idx.find(q.ids[i]);
            if (it != idx.end()) lru.erase(it->second);
            lru.push_front(q.ids[i]);
            idx[q.ids[i]] = lru.begin();
        }
        while (lru.size() > cap_) {
            idx.erase(lru.back());
            lru.pop_back();
        }
    }

  private:
    std::vector<std::list<uint64_t>> lru_;
    std::vector<std::unordered_map<uint64_t, std::list<uint64_t>::iterator>> index_;
    uint64_t cap_;
    Rng rng_;
    size_t cur_ = 0;
};

struct TierSpec {
    uint32_t engines = 0; // 0: no tier, every request asks the shared cache from its root
    uint64_t blocks = 0;  // per engine
    uint64_t seed = 1;
    EngineTier make() const { return EngineTier(engines, blocks, seed); }
};

// ---- Exact models ---------------------------------------------------------------
//
// Each keeps every resident block with its exact policy key in an ordered
// set and evicts the smallest; the keys are those of region.h KV_EVICT_*
// computed without sampling or races. CLOCK is modelled as exact LRU (it is
// an approximation of it).

// --policies opt: the clairvoyant bound (opt_bound), not a pool policy.
constexpr uint32_t kOpt = 1000;

struct Result {
    uint64_t requested = 0, served = 0, evictions = 0, puts = 0;
    double hit_ratio() const { return requested ? double(served) / double(requested) : 0; }
};

class Model {
  public:
    Model(uint32_t policy, uint64_t capacity) : policy_(policy), cap_(capacity) {}

    Result run(const Trace &t, const TierSpec &ts) {
        Result r;
        EngineTier tier = ts.make();
        for (const Request &q : t.reqs) {
            const size_t g = tier.begin(q); // held by the engine: not asked for
            size_t m = g;
            while (m < q.ids.size() && blocks_.count(q.ids[m]))
                m++;
            for (size_t i = g; i < m; i++)
                access(q.ids[i]);
            r.requested += q.ids.size() - g;
            r.served += m - g;
            for (size_t i = m; i < q.ids.size(); i++) {
                if (blocks_.count(q.ids[i])) continue; // a repeated id inside one chain
                if (blocks_.size() >= cap_) {
                    evict();
                    r.evictions++;
                }
                insert(q.ids[i], i ? q.ids[i - 1] : 0, i < q.shared ? 1 : 0);
                r.puts++;
            }
            tier.end(q);
        }
        return r;
    }

  private:
    struct Block {
        uint64_t rank, parent, inserted;
        uint32_t prio, kids;
    };
    // (class, rank, tie, id): class is the policy's first key (priority, has
    // kids); LFU breaks ties by insertion order (older first) as the pool
    // does by commit time; other ranks are unique.
    using Key = std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>;

    Key key(uint64_t id, const Block &b) const {
        uint64_t cls = 0;
        if (policy_ == KV_EVICT_PRIORITY) cls = b.prio;
        if (policy_ == KV_EVICT_PREFIX) cls = b.kids ? 1 : 0;
        return {cls, b.rank, policy_ == KV_EVICT_LFU ? b.inserted : 0, id};
    }
    template <typename F>
    void update(uint64_t id, F &&f) {
        Block &b = blocks_.at(id);
        order_.erase(key(id, b));
        f(b);
        order_.insert(key(id, b));
    }
    void access(uint64_t id) {
        now_++;
        if (policy_ == KV_EVICT_FIFO) return;
        update(id, [&](Block &b) {
            b.rank = policy_ == KV_EVICT_LFU ? std::max(b.rank, floor_) + 1 : now_;
        });
    }
    void insert(uint64_t id, uint64_t parent, uint32_t prio) {
        now_++;
        Block b{policy_ == KV_EVICT_LFU ? floor_ + 1 : now_, 0, now_, prio, 0};
        if (parent && blocks_.count(parent)) {
            b.parent = parent;
            update(parent, [](Block &p) { p.kids++; });
        }
        blocks_.emplace(id, b);
        order_.insert(key(id, b));
    }
    void evict() {
        auto it = order_.begin();
        uint64_t id = std::get<3>(*it);
        Block b = blocks_.at(id);
        order_.erase(it);
        blocks_.erase(id);
        if (policy_ == KV_EVICT_LFU) floor_ = std::max(floor_, b.rank);
        if (b.parent && blocks_.count(b.parent)) update(b.parent, [](Block &p) { p.kids--; });
    }

    uint32_t policy_;
    uint64_t cap_;
    uint64_t now_ = 0, floor_ = 0;
    std::unordered_map<uint64_t, Block> blocks_;
    std::set<Key> order_;
};

// ---- The clairvoyant bound (policy "opt") ---------------------------------------------
//
// How many of the blocks a trace asks for could any eviction policy serve,
// knowing the future? Relax the problem: let every asked block count as a
// hit when it is cached, whether or not the blocks before it in its request
// are (a real replay serves only the matched prefix). Whatever a real
// policy keeps, its cache's contents over time are a legal schedule of the
// relaxed problem (blocks enter only when asked for, at most the capacity
// is held), and each of its real hits is a relaxed hit of that schedule. The
// relaxed problem is plain caching of equal-sized items with misses allowed
// to bypass the cache, for which Belady's MIN is optimal: on a miss, evict
// the cached block asked for furthest in the future, or skip caching the
// new one if it is asked for later still (or never). So MIN's relaxed hits
// bound every policy's real hits, online or offline, from above, and its
// tokens saved bound theirs. The engine tier, which depends only on the
// trace, decides which blocks are asked for.
Result opt_bound(const Trace &t, const TierSpec &ts, uint64_t cap) {
    Result r;
    std::vector<uint64_t> seq; // the asked blocks, in order
    EngineTier tier = ts.make();
    for (const Request &q : t.reqs) {
        const size_t g = tier.begin(q);
        seq.insert(seq.end(), q.ids.begin() + std::ptrdiff_t(g), q.ids.end());
        r.requested += q.ids.size() - g;
        tier.end(q);
    }
    constexpr uint64_t kNever = UINT64_MAX;
    std::vector<uint64_t> next(seq.size()); // when seq[i]'s block is asked for again
    std::unordered_map<uint64_t, uint64_t> seen;
    for (size_t i = seq.size(); i-- > 0;) {
        auto [it, fresh] = seen.try_emplace(seq[i], kNever);
        next[i] = it->second;
        it->second = i;
    }
    std::unordered_map<uint64_t, uint64_t> cached;   // block -> its next ask
    std::set<std::pair<uint64_t, uint64_t>> by_next; // (next ask, block)
    for (size_t i = 0; i < seq.size(); i++) {
        const uint64_t id = seq[i];
        auto it = cached.find(id);
        if (it != cached.end()) {
            r.served++;
            by_next.erase({it->second, id});
        } else {
            if (next[i] == kNever) continue; // never asked again: not worth a slot
            if (cached.size() >= cap) {
                auto far = std::prev(by_next.end());
                if (far->first <= next[i]) continue; // everything cached is wanted sooner
                cached.erase(far->second);
                by_next.erase(far);
                r.evictions++;
            }
            r.puts++;
        }
        cached[id] = next[i];
        by_next.insert({next[i], id});
    }
    return r;
}

// ---- Replay against a pool -----------------------------------------------------------

constexpr uint64_t kBlock = 4096, kSlab = 64 * 1024, kBlocksPerSlab = kSlab / kBlock;

kv_key key_of(uint64_t id) {
    return kv_key{id * 0x9E3779B97F4A7C15ULL + 1, id ^ 0x6b7673696dULL};
}

// A memfd pool of exactly `blocks` 4 KiB blocks (slabs of 16): returns the
// attached pool and sets *capacity to the blocks it holds.
kv_pool *make_pool(uint32_t policy, uint64_t blocks, uint64_t max_chain, uint64_t *capacity,
                   int *fd_out) {
    const uint64_t per_slab = kBlocksPerSlab;
    const uint64_t want_slabs = std::max<uint64_t>(1, (blocks + per_slab - 1) / per_slab);
    uint64_t size = want_slabs * kSlab + (1 << 20);
    for (int tries = 0; tries < 16; tries++) {
        kv_create_opts o;
        kv_create_opts_init(&o, size);
        o.slab_size = kSlab;
        o.avg_block_size = kBlock;
        o.evict_policy = policy;
        o.max_clients = 4;
        o.max_namespaces = 4;
        o.pins_per_client = uint32_t(std::max<uint64_t>(64, max_chain));
        char err[256] = "";
        int fd = -1;
        int rc = kv_pool_create_memfd("kvsim", &o, &fd, err, sizeof err);
        if (rc) die(1, "kv_pool_create_memfd: %s (%s)", err, kv_strerror(rc));
        kv_pool *p = nullptr;
        rc = kv_pool_attach_fd(fd, 0, &p, err, sizeof err);
        if (rc) die(1, "kv_pool_attach_fd: %s (%s)", err, kv_strerror(rc));
        uint64_t slabs = kv_pool_header(p)->n_slabs;
        if (slabs == want_slabs) {
            *capacity = slabs * per_slab;
            *fd_out = fd;
            return p;
        }
        kv_pool_detach(p);
        close(fd);
        size = slabs < want_slabs ? size + (want_slabs - slabs) * kSlab
                                  : size - (slabs - want_slabs) * kSlab;
    }
    die(1, "could not size a pool to %" PRIu64 " slabs", want_slabs);
}

Result replay_pool(kv_pool *p, const Trace &t, const TierSpec &ts) {
    kv_manifest m;
    kv_manifest_init(&m, "kvsim", uint32_t(t.block_tokens));
    uint32_t ns;
    if (int rc = kv_ns_register(p, &m, &ns, nullptr)) die(1, "kv_ns_register: %s", kv_strerror(rc));
    std::vector<uint8_t> buf(kBlock, 0x5a);
    std::vector<kv_key> keys;
    std::vector<kv_view> views;
    kv_stats before{};
    kv_pool_stats(p, &before);
    Result r;
    EngineTier tier = ts.make();
    for (const Request &q : t.reqs) {
        const size_t g = tier.begin(q); // held by the engine: not asked for
        keys.resize(q.ids.size());
        views.resize(q.ids.size());
        for (size_t i = 0; i < q.ids.size(); i++)
            keys[i] = key_of(q.ids[i]);
        // An engine pins what it matched while it prefills the rest; the
        // model does not pin, so release at once (the reads refreshed them).
        int mt = 0;
        if (g < q.ids.size()) {
            mt = kv_match_prefix(p, ns, keys.data() + g, keys.size() - g, KV_MATCH_F_PIN,
                                 views.data());
            if (mt < 0) die(1, "kv_match_prefix: %s", kv_strerror(mt));
        }
        for (int i = 0; i < mt; i++)
            kv_release(p, &views[size_t(i)]);
        r.requested += q.ids.size() - g;
        r.served += uint64_t(mt);
        for (size_t i = g + size_t(mt); i < q.ids.size(); i++) {
            kv_put_opts o{};
            o.struct_size = sizeof o;
            o.meta.priority = i < q.shared ? 1 : 0;
            o.meta.tokens = uint32_t(t.block_tokens);
            if (i) {
                o.flags = KV_PUT_F_PARENT;
                o.parent = keys[i - 1];
            }
            memcpy(buf.data(), &q.ids[i], 8);
            int rc = kv_put_ex(p, ns, &keys[i], buf.data(), buf.size(), &o);
            if (rc < 0) die(1, "kv_put_ex: %s", kv_strerror(rc));
            if (rc == 0) r.puts++;
        }
        tier.end(q);
    }
    kv_stats after{};
    kv_pool_stats(p, &after);
    r.evictions = after.evictions - before.evictions;
    return r;
}

// ---- run ---------------------------------------------------------------------------

struct Row {
    std::string policy;
    uint64_t pct, blocks;
    Result model, pool;
    bool has_pool = false;
};

std::vector<std::string> split(const std::string &s) {
    std::vector<std::string> out;
    size_t a = 0;
    while (a <= s.size()) {
        size_t b = s.find(',', a);
        if (b == std::string::npos) b = s.size();
        out.push_back(s.substr(a, b - a));
        a = b + 1;
    }
    return out;
}

void plot(const std::string &png, const Trace &t, const std::vector<Row> &rows, bool with_pool) {
    char dir[] = "/tmp/kvsim-plot-XXXXXX";
    if (!mkdtemp(dir)) die(1, "mkdtemp: %s", strerror(errno));
    std::string data = std::string(dir) + "/data", script = std::string(dir) + "/plot.gp";
    FILE *d = fopen(data.c_str(), "w");
    std::vector<std::string> policies;
    for (const Row &r : rows)
        if (std::find(policies.begin(), policies.end(), r.policy) == policies.end())
            policies.push_back(r.policy);
    for (const std::string &pol : policies) {
        fprintf(d, "\"%s\"\n", pol.c_str());
        for (const Row &r : rows)
            if (r.policy == pol)
                fprintf(d, "%" PRIu64 " %.4f %.4f\n", r.pct, 100 * r.model.hit_ratio(),
                        r.has_pool ? 100 * r.pool.hit_ratio() : NAN);
        fprintf(d, "\n\n");
    }
    fclose(d);
    FILE *s = fopen(script.c_str(), "w");
    fprintf(s,
            "set terminal pngcairo size 900,600 noenhanced\nset output '%s'\n"
            "set title 'kvsim: %s trace, %zu requests, %" PRIu64 " distinct blocks'\n"
            "set xlabel 'cache size (%% of distinct blocks)'\nset ylabel 'block hit ratio (%%)'\n"
            "set key right bottom\nset grid\nset yrange [0:*]\n",
            png.c_str(), t.family.c_str(), t.reqs.size(), t.distinct);
    fprintf(s, "plot ");
    for (size_t i = 0; i < policies.size(); i++) {
        const bool bound = policies[i] == "opt"; // no pool has it
        fprintf(s, "%s'%s' index %zu using 1:2 with linespoints lw 2 lc %zu title '%s (%s)'",
                i ? ", " : "", data.c_str(), i, i + 1, policies[i].c_str(),
                bound ? "clairvoyant bound" : "exact model");
        if (with_pool && !bound)
            fprintf(s, ", '%s' index %zu using 1:3 with points pt 6 ps 2 lc %zu title '%s (pool)'",
                    data.c_str(), i, i + 1, policies[i].c_str());
    }
    fprintf(s, "\n");
    fclose(s);
    pid_t pid = fork();
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", script.c_str(), (char *)nullptr);
        fprintf(stderr, "kvsim: cannot run gnuplot: %s (Debian: apt-get install gnuplot-nox)\n",
                strerror(errno));
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    unlink(data.c_str());
    unlink(script.c_str());
    rmdir(dir);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die(1, "gnuplot failed (exit status %d); no plot written", WEXITSTATUS(st));
}

int cmd_run(int argc, char **argv) {
    std::string trace, policies = "all", sizes = "10,25,50,100", png;
    bool with_pool = false, json = false;
    TierSpec ts;
    double engine_pct = 5;
    for (int i = 2; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--pool") {
            with_pool = true;
            continue;
        }
        if (a == "--json") {
            json = true;
            continue;
        }
        if (i + 1 >= argc) die(2, "%s needs a value\n%s", a.c_str(), kUsage);
        std::string v = argv[++i];
        if (a == "--trace")
            trace = v;
        else if (a == "--policies")
            policies = v;
        else if (a == "--sizes")
            sizes = v;
        else if (a == "--plot")
            png = v;
        else if (a == "--engines")
            ts.engines = uint32_t(parse_u64(a, v, 0, 1024));
        else if (a == "--engine-size")
            engine_pct = parse_double(a, v, 0.01, 100);
        else if (a == "--seed")
            ts.seed = parse_u64(a, v, 0, UINT64_MAX);
        else
            die(2, "unknown option %s\n%s", a.c_str(), kUsage);
    }
    if (trace.empty()) die(2, "run needs --trace FILE\n%s", kUsage);
    std::vector<uint32_t> pols;
    for (const std::string &item : split(policies)) {
        // "all": the five policies a pool is created with by name (not
        // clock, the v1.0 default, nor the bound opt).
        for (const std::string &p :
             item == "all" ? split("lru,lfu,fifo,priority,prefix") : split(item)) {
            int v = p == "opt" ? int(kOpt) : kv_evict_policy_parse(p.c_str());
            if (v < 0)
                die(2,
                    "--policies: \"%s\": expected a list of all, clock, lru, lfu, fifo, priority, "
                    "prefix, opt",
                    p.c_str());
            if (std::find(pols.begin(), pols.end(), uint32_t(v)) == pols.end())
                pols.push_back(uint32_t(v));
        }
    }
    std::vector<uint64_t> pcts;
    for (const std::string &s : split(sizes))
        pcts.push_back(parse_u64("--sizes", s, 1, 1000));
    Trace t = read_trace(trace);
    if (ts.engines)
        ts.blocks = std::max<uint64_t>(1, uint64_t(double(t.distinct) * engine_pct / 100));

    std::vector<Row> rows;
    for (uint32_t pol : pols) {
        for (uint64_t pct : pcts) {
            Row row{pol == kOpt ? "opt" : kv_evict_policy_name(pol),
                    pct,
                    std::max<uint64_t>(1, t.distinct * pct / 100),
                    {},
                    {},
                    false};
            if (pol == kOpt) { // a bound, not a policy a pool has; sized as the others' pools are
                if (with_pool)
                    row.blocks =
                        (row.blocks + kBlocksPerSlab - 1) / kBlocksPerSlab * kBlocksPerSlab;
                row.model = opt_bound(t, ts, row.blocks);
                rows.push_back(row);
                continue;
            }
            if (with_pool) {
                int fd = -1;
                kv_pool *p = make_pool(pol, row.blocks, t.max_chain, &row.blocks, &fd);
                row.pool = replay_pool(p, t, ts);
                row.has_pool = true;
                kv_pool_detach(p);
                close(fd);
            }
            row.model = Model(pol, row.blocks).run(t, ts); // the pool's exact capacity
            rows.push_back(row);
        }
    }

    if (json) {
        printf("{\"trace\": \"%s\", \"family\": \"%s\", \"requests\": %zu, \"distinct_blocks\": "
               "%" PRIu64 ", \"block_tokens\": %" PRIu64
               ", \"engines\": %u, \"engine_blocks\": %" PRIu64 ", \"rows\": [",
               trace.c_str(), t.family.c_str(), t.reqs.size(), t.distinct, t.block_tokens,
               ts.engines, ts.blocks);
        for (size_t i = 0; i < rows.size(); i++) {
            const Row &r = rows[i];
            printf("%s\n  {\"policy\": \"%s\", \"size_pct\": %" PRIu64 ", \"blocks\": %" PRIu64
                   ", \"model\": {\"hit_ratio\": %.6f, \"tokens_saved\": %" PRIu64
                   ", \"evictions\": %" PRIu64 "}",
                   i ? "," : "", r.policy.c_str(), r.pct, r.blocks, r.model.hit_ratio(),
                   r.model.served * t.block_tokens, r.model.evictions);
            if (r.has_pool)
                printf(", \"pool\": {\"hit_ratio\": %.6f, \"tokens_saved\": %" PRIu64
                       ", \"evictions\": %" PRIu64 "}",
                       r.pool.hit_ratio(), r.pool.served * t.block_tokens, r.pool.evictions);
            printf("}");
        }
        printf("\n]}\n");
    } else {
        printf("trace %s: family %s, %zu requests, %" PRIu64 " distinct blocks, %" PRIu64
               " tokens per block\n",
               trace.c_str(), t.family.c_str(), t.reqs.size(), t.distinct, t.block_tokens);
        if (ts.engines)
            printf("engine tier: %u engines of %" PRIu64 " blocks each (seed %" PRIu64
                   "); hits count only the blocks asked of the cache\n",
                   ts.engines, ts.blocks, ts.seed);
        printf("\n%-9s %5s %8s  %9s %13s %10s", "policy", "size", "blocks", "model hit",
               "tokens saved", "evictions");
        if (with_pool)
            printf("  %9s %13s %10s %7s", "pool hit", "tokens saved", "evictions", "diff pp");
        printf("\n");
        for (const Row &r : rows) {
            printf("%-9s %4" PRIu64 "%% %8" PRIu64 "  %8.2f%% %13" PRIu64 " %10" PRIu64,
                   r.policy.c_str(), r.pct, r.blocks, 100 * r.model.hit_ratio(),
                   r.model.served * t.block_tokens, r.model.evictions);
            if (r.has_pool)
                printf("  %8.2f%% %13" PRIu64 " %10" PRIu64 " %+7.2f", 100 * r.pool.hit_ratio(),
                       r.pool.served * t.block_tokens, r.pool.evictions,
                       100 * (r.pool.hit_ratio() - r.model.hit_ratio()));
            printf("\n");
        }
    }
    if (!png.empty()) plot(png, t, rows, with_pool);
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 2) die(2, "missing command\n%s", kUsage);
    std::string cmd = argv[1];
    if (cmd == "gen") return cmd_gen(argc, argv);
    if (cmd == "run") return cmd_run(argc, argv);
    if (cmd == "--help" || cmd == "-h") {
        fputs(kUsage, stdout);
        return 0;
    }
    die(2, "unknown command \"%s\"\n%s", cmd.c_str(), kUsage);
}
