// SPDX-License-Identifier: MIT
//
// Pool lifecycle entry points of the C API: create, attach, detach, destroy,
// plus error strings. Data-path entry points live in store.cc.
#include "backing.h"
#include "detail.h"

#include <algorithm>
#include <cstdio>
#include <fcntl.h>
#include <string>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace kv::detail;

namespace {

// The v1 size of kv_create_opts: callers built against an older header pass
// a smaller struct_size; fields past it take their defaults.
constexpr uint32_t kOptsMin = offsetof(kv_create_opts, mode) + sizeof(uint32_t);

int check_opts(const kv_create_opts *o, kv_create_opts *out, char *err, size_t errlen) {
    if (!o) {
        errf(err, errlen, "opts is NULL");
        return -EINVAL;
    }
    if (o->struct_size < kOptsMin) {
        errf(err, errlen, "opts.struct_size %u: expected at least %u (call kv_create_opts_init)",
             o->struct_size, kOptsMin);
        return -EINVAL;
    }
    // Copy what the caller's struct has; later fields keep their defaults.
    // A v1 caller (no evict_policy) gets CLOCK, what v1 pools did.
    kv_create_opts_init(out, o->size);
    out->evict_policy = KV_EVICT_CLOCK;
    memcpy(out, o, std::min<size_t>(o->struct_size, sizeof *out));
    out->struct_size = sizeof *out;
    if (out->evict_policy > KV_EVICT_MAX) {
        errf(err, errlen, "opts.evict_policy %u: expected 0..%u (KV_EVICT_*)", out->evict_policy,
             KV_EVICT_MAX);
        return -EINVAL;
    }
    if (o->hugepages > KV_HUGEPAGES_REQUIRE) {
        errf(err, errlen, "opts.hugepages %u: expected 0 (never), 1 (prefer) or 2 (require)",
             o->hugepages);
        return -EINVAL;
    }
    if (o->flags & ~(KV_CREATE_F_PREFAULT | KV_CREATE_F_EXCL | KV_CREATE_F_REPLACE |
                     KV_CREATE_F_DAEMON_SLOT | KV_CREATE_F_SECURE_ERASE)) {
        errf(err, errlen, "opts.flags 0x%x has unknown bits", o->flags);
        return -EINVAL;
    }
    if ((o->flags & KV_CREATE_F_EXCL) && (o->flags & KV_CREATE_F_REPLACE)) {
        errf(err, errlen,
             "opts.flags: KV_CREATE_F_EXCL and KV_CREATE_F_REPLACE contradict each other");
        return -EINVAL;
    }
    if (o->size == 0) {
        errf(err, errlen, "opts.size is 0");
        return -EINVAL;
    }
    if (out->reserved1) {
        errf(err, errlen, "opts.reserved1 is %u: expected 0", out->reserved1);
        return -EINVAL;
    }
    if (out->max_entries && (out->max_entries < 64 || out->max_entries > 0xfffffff0U)) {
        errf(err, errlen, "opts.max_entries %u: expected 0 (no cap) or 64..%u", out->max_entries,
             0xfffffff0U);
        return -EINVAL;
    }
    return 0;
}

// Lay out, reserve, place and initialize a region on an open, empty fd.
int init_on_fd(int fd, const kv_create_opts &o, uint64_t page_size, uint32_t backing, char *err,
               size_t errlen) {
    kv_region_header h;
    int rc = layout_compute(o, page_size, &h, err, errlen);
    if (rc) return rc;
    bool huge = page_size > 4096;
    if ((rc = size_backing(fd, h.region_size, err, errlen))) return rc;
    uint8_t *base = nullptr;
    if ((rc = map_region(fd, h.region_size, false, &base, err, errlen))) return rc;
    if (o.numa_node >= 0) {
        if ((rc = bind_numa(base, h.region_size, o.numa_node, err, errlen))) {
            munmap(base, h.region_size);
            return rc;
        }
        h.numa_node = uint32_t(o.numa_node);
        h.flags |= KV_REGION_F_NUMA_BOUND;
    }
    if ((rc = reserve_backing(fd, h.region_size, huge, page_size, err, errlen))) {
        munmap(base, h.region_size);
        return rc;
    }
    if (o.flags & KV_CREATE_F_PREFAULT) {
        prefault(base, h.region_size, page_size);
        h.flags |= KV_REGION_F_PREFAULTED;
    }
    h.backing = backing;
    h.creator_pid = uint32_t(getpid());
    h.create_time_ns = now_ns();
    uint64_t id[2] = {0, 0};
    if (getrandom(id, sizeof id, 0) != sizeof id) id[0] = h.create_time_ns ^ h.creator_pid;
    h.pool_id_lo = id[0];
    h.pool_id_hi = id[1];
    layout_init_region(base, h);
    munmap(base, h.region_size);
    return 0;
}

// Move a fully built region file to its public name. With `exclusive`
// (unless KV_CREATE_F_REPLACE), an existing file wins and the create fails
// with -EEXIST: replacing a live pool would split its users across two
// regions and empty it for every new attacher.
int publish_file(const char *tmp, const char *path, bool exclusive, char *err, size_t errlen) {
    if (!exclusive) {
        if (rename(tmp, path) == 0) return 0;
        int e = errno;
        errf(err, errlen, "rename %s -> %s: %s", tmp, path, strerror(e));
        return -e;
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0) return 0;
    int e = errno;
    if (e == EINVAL || e == ENOSYS) { // a filesystem without RENAME_NOREPLACE
        if (link(tmp, path) == 0) {
            unlink(tmp);
            return 0;
        }
        e = errno;
    }
    if (e == EEXIST)
        errf(err, errlen,
             "%s exists: attach to it, or pass KV_CREATE_F_REPLACE to replace it (its blocks are "
             "then lost to "
             "every new attacher)",
             path);
    else
        errf(err, errlen, "rename %s -> %s: %s", tmp, path, strerror(e));
    return -e;
}

int attach_mapped(int fd, uint32_t flags, kv_pool **out, char *err, size_t errlen) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        errf(err, errlen, "fstat: %s", strerror(e));
        return -e;
    }
    if (flags & ~(KV_ATTACH_F_NO_REAP | KV_ATTACH_F_DAEMON)) {
        errf(err, errlen, "flags 0x%x has unknown bits (known: 0x%x)", flags,
             KV_ATTACH_F_NO_REAP | KV_ATTACH_F_DAEMON);
        return -EINVAL;
    }
    uint64_t len = uint64_t(st.st_size);
    if (len < KV_HEADER_BYTES) {
        errf(err, errlen, "region is %llu bytes: expected at least the %u-byte header",
             (unsigned long long)len, KV_HEADER_BYTES);
        return -ENODATA;
    }
    uint8_t *base = nullptr;
    int rc = map_region(fd, len, false, &base, err, errlen);
    if (rc) return rc;
    if ((rc = validate_region(base, len, err, errlen))) {
        munmap(base, len);
        return rc;
    }
    auto *p = new (std::nothrow) kv_pool;
    if (!p) {
        munmap(base, len);
        return -ENOMEM;
    }
    pool_bind(p, base, len);
    p->pid = uint32_t(getpid());
    if ((rc = client_claim(p, flags & KV_ATTACH_F_DAEMON))) {
        errf(err, errlen, "client table full: %u live clients attached (max_clients %u%s)",
             p->hdr->max_clients - (flags & KV_ATTACH_F_DAEMON ? 0 : p->hdr->daemon_slots),
             p->hdr->max_clients, p->hdr->daemon_slots ? ", one kept for the daemon" : "");
        munmap(base, len);
        delete p;
        return rc;
    }
    if (!(flags & KV_ATTACH_F_NO_REAP)) reap_dead_clients(p);
    *out = p;
    return 0;
}

} // namespace

