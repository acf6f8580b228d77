// SPDX-License-Identifier: MIT
// Backing memory helpers (backing.cc): page sizes, reservation, mapping, NUMA.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kv::detail {

uint64_t default_hugepage_size();
uint64_t free_hugepages(uint64_t page_size);
// 1 and *page_size if fd / path's directory is on hugetlbfs, 0 if not, -errno.
int hugetlbfs_page_size(int fd, uint64_t *page_size);
int dir_is_hugetlbfs(const char *path, uint64_t *page_size);
int size_backing(int fd, uint64_t size, char *err, size_t errlen); // ftruncate
// fallocate (after mbind, so the pages follow the NUMA policy); a hugepage shortfall becomes
// -ENOMEM with advice.
int reserve_backing(int fd, uint64_t size, bool huge, uint64_t page_size, char *err, size_t errlen);
int map_region(int fd, uint64_t size, bool populate, uint8_t **out, char *err, size_t errlen);
int bind_numa(uint8_t *base, uint64_t size, int node, char *err, size_t errlen);
void prefault(uint8_t *base, uint64_t size, uint64_t page_size);

} // namespace kv::detail
