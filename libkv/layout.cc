// SPDX-License-Identifier: MIT
//
// Region geometry: how a size and options become section offsets, how the
// creator initializes the tables, and how an attacher validates a region it
// did not create. Validation recomputes the layout from the header's
// geometry and compares every offset, so a region that passes has all its
// sections inside the mapping, aligned and non-overlapping.
#include "detail.h"
#include "feed.h"

#include <bit>
#include <ctime>

namespace kv::detail {

namespace {

constexpr uint64_t kMinSlab = 64 << 10;
constexpr uint64_t kMaxSlab = 1ULL << 30;

uint64_t align_up(uint64_t v, uint64_t a) {
    return (v + a - 1) / a * a;
}

// Size classes: 4, 8, 12, 16 KiB, then four steps per doubling up to 16 MiB and
// two above (at most 56 classes for a 1 GiB slab); every size is a multiple
// of 4 KiB so blocks stay O_DIRECT-aligned.
uint32_t make_classes(uint64_t slab_size, uint64_t *sizes) {
    uint32_t n = 0;
    for (uint64_t s = 4096; s <= 16384 && s <= slab_size; s += 4096)
        sizes[n++] = s;
    for (uint64_t d = 16384; d < slab_size; d *= 2) {
        int steps = d < (16ULL << 20) ? 4 : 2;
        for (int i = 1; i <= steps; i++) {
            uint64_t s = align_up(d + d * i / steps, 4096);
            if (s > slab_size) break;
            if (s > sizes[n - 1]) sizes[n++] = s;
        }
    }
    return n;
}

struct Sections {
    uint64_t state_off, class_off, ns_off, client_off, journal_off, bucket_off, entry_off, slab_off,
        block_off, feed_off, data_off, end;
};

// The one layout function: creation and validation both call it.
Sections place(const kv_region_header &h) {
    Sections s{};
    uint64_t off = KV_HEADER_BYTES;
    auto take = [&](uint64_t len, uint64_t align) {
        off = align_up(off, align);
        uint64_t at = off;
        off += len;
        return at;
    };
    s.state_off = take(sizeof(kv_region_state), KV_CACHELINE);
    s.class_off = take(uint64_t(h.n_classes) * sizeof(kv_class), KV_CACHELINE);
    s.ns_off = take(uint64_t(h.max_namespaces) * sizeof(kv_namespace), KV_CACHELINE);
    s.client_off = take(uint64_t(h.max_clients) * sizeof(kv_client), KV_CACHELINE);
    s.journal_off = take(uint64_t(h.max_clients) * h.pins_per_client * sizeof(kv_pin_slot), 4096);
    s.bucket_off = take(uint64_t(h.n_buckets) * 8, 4096);
    s.entry_off = take(uint64_t(h.n_entries) * sizeof(kv_entry), 4096);
    s.slab_off = take(uint64_t(h.n_slabs) * sizeof(kv_slab), 4096);
    s.block_off = take(uint64_t(h.n_slabs) * h.blocks_per_slab * 8, 4096);
    // v1.3: the change feed, when there is one (0 otherwise).
    s.feed_off = h.feed_slots ? take(feed_bytes(h.feed_slots), 4096) : 0;
    uint64_t data_align = h.page_size > 4096 ? h.page_size : 4096;
    s.data_off = take(uint64_t(h.n_slabs) * h.slab_size, data_align);
    s.end = off;
    return s;
}

void set_sections(kv_region_header &h, const Sections &s) {
    h.state_off = s.state_off;
    h.state_len = sizeof(kv_region_state);
    h.class_off = s.class_off;
    h.class_len = uint64_t(h.n_classes) * sizeof(kv_class);
    h.ns_off = s.ns_off;
    h.ns_len = uint64_t(h.max_namespaces) * sizeof(kv_namespace);
    h.client_off = s.client_off;
    h.client_len = uint64_t(h.max_clients) * sizeof(kv_client);
    h.journal_off = s.journal_off;
    h.journal_len = uint64_t(h.max_clients) * h.pins_per_client * sizeof(kv_pin_slot);
    h.bucket_off = s.bucket_off;
    h.bucket_len = uint64_t(h.n_buckets) * 8;
    h.entry_off = s.entry_off;
    h.entry_len = uint64_t(h.n_entries) * sizeof(kv_entry);
    h.slab_off = s.slab_off;
    h.slab_len = uint64_t(h.n_slabs) * sizeof(kv_slab);
    h.block_off = s.block_off;
    h.block_len = uint64_t(h.n_slabs) * h.blocks_per_slab * 8;
    h.data_off = s.data_off;
    h.data_len = uint64_t(h.n_slabs) * h.slab_size;
    h.feed_off = s.feed_off;
    h.feed_len = feed_bytes(h.feed_slots);
}

} // namespace

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}

