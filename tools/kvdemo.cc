// SPDX-License-Identifier: MIT
//
// kvdemo: several "inference engine" processes share one pool the way LLM
// servers would. Each serves multi-turn chats that start from one of a few
// shared system prompts; before "prefilling" a request it asks the pool for
// the longest cached prefix of the prompt's block chain (pinned, zero-copy),
// checks those blocks, and writes the blocks it had to compute straight into
// the pool (reserve + commit). It reports hit rate and prefill tokens saved.
//
// Usage: kvdemo [--pool PATH] [--create SIZE] [--clients N] [--requests N]
//               [--kill-one] [--hugepages] [--duration SECONDS [--report SECONDS]]
//
// --duration runs the clients until that many seconds have passed instead of
// for --requests requests each (the soak test, tests/soak/soak.sh); --report
// then prints a JSON line every that many seconds: elapsed time, requests
// and blocks written in the interval, hit rate, verify failures and errors
// so far, and each client's pid (to sample their memory).
#include "units.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <kv/kv.h>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

constexpr uint32_t kBlockTokens = 16;
constexpr uint64_t kBytesPerToken = 4096; // a small model: 64 KiB blocks
constexpr int kSystemPrompts = 4;
constexpr int kSystemTokens = 512;

struct Totals { // one per client, in a shared anonymous mapping
    std::atomic<uint64_t> requests, prompt_tokens, saved_tokens, blocks_hit, blocks_looked_up,
        blocks_written, bytes_written, verify_failures, errors;
};

[[noreturn]] void bad_value(const char *opt, const char *v, const char *want) {
    fprintf(stderr, "kvdemo: %s \"%s\": expected %s\n", opt, v, want);
    exit(2);
}

// "512M", "1.5G", "4096": as kvctl and kvpoold's config take sizes (units.h).
uint64_t parse_size(const char *opt, const char *s) {
    auto v = kv::detail::parse_size(s);
    if (!v) { // "size \"TEXT\": WHY": the option in place of "size"
        fprintf(stderr, "kvdemo: %s %s\n", opt, v.error().c_str() + 5);
        exit(2);
    }
    if (*v == 0) bad_value(opt, s, "a size above 0");
    return *v;
}

long parse_int(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        char want[64];
        snprintf(want, sizeof want, "a whole number from %ld to %ld", lo, hi);
        bad_value(opt, s, want);
    }
    return v;
}

double parse_seconds(const char *opt, const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v > 0) || v > 1e7) bad_value(opt, s, "a positive number of seconds");
    return v;
}

// Deterministic "KV data" of a block: every reader can check every byte.
void fill_block(uint8_t *dst, uint64_t len, const kv_key &k) {
    uint64_t x = k.lo ^ 0x9E3779B97F4A7C15ULL;
    for (uint64_t i = 0; i + 8 <= len; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(dst + i, &x, 8);
    }
}
bool check_block(const uint8_t *src, uint64_t len, const kv_key &k) {
    uint64_t x = k.lo ^ 0x9E3779B97F4A7C15ULL;
    for (uint64_t i = 0; i + 8 <= len; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (memcmp(src + i, &x, 8) != 0) return false;
    }
    return true;
}

bool past(std::chrono::steady_clock::time_point deadline) {
    return deadline != std::chrono::steady_clock::time_point{} &&
           std::chrono::steady_clock::now() >= deadline;
}

