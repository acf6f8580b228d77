// SPDX-License-Identifier: MIT
#include "remote_value.h"

#include "keyring.h"

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
    case Reject::Plaintext:
        return "plaintext";
    case Reject::KeyId:
        return "key_id";
    case Reject::Decrypt:
        return "decrypt";
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

std::string seal_value(crypto::Aead &aead, const Keyring &keyring, const NsDigest &ns,
                       const kv_key &key, std::span<const uint8_t> data, SealedHead &head,
                       uint8_t *out) {
    kv_remote_header h = make_header(ns, key, data.size(), 0);
    h.flags = KV_REMOTE_F_ENCRYPTED;
    auto dk = crypto::new_data_key();
    if (!dk) return dk.error();
    kv_remote_crypto c{};
    if (!crypto::wrap_key(aead, keyring.current(), keyring.current_id(), KV_REMOTE_MAGIC, *dk,
                          c.wrapped))
        return "wrapping the data key with key \"" + keyring.current_id() + "\" failed";
    // The data key seals this value alone: a fixed iv is never reused under it.
    const crypto::Iv iv = crypto::make_iv(KV_REMOTE_DATA_IV_KIND, 0, 0);
    std::memcpy(c.data_iv, iv.data(), iv.size());
    std::memcpy(head.data(), &h, sizeof h);
    std::memcpy(head.data() + sizeof h, &c, sizeof c);
    crypto::Tag tag;
    if (!aead.seal(*dk, iv, std::span<const uint8_t>(head.data(), KV_REMOTE_AAD_SIZE), data.data(),
                   out, data.size(), tag))
        return "AES-256-GCM seal failed";
    std::memcpy(head.data() + KV_REMOTE_AAD_SIZE, tag.data(), tag.size());
    return {};
}

namespace {

CheckedValue refuse(Reject r, std::string detail) {
    CheckedValue v;
    v.reject = r;
    v.detail = std::move(detail);
    return v;
}

// The crypto block's fields, and whether this reader holds its key.
CheckedValue check_crypto(CheckedValue v, const Keyring *keyring) {
    const kv_remote_crypto &c = v.crypto;
    if (c.wrapped.alg != KV_CRYPTO_AES_256_GCM)
        return refuse(Reject::Version, strf("crypto alg %u, this host reads %u (AES-256-GCM)",
                                            c.wrapped.alg, unsigned(KV_CRYPTO_AES_256_GCM)));
    if (c.reserved != 0)
        return refuse(Reject::Reserved,
                      strf("crypto block reserved word is %#x, expected 0", c.reserved));
    const std::string id = crypto::key_id_of(c.wrapped);
    if (!crypto::valid_key_id(id))
        return refuse(Reject::KeyId, "the key id field is not 1..31 characters of "
                                     "[A-Za-z0-9_.-], NUL-padded");
    if (!keyring)
        return refuse(Reject::KeyId,
                      "sealed with key \"" + id + "\", and this pool has no encryption keys");
    v.pool_key = keyring->find(id);
    if (!v.pool_key)
        return refuse(Reject::KeyId,
                      "sealed with key \"" + id +
                          "\", not configured in this pool (configured: " + keyring->ids() + ")");
    return v;
}

} // namespace

CheckedValue check_header(std::span<const uint8_t> value, const NsDigest &ns, const kv_key &key,
                          const Keyring *keyring) {
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
    const bool encrypted = h.flags & KV_REMOTE_F_ENCRYPTED;
    const size_t head = encrypted ? kSealedHeadBytes : sizeof h;
    if (value.size() < head)
        return refuse(Reject::Truncated,
                      strf("%zu bytes, shorter than the %zu-byte header and crypto block",
                           value.size(), head));
    const uint64_t body = value.size() - head;
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
    v.data = value.subspan(head);
    v.checksum = h.checksum;
    if (!encrypted) {
        // Whoever can write the store must not be able to put plaintext
        // into a pool that keeps only ciphertext outside the host.
        if (keyring)
            return refuse(Reject::Plaintext,
                          "a value in the clear, and this pool reads only values sealed with its "
                          "keys (configured: " +
                              keyring->ids() + ")");
        return v;
    }
    // In an encrypted value the checksum is zero (remote.h): a hash of the
    // plaintext would let a reader of the store confirm a guess.
    if (h.checksum != 0)
        return refuse(
            Reject::Reserved,
            strf("checksum %#018" PRIx64 " in an encrypted value, expected 0", h.checksum));
    v.encrypted = true;
    v.aad = value.first(KV_REMOTE_AAD_SIZE);
    std::memcpy(&v.crypto, value.data() + sizeof h, sizeof v.crypto);
    return check_crypto(std::move(v), keyring);
}

Reject open_value(crypto::Aead &aead, CheckedValue &v, uint8_t *out) {
    const std::string id = crypto::key_id_of(v.crypto.wrapped);
    auto fail = [&](std::string why) {
        std::memset(out, 0, v.data.size());
        v.reject = Reject::Decrypt;
        v.detail = std::move(why);
        return v.reject;
    };
    if (!v.encrypted || !v.pool_key) return fail("not an encrypted value that passed its checks");
    crypto::Key dk;
    if (!crypto::unwrap_key(aead, *v.pool_key, KV_REMOTE_MAGIC, v.crypto.wrapped, dk))
        return fail("the data key does not unwrap with key \"" + id +
                    "\": another key under that id, or a changed byte");
    crypto::Iv iv;
    std::memcpy(iv.data(), v.crypto.data_iv, iv.size());
    crypto::Tag tag;
    std::memcpy(tag.data(), v.crypto.data_tag, tag.size());
    if (!aead.open(dk, iv, v.aad, v.data.data(), out, v.data.size(), tag))
        return fail("the bytes do not authenticate under key \"" + id +
                    "\": a changed byte, or a value copied from another key or namespace");
    return Reject::None;
}

CheckedValue check_value(std::span<const uint8_t> value, const NsDigest &ns, const kv_key &key) {
    CheckedValue v = check_header(value, ns, key, nullptr);
    if (v.reject != Reject::None) return v;
    uint64_t got = XXH3_64bits(v.data.data(), v.data.size());
    if (got != v.checksum)
        return refuse(
            Reject::Checksum,
            strf("bytes hash to %#018" PRIx64 ", header says %#018" PRIx64, got, v.checksum));
    return v;
}

} // namespace kv::daemon
