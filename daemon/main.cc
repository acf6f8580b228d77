// SPDX-License-Identifier: MIT
//
// kvpoold: creates or re-attaches the configured pools, then serves the
// control socket and runs housekeeping from one epoll loop until SIGTERM.
// Readiness, status and the watchdog go to systemd through sd_notify.
#include "backing.h"
#include "clock.h"
#include "config.h"
#include "control_server.h"
#include "detail.h"
#include "feed_drain.h"
#include "housekeeping.h"
#include "kv_events.h"
#include "log.h"
#include "metrics.h"
#include "pool_manager.h"
#include "pool_report.h"
#include "remote_tier.h"
#include "snapshot_jobs.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <grp.h>
#include <memory>
#include <numa.h>
#include <signal.h>
#include <string>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>
#include <vector>

using namespace kv::daemon;

namespace {

constexpr const char *kComp = "kvpoold";

void usage(FILE *f) {
    fprintf(f,
            "usage: kvpoold [--config PATH] [--check-config] [--reserve-hugepages] "
            "[--release-hugepages] "
            "[--version]\n"
            "  --config PATH          config file (default %s)\n"
            "  --check-config         parse the config, print a summary, exit 0 (valid) or 1\n"
            "  --reserve-hugepages    raise /proc/sys/vm/nr_hugepages to what the config's pools "
            "need, exit\n"
            "  --release-hugepages    lower it by the free pages --reserve-hugepages added, exit\n"
            "exit codes: 0 clean stop, 1 config or start-up error, 2 usage error\n",
            KVPOOL_DEFAULT_CONFIG);
}

// --check-config: what parsing cannot know but starting would refuse:
// groups that do not exist, NUMA nodes this machine does not have, and pool
// geometry libkv cannot lay out (a slab larger than the pool, too many
// clients for its size). Returns the first problem, or "". What kvpoold
// would start with but degraded (a missing admin group: it warns, and then
// only root may create pools) goes to *warnings instead, as kvpoold logs it.
std::string check_against_machine(const DaemonConfig &cfg, std::vector<std::string> *warnings) {
    auto group_exists = [](const std::string &g) {
        char buf[4096];
        struct group gr, *res = nullptr;
        return getgrnam_r(g.c_str(), &gr, buf, sizeof buf, &res) == 0 && res;
    };
    if (!group_exists(cfg.admin_group))
        warnings->push_back(
            "daemon.admin_group \"" + cfg.admin_group +
            "\": no such group on this machine; kvpoold would start, but only root could "
            "create pools, and pools without their own group would belong to group root");
    for (size_t i = 0; i < cfg.pools.size(); i++) {
        const PoolConfig &pc = cfg.pools[i];
        const std::string at = "pool[" + std::to_string(i) + "] (" + pc.name + ")";
        if (!pc.group.empty() && !group_exists(pc.group))
            return at + ".group \"" + pc.group + "\": no such group on this machine";
        if (pc.numa_node >= 0) {
            if (numa_available() < 0)
                return at + ".numa_node " + std::to_string(pc.numa_node) +
                       ": this machine has no NUMA support";
            if (pc.numa_node > numa_max_node())
                return at + ".numa_node " + std::to_string(pc.numa_node) +
                       ": this machine has nodes 0.." + std::to_string(numa_max_node());
        }
        kv_create_opts o;
        kv_create_opts_init(&o, pc.size);
        o.slab_size = pc.slab_size;
        o.avg_block_size = pc.avg_block_size;
        if (pc.max_clients) o.max_clients = pc.max_clients;
        o.max_entries = pc.max_entries;
        kv_region_header h{};
        char err[512] = "";
        // 4 KiB pages: the layout every pool falls back to (and the
        // smallest alignment; a hugepage layout only rounds up).
        if (kv::detail::layout_compute(o, 4096, &h, err, sizeof err) != 0) return at + ": " + err;
    }
    return "";
}

// The hugepages --reserve-hugepages added to vm.nr_hugepages, and that
// --release-hugepages (ExecStopPost=) gives back: kept in the state
// directory so that a stop lowers the sysctl by what the starts raised it,
// not by a guess, and no further (pages the operator reserved stay).
std::string reserved_record(const DaemonConfig &cfg) {
    return cfg.state_dir + "/hugepages-reserved";
}

uint64_t read_u64(const std::string &path) {
    uint64_t v = 0;
    std::ifstream f(path);
    f >> v;
    return f ? v : 0;
}

bool write_nr_hugepages(uint64_t v) {
    std::ofstream f("/proc/sys/vm/nr_hugepages");
    f << v << '\n';
    f.flush();
    return bool(f);
}

void write_record(const DaemonConfig &cfg, uint64_t pages) {
    const std::string path = reserved_record(cfg);
    if (pages == 0) {
        unlink(path.c_str());
        return;
    }
    mkdir(cfg.state_dir.c_str(), 0750);
    std::ofstream f(path, std::ios::trunc);
    f << pages << '\n';
    if (!f)
        KV_LOGW(kComp, "hugepages: cannot record %llu reserved pages in %s",
                (unsigned long long)pages, path.c_str());
}

int release_hugepages(const DaemonConfig &cfg) {
    const uint64_t ours = read_u64(reserved_record(cfg));
    if (ours == 0) {
        KV_LOGI(kComp, "hugepages: none reserved by kvpoold: nothing to release");
        return 0;
    }
    const uint64_t page = kv::detail::default_hugepage_size();
    const uint64_t total = read_u64("/proc/sys/vm/nr_hugepages");
    // Only free pages can go: those still backing pool regions (kept for a
    // warm restart) stay reserved, and are given back by a later stop.
    const uint64_t can = std::min({ours, kv::detail::free_hugepages(page), total});
    if (can && !write_nr_hugepages(total - can)) {
        KV_LOGE(kComp, "hugepages: cannot write /proc/sys/vm/nr_hugepages: %s", strerror(errno));
        return 1;
    }
    const uint64_t now = read_u64("/proc/sys/vm/nr_hugepages");
    const uint64_t released = total > now ? total - now : 0;
    write_record(cfg, ours - std::min(ours, released));
    KV_LOGI(kComp,
            "hugepages: released %llu of the %llu kvpoold reserved (nr_hugepages %llu -> %llu)%s",
            (unsigned long long)released, (unsigned long long)ours, (unsigned long long)total,
            (unsigned long long)now,
            released < ours ? "; the rest back pool regions kept for a warm restart" : "");
    return 0;
}

int reserve_hugepages(const DaemonConfig &cfg) {
    const uint64_t page = kv::detail::default_hugepage_size();
    const uint64_t need = hugepages_needed(cfg, page);
    const uint64_t free_now = kv::detail::free_hugepages(page);
    bool required = false;
    for (const PoolConfig &pc : cfg.pools)
        required |= pc.hugepages == HugepageMode::Require;
    if (need <= free_now) {
        KV_LOGI(kComp, "hugepages: %llu needed, %llu free: nothing to reserve",
                (unsigned long long)need, (unsigned long long)free_now);
        return 0;
    }
    uint64_t total = 0;
    {
        std::ifstream f("/proc/sys/vm/nr_hugepages");
        f >> total;
    }
    const uint64_t want = total + (need - free_now);
    if (!write_nr_hugepages(want)) {
        KV_LOGE(kComp, "hugepages: cannot write /proc/sys/vm/nr_hugepages: %s", strerror(errno));
        return required ? 1 : 0;
    }
    // The kernel may give fewer than asked: record what it gave.
    const uint64_t now = read_u64("/proc/sys/vm/nr_hugepages");
    if (now > total) write_record(cfg, read_u64(reserved_record(cfg)) + (now - total));
    uint64_t got_free = kv::detail::free_hugepages(page);
    if (got_free >= need) {
        KV_LOGI(kComp, "hugepages: reserved %llu more (nr_hugepages %llu -> %llu)",
                (unsigned long long)(need - free_now), (unsigned long long)total,
                (unsigned long long)want);
        return 0;
    }
    KV_LOGW(kComp,
            "hugepages: needed %llu free %llu KiB pages, the kernel gave %llu (nr_hugepages %llu "
            "asked); "
            "pools with hugepages = \"prefer\" fall back to 4 KiB pages",
            (unsigned long long)need, (unsigned long long)(page >> 10),
            (unsigned long long)got_free, (unsigned long long)want);
    return required ? 1 : 0;
}

// Blocks the remote tiers uploaded, published as Stored events of the
// tier's medium to the pool's KV-event subscribers (kv_events.h).
void publish_remote_stored(RemoteTiers &remote) {
    KvEventPublisher *events = KvEventPublisher::current();
    for (auto &[pool, stored] : remote.take_uploaded()) {
        const RemoteTier *t = remote.find(pool);
        if (events && t) events->publish_remote(pool, stored, t->config().medium);
    }
}

} // namespace