extern "C" {

void kv_create_opts_init(kv_create_opts *o, uint64_t size) noexcept {
    if (!o) return;
    *o = kv_create_opts{};
    o->struct_size = sizeof(kv_create_opts);
    o->size = size;
    o->numa_node = -1;
    o->hugepages = KV_HUGEPAGES_NEVER;
    o->mode = 0660;
    o->evict_policy = KV_EVICT_PREFIX;
}

int kv_pool_create(const char *path, const kv_create_opts *opts, char *err,
                   size_t errlen) noexcept {
    kv_create_opts o;
    int rc = check_opts(opts, &o, err, errlen);
    if (rc) return rc;
    if (!path || !*path) {
        errf(err, errlen, "path is empty");
        return -EINVAL;
    }
    uint64_t hp = 0;
    int on_huge = dir_is_hugetlbfs(path, &hp);
    if (on_huge < 0) {
        errf(err, errlen, "%s: directory not usable: %s", path, strerror(-on_huge));
        return on_huge;
    }
    if (o.hugepages == KV_HUGEPAGES_REQUIRE && !on_huge) {
        errf(err, errlen,
             "%s is not on hugetlbfs but hugepages are required: create the pool on a hugetlbfs "
             "mount "
             "(mount -t hugetlbfs none DIR) or with kv_pool_create_memfd",
             path);
        return -EINVAL;
    }
    uint64_t page = on_huge ? hp : 4096;
    // Build the region under a private name and rename it into place, so a
    // pool at `path` is either the old one, untouched, or the new one fully
    // initialized: a failed create (bad geometry, no hugepages, full tmpfs)
    // never takes the existing pool with it, and no attacher ever sees a
    // half-built file. Attached processes keep their mapping of a replaced
    // pool.
    std::string tmp = std::string(path) + ".creating." + std::to_string(getpid());
    unlink(tmp.c_str()); // a leftover of an earlier process that had our pid
    mode_t mode = o.mode ? mode_t(o.mode) : 0660;
    int fd = open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        errf(err, errlen, "%s: %s", tmp.c_str(), strerror(e));
        return -e;
    }
    fchmod(fd, mode); // umask must not narrow the requested mode
    rc = init_on_fd(fd, o, page, on_huge ? KV_BACKING_HUGETLBFS : KV_BACKING_SHM, err, errlen);
    close(fd);
    if (rc == 0)
        rc = publish_file(tmp.c_str(), path, !(o.flags & KV_CREATE_F_REPLACE), err, errlen);
    if (rc) unlink(tmp.c_str());
    return rc;
}

