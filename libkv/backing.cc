// SPDX-License-Identifier: MIT
//
// Backing memory: the file or memfd behind a region, its page size, NUMA
// placement and prefaulting. Space is reserved with fallocate at creation so
// a later page fault can never SIGBUS a client for lack of memory.
#include "backing.h"

#include "detail.h"

#include <fcntl.h>
#include <fstream>
#include <linux/magic.h>
#include <numa.h>
#include <numaif.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

namespace kv::detail {

uint64_t default_hugepage_size() {
    std::ifstream f("/proc/meminfo");
    std::string k;
    uint64_t v;
    std::string unit;
    while (f >> k >> v) {
        std::getline(f, unit);
        if (k == "Hugepagesize:") return v * 1024;
    }
    return 2ULL << 20;
}

uint64_t free_hugepages(uint64_t page_size) {
    std::string path = "/sys/kernel/mm/hugepages/hugepages-" + std::to_string(page_size / 1024) +
                       "kB/free_hugepages";
    std::ifstream f(path);
    uint64_t n = 0;
    if (f >> n) return n;
    return 0;
}

int hugetlbfs_page_size(int fd, uint64_t *page_size) {
    struct statfs sf;
    if (fstatfs(fd, &sf) != 0) return -errno;
    if (sf.f_type != HUGETLBFS_MAGIC) return 0;
    *page_size = uint64_t(sf.f_bsize);
    return 1;
}

int dir_is_hugetlbfs(const char *path, uint64_t *page_size) {
    std::string dir(path);
    auto slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash));
    struct statfs sf;
    if (statfs(dir.c_str(), &sf) != 0) return -errno;
    if (sf.f_type != HUGETLBFS_MAGIC) return 0;
    *page_size = uint64_t(sf.f_bsize);
    return 1;
}

int size_backing(int fd, uint64_t size, char *err, size_t errlen) {
    if (ftruncate(fd, off_t(size)) != 0) {
        int e = errno;
        errf(err, errlen, "ftruncate to %llu bytes: %s", (unsigned long long)size, strerror(e));
        return -e;
    }
    return 0;
}

int reserve_backing(int fd, uint64_t size, bool huge, uint64_t page_size, char *err,
                    size_t errlen) {
    // hugetlbfs reserves page by page and gives up with EINTR when a signal
    // arrives meanwhile (a timer, a debugger): the reservation made so far
    // stays, so simply go on.
    int r;
    do
        r = fallocate(fd, 0, 0, off_t(size));
    while (r != 0 && errno == EINTR);
    if (r != 0) {
        int e = errno;
        if (e == EOPNOTSUPP) return 0; // some filesystems: fall back to faulting in
        if (huge && (e == ENOSPC || e == ENOMEM)) {
            uint64_t need = size / page_size;
            errf(err, errlen,
                 "cannot reserve %llu hugepages of %llu KiB (%llu free): reserve them with "
                 "'echo N > /proc/sys/vm/nr_hugepages' (or hugepages-%llukB/nr_hugepages in sysfs)",
                 (unsigned long long)need, (unsigned long long)(page_size >> 10),
                 (unsigned long long)free_hugepages(page_size),
                 (unsigned long long)(page_size >> 10));
            return -ENOMEM;
        }
        errf(err, errlen, "fallocate %llu bytes: %s", (unsigned long long)size, strerror(e));
        return -e;
    }
    return 0;
}

int map_region(int fd, uint64_t size, bool writable_populate, uint8_t **out, char *err,
               size_t errlen) {
    int flags = MAP_SHARED;
    (void)writable_populate;
    void *m = mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        errf(err, errlen, "mmap %llu bytes: %s", (unsigned long long)size, strerror(e));
        return -e;
    }
    *out = static_cast<uint8_t *>(m);
    return 0;
}

int bind_numa(uint8_t *base, uint64_t size, int node, char *err, size_t errlen) {
    if (numa_available() < 0) {
        errf(err, errlen, "numa_node %d requested but NUMA is not available on this system", node);
        return -EINVAL;
    }
    if (node < 0 || node > numa_max_node()) {
        errf(err, errlen, "numa_node %d: expected 0..%d", node, numa_max_node());
        return -EINVAL;
    }
    unsigned long mask[16] = {};
    mask[node / (8 * sizeof(unsigned long))] |= 1UL << (node % (8 * sizeof(unsigned long)));
    if (mbind(base, size, MPOL_BIND, mask, sizeof(mask) * 8, MPOL_MF_MOVE) != 0) {
        int e = errno;
        errf(err, errlen, "mbind to node %d: %s", node, strerror(e));
        return -e;
    }
    return 0;
}

void prefault(uint8_t *base, uint64_t size, uint64_t page_size) {
#ifdef MADV_POPULATE_WRITE
    if (madvise(base, size, MADV_POPULATE_WRITE) == 0) return;
#endif
    // Older kernels: touch one byte per page. The backing is reserved
    // already, so this cannot SIGBUS; the write keeps the existing value.
    for (uint64_t off = 0; off < size; off += page_size) {
        volatile uint8_t *b = base + off;
        *b = *b;
    }
}

} // namespace kv::detail
