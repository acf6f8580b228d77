// SPDX-License-Identifier: MIT
#include "pool_manager.h"

#include "log.h"
#include "runtime_pools.h"
#include "units.h"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <grp.h>
#include <kvpool/control.h>
#include <linux/magic.h>
#include <numa.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

namespace kv::daemon {

namespace {

constexpr const char *kComp = "pools";

// mkdir -p with mode for the directories the daemon owns.
int make_dirs(const std::string &dir, mode_t mode) {
    std::string cur;
    size_t pos = 0;
    while (pos != std::string::npos) {
        pos = dir.find('/', pos + 1);
        cur = dir.substr(0, pos);
        if (cur.empty()) continue;
        if (mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) return -errno;
    }
    return 0;
}

std::string owner_name(uid_t uid) {
    char buf[1024];
    struct passwd pw, *res = nullptr;
    std::string n = "uid " + std::to_string(uid);
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res)
        n += " (" + std::string(res->pw_name) + ")";
    return n;
}

// Whose files kvpoold trusts: its own and root's. A directory or region
// file anyone else made before kvpoold first ran (/dev/shm is writable by
// every user) could hand that user the pool's blocks, or let them swap
// files under kvpoold.
std::string untrusted_owner(const struct stat &st) {
    if (st.st_uid == 0 || st.st_uid == geteuid()) return {};
    return "owned by " + owner_name(st.st_uid) + ", not by kvpoold (" + owner_name(geteuid()) +
           ") or root";
}

} // namespace

// A directory kvpoold keeps pools or snapshots in: one that exists must be
// a real directory owned by kvpoold or root, that no other user may write
// to (sticky directories aside: there a user can only add files, and every
// file kvpoold adopts is checked too). Absent is fine: kvpoold makes it.
std::expected<void, Error> check_trusted_dir(const std::string &dir, const char *what) {
    struct stat st;
    if (lstat(dir.c_str(), &st) != 0) return {};
    std::string why;
    if (S_ISLNK(st.st_mode))
        why = "is a symbolic link";
    else if (!S_ISDIR(st.st_mode))
        why = "is not a directory";
    else if (why = untrusted_owner(st);
             why.empty() && (st.st_mode & 022) && !(st.st_mode & S_ISVTX)) {
        char m[16];
        snprintf(m, sizeof m, "%04o", unsigned(st.st_mode & 07777));
        why = std::string("has mode ") + m +
              ": other users may replace its files (expected no write permission "
              "for group and others)";
    }
    if (why.empty()) return {};
    return std::unexpected(
        Error{-EPERM, std::string(what) + " " + dir + " " + why +
                          "; refusing to use it: remove "
                          "it, or fix its owner and mode, then start kvpoold again"});
}

// A region file kvpoold adopts: a regular file (no link) owned by kvpoold
// or root.
std::expected<void, Error> check_trusted_region(const std::string &path, const std::string &pool) {
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return {};
    std::string why;
    if (S_ISLNK(st.st_mode))
        why = "is a symbolic link";
    else if (!S_ISREG(st.st_mode))
        why = "is not a regular file";
    else
        why = untrusted_owner(st);
    if (why.empty()) return {};
    return std::unexpected(
        Error{-EPERM, "pool " + pool + ": region " + path + " " + why +
                          "; refusing to adopt it (its blocks and mapping are not kvpoold's to "
                          "serve): remove it, then start kvpoold again"});
}

namespace {

bool on_hugetlbfs(const std::string &dir, uint64_t *page_size) {
    struct statfs sf;
    if (statfs(dir.c_str(), &sf) != 0 || sf.f_type != HUGETLBFS_MAGIC) return false;
    *page_size = uint64_t(sf.f_bsize);
    return true;
}

bool file_exists(const std::string &p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0;
}

int resolve_numa(int node) {
    if (node != kNumaLocal) return node;
    if (numa_available() < 0) return -1;
    int cpu = sched_getcpu();
    return cpu < 0 ? -1 : numa_node_of_cpu(cpu);
}

uint64_t round_up(uint64_t v, uint64_t to) {
    return (v + to - 1) / to * to;
}

} // namespace