int kv_pool_create_memfd(const char *name, const kv_create_opts *opts, int *fd_out, char *err,
                         size_t errlen) noexcept {
    kv_create_opts o;
    int rc = check_opts(opts, &o, err, errlen);
    if (rc) return rc;
    if (!fd_out) {
        errf(err, errlen, "fd_out is NULL");
        return -EINVAL;
    }
    const char *n = name && *name ? name : "kvpool";
    if (o.hugepages != KV_HUGEPAGES_NEVER) {
        uint64_t hp = default_hugepage_size();
        int fd = memfd_create(n, MFD_CLOEXEC | MFD_HUGETLB);
        if (fd >= 0) {
            rc = init_on_fd(fd, o, hp, KV_BACKING_MEMFD_HUGETLB, err, errlen);
            if (rc == 0) {
                *fd_out = fd;
                return 0;
            }
            close(fd);
            if (o.hugepages == KV_HUGEPAGES_REQUIRE) return rc;
        } else if (o.hugepages == KV_HUGEPAGES_REQUIRE) {
            int e = errno;
            errf(err, errlen, "memfd_create(MFD_HUGETLB): %s", strerror(e));
            return -e;
        }
    }
    int fd = memfd_create(n, MFD_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        errf(err, errlen, "memfd_create: %s", strerror(e));
        return -e;
    }
    rc = init_on_fd(fd, o, 4096, KV_BACKING_SHM, err, errlen);
    if (rc) {
        close(fd);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

int kv_pool_destroy(const char *path) noexcept {
    if (!path) return -EINVAL;
    return unlink(path) == 0 ? 0 : -errno;
}

int kv_pool_attach(const char *path, uint32_t flags, kv_pool **out, char *err,
                   size_t errlen) noexcept {
    if (!path || !out) {
        errf(err, errlen, "path or out is NULL");
        return -EINVAL;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        errf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    int rc = attach_mapped(fd, flags, out, err, errlen);
    close(fd); // the mapping keeps the file alive
    return rc;
}

int kv_pool_attach_fd(int fd, uint32_t flags, kv_pool **out, char *err, size_t errlen) noexcept {
    if (fd < 0 || !out) {
        errf(err, errlen, "bad fd %d or out is NULL", fd);
        return -EINVAL;
    }
    return attach_mapped(fd, flags, out, err, errlen);
}

int kv_pool_detach(kv_pool *p) noexcept {
    if (!p) return -EINVAL;
    // Give back everything this client holds, exactly as a reaper would if
    // the process had died: the same code path, so it is tested every detach.
    client_release_slot(p);
    munmap(p->base, p->len);
    delete p;
    return 0;
}

int kv_region_validate(const void *base, uint64_t len, char *err, size_t errlen) noexcept {
    if (!base) return -EINVAL;
    return validate_region(static_cast<const uint8_t *>(base), len, err, errlen);
}

const kv_region_header *kv_pool_header(const kv_pool *p) noexcept {
    return p ? p->hdr : nullptr;
}
uint32_t kv_pool_client_index(const kv_pool *p) noexcept {
    return p ? p->client : KV_NIL32;
}

const char *kv_strerror(int code) noexcept {
    switch (code) {
    case 0:
        return "success";
    case KV_DEDUP:
        return "already stored (deduplicated)";
    case -ENOENT:
        return "no such block or namespace";
    case -EBUSY:
        return "key is reserved by another writer";
    case -EMSGSIZE:
        return "block size is zero or larger than the slab size";
    case -ENOSPC:
        return "no space: every block that could be evicted is pinned or reserved";
    case -ENOBUFS:
        return "pin journal full: too many pins outstanding in this client";
    case -EINVAL:
        return "invalid argument";
    case -EEXIST:
        return "already exists";
    case -EPROTO:
        return "not a compatible kvpool region (magic, version or feature mismatch)";
    case -EBADMSG:
        return "corrupted region or data (inconsistent geometry or checksum mismatch)";
    case -ENODATA:
        return "region not initialized or truncated";
    case -EUSERS:
        return "client table full";
    case -ENOMEM:
        return "out of memory (or hugepages)";
    default:
        // INT_MIN has no positive counterpart: negate in a wider type.
        return code < 0 && code > -4096 ? strerror(-code) : "unknown result";
    }
}

} // extern "C"