#if !defined(__x86_64__) && !defined(__aarch64__)
uint64_t tick() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}
#endif

int layout_compute(const kv_create_opts &o, uint64_t page_size, kv_region_header *out, char *err,
                   size_t errlen) {
    kv_region_header h{};
    uint64_t slab = o.slab_size ? o.slab_size : (4ULL << 20);
    if (!std::has_single_bit(slab) || slab < kMinSlab || slab > kMaxSlab) {
        errf(err, errlen, "slab_size %llu: expected a power of two from %llu to %llu",
             (unsigned long long)slab, (unsigned long long)kMinSlab, (unsigned long long)kMaxSlab);
        return -EINVAL;
    }
    uint64_t avg = o.avg_block_size ? o.avg_block_size : (16ULL << 10);
    if (avg < 4096 || avg > slab) {
        errf(err, errlen, "avg_block_size %llu: expected 4096..slab_size (%llu)",
             (unsigned long long)avg, (unsigned long long)slab);
        return -EINVAL;
    }
    if (o.evict_policy > KV_EVICT_MAX) {
        errf(err, errlen, "evict_policy %u: expected 0..%u (KV_EVICT_*)", o.evict_policy,
             KV_EVICT_MAX);
        return -EINVAL;
    }
    h.evict_policy = o.evict_policy;
    if (o.feed_slots && (!std::has_single_bit(o.feed_slots) || o.feed_slots < KV_FEED_MIN_SLOTS ||
                         o.feed_slots > KV_FEED_MAX_SLOTS)) {
        errf(err, errlen, "feed_slots %u: expected 0 (no feed) or a power of two from %u to %u",
             o.feed_slots, KV_FEED_MIN_SLOTS, KV_FEED_MAX_SLOTS);
        return -EINVAL;
    }
    h.feed_slots = o.feed_slots;
    h.feed_slot_size = o.feed_slots ? sizeof(kv_feed_slot) : 0;
    h.max_clients = o.max_clients ? o.max_clients : 64;
    if (o.flags & KV_CREATE_F_DAEMON_SLOT) {
        // One slot beyond the ones asked for, kept for the daemon.
        h.daemon_slots = 1;
        h.max_clients++;
    }
    h.pins_per_client = o.pins_per_client ? o.pins_per_client : 4096;
    h.max_namespaces = o.max_namespaces ? o.max_namespaces : 64;
    if (h.max_clients > KV_MAX_CLIENTS) {
        errf(err, errlen, "max_clients %u: expected 1..%u", h.max_clients, KV_MAX_CLIENTS);
        return -EINVAL;
    }
    if (h.pins_per_client > KV_MAX_PINS_PER_CLIENT) {
        errf(err, errlen, "pins_per_client %u: expected 1..%u", h.pins_per_client,
             KV_MAX_PINS_PER_CLIENT);
        return -EINVAL;
    }
    if (h.max_namespaces > 65536) {
        errf(err, errlen, "max_namespaces %u: expected 1..65536", h.max_namespaces);
        return -EINVAL;
    }
    uint64_t sizes[KV_MAX_CLASSES];
    h.n_classes = make_classes(slab, sizes);
    h.slab_size = slab;
    h.blocks_per_slab = uint32_t(slab >> KV_MIN_BLOCK_SHIFT);
    h.page_size = page_size;
    h.region_size = align_up(o.size, page_size);

    // Largest slab count whose metadata still fits: start from the upper
    // bound and step down (metadata shrinks with every slab removed).
    uint64_t n = h.region_size / slab;
    for (; n > 0; n--) {
        uint64_t data = n * slab;
        uint64_t entries = data / avg;
        if (entries < 64) entries = 64;
        if (entries > 0xfffffff0ULL) entries = 0xfffffff0ULL;
        if (o.max_entries && entries > o.max_entries) entries = o.max_entries; // the caller's cap
        h.n_slabs = uint32_t(n);
        h.n_entries = uint32_t(entries);
        h.n_buckets = uint32_t(std::bit_ceil(entries));
        if (place(h).end <= h.region_size) break;
    }
    if (n == 0) {
        h.n_slabs = 1;
        h.n_entries = 64;
        h.n_buckets = 64;
        errf(err, errlen,
             "size %llu: too small; a pool with slab_size %llu needs at least %llu bytes",
             (unsigned long long)o.size, (unsigned long long)slab,
             (unsigned long long)align_up(place(h).end, page_size));
        return -EINVAL;
    }
    set_sections(h, place(h));
    h.abi_major = KV_ABI_MAJOR;
    h.abi_minor = KV_ABI_MINOR;
    h.header_size = sizeof(kv_region_header);
    h.incompat_features = KV_INCOMPAT_F_CAS16 | KV_INCOMPAT_F_LIVE_ACCT;
    if (h.feed_slots) h.incompat_features |= KV_INCOMPAT_F_FEED;
    if (o.flags & KV_CREATE_F_SECURE_ERASE) h.incompat_features |= KV_INCOMPAT_F_SECURE_ERASE;
    h.compat_features = KV_COMPAT_F_EVICT_POLICY;
    h.numa_node = KV_NUMA_NONE;
    *out = h;
    return 0;
}