uint64_t pool_live_bytes(kv_pool *p) {
    uint64_t live = 0;
    return kv_pool_live_bytes(p, &live) == 0 ? live : 0;
}

PoolManager::PoolManager(DaemonConfig cfg) : cfg_(std::move(cfg)) {
    auto g = resolve_group(cfg_.admin_group);
    if (g) {
        admin_gid_ = *g;
    } else {
        KV_LOGW(kComp, "admin group: %s; only root may create pools", g.error().c_str());
        admin_gid_ = 0;
    }
}

PoolManager::~PoolManager() {
    for (auto &p : pools_)
        if (p->handle) kv_pool_detach(p->handle);
}

std::expected<gid_t, std::string> PoolManager::resolve_group(const std::string &name) const {
    if (name.empty()) return admin_gid_;
    char buf[4096];
    struct group gr, *res = nullptr;
    int rc = getgrnam_r(name.c_str(), &gr, buf, sizeof buf, &res);
    if (rc != 0 || !res)
        return std::unexpected("group \"" + name +
                               "\" does not exist (create it with systemd-sysusers or groupadd " +
                               name + ")");
    return res->gr_gid;
}

Pool *PoolManager::find(std::string_view name) {
    for (auto &p : pools_)
        if (p->cfg.name == name) return p.get();
    return nullptr;
}

// A complete region (magic published) whose ABI major is above ours, that
// uses incompatible features we do not know, or (same major) names an
// eviction policy past the ones we know: a newer minor added it.
static bool made_by_newer_kvpool(const std::string &path) {
    kv_region_header h{};
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool got = pread(fd, &h, sizeof h, 0) == ssize_t(sizeof h);
    close(fd);
    if (!got || h.magic != KV_REGION_MAGIC) return false;
    if (h.abi_major != KV_ABI_MAJOR) return h.abi_major > KV_ABI_MAJOR;
    return (h.incompat_features & ~KV_INCOMPAT_KNOWN) ||
           ((h.compat_features & KV_COMPAT_F_EVICT_POLICY) && h.evict_policy > KV_EVICT_MAX);
}

