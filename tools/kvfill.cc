// SPDX-License-Identifier: MIT
//
// kvfill: put a deterministic set of blocks into a pool, or check that a
// pool holds exactly those bytes. Used by the persistence tests (fill, stop
// the daemon, start it, verify) and the snapshot benchmark (fill N GiB).
//
//   kvfill --pool PATH --bytes SIZE [--block SIZE] [--seed N] [--verify]
//
// Block i of seed s has key (s, i) in namespace "kvfill" and content that is
// a function of (s, i) only, so --verify needs nothing but the same
// arguments. Exit codes: 0 ok, 1 a block missing or wrong (each is printed),
// 2 bad arguments, 3 pool unusable.
#include "units.h"

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <kv/kv.h>
#include <string>
#include <vector>

namespace {

kv_key key_of(uint64_t seed, uint64_t i) {
    return kv_key{i * 0x9e3779b97f4a7c15ULL + seed, seed ^ (i << 17) ^ 0x6b766669ULL};
}

// Content: 8-byte words of a xorshift stream seeded by (seed, i).
void fill_block(uint8_t *p, uint64_t len, uint64_t seed, uint64_t i) {
    uint64_t x = (seed + 1) * 0x2545f4914f6cdd1dULL ^ (i + 1) * 0x9e3779b97f4a7c15ULL;
    uint64_t off = 0;
    for (; off + 8 <= len; off += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(p + off, &x, 8);
    }
    for (; off < len; off++)
        p[off] = uint8_t(x >> (8 * (off % 8)));
}

int usage(const char *why) {
    fprintf(
        stderr,
        "kvfill: %s\nusage: kvfill --pool PATH --bytes SIZE [--block SIZE] [--seed N] [--verify]\n",
        why);
    return 2;
}

} // namespace

int main(int argc, char **argv) {
    std::string path;
    uint64_t bytes = 0, block = 1 << 20, seed = 1;
    bool verify = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&](uint64_t *out, bool size) -> bool {
            if (i + 1 >= argc) return false;
            std::string v = argv[++i];
            if (size) {
                auto r = kv::detail::parse_size(v);
                if (!r) return false;
                *out = *r;
                return true;
            }
            if (v.empty() || v[0] < '0' || v[0] > '9')
                return false; // strtoull would take "-1" as 2^64-1
            char *end = nullptr;
            errno = 0;
            *out = strtoull(v.c_str(), &end, 10);
            return *end == 0 && errno == 0;
        };
        if (a == "--pool" && i + 1 < argc) {
            path = argv[++i];
        } else if (a == "--bytes") {
            if (!value(&bytes, true)) return usage("--bytes needs a size such as 512M");
        } else if (a == "--block") {
            if (!value(&block, true) || block == 0) return usage("--block needs a size such as 1M");
        } else if (a == "--seed") {
            if (!value(&seed, false)) return usage("--seed needs a number");
        } else if (a == "--verify") {
            verify = true;
        } else {
            return usage(("unknown argument \"" + a + "\"").c_str());
        }
    }
    if (path.empty() || bytes == 0) return usage("--pool and --bytes are required");

    char err[512] = "";
    kv_pool *pool = nullptr;
    if (int rc = kv_pool_attach(path.c_str(), 0, &pool, err, sizeof err); rc != 0) {
        fprintf(stderr, "kvfill: attach %s: %s\n", path.c_str(), err);
        return 3;
    }
    kv_manifest m;
    kv_manifest_init(&m, "kvfill", 16);
    uint32_t ns = 0;
    if (int rc = kv_ns_register(pool, &m, &ns, nullptr); rc != 0) {
        fprintf(stderr, "kvfill: namespace: %s\n", kv_strerror(rc));
        return 3;
    }
    kv_stats st0{};
    kv_pool_stats(pool, &st0);
    const uint64_t n = (bytes + block - 1) / block;
    std::vector<uint8_t> buf(block);
    uint64_t ok = 0, bad = 0, missing = 0, done_bytes = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < n; i++) {
        const uint64_t len = std::min(block, bytes - i * block);
        kv_key k = key_of(seed, i);
        fill_block(buf.data(), len, seed, i);
        if (!verify) {
            kv_meta meta{uint32_t(i % 1024), uint32_t(i % 7), i};
            int rc = kv_put(pool, ns, &k, buf.data(), len, &meta);
            if (rc < 0) {
                fprintf(stderr, "kvfill: put block %" PRIu64 ": %s\n", i, kv_strerror(rc));
                bad++;
                continue;
            }
            ok++;
            done_bytes += len;
            continue;
        }
        kv_view v;
        int rc = kv_get(pool, ns, &k, &v);
        if (rc != 0) {
            if (missing++ < 10)
                fprintf(stderr, "kvfill: block %" PRIu64 " missing: %s\n", i, kv_strerror(rc));
            continue;
        }
        bool good = v.length == len && memcmp(v.data, buf.data(), len) == 0 &&
                    kv_view_verify(&v) == 0 && v.meta.user_tag == i &&
                    v.meta.tokens == uint32_t(i % 1024) && v.meta.priority == uint32_t(i % 7);
        if (good) {
            ok++;
            done_bytes += len;
        } else if (bad++ < 10) {
            fprintf(stderr,
                    "kvfill: block %" PRIu64 " differs (length %" PRIu64 ", expected %" PRIu64
                    ")\n",
                    i, v.length, len);
        }
        kv_release(pool, &v);
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("%s %" PRIu64 " blocks, %s in %.2f s: %" PRIu64 " ok, %" PRIu64 " missing, %" PRIu64
           " wrong\n",
           verify ? "verified" : "filled", n, kv::detail::format_size(done_bytes).c_str(), s, ok,
           missing, bad);
    // A fill the pool could not hold evicts blocks it put earlier: the set
    // --verify would check is not in the pool, so say so and fail.
    kv_stats st1{};
    kv_pool_stats(pool, &st1);
    const uint64_t evicted = st1.evictions - st0.evictions;
    if (!verify && evicted)
        fprintf(stderr,
                "kvfill: the pool evicted %" PRIu64
                " blocks during the fill: %s does not hold %s\n",
                evicted, path.c_str(), kv::detail::format_size(bytes).c_str());
    kv_pool_detach(pool);
    return bad || missing || (!verify && evicted) ? 1 : 0;
}