void layout_init_region(uint8_t *base, const kv_region_header &h) {
    // The backing is fresh (ftruncate/fallocate): zero already, and zero is
    // the initial state of every table (FREE entries with gen 0, FREE slabs,
    // UNUSED blocks, FREE clients and namespaces). Only what is non-zero is
    // written here.
    auto *cls = reinterpret_cast<kv_class *>(base + h.class_off);
    uint64_t sizes[KV_MAX_CLASSES];
    make_classes(h.slab_size, sizes);
    for (uint32_t i = 0; i < h.n_classes; i++) {
        cls[i].block_size = sizes[i];
        cls[i].blocks_per_slab = uint32_t(h.slab_size / sizes[i]);
        cls[i].cursor_slab = 0;
    }
    auto *buckets = reinterpret_cast<uint64_t *>(base + h.bucket_off);
    for (uint32_t i = 0; i < h.n_buckets; i++)
        buckets[i] = Link::make(KV_NIL32, 0, false);
    auto *entries = reinterpret_cast<kv_entry *>(base + h.entry_off);
    for (uint32_t i = 0; i < h.n_entries; i++)
        entries[i].next = Link::make(KV_NIL32, 0, false);

    // Header last, magic very last (eal_common_mcfg.c publishes the same way).
    // LAY-R1: publishes the header and every table written above; pairs
    // with LAY-A1 (layout.cc, validate_region).
    auto *dst = reinterpret_cast<kv_region_header *>(base);
    kv_region_header tmp = h;
    tmp.magic = 0;
    memcpy(dst, &tmp, sizeof tmp);
    store(dst->magic, uint64_t(KV_REGION_MAGIC), std::memory_order_release);
}