// kv_pool_create builds a region as NAME.creating.PID and renames it into
// place; a creator killed in between (kvpoold stopped by SIGKILL while it
// created a pool) leaves that file, and on /dev/shm or hugetlbfs it holds
// memory. Remove the ones whose creator is gone.
void PoolManager::remove_stale_creations(const std::string &dir, const std::string &name) {
    DIR *d = opendir(dir.c_str());
    if (!d) return;
    const std::string prefix = name + ".creating.";
    while (dirent *e = readdir(d)) {
        const std::string f = e->d_name;
        if (f.compare(0, prefix.size(), prefix) != 0) continue;
        char *end = nullptr;
        const long pid = strtol(f.c_str() + prefix.size(), &end, 10);
        if (pid <= 0 || *end != '\0') continue;
        if (kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue; // its creator still runs
        if (unlinkat(dirfd(d), f.c_str(), 0) == 0)
            KV_LOGN(kComp, "pool %s: removed %s/%s, left by a creator that died", name.c_str(),
                    dir.c_str(), f.c_str());
    }
    closedir(d);
}

std::expected<std::unique_ptr<Pool>, Error>
PoolManager::open_pool(const PoolConfig &pc, const char *origin, bool adopt_mismatch) {
    auto gid = resolve_group(pc.group);
    if (!gid) return std::unexpected(Error{-EINVAL, "pool " + pc.name + ": " + gid.error()});
    auto pool = std::make_unique<Pool>();
    pool->cfg = pc;
    // Keys first: a pool whose key cannot be read must not start and write
    // its blocks in the clear.
    if (pc.encryption.enabled) {
        auto ring = load_keyring(pc.encryption);
        if (!ring)
            return std::unexpected(
                Error{-EKEYREJECTED, "pool " + pc.name + ": encryption: " + ring.error()});
        pool->keyring = std::make_shared<const Keyring>(std::move(*ring));
    }
    pool->gid = *gid;
    pool->group_name = pc.group.empty() ? cfg_.admin_group : pc.group;
    pool->origin = origin;

    if (int rc = make_dirs(cfg_.shm_dir, 0755); rc)
        return std::unexpected(Error{rc, "shm_dir " + cfg_.shm_dir + ": " + strerror(-rc)});
    if (auto ok = check_trusted_dir(cfg_.shm_dir, "shm_dir"); !ok)
        return std::unexpected(ok.error());
    const std::string shm_path = cfg_.shm_dir + "/" + pc.name;
    remove_stale_creations(cfg_.shm_dir, pc.name);
    if (pc.hugepages != HugepageMode::Never) remove_stale_creations(cfg_.hugepage_dir, pc.name);
    std::string huge_path;
    uint64_t huge_page = 0;
    if (pc.hugepages != HugepageMode::Never) {
        // Create the directory only inside a hugetlbfs mount: never litter
        // /dev (devtmpfs) when hugetlbfs is not mounted at /dev/hugepages.
        const std::string parent = cfg_.hugepage_dir.substr(0, cfg_.hugepage_dir.rfind('/'));
        if (on_hugetlbfs(parent.empty() ? "/" : parent, &huge_page))
            make_dirs(cfg_.hugepage_dir, 0755);
        if (on_hugetlbfs(cfg_.hugepage_dir, &huge_page)) {
            if (auto ok = check_trusted_dir(cfg_.hugepage_dir, "hugepage_dir"); !ok)
                return std::unexpected(ok.error());
            huge_path = cfg_.hugepage_dir + "/" + pc.name;
        } else if (pc.hugepages == HugepageMode::Require) {
            return std::unexpected(Error{
                -ENODEV,
                "pool " + pc.name + ": hugepages = \"require\" but hugepage_dir " +
                    cfg_.hugepage_dir +
                    " is not on a hugetlbfs mount (mount -t hugetlbfs none /dev/hugepages, or set "
                    "[daemon] hugepage_dir)"});
        }
    }

    // Warm restart: a region that survived the previous daemon is served as
    // it is. Engines may be attached to it and writing; a rebuild would
    // leave them in an orphaned region and lose every block. So a region is
    // rebuilt only when it is really unusable (it does not validate), or
    // when it differs from the config and nothing would be lost (no other
    // client, no block). Every other failure leaves the file alone.
    for (const std::string &cand : {huge_path, shm_path}) {
        if (cand.empty() || !file_exists(cand)) continue;
        if (auto ok = check_trusted_region(cand, pc.name); !ok) return std::unexpected(ok.error());
        char err[512] = "";
        kv_pool *h = nullptr;
        int rc = kv_pool_attach(cand.c_str(), KV_ATTACH_F_DAEMON, &h, err, sizeof err);
        if (rc != 0) {
            // A region a newer kvpool made is not ours to throw away: its
            // blocks may be exactly what that version's clients want back.
            if (rc == -EPROTO && made_by_newer_kvpool(cand))
                return std::unexpected(Error{-EPROTO, "pool " + pc.name + ": region " + cand +
                                                          " was made by a newer kvpool (" + err +
                                                          "); refusing to rebuild it and drop its "
                                                          "blocks: run the kvpoold that made it, "
                                                          "or remove " +
                                                          cand + " to discard them"});
            // Validation failures: no process can use this region.
            if (rc == -EPROTO || rc == -EBADMSG || rc == -ENODATA) {
                KV_LOGW(kComp, "pool %s: existing region %s is unusable (%s): rebuilding it",
                        pc.name.c_str(), cand.c_str(), err);
                unlink(cand.c_str());
                continue;
            }
            // Anything else (every client slot held by a live process, no
            // memory, no permission) says nothing against the region.
            return std::unexpected(
                Error{-EAGAIN, "pool " + pc.name + ": cannot attach existing region " + cand +
                                   " (" + err + "); it is kept as it is, with its blocks"});
        }
        const kv_region_header *hd = kv_pool_header(h);
        const uint64_t want = round_up(pc.size, hd->page_size);
        const bool huge_ok = pc.hugepages != HugepageMode::Require || hd->page_size > 4096;
        const int want_policy = kv_evict_policy_parse(pc.eviction.c_str());
        std::string differs;
        if (want_policy >= 0 && hd->evict_policy != uint32_t(want_policy))
            differs = std::string("eviction policy ") + kv_evict_policy_name(hd->evict_policy) +
                      ", config asks " + pc.eviction;
        if (hd->region_size != want || !huge_ok)
            differs += (differs.empty() ? "" : "; ") + kv::detail::format_size(hd->region_size) +
                       " with " + kv::detail::format_size(hd->page_size) + " pages, config asks " +
                       kv::detail::format_size(want) + " (hugepages " +
                       std::string(to_string(pc.hugepages)) + ")";
        if (hd->feed_slots != pc.feed_slots)
            differs += (differs.empty() ? "" : "; ") + std::string("feed_slots ") +
                       std::to_string(hd->feed_slots) + ", config asks " +
                       std::to_string(pc.feed_slots);
        if (!!(hd->incompat_features & KV_INCOMPAT_F_SECURE_ERASE) != pc.secure_erase)
            differs += (differs.empty() ? "" : "; ") + std::string("secure_erase ") +
                       (pc.secure_erase ? "off" : "on") + ", config asks " +
                       (pc.secure_erase ? "on" : "off");
        if (!differs.empty()) {
            kv_stats st{};
            uint64_t live = 0;
            kv_pool_stats(h, &st);
            kv_pool_live_bytes(h, &live);
            const uint32_t others = st.clients > 0 ? st.clients - 1 : 0;
            if (others == 0 && live == 0) {
                KV_LOGN(kComp,
                        "pool %s: existing region %s has %s; it holds no block and no client: "
                        "rebuilding it",
                        pc.name.c_str(), cand.c_str(), differs.c_str());
                kv_pool_detach(h);
                unlink(cand.c_str());
                continue;
            }
            const std::string held = std::to_string(others) + " client(s) attached, " +
                                     kv::detail::format_size(live) + " of blocks";
            if (!adopt_mismatch) {
                kv_pool_detach(h);
                return std::unexpected(Error{-EEXIST, "pool " + pc.name + ": region " + cand +
                                                          " exists with " + differs + " (" + held +
                                                          "); kvpoold serves it only as "
                                                          "it is: remove " +
                                                          cand + " to re-create it"});
            }
            KV_LOGW(kComp,
                    "pool %s: existing region %s has %s; kept as it is (%s): to apply the config, "
                    "stop its "
                    "clients, then kvctl destroy %s and reload",
                    pc.name.c_str(), cand.c_str(), differs.c_str(), held.c_str(), pc.name.c_str());
            pool->config_differs = differs;
        }
        pool->handle = h;
        pool->path = cand;
        pool->state = "reattached";
        break;
    }

    if (!pool->handle) {
        kv_create_opts o;
        kv_create_opts_init(&o, pc.size);
        o.numa_node = resolve_numa(pc.numa_node);
        o.mode = pc.mode;
        o.slab_size = pc.slab_size;
        o.avg_block_size = pc.avg_block_size;
        if (pc.max_clients) o.max_clients = pc.max_clients;
        o.max_entries = pc.max_entries;
        o.feed_slots = pc.feed_slots;
        if (pc.prefault) o.flags |= KV_CREATE_F_PREFAULT;
        if (pc.secure_erase) o.flags |= KV_CREATE_F_SECURE_ERASE;
        o.flags |= KV_CREATE_F_DAEMON_SLOT;
        const int policy = kv_evict_policy_parse(pc.eviction.c_str());
        if (policy < 0) // the config parser and the control server validate it first
            return std::unexpected(Error{
                -EINVAL, "pool " + pc.name + ": unknown eviction policy \"" + pc.eviction + "\""});
        o.evict_policy = uint32_t(policy);
        char err[512] = "";
        int rc = -ENOENT;
        if (!huge_path.empty()) {
            o.hugepages = KV_HUGEPAGES_REQUIRE;
            rc = kv_pool_create(huge_path.c_str(), &o, err, sizeof err);
            if (rc == 0) {
                pool->path = huge_path;
            } else if (pc.hugepages == HugepageMode::Require) {
                return std::unexpected(Error{rc, "pool " + pc.name + ": " + err});
            } else {
                KV_LOGN(kComp, "pool %s: no hugepages (%s): using 4 KiB pages", pc.name.c_str(),
                        err);
            }
        } else if (pc.hugepages == HugepageMode::Prefer) {
            KV_LOGN(kComp, "pool %s: hugepage_dir %s is not on hugetlbfs: using 4 KiB pages",
                    pc.name.c_str(), cfg_.hugepage_dir.c_str());
        }
        if (rc != 0) {
            o.hugepages = KV_HUGEPAGES_NEVER;
            rc = kv_pool_create(shm_path.c_str(), &o, err, sizeof err);
            if (rc != 0) return std::unexpected(Error{rc, "pool " + pc.name + ": " + err});
            pool->path = shm_path;
        }
        rc = kv_pool_attach(pool->path.c_str(), KV_ATTACH_F_DAEMON, &pool->handle, err, sizeof err);
        if (rc != 0)
            return std::unexpected(Error{rc, "pool " + pc.name + ": attach after create: " + err});
        pool->state = "created";
    }
    // The file's group decides who may attach (mode 0660 by default) and
    // who may change the pool through the control socket.
    if (chown(pool->path.c_str(), uid_t(-1), pool->gid) != 0 ||
        chmod(pool->path.c_str(), pc.mode) != 0)
        KV_LOGW(kComp, "pool %s: cannot set group %u / mode %04o on %s: %s", pc.name.c_str(),
                unsigned(pool->gid), pc.mode, pool->path.c_str(), strerror(errno));
    const std::string snap_dir = pc.snapshot_dir.empty() ? cfg_.state_dir : pc.snapshot_dir;
    pool->snapshot_path = snap_dir + "/" + pc.name + ".kvsnap";
    // A persist cut short (the daemon was killed) leaves its temporary file:
    // the snapshot itself is intact, the leftover only wastes disk.
    if (unlink((pool->snapshot_path + ".tmp").c_str()) == 0)
        KV_LOGN(kComp, "pool %s: removed %s.tmp left by an interrupted persist", pc.name.c_str(),
                pool->snapshot_path.c_str());
    if ((pc.persist_on_stop || pc.restore_on_start) && make_dirs(snap_dir, 0750) != 0)
        KV_LOGW(kComp, "pool %s: snapshot_dir %s: %s", pc.name.c_str(), snap_dir.c_str(),
                strerror(errno));
    if (auto ok = check_trusted_dir(snap_dir, "snapshot_dir"); !ok) {
        kv_pool_detach(pool->handle);
        pool->handle = nullptr;
        return std::unexpected(ok.error());
    }
    const kv_region_header *hd = kv_pool_header(pool->handle);
    KV_LOGI(kComp, "pool %s %s: %s, %s, page size %s, numa %s, %u entry slots", pc.name.c_str(),
            pool->state.c_str(), pool->path.c_str(),
            kv::detail::format_size(hd->region_size).c_str(),
            kv::detail::format_size(hd->page_size).c_str(),
            hd->numa_node == KV_NUMA_NONE ? "none" : std::to_string(hd->numa_node).c_str(),
            hd->n_entries);
    return pool;
}

bool PoolManager::is_waiting(const std::string &name) const {
    for (const Waiting &w : waiting_)
        if (w.cfg.name == name) return true;
    return false;
}

std::expected<void, Error> PoolManager::start_pool(const PoolConfig &pc, const char *origin) {
    auto p = open_pool(pc, origin, true);
    if (!p && p.error().code == -EAGAIN) {
        KV_LOGE(kComp, "%s; serving it once it can be attached", p.error().message.c_str());
        waiting_.push_back({pc, origin});
        return {};
    }
    if (!p) return std::unexpected(p.error());
    Pool &pool = **p;
    pools_.push_back(std::move(*p));
    // A region that survived (warm restart) is newer than any snapshot;
    // only a freshly created one is refilled from disk.
    if (pc.restore_on_start && pool.state == "created" && file_exists(pool.snapshot_path)) {
        if (status_hook_) status_hook_("restoring pool " + pc.name + " from " + pool.snapshot_path);
        if (restore_hook_) restore_hook_(pool, status_hook_);
    }
    return {};
}

std::expected<void, std::string> PoolManager::open_all() {
    if (auto ok = check_trusted_dir(cfg_.state_dir, "state_dir"); !ok)
        return std::unexpected(ok.error().message);
    for (const PoolConfig &pc : cfg_.pools) {
        if (find(pc.name) || is_waiting(pc.name)) continue;
        if (auto r = start_pool(pc, "config"); !r) return std::unexpected(r.error().message);
    }
    const std::string path = runtime_pools_path(cfg_.state_dir);
    auto runtime = load_runtime_pools(path);
    if (!runtime) return std::unexpected("runtime pools: " + runtime.error());
    bool dropped = false;
    for (const PoolConfig &pc : *runtime) {
        if (find(pc.name) || is_waiting(pc.name)) {
            KV_LOGN(
                kComp,
                "pool %s made with kvctl create is now in the config: the config's settings apply",
                pc.name.c_str());
            dropped = true;
            continue;
        }
        if (auto r = start_pool(pc, "runtime"); !r) return std::unexpected(r.error().message);
    }
    if (dropped)
        if (auto r = save_runtime(); !r) KV_LOGW(kComp, "%s", r.error().c_str());
    return {};
}

std::expected<void, std::string> PoolManager::save_runtime() const {
    std::vector<PoolConfig> runtime;
    for (const auto &p : pools_)
        if (p->origin == "runtime") runtime.push_back(p->cfg);
    for (const Waiting &w : waiting_)
        if (std::string_view(w.origin) == "runtime") runtime.push_back(w.cfg);
    if (!runtime.empty())
        if (int rc = make_dirs(cfg_.state_dir, 0750); rc)
            return std::unexpected("state_dir " + cfg_.state_dir + ": " + strerror(-rc));
    auto r = save_runtime_pools(runtime_pools_path(cfg_.state_dir), runtime);
    if (!r) return std::unexpected("runtime pools: " + r.error());
    return {};
}

std::expected<Pool *, Error> PoolManager::create(const PoolConfig &pc, const char *origin) {
    if (find(pc.name)) return std::unexpected(Error{-EEXIST, "pool " + pc.name + " exists"});
    if (is_waiting(pc.name))
        return std::unexpected(Error{
            -EEXIST, "pool " + pc.name + " exists and waits until its region can be attached"});
    auto p = open_pool(pc, origin, false);
    if (!p) return std::unexpected(p.error());
    pools_.push_back(std::move(*p));
    Pool *made = pools_.back().get();
    if (auto r = save_runtime(); !r) {
        // Not remembered, it would vanish at the next restart: do not make it.
        const bool fresh = made->state == "created";
        kv_pool_detach(made->handle);
        if (fresh) kv_pool_destroy(made->path.c_str());
        pools_.pop_back();
        return std::unexpected(Error{-EIO, "pool " + pc.name + " not created: " + r.error()});
    }
    return made;
}

std::expected<void, Error> PoolManager::destroy(const std::string &name) {
    for (auto it = pools_.begin(); it != pools_.end(); ++it) {
        if ((*it)->cfg.name != name) continue;
        Pool &p = **it;
        if (p.job)
            return std::unexpected(
                Error{-EBUSY, "pool " + name + ": a persist or restore is running"});
        if (p.origin == "runtime") { // forget it first: a pool still listed would come back empty
            p.origin = "destroyed";
            if (auto r = save_runtime(); !r) {
                p.origin = "runtime";
                return std::unexpected(
                    Error{-EIO, "pool " + name + " not destroyed: " + r.error()});
            }
        }
        kv_pool_detach(p.handle);
        p.handle = nullptr;
        int rc = kv_pool_destroy(p.path.c_str());
        std::string path = p.path;
        pools_.erase(it);
        if (rc != 0 && rc != -ENOENT)
            return std::unexpected(Error{rc, "unlink " + path + ": " + strerror(-rc)});
        KV_LOGI(kComp, "pool %s destroyed (%s removed)", name.c_str(), path.c_str());
        return {};
    }
    return std::unexpected(Error{-ENOENT, "no pool named " + name});
}

void PoolManager::open_waiting() {
    for (auto it = waiting_.begin(); it != waiting_.end();) {
        auto p = open_pool(it->cfg, it->origin, true);
        if (!p && p.error().code == -EAGAIN) {
            ++it;
            continue;
        }
        if (!p) {
            KV_LOGE(kComp, "%s", p.error().message.c_str());
        } else {
            KV_LOGN(kComp, "pool %s: region attached; serving it", it->cfg.name.c_str());
            pools_.push_back(std::move(*p));
        }
        it = waiting_.erase(it);
    }
}

int PoolManager::reap_pass() {
    if (!waiting_.empty()) open_waiting();
    int total = 0;
    for (auto &p : pools_) {
        int n = kv_reap(p->handle);
        if (n > 0) {
            p->reaped_clients += uint64_t(n);
            total += n;
            KV_LOGI(kComp, "pool %s: reaped %d dead client%s", p->cfg.name.c_str(), n,
                    n == 1 ? "" : "s");
        }
    }
    return total;
}

uint64_t PoolManager::watermark_pass(uint64_t max_bytes) {
    uint64_t total = 0;
    for (auto &p : pools_) {
        // A restore fills the pool with what it is asked to: evicting under
        // it would throw restored blocks away as they arrive. The pass
        // resumes when the restore ends.
        if (p->job && p->job->op == KV_CTL_OP_RESTORE) continue;
        const uint64_t cap = kv_pool_header(p->handle)->data_len;
        const uint64_t live = pool_live_bytes(p->handle);
        if (double(live) <= p->cfg.high_watermark * double(cap)) continue;
        uint64_t target = uint64_t(p->cfg.low_watermark * double(cap));
        uint64_t want = std::min(live - target, max_bytes);
        int64_t got = kv_evict_bytes(p->handle, want);
        if (got > 0) {
            p->bg_evicted_bytes += uint64_t(got);
            total += uint64_t(got);
            KV_LOGD(kComp, "pool %s: evicted %lld bytes in the background", p->cfg.name.c_str(),
                    (long long)got);
        }
    }
    return total;
}

std::vector<std::string> PoolManager::reload(const DaemonConfig &next) {
    std::vector<std::string> out;
    auto refuse = [&](const std::string &what) {
        out.push_back("refused: " + what + " (needs a restart)");
    };
    if (next.control_socket != cfg_.control_socket) refuse("control_socket change");
    if (next.shm_dir != cfg_.shm_dir) refuse("shm_dir change");
    if (next.hugepage_dir != cfg_.hugepage_dir) refuse("hugepage_dir change");
    if (next.metrics != cfg_.metrics) refuse("metrics change");
    if (next.admin_group != cfg_.admin_group) refuse("admin_group change");
    cfg_.state_dir = next.state_dir;
    cfg_.reap_interval_ms = next.reap_interval_ms;
    cfg_.evict_interval_ms = next.evict_interval_ms;
    cfg_.log_level = next.log_level;
    set_log_level(next.log_level);

    for (const PoolConfig &pc : next.pools) {
        Pool *p = find(pc.name);
        if (!p) {
            if (is_waiting(pc.name)) continue;
            auto np = open_pool(pc, "config", true);
            if (!np && np.error().code == -EAGAIN) {
                waiting_.push_back({pc, "config"});
                out.push_back(np.error().message + "; serving it once it can be attached");
                continue;
            }
            if (!np) {
                out.push_back("pool " + pc.name + " not added: " + np.error().message);
                continue;
            }
            pools_.push_back(std::move(*np));
            out.push_back("pool " + pc.name + " added");
            continue;
        }
        const PoolConfig &cur = p->cfg;
        if (pc.size != cur.size || pc.hugepages != cur.hugepages || pc.numa_node != cur.numa_node ||
            pc.slab_size != cur.slab_size || pc.avg_block_size != cur.avg_block_size ||
            pc.max_clients != cur.max_clients || pc.max_entries != cur.max_entries ||
            pc.feed_slots != cur.feed_slots || pc.secure_erase != cur.secure_erase) {
            refuse("pool " + pc.name +
                   ": geometry change (size, hugepages, numa_node, slab_size, avg_block_size, "
                   "max_clients, max_entries, feed_slots, secure_erase); destroy and re-create "
                   "the pool to apply it");
            continue;
        }
        if (pc.encryption != cur.encryption) {
            std::shared_ptr<const Keyring> ring;
            if (pc.encryption.enabled) {
                auto r = load_keyring(pc.encryption);
                if (!r) {
                    out.push_back("pool " + pc.name + ": encryption not changed: " + r.error());
                    continue;
                }
                ring = std::make_shared<const Keyring>(std::move(*r));
            }
            p->keyring = std::move(ring);
            out.push_back("pool " + pc.name + ": encryption " +
                          (pc.encryption.enabled
                               ? "keys loaded, sealing with key " + pc.encryption.key
                               : std::string("off")));
        }
        if (pc.eviction != cur.eviction) {
            refuse("pool " + pc.name + ": eviction policy change");
            continue;
        }
        if (pc.group != cur.group || pc.mode != cur.mode) {
            auto gid = resolve_group(pc.group);
            if (!gid) {
                out.push_back("pool " + pc.name + ": group not changed: " + gid.error());
                continue;
            }
            if (chown(p->path.c_str(), uid_t(-1), *gid) != 0 ||
                chmod(p->path.c_str(), pc.mode) != 0) {
                out.push_back("pool " + pc.name + ": cannot change group/mode: " + strerror(errno));
                continue;
            }
            p->gid = *gid;
            p->group_name = pc.group.empty() ? cfg_.admin_group : pc.group;
        }
        p->cfg = pc;
        p->origin = "config";
    }
    for (auto &p : pools_) {
        bool listed = false;
        for (const PoolConfig &pc : next.pools)
            listed |= pc.name == p->cfg.name;
        if (!listed && p->origin == "config")
            out.push_back("pool " + p->cfg.name +
                          " is no longer in the config: still running; remove it with "
                          "kvctl destroy " +
                          p->cfg.name);
    }
    cfg_.pools = next.pools;
    return out;
}

uint64_t hugepages_needed(const DaemonConfig &cfg, uint64_t page_size) {
    uint64_t need = 0;
    for (const PoolConfig &pc : cfg.pools) {
        if (pc.hugepages == HugepageMode::Never) continue;
        // A region that already exists on hugetlbfs holds its pages already.
        struct stat st;
        std::string path = cfg.hugepage_dir + "/" + pc.name;
        if (stat(path.c_str(), &st) == 0 && uint64_t(st.st_size) == round_up(pc.size, page_size))
            continue;
        need += round_up(pc.size, page_size) / page_size;
    }
    return need;
}

} // namespace kv::daemon