int run_client(const char *path, int id, int requests,
               std::chrono::steady_clock::time_point deadline, Totals *t) {
    char err[256] = "";
    kv_pool *p = nullptr;
    if (kv_pool_attach(path, 0, &p, err, sizeof err) < 0) {
        fprintf(stderr, "client %d: attach: %s\n", id, err);
        return 1;
    }
    kv_manifest m;
    kv_manifest_init(&m, "demo-llama-1b", kBlockTokens);
    uint32_t ns;
    uint64_t seed;
    if (kv_ns_register(p, &m, &ns, &seed) < 0) return 1;
    std::mt19937_64 rng(1000 + id);
    std::vector<std::vector<uint32_t>> system(kSystemPrompts);
    for (int s = 0; s < kSystemPrompts; s++) { // the same for every client
        std::mt19937 srng(s);
        for (int i = 0; i < kSystemTokens; i++)
            system[s].push_back(srng() % 32000);
    }
    const uint64_t block_bytes = kBlockTokens * kBytesPerToken;
    std::vector<kv_key> keys;
    std::vector<kv_view> views;
    std::vector<uint32_t> chat;
    int turns_left = 0;
    for (int r = 0;
         deadline != std::chrono::steady_clock::time_point{} ? !past(deadline) : r < requests;
         r++) {
        if (turns_left == 0) { // a new conversation on a shared system prompt
            chat = system[rng() % kSystemPrompts];
            turns_left = 2 + int(rng() % 6);
        }
        for (int i = 0, n = 32 + int(rng() % 96); i < n; i++)
            chat.push_back(rng() % 32000); // user turn
        turns_left--;
        keys.resize(chat.size() / kBlockTokens);
        size_t nk =
            kv_hash_chain(seed, chat.data(), chat.size(), kBlockTokens, keys.data(), keys.size());
        views.resize(nk);
        int hit = kv_match_prefix(p, ns, keys.data(), nk, KV_MATCH_F_PIN, views.data());
        if (hit < 0) {
            t->errors++;
            continue;
        }
        for (int i = 0; i < hit; i++) { // "load" the cached KV: check it
            if (kv_view_verify(&views[i]) != 0 ||
                !check_block(static_cast<const uint8_t *>(views[i].data), views[i].length, keys[i]))
                t->verify_failures++;
        }
        for (size_t i = size_t(hit); i < nk; i++) { // "prefill" the rest into the pool
            kv_reservation res;
            kv_meta meta{kBlockTokens, 0, uint64_t(id)};
            int rc = kv_reserve(p, ns, &keys[i], block_bytes, &meta, &res);
            if (rc == KV_DEDUP || rc == -EBUSY) continue; // another engine computed it meanwhile
            if (rc < 0) {
                t->errors++;
                break;
            }
            fill_block(static_cast<uint8_t *>(res.data), block_bytes, keys[i]);
            if (kv_commit(p, &res, 0, 0) == 0) {
                t->blocks_written++;
                t->bytes_written += block_bytes;
            }
        }
        for (int i = 0; i < hit; i++)
            kv_release(p, &views[i]);
        for (int i = 0, n = 16 + int(rng() % 64); i < n; i++)
            chat.push_back(rng() % 32000); // assistant turn
        t->requests++;
        t->prompt_tokens += nk * kBlockTokens;
        t->saved_tokens += uint64_t(hit) * kBlockTokens;
        t->blocks_hit += uint64_t(hit);
        t->blocks_looked_up += nk;
    }
    kv_pool_detach(p);
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    std::string path = "/dev/shm/kvpool-demo";
    uint64_t create = 0;
    int clients = 4, requests = 400;
    double duration = 0, report = 0;
    bool kill_one = false, huge = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> const char * {
            if (i + 1 >= argc) {
                fprintf(stderr, "kvdemo: %s needs a value\n", a.c_str());
                exit(2);
            }
            return argv[++i];
        };
        if (a == "--pool")
            path = next();
        else if (a == "--create")
            create = parse_size("--create", next());
        else if (a == "--clients")
            clients = int(parse_int("--clients", next(), 1, 64));
        else if (a == "--requests")
            requests = int(parse_int("--requests", next(), 1, 1L << 30));
        else if (a == "--kill-one")
            kill_one = true;
        else if (a == "--hugepages")
            huge = true;
        else if (a == "--duration")
            duration = parse_seconds("--duration", next());
        else if (a == "--report")
            report = parse_seconds("--report", next());
        else {
            fprintf(stderr, "usage: kvdemo [--pool PATH] [--create SIZE] [--clients N] [--requests "
                            "N] [--kill-one] "
                            "[--hugepages] [--duration SECONDS [--report SECONDS]]\n");
            return 2;
        }
    }
    if (clients < 1 || clients > 64 || requests < 1) {
        fprintf(stderr, "kvdemo: --clients must be 1..64 and --requests positive\n");
        return 2;
    }
    if (duration < 0 || report < 0 || (report > 0 && duration == 0)) {
        fprintf(stderr,
                "kvdemo: --duration must be positive seconds, and --report needs --duration\n");
        return 2;
    }
    char err[256] = "";
    if (create) {
        kv_create_opts o;
        kv_create_opts_init(&o, create);
        o.hugepages = huge ? KV_HUGEPAGES_PREFER : KV_HUGEPAGES_NEVER;
        o.avg_block_size = kBlockTokens * kBytesPerToken;
        if (int rc = kv_pool_create(path.c_str(), &o, err, sizeof err); rc == -EEXIST) {
            fprintf(stderr, "kvdemo: %s exists: using it as it is\n", path.c_str());
        } else if (rc < 0) {
            fprintf(stderr, "kvdemo: create %s: %s\n", path.c_str(), err);
            return 1;
        }
    }
    auto *totals =
        static_cast<Totals *>(mmap(nullptr, sizeof(Totals) * clients, PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    if (totals == MAP_FAILED) return 1;
    new (totals) Totals[clients]();
    auto t0 = std::chrono::steady_clock::now();
    const auto deadline =
        duration > 0 ? t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                std::chrono::duration<double>(duration))
                     : std::chrono::steady_clock::time_point{};
    std::vector<pid_t> pids;
    for (int c = 0; c < clients; c++) {
        pid_t pid = fork();
        if (pid == 0) _exit(run_client(path.c_str(), c, requests, deadline, &totals[c]));
        pids.push_back(pid);
    }
    if (report > 0) { // one JSON line per interval until the deadline
        uint64_t last_req = 0, last_written = 0;
        for (auto next = t0;;) {
            next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                std::chrono::duration<double>(report));
            if (next > deadline) break;
            std::this_thread::sleep_until(next);
            uint64_t req = 0, written = 0, hit = 0, looked = 0, vf = 0, errs = 0;
            for (int c = 0; c < clients; c++) {
                req += totals[c].requests, written += totals[c].blocks_written,
                    hit += totals[c].blocks_hit;
                looked += totals[c].blocks_looked_up, vf += totals[c].verify_failures,
                    errs += totals[c].errors;
            }
            std::string pid_list;
            for (pid_t pid : pids) {
                if (!pid_list.empty()) pid_list += ',';
                pid_list += std::to_string(pid);
            }
            printf("{\"t\": %.1f, \"requests\": %" PRIu64
                   ", \"req_per_s\": %.1f, \"blocks_written\": %" PRIu64
                   ", \"hit_rate\": %.4f, \"verify_failures\": %" PRIu64 ", \"errors\": %" PRIu64
                   ", \"client_pids\": [%s]}\n",
                   std::chrono::duration<double>(next - t0).count(), req - last_req,
                   double(req - last_req) / report, written - last_written,
                   looked ? double(hit) / double(looked) : 0.0, vf, errs, pid_list.c_str());
            fflush(stdout);
            last_req = req, last_written = written;
        }
    }
    int failed = 0;
    if (kill_one && clients > 1) { // an engine crashes mid-request: its pins must not leak
        usleep(200000);
        kill(pids.back(), SIGKILL);
        printf("killed client %d (pid %d) mid-run\n", clients - 1, pids.back());
    }
    for (size_t c = 0; c < pids.size(); c++) {
        int st;
        waitpid(pids[c], &st, 0);
        bool killed = kill_one && c + 1 == pids.size() && WIFSIGNALED(st);
        if (!killed && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) failed++;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    kv_pool *p = nullptr;
    if (kv_pool_attach(path.c_str(), 0, &p, err, sizeof err) < 0) {
        fprintf(stderr, "kvdemo: attach: %s\n", err);
        return 1;
    }
    kv_reap(p);
    Totals sum{};
    for (int c = 0; c < clients; c++) {
        sum.requests += totals[c].requests;
        sum.prompt_tokens += totals[c].prompt_tokens;
        sum.saved_tokens += totals[c].saved_tokens;
        sum.blocks_hit += totals[c].blocks_hit;
        sum.blocks_looked_up += totals[c].blocks_looked_up;
        sum.blocks_written += totals[c].blocks_written;
        sum.bytes_written += totals[c].bytes_written;
        sum.verify_failures += totals[c].verify_failures;
        sum.errors += totals[c].errors;
    }
    kv_stats st;
    kv_usage u;
    kv_pool_stats(p, &st);
    kv_pool_usage(p, &u);
    const kv_region_header *h = kv_pool_header(p);
    printf("pool %s: %.0f MiB data, page size %" PRIu64 " KiB, %u entries\n", path.c_str(),
           double(h->data_len) / (1 << 20), h->page_size >> 10, h->n_entries);
    printf("%d clients, %" PRIu64 " requests in %.2f s (%.0f req/s)\n", clients,
           sum.requests.load(), secs, double(sum.requests) / secs);
    printf("prefix blocks looked up %" PRIu64 ", hit %" PRIu64 " -> hit rate %.1f%%\n",
           sum.blocks_looked_up.load(), sum.blocks_hit.load(),
           100.0 * double(sum.blocks_hit) /
               double(sum.blocks_looked_up ? sum.blocks_looked_up.load() : 1));
    printf("prefill tokens saved %" PRIu64 " of %" PRIu64 " (%.1f%%)\n", sum.saved_tokens.load(),
           sum.prompt_tokens.load(),
           100.0 * double(sum.saved_tokens) /
               double(sum.prompt_tokens ? sum.prompt_tokens.load() : 1));
    printf("blocks written in place %" PRIu64 " (%.1f MiB), evictions %" PRIu64 ", dedups %" PRIu64
           "\n",
           sum.blocks_written.load(), double(sum.bytes_written) / (1 << 20), st.evictions,
           st.dedups);
    printf("after the run: %" PRIu64 " blocks committed, pins %" PRIu64 ", leaked blocks %" PRIu64
           ", index errors %" PRIu64 ", verify failures %" PRIu64 ", errors %" PRIu64 "\n",
           u.entries_committed, u.pins, u.orphan_blocks, u.bad_links + u.unreachable,
           sum.verify_failures.load(), sum.errors.load());
    kv_pool_detach(p);
    bool ok = failed == 0 && sum.verify_failures == 0 && sum.errors == 0 && u.pins == 0 &&
              u.orphan_blocks == 0 && u.bad_links == 0 && u.unreachable == 0;
    printf("%s\n", ok ? "demo: OK" : "demo: FAILED");
    return ok ? 0 : 1;
}