#define BAD(code, ...)                                                                             \
    do {                                                                                           \
        errf(err, errlen, __VA_ARGS__);                                                            \
        return code;                                                                               \
    } while (0)

int validate_region(const uint8_t *base, uint64_t len, char *err, size_t errlen) {
    using ull = unsigned long long;
    if (len < KV_HEADER_BYTES)
        BAD(-ENODATA, "region is %llu bytes: expected at least the %u-byte header", (ull)len,
            KV_HEADER_BYTES);
    auto *hp = reinterpret_cast<const kv_region_header *>(base);
    // LAY-A1: a non-zero magic makes the creator's header and tables
    // visible; pairs with LAY-R1 (layout.cc, layout_init_region).
    uint64_t magic = load(const_cast<uint64_t &>(hp->magic), std::memory_order_acquire);
    if (magic == 0)
        BAD(-ENODATA,
            "magic is 0: the region is not initialized (or its creator died before publishing it); "
            "expected 0x%016llx",
            (ull)KV_REGION_MAGIC);
    if (magic != KV_REGION_MAGIC)
        BAD(-EPROTO, "magic 0x%016llx: expected 0x%016llx (not a kvpool region)", (ull)magic,
            (ull)KV_REGION_MAGIC);
    kv_region_header h;
    memcpy(&h, hp, sizeof h);
    if (h.abi_major != KV_ABI_MAJOR)
        BAD(-EPROTO, "abi_major %u (region v%u.%u): this library speaks v%u.%u", h.abi_major,
            h.abi_major, h.abi_minor, KV_ABI_MAJOR, KV_ABI_MINOR);
    if (h.header_size < KV_REGION_HEADER_SIZE_V1 || h.header_size > KV_HEADER_BYTES)
        BAD(-EPROTO, "header_size %u: expected %u..%u", h.header_size, KV_REGION_HEADER_SIZE_V1,
            KV_HEADER_BYTES);
    if (h.incompat_features & ~KV_INCOMPAT_KNOWN)
        BAD(-EPROTO,
            "incompat_features 0x%llx has unknown bits 0x%llx (known: 0x%llx); a newer library "
            "made "
            "this region",
            (ull)h.incompat_features, (ull)(h.incompat_features & ~KV_INCOMPAT_KNOWN),
            (ull)KV_INCOMPAT_KNOWN);
    if (!(h.incompat_features & KV_INCOMPAT_F_CAS16))
        BAD(-EPROTO, "incompat_features 0x%llx lacks CAS16 (0x%llx), required by v1",
            (ull)h.incompat_features, (ull)KV_INCOMPAT_F_CAS16);
    if (h.evict_policy > KV_EVICT_MAX)
        BAD(-EPROTO,
            "evict_policy %u: this library knows 0..%u (KV_EVICT_*); a newer library made this "
            "region",
            h.evict_policy, KV_EVICT_MAX);
    if (h.daemon_slots > 1 || h.daemon_slots >= h.max_clients)
        BAD(h.daemon_slots > 1 ? -EPROTO : -EBADMSG,
            "daemon_slots %u: expected 0 or 1, and fewer than max_clients (%u)", h.daemon_slots,
            h.max_clients);
    // v1.3: a feed is announced by its incompat bit and nothing else.
    if (!!(h.incompat_features & KV_INCOMPAT_F_FEED) != (h.feed_slots != 0))
        BAD(-EBADMSG,
            "feed_slots %u with incompat_features 0x%llx: expected FEED (0x%llx) exactly "
            "when feed_slots > 0",
            h.feed_slots, (ull)h.incompat_features, (ull)KV_INCOMPAT_F_FEED);
    if (h.feed_slots && (!std::has_single_bit(h.feed_slots) || h.feed_slots < KV_FEED_MIN_SLOTS ||
                         h.feed_slots > KV_FEED_MAX_SLOTS))
        BAD(-EBADMSG, "feed_slots %u: expected a power of two from %u to %u", h.feed_slots,
            KV_FEED_MIN_SLOTS, KV_FEED_MAX_SLOTS);
    if (h.feed_slot_size != (h.feed_slots ? sizeof(kv_feed_slot) : 0))
        BAD(-EPROTO, "feed_slot_size %u: expected %zu", h.feed_slot_size,
            h.feed_slots ? sizeof(kv_feed_slot) : size_t(0));
    for (size_t i = 0; i < sizeof h.reserved / sizeof h.reserved[0]; i++)
        if (h.reserved[i])
            BAD(-EPROTO, "header reserved[%zu] is 0x%llx: expected 0", i, (ull)h.reserved[i]);
    // Bytes of a larger creator's header past our struct must be zero too,
    // unless it also announced them with a compat bit we would ignore.
    for (uint32_t i = sizeof h; i < h.header_size; i++)
        if (base[i])
            BAD(-EPROTO, "header byte %u is 0x%02x: expected 0 (unknown header extension)", i,
                base[i]);
    if (h.region_size != len)
        BAD(len < h.region_size ? -ENODATA : -EBADMSG,
            "region_size %llu: the mapping is %llu bytes%s", (ull)h.region_size, (ull)len,
            len < h.region_size ? " (truncated file)" : "");
    if (!std::has_single_bit(h.page_size) || h.page_size < 4096 || h.page_size > (1ULL << 30))
        BAD(-EBADMSG, "page_size %llu: expected a power of two from 4096 to 1 GiB",
            (ull)h.page_size);
    if (h.max_clients == 0 || h.max_clients > KV_MAX_CLIENTS)
        BAD(-EBADMSG, "max_clients %u: expected 1..%u", h.max_clients, KV_MAX_CLIENTS);
    if (h.pins_per_client == 0 || h.pins_per_client > KV_MAX_PINS_PER_CLIENT)
        BAD(-EBADMSG, "pins_per_client %u: expected 1..%u", h.pins_per_client,
            KV_MAX_PINS_PER_CLIENT);
    if (h.max_namespaces == 0 || h.max_namespaces > 65536)
        BAD(-EBADMSG, "max_namespaces %u: expected 1..65536", h.max_namespaces);
    if (!std::has_single_bit(h.slab_size) || h.slab_size < kMinSlab || h.slab_size > kMaxSlab)
        BAD(-EBADMSG, "slab_size %llu: expected a power of two from %llu to %llu", (ull)h.slab_size,
            (ull)kMinSlab, (ull)kMaxSlab);
    if (h.blocks_per_slab != (h.slab_size >> KV_MIN_BLOCK_SHIFT))
        BAD(-EBADMSG, "blocks_per_slab %u: expected slab_size/4096 = %llu", h.blocks_per_slab,
            (ull)(h.slab_size >> KV_MIN_BLOCK_SHIFT));
    uint64_t sizes[KV_MAX_CLASSES];
    uint32_t ncls = make_classes(h.slab_size, sizes);
    if (h.n_classes != ncls)
        BAD(-EBADMSG, "n_classes %u: expected %u for slab_size %llu", h.n_classes, ncls,
            (ull)h.slab_size);
    if (h.n_entries == 0 || h.n_entries >= KV_NIL32)
        BAD(-EBADMSG, "n_entries %u: expected 1..%u", h.n_entries, KV_NIL32 - 1);
    if (!std::has_single_bit(h.n_buckets))
        BAD(-EBADMSG, "n_buckets %u: expected a power of two", h.n_buckets);
    if (h.n_slabs == 0 || uint64_t(h.n_slabs) * h.slab_size > h.region_size)
        BAD(-EBADMSG, "n_slabs %u of %llu bytes: expected 1..%llu for region_size %llu", h.n_slabs,
            (ull)h.slab_size, (ull)(h.region_size / h.slab_size), (ull)h.region_size);

    // Every section must be exactly where the layout function puts it.
    Sections s = place(h);
    kv_region_header want = h;
    set_sections(want, s);
    struct {
        const char *name;
        uint64_t seen, expected;
    } fields[] = {
        {"state_off", h.state_off, want.state_off},
        {"state_len", h.state_len, want.state_len},
        {"class_off", h.class_off, want.class_off},
        {"class_len", h.class_len, want.class_len},
        {"ns_off", h.ns_off, want.ns_off},
        {"ns_len", h.ns_len, want.ns_len},
        {"client_off", h.client_off, want.client_off},
        {"client_len", h.client_len, want.client_len},
        {"journal_off", h.journal_off, want.journal_off},
        {"journal_len", h.journal_len, want.journal_len},
        {"bucket_off", h.bucket_off, want.bucket_off},
        {"bucket_len", h.bucket_len, want.bucket_len},
        {"entry_off", h.entry_off, want.entry_off},
        {"entry_len", h.entry_len, want.entry_len},
        {"slab_off", h.slab_off, want.slab_off},
        {"slab_len", h.slab_len, want.slab_len},
        {"block_off", h.block_off, want.block_off},
        {"block_len", h.block_len, want.block_len},
        {"data_off", h.data_off, want.data_off},
        {"data_len", h.data_len, want.data_len},
        {"feed_off", h.feed_off, want.feed_off},
        {"feed_len", h.feed_len, want.feed_len},
    };
    for (auto &f : fields)
        if (f.seen != f.expected)
            BAD(-EBADMSG, "%s is %llu: expected %llu for this geometry", f.name, (ull)f.seen,
                (ull)f.expected);
    if (s.end > h.region_size)
        BAD(-EBADMSG, "sections end at %llu: beyond region_size %llu", (ull)s.end,
            (ull)h.region_size);

    auto *cls = reinterpret_cast<const kv_class *>(base + h.class_off);
    for (uint32_t i = 0; i < h.n_classes; i++) {
        if (cls[i].block_size != sizes[i] || cls[i].blocks_per_slab != h.slab_size / sizes[i])
            BAD(-EBADMSG, "class %u: block_size %llu x %u per slab, expected %llu x %llu", i,
                (ull)cls[i].block_size, cls[i].blocks_per_slab, (ull)sizes[i],
                (ull)(h.slab_size / sizes[i]));
    }
    return 0;
}

