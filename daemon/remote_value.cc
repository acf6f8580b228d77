// SPDX-License-Identifier: MIT
#include "remote_value.h"

#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <xxhash.h>

namespace kv::daemon {

NsDigest ns_digest(const kv_manifest &m) {
    static_assert(sizeof(kv_manifest) == KV_MANIFEST_SIZE_V1);
    XXH128_hash_t h = XXH3_128bits(&m, sizeof m);
    return NsDigest{h.low64, h.high64};
}

const char *reject_name(Reject r) {
    switch (r) {
    case Reject::None:
        return "none";
    case Reject::Truncated:
        return "truncated";
    case Reject::Magic:
        return "magic";
    case Reject::Version:
        return "version";
    case Reject::HeaderSize:
        return "header_size";
    case Reject::Flags:
        return "flags";
    case Reject::Reserved:
        return "reserved";
    case Reject::Namespace:
        return "namespace";
    case Reject::Key:
        return "key";
    case Reject::Length:
        return "length";
    case Reject::Checksum:
        return "checksum";
    case Reject::Oversize:
        return "oversize";
    }
    return "unknown";
}

std::string strf(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return {};
    if (size_t(n) < sizeof buf) return std::string(buf, size_t(n));
    std::string s(size_t(n), '\0');
    va_start(ap, fmt);
    vsnprintf(s.data(), s.size() + 1, fmt, ap);
    va_end(ap);
    return s;
}

std::string remote_key(std::string_view prefix, const NsDigest &ns, const kv_key &key) {
    char buf[32 + 1 + 32 + 1];
    std::snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64 ":%016" PRIx64 "%016" PRIx64, ns.hi,
                  ns.lo, key.hi, key.lo);
    std::string s;
    s.reserve(prefix.size() + 65);
    s.append(prefix);
    s.append(buf, 65);
    return s;
}

kv_remote_header make_header(const NsDigest &ns, const kv_key &key, uint64_t length,
                             uint64_t checksum) {
    kv_remote_header h{};
    h.magic = KV_REMOTE_MAGIC;
    h.version = KV_REMOTE_VERSION;
    h.header_size = KV_REMOTE_HEADER_SIZE_V1;
    h.flags = 0;
    h.ns_digest_lo = ns.lo;
    h.ns_digest_hi = ns.hi;
    h.key_lo = key.lo;
    h.key_hi = key.hi;
    h.length = length;
    h.checksum = checksum;
    return h;
}

namespace {

CheckedValue refuse(Reject r, std::string detail) {
    CheckedValue v;
    v.reject = r;
    v.detail = std::move(detail);
    return v;
}

} // namespace

CheckedValue check_header(std::span<const uint8_t> value, const NsDigest &ns, const kv_key &key) {
    kv_remote_header h;
    if (value.size() < sizeof h)
        return refuse(Reject::Truncated,
                      strf("%zu bytes, shorter than the %zu-byte header", value.size(), sizeof h));
    std::memcpy(&h, value.data(), sizeof h); // the value's bytes carry no alignment
    if (h.magic != KV_REMOTE_MAGIC)
        return refuse(Reject::Magic, strf("magic %#018" PRIx64 ", expected %#018" PRIx64, h.magic,
                                          uint64_t(KV_REMOTE_MAGIC)));
    if (h.version != KV_REMOTE_VERSION)
        return refuse(Reject::Version, strf("format version %u, this host reads %u",
                                            unsigned(h.version), unsigned(KV_REMOTE_VERSION)));
    if (h.header_size != KV_REMOTE_HEADER_SIZE_V1)
        return refuse(Reject::HeaderSize,
                      strf("header_size %u, expected %u", unsigned(h.header_size),
                           unsigned(KV_REMOTE_HEADER_SIZE_V1)));
    if (h.flags & ~KV_REMOTE_F_KNOWN)
        return refuse(Reject::Flags, strf("flags %#x, known %#x", h.flags, KV_REMOTE_F_KNOWN));
    for (size_t i = 0; i < std::size(h.reserved); i++)
        if (h.reserved[i] != 0)
            return refuse(Reject::Reserved,
                          strf("reserved[%zu] is %#" PRIx64 ", expected 0", i, h.reserved[i]));
    if (h.ns_digest_lo != ns.lo || h.ns_digest_hi != ns.hi)
        return refuse(Reject::Namespace, strf("namespace digest %016" PRIx64 "%016" PRIx64
                                              ", expected %016" PRIx64 "%016" PRIx64,
                                              h.ns_digest_hi, h.ns_digest_lo, ns.hi, ns.lo));
    if (h.key_lo != key.lo || h.key_hi != key.hi)
        return refuse(Reject::Key,
                      strf("key %016" PRIx64 "%016" PRIx64 ", expected %016" PRIx64 "%016" PRIx64,
                           h.key_hi, h.key_lo, key.hi, key.lo));
    const uint64_t body = value.size() - sizeof h;
    if (h.length == 0) return refuse(Reject::Length, "length 0");
    if (body < h.length)
        return refuse(
            Reject::Truncated,
            strf("%" PRIu64 " bytes after the header, length says %" PRIu64, body, h.length));
    if (body > h.length)
        return refuse(
            Reject::Length,
            strf("%" PRIu64 " bytes after the header, length says %" PRIu64, body, h.length));
    CheckedValue v;
    v.data = value.subspan(sizeof h);
    v.checksum = h.checksum;
    return v;
}

CheckedValue check_value(std::span<const uint8_t> value, const NsDigest &ns, const kv_key &key) {
    CheckedValue v = check_header(value, ns, key);
    if (v.reject != Reject::None) return v;
    uint64_t got = XXH3_64bits(v.data.data(), v.data.size());
    if (got != v.checksum)
        return refuse(
            Reject::Checksum,
            strf("bytes hash to %#018" PRIx64 ", header says %#018" PRIx64, got, v.checksum));
    return v;
}

} // namespace kv::daemon
