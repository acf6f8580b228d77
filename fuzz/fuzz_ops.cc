// SPDX-License-Identifier: MIT
//
// Differential target: a random sequence of put / reserve / commit / abort
// / get / release / remove / contains / match_prefix / evict on a fresh
// small pool (2 MiB, 64 KiB slabs, 16 pins) and on a reference model (a map
// of key -> bytes, the reservations and pins this client holds). Every
// result is compared: return codes (0, KV_DEDUP, -ENOENT, -EBUSY,
// -EMSGSIZE, -ENOBUFS, -EINVAL), the bytes and metadata of views,
// match_prefix counts. Pinned blocks must never be evicted or change.
//
// Eviction (a put into a full pool, or kv_evict_bytes) makes presence
// non-deterministic for unpinned blocks, so after every operation the model
// is resynchronized: when the pool's eviction counter moved by d, exactly d
// committed, unpinned model keys must have disappeared (and pinned ones
// never); kv_evict_bytes must return the sum of their lengths, and when it
// frees less than asked, every unpinned block must be gone.
// At the end every pin and reservation is dropped, every model key is read
// back, and kv_pool_usage must match the model exactly (entries, bytes, no
// reserved, dead or orphaned blocks, no index damage).
//
// Input: a list of operations, each an opcode byte followed by its
// arguments (see decode below); a truncated last operation is ignored.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <kv/kv.h>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

constexpr uint64_t kPoolSize = 2 << 20;
constexpr uint64_t kSlab = 64 << 10;
constexpr uint32_t kPins = 16;
constexpr uint32_t kKeys = 24;  // key space
constexpr size_t kMaxOps = 512; // per input
// FUZZ_OPS_TRACE=1 in the environment: print the model after each operation.
const bool g_trace = getenv("FUZZ_OPS_TRACE") != nullptr;

[[noreturn]] void fail(const std::string &what) {
    fprintf(stderr, "fuzz_ops: pool and model disagree: %s\n", what.c_str());
    abort();
}

void expect_rc(const char *op, uint32_t key, int got, int want) {
    if (got != want)
        fail(std::string(op) + " key " + std::to_string(key) + ": returned " + std::to_string(got) +
             " (" + kv_strerror(got) + "), model expects " + std::to_string(want) + " (" +
             kv_strerror(want) + ")");
}

kv_key key_of(uint32_t i) {
    return kv_key{i * 0x9e3779b97f4a7c15ULL + 7, ~uint64_t(i) ^ 0xc2b2ae3d27d4eb4fULL};
}

uint64_t length_of(uint8_t sel) {
    switch (sel & 15) {
    case 0:
        return 0; // -EMSGSIZE
    case 1:
        return kSlab + 1; // -EMSGSIZE
    case 2:
        return kSlab; // the largest block
    case 3:
        return 1;
    case 4:
        return 4096;
    case 5:
        return 4097;
    case 6:
        return 3 * 4096 - 5;
    case 7:
        return 32 << 10;
    default:
        return 1 + uint64_t(sel) * 37; // 300..9400: small classes
    }
}

std::vector<uint8_t> bytes_of(uint64_t len, uint8_t seed) {
    std::vector<uint8_t> v(len);
    uint32_t x = seed * 2654435761u + 1;
    for (auto &b : v) {
        x = x * 1103515245u + 12345u;
        b = uint8_t(x >> 24);
    }
    return v;
}

struct Block {
    std::vector<uint8_t> data;
    kv_meta meta;
    bool own_checksum = false; // committed with KV_COMMIT_F_CHECKSUM: checksum below, not computed
    uint64_t checksum = 0;
    uint64_t inc = 0; // incarnation: a key removed and stored again is another block
};

struct Pin {
    kv_view view;
    uint32_t key;
    Block expect; // what the view must show until released
    bool released = false;
};

struct Res {
    kv_reservation r;
    uint32_t key;
    std::vector<uint8_t> data;
    kv_meta meta;
    bool live = true;
};

struct Run {
    kv_pool *p = nullptr;
    int fd = -1;
    uint32_t ns = 0;
    std::map<uint32_t, Block> committed; // model: key -> block
    std::map<uint32_t, size_t> reserved; // model: key -> index in res
    std::vector<Pin> pins;               // every pin taken (released ones stay, for stale releases)
    std::vector<Res> res;   // every reservation made (dead ones stay, for stale commits)
    uint64_t evictions = 0; // pool counter last seen
    uint32_t pins_held = 0;
    uint64_t next_inc = 1;

    ~Run() {
        if (p) kv_pool_detach(p);
        if (fd >= 0) close(fd);
    }