void pool_bind(kv_pool *p, uint8_t *base, uint64_t len) {
    p->base = base;
    p->len = len;
    p->hdr = reinterpret_cast<const kv_region_header *>(base);
    const kv_region_header &h = *p->hdr;
    p->state = reinterpret_cast<kv_region_state *>(base + h.state_off);
    p->classes = reinterpret_cast<kv_class *>(base + h.class_off);
    p->ns = reinterpret_cast<kv_namespace *>(base + h.ns_off);
    p->clients = reinterpret_cast<kv_client *>(base + h.client_off);
    p->journal_all = reinterpret_cast<kv_pin_slot *>(base + h.journal_off);
    p->buckets = reinterpret_cast<uint64_t *>(base + h.bucket_off);
    p->entries = reinterpret_cast<kv_entry *>(base + h.entry_off);
    p->slabs = reinterpret_cast<kv_slab *>(base + h.slab_off);
    p->blocks = reinterpret_cast<uint64_t *>(base + h.block_off);
    p->data = base + h.data_off;
    p->bucket_mask = h.n_buckets - 1;
    p->policy = h.evict_policy;
    p->secure_erase = h.incompat_features & KV_INCOMPAT_F_SECURE_ERASE;
    if (h.feed_slots) {
        p->feed_hdr = reinterpret_cast<kv_feed_header *>(base + h.feed_off);
        p->feed_slots =
            reinterpret_cast<kv_feed_slot *>(base + h.feed_off + sizeof(kv_feed_header));
        p->feed_mask = h.feed_slots - 1;
    }
}

} // namespace kv::detail