int main(int argc, char **argv) {
    std::string config_path = KVPOOL_DEFAULT_CONFIG;
    bool check = false, reserve = false, release = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--config" && i + 1 < argc) {
            config_path = argv[++i];
        } else if (a.rfind("--config=", 0) == 0) {
            config_path = a.substr(9);
        } else if (a == "--check-config") {
            check = true;
        } else if (a == "--reserve-hugepages") {
            reserve = true;
        } else if (a == "--release-hugepages") {
            release = true;
        } else if (a == "--version") {
            printf("kvpoold %s (control protocol %d, region ABI %d.%d)\n", KVPOOL_VERSION,
                   KV_CTL_VERSION, KV_ABI_MAJOR, KV_ABI_MINOR);
            return 0;
        } else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "kvpoold: unknown or incomplete argument \"%s\"\n", a.c_str());
            usage(stderr);
            return 2;
        }
    }

    auto loaded = load_config(config_path);
    if (!loaded) {
        KV_LOGE(kComp, "%s", loaded.error().c_str());
        return 1;
    }
    DaemonConfig cfg = std::move(*loaded);
    set_log_level(cfg.log_level);
    if (check) {
        std::vector<std::string> warnings;
        if (std::string bad = check_against_machine(cfg, &warnings); !bad.empty()) {
            KV_LOGE(kComp, "%s: parses, but kvpoold would refuse it here: %s", config_path.c_str(),
                    bad.c_str());
            return 1;
        }
        for (const std::string &w : warnings)
            KV_LOGW(kComp, "%s: %s", config_path.c_str(), w.c_str());
        printf("%s: valid, %zu pool%s\n", config_path.c_str(), cfg.pools.size(),
               cfg.pools.size() == 1 ? "" : "s");
        return 0;
    }
    if (reserve) return reserve_hugepages(cfg);
    if (release) return release_hugepages(cfg);

    // Signals are read from a signalfd in the loop: no async handlers.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    signal(SIGPIPE, SIG_IGN);
    umask(0022);

    int epfd = epoll_create1(EPOLL_CLOEXEC);
    int sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (epfd < 0 || sigfd < 0) {
        KV_LOGE(kComp, "epoll/signalfd: %s", strerror(errno));
        return 1;
    }
    epoll_event sev{};
    sev.events = EPOLLIN;
    sev.data.fd = sigfd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, sigfd, &sev);

    DaemonCounters counters;
    counters.start_ns = realtime_ns();
    KV_LOGN(kComp, "starting kvpoold %s, config %s, %zu pool%s", KVPOOL_VERSION,
            config_path.c_str(), cfg.pools.size(), cfg.pools.size() == 1 ? "" : "s");
    sd_notifyf(0, "STATUS=opening %zu pools", cfg.pools.size());

    // Long steps (restore at start, persist at stop) keep systemd informed
    // and push its start/stop timeout out while they make progress.
    auto status = [](const std::string &line) {
        sd_notifyf(0, "STATUS=%s\nEXTEND_TIMEOUT_USEC=%llu", line.c_str(), 60ULL * 1000000);
    };
    auto pm = std::make_unique<PoolManager>(cfg);
    pm->set_status_hook(status);
    pm->set_restore_hook(restore_at_start);
    // The control socket first: it is how a second kvpoold on the same
    // config finds the first one running, and it must find it before it
    // opens a pool (opening may rebuild a region whose geometry changed,
    // under the running daemon's clients). Clients that connect while the
    // pools are restored wait in the listen backlog.
    auto server = std::make_unique<ControlServer>(epfd, *pm, counters);
    if (auto r = server->listen_control(cfg.control_socket); !r) {
        KV_LOGE(kComp, "%s", r.error().c_str());
        sd_notifyf(0, "STATUS=failed: %s", r.error().c_str());
        return 1;
    }
    if (auto r = pm->open_all(); !r) {
        KV_LOGE(kComp, "%s", r.error().c_str());
        sd_notifyf(0, "STATUS=failed: %s", r.error().c_str());
        return 1;
    }
    count_snapshot_runs(*pm, counters); // the restores at start
    if (!cfg.metrics.empty()) {
        auto m = metrics_listen(cfg.metrics);
        if (!m) {
            KV_LOGE(kComp, "%s", m.error().c_str());
            return 1;
        }
        server->add_metrics_listener(*m);
        KV_LOGI(kComp, "metrics on %s", cfg.metrics.c_str());
    }

    int jobfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_event jev{};
    jev.events = EPOLLIN;
    jev.data.fd = jobfd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, jobfd, &jev);
    server->set_job_wake_fd(jobfd);
    // The remote tiers' workers wake the loop through the same eventfd.
    auto remote = std::make_unique<RemoteTiers>(jobfd);
    set_remote_tiers(remote.get());
    remote->sync(*pm);

    Timer reap_timer(epfd, uint64_t(cfg.reap_interval_ms) * 1000);
    Timer evict_timer(epfd, uint64_t(cfg.evict_interval_ms) * 1000);
    Timer idle_timer(epfd, 5ULL * 1000000);
    // The change feeds' drainer: sinks (the KV-event publisher, the remote
    // tier) register here with add_sink; its timer runs only while one is
    // registered, so whoever adds or removes a sink sets the timer again:
    // feed_timer.set_interval(feed_drainer.interval_us()).
    FeedDrainer feed_drainer;
    FeedDrainer::set_current(&feed_drainer);
    Timer feed_timer(epfd, feed_drainer.interval_us());
    // The remote tiers' write-behind drains the feeds only while a tier
    // runs, so a daemon without one keeps the drain timer off.
    bool remote_sink = false;
    auto remote_follow = [&] {
        const bool want = !remote->tiers().empty();
        if (want == remote_sink) return;
        remote_sink = want;
        if (want)
            feed_drainer.add_sink(remote.get());
        else
            feed_drainer.remove_sink(remote.get());
        feed_timer.set_interval(feed_drainer.interval_us());
    };
    remote_follow();
    uint64_t wd_usec = 0;
    bool watchdog = sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0;
    Timer wd_timer(epfd, watchdog ? wd_usec / 2 : 0);

    // KV events: channels follow the pools' [pool.events] tables; the timer
    // opens those of pools created or reconfigured since, and looks at the
    // replay sockets besides their ZMQ_FD wakeups.
    auto events = std::make_unique<KvEventPublisher>(epfd);
    KvEventPublisher::set_current(events.get());
    events->sync(*pm);
    Timer events_timer(epfd, 100ULL * 1000);
    // The publisher drains the feeds only while a pool has events, so a
    // daemon without them keeps the drain timer off.
    bool events_sink = false;
    auto events_follow = [&] {
        if (events->active() == events_sink) return;
        events_sink = events->active();
        if (events_sink)
            feed_drainer.add_sink(events.get());
        else
            feed_drainer.remove_sink(events.get());
        feed_timer.set_interval(feed_drainer.interval_us());
    };
    events_follow();

    KV_LOGN(kComp, "ready: %zu pool%s, control socket %s", pm->pools().size(),
            pm->pools().size() == 1 ? "" : "s", cfg.control_socket.c_str());
    sd_notifyf(0, "READY=1\nSTATUS=serving %zu pools on %s", pm->pools().size(),
               cfg.control_socket.c_str());

    bool running = true;
    while (running) {
        epoll_event evs[64];
        int n = epoll_wait(epfd, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            KV_LOGE(kComp, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == sigfd) {
                signalfd_siginfo si;
                while (read(sigfd, &si, sizeof si) == sizeof si) {
                    if (si.ssi_signo == SIGHUP) {
                        sd_notify(0, "RELOADING=1");
                        auto next = load_config(config_path);
                        if (!next) {
                            KV_LOGE(kComp, "reload refused, keeping the running config: %s",
                                    next.error().c_str());
                        } else {
                            for (const std::string &line : pm->reload(*next))
                                KV_LOGN(kComp, "reload: %s", line.c_str());
                            count_snapshot_runs(*pm, counters);
                            events->sync(*pm);
                            events_follow();
                            remote->sync(*pm);
                            remote_follow();
                            reap_timer.set_interval(uint64_t(pm->config().reap_interval_ms) * 1000);
                            evict_timer.set_interval(uint64_t(pm->config().evict_interval_ms) *
                                                     1000);
                            KV_LOGN(kComp, "reloaded %s: %zu pools", config_path.c_str(),
                                    pm->pools().size());
                        }
                        sd_notifyf(0, "READY=1\nSTATUS=serving %zu pools on %s", pm->pools().size(),
                                   cfg.control_socket.c_str());
                    } else {
                        KV_LOGN(kComp, "signal %s from pid %u: stopping",
                                strsignal(int(si.ssi_signo)), si.ssi_pid);
                        running = false;
                    }
                }
            } else if (fd == jobfd) {
                uint64_t n;
                ssize_t r = read(jobfd, &n, sizeof n);
                (void)r; // EAGAIN: another event already drained it
                for (const JobAnswer &c : collect_jobs(*pm))
                    server->deliver(c.conn_id, c.op, c.seq, c.error, c.body);
                count_snapshot_runs(*pm, counters);
                for (const JobAnswer &c : remote->take_answers())
                    server->deliver(c.conn_id, c.op, c.seq, c.error, c.body);
                publish_remote_stored(*remote);
            } else if (fd == reap_timer.fd()) {
                reap_timer.drain();
                counters.reaped_clients += uint64_t(pm->reap_pass());
                remote->sync(*pm); // pools created, destroyed or reloaded since
                remote_follow();
            } else if (fd == evict_timer.fd()) {
                evict_timer.drain();
                counters.background_evicted_bytes += pm->watermark_pass(kEvictChunkBytes);
            } else if (fd == feed_timer.fd()) {
                feed_timer.drain();
                feed_drainer.poll_all(*pm);
            } else if (fd == wd_timer.fd()) {
                wd_timer.drain();
                sd_notify(0, "WATCHDOG=1");
            } else if (fd == events_timer.fd()) {
                events_timer.drain();
                events->sync(*pm);
                events_follow();
                events->service_all();
            } else if (events->owns_fd(fd)) {
                events->on_fd(fd);
            } else if (fd == idle_timer.fd()) {
                idle_timer.drain();
                server->expire(mono_ms(), ControlServer::kIdleMs);
            } else {
                server->handle(fd, evs[i].events);
            }
        }
    }

    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
    server.reset(); // no new requests while pools go away
    set_remote_tiers(nullptr);
    if (remote_sink) feed_drainer.remove_sink(remote.get());
    remote.reset(); // joins the tiers' workers before their pools go
    if (events_sink) feed_drainer.remove_sink(events.get());
    KvEventPublisher::set_current(nullptr);
    events.reset();
    FeedDrainer::set_current(nullptr);
    join_all_jobs(*pm);
    int failed = 0;
    for (const auto &p : pm->pools()) {
        if (!p->cfg.persist_on_stop) continue;
        status("persisting pool " + p->cfg.name + " to " + p->snapshot_path);
        failed += persist_at_stop(*p, status) ? 0 : 1;
    }
    pm.reset(); // detach: regions stay in place for a warm restart
    if (failed) {
        KV_LOGE(kComp,
                "stopped; %d pool%s could not be persisted (their previous snapshots are intact)",
                failed, failed == 1 ? "" : "s");
        return 1;
    }
    KV_LOGN(kComp, "stopped");
    return 0;
}