    uint32_t pins_of(uint32_t key) const {
        uint32_t n = 0;
        auto it = committed.find(key);
        if (it == committed.end()) return 0;
        for (const Pin &pn : pins)
            n += !pn.released && pn.key == key && pn.expect.inc == it->second.inc;
        return n;
    }

    void check_view(const kv_view &v, const Block &b, const char *what, uint32_t key) const {
        if (v.length != b.data.size() || memcmp(v.data, b.data.data(), b.data.size()) != 0)
            fail(std::string(what) + " key " + std::to_string(key) +
                 ": view bytes differ from the model");
        if (v.meta.tokens != b.meta.tokens || v.meta.priority != b.meta.priority ||
            v.meta.user_tag != b.meta.user_tag)
            fail(std::string(what) + " key " + std::to_string(key) + ": view metadata differs");
        const int vr = kv_view_verify(&v);
        if (b.own_checksum) {
            if (v.checksum != b.checksum) fail(std::string(what) + ": caller's checksum not kept");
        } else if (vr != 0) {
            fail(std::string(what) + " key " + std::to_string(key) + ": checksum does not verify");
        }
        const auto *lo = reinterpret_cast<const uint8_t *>(kv_pool_header(p));
        const auto *d = static_cast<const uint8_t *>(v.data);
        if (d < lo || d + v.length > lo + kv_pool_header(p)->region_size)
            fail("view outside the region");
    }

    uint64_t eviction_counter() {
        kv_stats st;
        if (kv_pool_stats(p, &st) != 0) fail("stats");
        return st.evictions;
    }

    // After any op: keys the pool evicted leave the model. Returns their bytes.
    uint64_t resync(const char *op) {
        const uint64_t now = eviction_counter();
        const uint64_t d = now - evictions;
        evictions = now;
        uint64_t gone = 0, bytes = 0;
        for (auto it = committed.begin(); it != committed.end();) {
            const kv_key k = key_of(it->first);
            const int c = kv_contains(p, ns, &k);
            if (c == 1) {
                ++it;
                continue;
            }
            if (c != 0) fail(std::string(op) + ": contains returned " + std::to_string(c));
            if (pins_of(it->first))
                fail(std::string(op) + ": pinned key " + std::to_string(it->first) + " evicted");
            if (d == 0)
                fail(std::string(op) + ": key " + std::to_string(it->first) +
                     " vanished without an eviction");
            gone++;
            bytes += it->second.data.size();
            it = committed.erase(it);
        }
        if (gone != d)
            fail(std::string(op) + ": eviction counter moved by " + std::to_string(d) + ", " +
                 std::to_string(gone) + " keys left");
        // Nothing the model lacks may be present (reserved keys are invisible).
        for (uint32_t i = 0; i < kKeys; i++) {
            const kv_key k = key_of(i);
            if (!committed.contains(i) && kv_contains(p, ns, &k) != 0)
                fail(std::string(op) + ": key " + std::to_string(i) +
                     " present in the pool, absent in the model");
        }
        for (const Pin &pn : pins)
            if (!pn.released) check_view(pn.view, pn.expect, "held pin", pn.key);
        return bytes;
    }

    // Expected code of put/reserve before space is considered.
    int admit(uint32_t key, uint64_t len) const {
        if (len == 0 || len > kSlab) return -EMSGSIZE;
        if (committed.contains(key)) return KV_DEDUP;
        if (reserved.contains(key)) return -EBUSY;
        return 0;
    }

    void op_put(uint32_t key, uint8_t lsel, uint8_t seed) {
        const uint64_t len = length_of(lsel);
        const auto data = bytes_of(len, seed);
        const kv_meta m{seed, uint32_t(lsel), uint64_t(key) << 8 | seed};
        const kv_key k = key_of(key);
        const int rc = kv_put(p, ns, &k, data.data(), len, &m);
        const int want = admit(key, len);
        if (want == 0 && rc == -ENOSPC) return; // everything else pinned or reserved
        expect_rc("put", key, rc, want);
        if (rc == 0) committed[key] = Block{data, m, false, 0, next_inc++};
    }

    void op_reserve(uint32_t key, uint8_t lsel, uint8_t seed) {
        const uint64_t len = length_of(lsel);
        const kv_meta m{seed, 7, uint64_t(key)};
        const kv_key k = key_of(key);
        kv_reservation r{};
        const int rc = kv_reserve(p, ns, &k, len, &m, &r);
        const int want = admit(key, len);
        if (want == 0 && rc == -ENOSPC) return;
        expect_rc("reserve", key, rc, want);
        if (rc != 0) return;
        if (r.length != len || !r.data) fail("reserve: reservation of the wrong length");
        auto data = bytes_of(len, seed);
        memcpy(r.data, data.data(), len);
        reserved[key] = res.size();
        res.push_back(Res{r, key, std::move(data), m, true});
    }

