// SPDX-License-Identifier: MIT
//
// Encrypted snapshots against plain ones, in one run of one binary: the
// snapshot engine (daemon/snapshot.h) persists one pool to a plain file and
// to an encrypted one (Options::keyring), alternately, and restores each
// into one prefaulted pool (emptied between restores), alternately, so both
// meet the same state of the machine and the disk. Reports the median of
// each, the ratios encrypted / plain, and the single-thread AES-256-GCM
// rate of crypto::Aead over 1 MiB buffers (the same code path, for the
// ceiling next to `openssl speed -evp aes-256-gcm`).
//
// Persists are measured over the spare (steady state: Options::recycle_spare
// after two warm-up persists of each kind), as the daemon runs them, and
// restores after a warm-up restore of each kind into the same pool.
//
// Usage: bench_snapshot_crypto [--data SIZE] [--block SIZE] [--dir DIR]
//                              [--reps N] [--hugepages never|prefer|require]
//                              [--json FILE]
// SIZE: bytes with an optional K, M or G suffix. Defaults: 4G of 1M blocks
// in a pool of data * 5/4, /var/tmp, 3 repetitions, hugepages prefer.
// Every pool is a memfd and every file is removed on exit.
#include "keyring.h"
#include "snapshot.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <kv/kv.h>
#include <string>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace snap = kv::daemon::snapshot;

namespace {

[[noreturn]] void die(const std::string &what) {
    fprintf(stderr, "bench_snapshot_crypto: %s\n", what.c_str());
    exit(1);
}

uint64_t parse_size(const char *s) {
    char *end = nullptr;
    uint64_t v = strtoull(s, &end, 10);
    switch (*end) {
    case 'G':
        v <<= 10;
        [[fallthrough]];
    case 'M':
        v <<= 10;
        [[fallthrough]];
    case 'K':
        v <<= 10;
        break;
    case 0:
        break;
    default:
        die(std::string("bad size ") + s);
    }
    return v;
}

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// User + system time of every thread of this process: with the wall time
// it tells whether a run was bounded by the CPU or by the disk.
double cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto s = [](const timeval &tv) { return double(tv.tv_sec) + double(tv.tv_usec) * 1e-6; };
    return s(ru.ru_utime) + s(ru.ru_stime);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Pool {
    kv_pool *p = nullptr;
    int fd = -1;
    uint32_t ns = 0;
};

Pool make_pool(uint64_t size, uint32_t hugepages, bool prefault) {
    Pool pl;
    kv_create_opts o;
    kv_create_opts_init(&o, size);
    o.hugepages = hugepages;
    o.avg_block_size = 1 << 20;
    if (prefault) o.flags |= KV_CREATE_F_PREFAULT;
    char err[256] = "";
    if (kv_pool_create_memfd("bench-snapshot-crypto", &o, &pl.fd, err, sizeof err) != 0 ||
        kv_pool_attach_fd(pl.fd, 0, &pl.p, err, sizeof err) != 0)
        die(std::string("pool: ") + err);
    kv_manifest m;
    kv_manifest_init(&m, "bench-model", 16);
    if (kv_ns_register(pl.p, &m, &pl.ns, nullptr) != 0) die("namespace");
    return pl;
}

void empty_pool(Pool &pl) {
    std::vector<kv_entry_info> rows(1024);
    uint64_t cursor = 0;
    while (cursor < kv_pool_header(pl.p)->n_entries) {
        int k = kv_pool_entries(pl.p, &cursor, rows.data(), rows.size());
        if (k < 0) die("entries");
        for (int i = 0; i < k; i++)
            if (rows[i].state == KV_ENTRY_COMMITTED) kv_remove(pl.p, rows[i].ns, &rows[i].key);
    }
}

} // namespace