    void op_commit(uint8_t which, uint8_t flags) {
        if (res.empty()) return;
        Res &x = res[which % res.size()];
        const bool own = flags & 1;
        const uint64_t sum = own ? 0x1234567800000000ULL | which : 0;
        const int rc = kv_commit(p, &x.r, own ? KV_COMMIT_F_CHECKSUM : 0, sum);
        expect_rc("commit", x.key, rc, x.live ? 0 : -EINVAL);
        if (!x.live) return;
        x.live = false;
        reserved.erase(x.key);
        committed[x.key] = Block{x.data, x.meta, own, sum, next_inc++};
    }

    void op_abort(uint8_t which) {
        if (res.empty()) return;
        Res &x = res[which % res.size()];
        const int rc = kv_abort(p, &x.r);
        expect_rc("abort", x.key, rc, x.live ? 0 : -EINVAL);
        if (!x.live) return;
        x.live = false;
        reserved.erase(x.key);
    }

    void op_get(uint32_t key) {
        const kv_key k = key_of(key);
        kv_view v{};
        const int rc = kv_get(p, ns, &k, &v);
        auto it = committed.find(key);
        const int want = it == committed.end() ? -ENOENT : pins_held == kPins ? -ENOBUFS : 0;
        expect_rc("get", key, rc, want);
        if (rc != 0) return;
        check_view(v, it->second, "get", key);
        pins.push_back(Pin{v, key, it->second, false});
        pins_held++;
    }

    void op_release(uint8_t which) {
        if (pins.empty()) return;
        Pin &pn = pins[which % pins.size()];
        if (!pn.released) check_view(pn.view, pn.expect, "release", pn.key);
        kv_view v = pn.view;
        const int rc = kv_release(p, &v);
        expect_rc("release", pn.key, rc, pn.released ? -EINVAL : 0);
        if (!pn.released) {
            pn.released = true;
            pins_held--;
        }
    }

    void op_remove(uint32_t key) {
        const kv_key k = key_of(key);
        const int rc = kv_remove(p, ns, &k);
        const int want = committed.contains(key) ? 0 : reserved.contains(key) ? -EBUSY : -ENOENT;
        expect_rc("remove", key, rc, want);
        if (rc == 0) committed.erase(key);
    }

    void op_contains(uint32_t key) {
        const kv_key k = key_of(key);
        expect_rc("contains", key, kv_contains(p, ns, &k), committed.contains(key) ? 1 : 0);
    }

    void op_match(uint32_t start, uint8_t n, uint8_t step, bool pin) {
        std::vector<kv_key> chain;
        std::vector<uint32_t> ids;
        for (uint32_t i = 0; i < n % 20u; i++) {
            ids.push_back((start + i * (1u + step % 5u)) % kKeys);
            chain.push_back(key_of(ids.back()));
        }
        uint32_t m = 0;
        while (m < ids.size() && committed.contains(ids[m]))
            m++;
        std::vector<kv_view> views(chain.size());
        const int rc = kv_match_prefix(p, ns, chain.data(), chain.size(), pin ? KV_MATCH_F_PIN : 0,
                                       views.data());
        const int want = pin && pins_held + m > kPins ? -ENOBUFS : int(m);
        expect_rc(pin ? "match_prefix(pin)" : "match_prefix", start, rc, want);
        if (!pin || rc <= 0) return;
        for (uint32_t i = 0; i < m; i++) {
            const Block &b = committed.at(ids[i]);
            check_view(views[i], b, "match_prefix", ids[i]);
            pins.push_back(Pin{views[i], ids[i], b, false});
            pins_held++;
        }
    }

    void op_evict(uint8_t amount) {
        const uint64_t ask = uint64_t(amount) * 1024;
        const int64_t got = kv_evict_bytes(p, ask);
        if (got < 0) fail("evict_bytes: " + std::to_string(got));
        const uint64_t gone = resync("evict_bytes");
        if (uint64_t(got) != gone)
            fail("evict_bytes returned " + std::to_string(got) + ", the keys evicted held " +
                 std::to_string(gone));
        if (uint64_t(got) < ask)
            for (const auto &[key, b] : committed)
                if (!pins_of(key))
                    fail("evict_bytes freed less than asked but left unpinned key " +
                         std::to_string(key));
    }