int main(int argc, char **argv) {
    uint64_t data = 4ULL << 30, block = 1 << 20;
    std::string dir = "/var/tmp", json;
    int reps = 3;
    uint32_t huge = KV_HUGEPAGES_PREFER;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (!v) die("missing value after " + a);
        if (a == "--data")
            data = parse_size(v);
        else if (a == "--block")
            block = parse_size(v);
        else if (a == "--dir")
            dir = v;
        else if (a == "--reps")
            reps = atoi(v);
        else if (a == "--json")
            json = v;
        else if (a == "--hugepages")
            huge = !strcmp(v, "never")     ? KV_HUGEPAGES_NEVER
                   : !strcmp(v, "require") ? KV_HUGEPAGES_REQUIRE
                                           : KV_HUGEPAGES_PREFER;
        else
            die("unknown option " + a);
        i++;
    }
    const uint64_t pool_size = data / 4 * 5;
    const std::string base = dir + "/kvpool-bench-crypto-" + std::to_string(getpid());
    const std::string plain = base + "-plain.kvsnap", sealed = base + "-sealed.kvsnap";
    const std::string keyfile = base + ".key";
    struct Cleanup {
        std::vector<std::string> paths;
        ~Cleanup() {
            for (const std::string &p : paths)
                for (const char *sfx : {"", ".tmp", ".spare"})
                    unlink((p + sfx).c_str());
        }
    } cleanup{{plain, sealed, keyfile}};

    // The pool key: a key file as [pool.encryption] would name it.
    {
        int fd = open(keyfile.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        uint8_t key[32];
        for (int i = 0; i < 32; i++)
            key[i] = uint8_t(i * 37 + 11);
        if (fd < 0 || write(fd, key, sizeof key) != ssize_t(sizeof key)) die("key file");
        close(fd);
    }
    kv::daemon::EncryptionConfig ec;
    ec.enabled = true;
    ec.key = "bench-1";
    ec.keys.push_back({"bench-1", keyfile, ""});
    auto kr = kv::daemon::load_keyring(ec);
    if (!kr) die("keyring: " + kr.error());

    // The ceiling: one thread of crypto::Aead over 1 MiB buffers.
    double gcm_gib_s = 0;
    {
        std::vector<uint8_t> in(1 << 20, 0x5a), out(1 << 20);
        kv::daemon::crypto::Aead aead;
        kv::daemon::crypto::Tag tag;
        const auto &key = kr->current();
        const double t0 = now();
        uint64_t done = 0;
        while (now() - t0 < 2.0) {
            for (int i = 0; i < 64; i++)
                aead.seal(key, kv::daemon::crypto::make_iv(3, 0, done + uint64_t(i)), {}, in.data(),
                          out.data(), in.size(), tag);
            done += 64;
        }
        gcm_gib_s = double(done) / 1024.0 / (now() - t0);
    }
    printf("AES-256-GCM, one thread (crypto::Aead, 1 MiB): %.2f GiB/s\n", gcm_gib_s);

    printf("filling a %.1f GiB pool with %.1f GiB of %llu KiB blocks...\n",
           double(pool_size) / double(1ULL << 30), double(data) / double(1ULL << 30),
           (unsigned long long)(block >> 10));
    Pool src = make_pool(pool_size, huge, false);
    {
        std::vector<uint64_t> buf(block / 8);
        uint64_t s = 0x9e3779b97f4a7c15ULL;
        for (uint64_t i = 0; i < data / block; i++) {
            for (uint64_t &w : buf) { // xorshift: incompressible, cheap
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                w = s;
            }
            const kv_key k{i + 1, 0xbe9c4};
            int rc = kv_put(src.p, src.ns, &k, buf.data(), block, nullptr);
            if (rc != 0) die("put: " + std::string(kv_strerror(rc)));
        }
    }
    Pool dst = make_pool(pool_size, huge, true);

    auto opts = [&](bool enc) {
        snap::Options o;
        o.keyring = enc ? &*kr : nullptr;
        return o;
    };
    // Two warm-up persists of each: the second leaves a spare to write over.
    for (int w = 0; w < 2; w++)
        for (bool enc : {false, true}) {
            auto r = snap::persist(src.p, "bench", enc ? sealed : plain, opts(enc));
            if (!r) die(r.error().message);
        }
    // And a warm-up restore of each: the first restore into the pool pays
    // for pinning its pages (fixed buffers) and for its entry table.
    for (bool enc : {false, true}) {
        empty_pool(dst);
        auto r = snap::restore(dst.p, enc ? sealed : plain, opts(enc));
        if (!r) die(r.error().message);
    }

    std::vector<double> persist[2], restore[2];
    uint64_t file_bytes[2] = {}, blocks[2] = {};
    for (int rep = 0; rep < reps; rep++) {
        for (bool enc : {rep % 2 == 1, rep % 2 == 0}) { // ABBA: neither always goes first
            const double t0 = now(), c0 = cpu_seconds();
            auto r = snap::persist(src.p, "bench", enc ? sealed : plain, opts(enc));
            const double t = now() - t0, c = cpu_seconds() - c0;
            if (!r) die(r.error().message);
            persist[enc].push_back(double(r->file_bytes) / t / double(1ULL << 30));
            file_bytes[enc] = r->file_bytes;
            printf("persist %-9s %.2f s  %.2f GiB/s  cpu %.2f s  (%s)\n",
                   enc ? "encrypted" : "plain", t, persist[enc].back(), c,
                   r->fixed_buffers ? "fixed buffers" : "plain buffers");
        }
        for (bool enc : {rep % 2 == 1, rep % 2 == 0}) {
            empty_pool(dst);
            const double t0 = now(), c0 = cpu_seconds();
            auto r = snap::restore(dst.p, enc ? sealed : plain, opts(enc));
            const double t = now() - t0, c = cpu_seconds() - c0;
            if (!r) die(r.error().message);
            if (r->dropped || r->blocks != data / block)
                die("restore dropped blocks: " + std::to_string(r->dropped));
            blocks[enc] = r->blocks;
            restore[enc].push_back(double(r->file_bytes) / t / double(1ULL << 30));
            printf("restore %-9s %.2f s  %.2f GiB/s  cpu %.2f s\n", enc ? "encrypted" : "plain", t,
                   restore[enc].back(), c);
        }
    }
    const double pp = median(persist[0]), pe = median(persist[1]);
    const double rp = median(restore[0]), re = median(restore[1]);
    printf("\nmedians of %d (file bytes / wall time):\n", reps);
    printf("  persist: plain %.2f GiB/s, encrypted %.2f GiB/s: %.2fx\n", pp, pe, pe / pp);
    printf("  restore: plain %.2f GiB/s, encrypted %.2f GiB/s: %.2fx\n", rp, re, re / rp);
    if (!json.empty()) {
        FILE *f = fopen(json.c_str(), "w");
        if (!f) die("open " + json);
        fprintf(f,
                "{\"data\": %llu, \"block\": %llu, \"reps\": %d, \"gcm_one_thread_gib_s\": %.3f,\n"
                " \"file_bytes\": {\"plain\": %llu, \"encrypted\": %llu},\n"
                " \"blocks\": {\"plain\": %llu, \"encrypted\": %llu},\n"
                " \"persist_gib_s\": {\"plain\": %.3f, \"encrypted\": %.3f, \"ratio\": %.3f},\n"
                " \"restore_gib_s\": {\"plain\": %.3f, \"encrypted\": %.3f, \"ratio\": %.3f}}\n",
                (unsigned long long)data, (unsigned long long)block, reps, gcm_gib_s,
                (unsigned long long)file_bytes[0], (unsigned long long)file_bytes[1],
                (unsigned long long)blocks[0], (unsigned long long)blocks[1], pp, pe, pe / pp, rp,
                re, re / rp);
        fclose(f);
    }
    kv_pool_detach(src.p);
    kv_pool_detach(dst.p);
    close(src.fd);
    close(dst.fd);
    return 0;
}