    void op_wrong_ns(uint32_t key) {
        const kv_key k = key_of(key);
        const uint8_t byte = 1;
        expect_rc("put(unknown ns)", key, kv_put(p, ns + 1, &k, &byte, 1, nullptr), -ENOENT);
        kv_view v;
        expect_rc("get(unknown ns)", key, kv_get(p, ns + 1, &k, &v), -ENOENT);
    }

    void finish() {
        for (Pin &pn : pins)
            if (!pn.released) {
                check_view(pn.view, pn.expect, "final release", pn.key);
                expect_rc("final release", pn.key, kv_release(p, &pn.view), 0);
                pn.released = true;
            }
        pins_held = 0;
        for (Res &x : res)
            if (x.live) {
                expect_rc("final abort", x.key, kv_abort(p, &x.r), 0);
                x.live = false;
            }
        reserved.clear();
        resync("final");
        uint64_t bytes = 0;
        for (const auto &[key, b] : committed) {
            const kv_key k = key_of(key);
            kv_view v;
            expect_rc("final get", key, kv_get(p, ns, &k, &v), 0);
            check_view(v, b, "final get", key);
            expect_rc("final release", key, kv_release(p, &v), 0);
            bytes += b.data.size();
        }
        kv_usage u;
        if (kv_pool_usage(p, &u) != 0) fail("usage");
        auto eq = [](const char *what, uint64_t got, uint64_t want) {
            if (got != want)
                fail(std::string("usage.") + what + " is " + std::to_string(got) +
                     ", model: " + std::to_string(want));
        };
        eq("entries_committed", u.entries_committed, committed.size());
        eq("bytes_committed", u.bytes_committed, bytes);
        eq("entries_reserved", u.entries_reserved, 0);
        eq("entries_dead", u.entries_dead, 0);
        eq("pins", u.pins, 0);
        eq("journal_pins", u.journal_pins, 0);
        eq("orphan_blocks", u.orphan_blocks, 0);
        eq("bad_links", u.bad_links, 0);
        eq("unreachable", u.unreachable, 0);
        eq("blocks_used", u.blocks_used, committed.size());
    }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Run run;
    kv_create_opts o;
    kv_create_opts_init(&o, kPoolSize);
    o.hugepages = KV_HUGEPAGES_NEVER;
    o.slab_size = kSlab;
    o.avg_block_size = 8192;
    o.max_clients = 2;
    o.pins_per_client = kPins;
    o.max_namespaces = 2;
    char err[256] = "";
    if (kv_pool_create_memfd("fuzz-ops", &o, &run.fd, err, sizeof err) != 0 ||
        kv_pool_attach_fd(run.fd, 0, &run.p, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_ops: pool: %s\n", err);
        abort();
    }
    kv_manifest m;
    kv_manifest_init(&m, "fuzz-ops", 16);
    if (kv_ns_register(run.p, &m, &run.ns, nullptr) != 0) fail("ns_register");

    size_t i = 0, ops = 0;
    auto arg = [&](size_t k) { return data[i + k]; };
    while (i < size && ops++ < kMaxOps) {
        const uint8_t op = data[i] % 12;
        static constexpr size_t kArgs[12] = {3, 3, 2, 1, 1, 1, 1, 1, 3, 3, 1, 1};
        if (i + 1 + kArgs[op] > size) break;
        i++;
        const uint32_t key = arg(0) % kKeys;
        const char *name = "?";
        switch (op) {
        case 0:
            name = "put", run.op_put(key, arg(1), arg(2));
            break;
        case 1:
            name = "reserve", run.op_reserve(key, arg(1), arg(2));
            break;
        case 2:
            name = "commit", run.op_commit(arg(0), arg(1));
            break;
        case 3:
            name = "abort", run.op_abort(arg(0));
            break;
        case 4:
            name = "get", run.op_get(key);
            break;
        case 5:
            name = "release", run.op_release(arg(0));
            break;
        case 6:
            name = "remove", run.op_remove(key);
            break;
        case 7:
            name = "contains", run.op_contains(key);
            break;
        case 8:
            name = "match_prefix", run.op_match(key, arg(1), arg(2), false);
            break;
        case 9:
            name = "match_prefix(pin)", run.op_match(key, arg(1), arg(2), true);
            break;
        case 10:
            name = "evict", run.op_evict(arg(0));
            break;
        default:
            name = "unknown ns", run.op_wrong_ns(key);
            break;
        }
        i += kArgs[op];
        if (op != 10) run.resync(name);
        if (g_trace)
            fprintf(stderr, "%3zu %-18s key %2u: %zu committed, %zu reserved, %u pins\n", ops, name,
                    key, run.committed.size(), run.reserved.size(), run.pins_held);
    }
    run.finish();
    return 0;
}
