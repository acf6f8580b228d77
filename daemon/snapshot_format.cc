// SPDX-License-Identifier: MIT
#include "snapshot_format.h"

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <xxhash.h>

namespace kv::daemon::snapshot {

namespace {

__attribute__((format(printf, 2, 3))) FormatError fail(int code, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return FormatError{code, buf};
}

bool all_zero(const void *p, size_t n) {
    auto *b = static_cast<const uint8_t *>(p);
    return std::all_of(b, b + n, [](uint8_t c) { return c == 0; });
}

constexpr size_t kSealedHead = kSegmentHead - sizeof(kv_snap_segment);

// The aad of a segment head: its struct with the checksum and tag zero
// (the checksum is computed over the sealed bytes, after the tag).
kv_snap_segment segment_aad(kv_snap_segment s) {
    s.checksum = 0;
    memset(s.tag, 0, sizeof s.tag);
    return s;
}

// The aad of the namespace table: the writer's header_size bytes of the
// header with checksum and ns_tag zero. header_size was bounds-checked.
std::vector<uint8_t> header_aad(std::span<const uint8_t> buf, uint32_t header_size) {
    std::vector<uint8_t> aad(buf.begin(), buf.begin() + header_size);
    memset(aad.data() + offsetof(kv_snap_header, checksum), 0, sizeof(uint64_t));
    memset(aad.data() + offsetof(kv_snap_header, ns_tag), 0, KV_CRYPTO_TAG_BYTES);
    return aad;
}

std::span<const uint8_t> bytes_of(const auto &v) {
    return {reinterpret_cast<const uint8_t *>(&v), sizeof v};
}

crypto::Tag tag_of(const uint8_t *p) {
    crypto::Tag t;
    memcpy(t.data(), p, t.size());
    return t;
}

// Checks of one namespace of a parsed (or decrypted) table.
std::expected<void, FormatError> check_namespaces(Header &out) {
    for (uint32_t i = 0; i < out.namespaces.size(); i++) {
        const kv_snap_namespace &ns = out.namespaces[i];
        if (ns.reserved0 != 0 || !all_zero(ns.reserved, sizeof ns.reserved))
            return std::unexpected(
                fail(EBADMSG, "namespace %u (id %u): reserved fields are not zero", i, ns.id));
    }
    std::sort(out.namespaces.begin(), out.namespaces.end(),
              [](const kv_snap_namespace &a, const kv_snap_namespace &b) { return a.id < b.id; });
    for (size_t i = 1; i < out.namespaces.size(); i++)
        if (out.namespaces[i].id == out.namespaces[i - 1].id)
            return std::unexpected(fail(EBADMSG,
                                        "namespace id %u appears twice: expected unique ids",
                                        out.namespaces[i].id));
    return {};
}

} // namespace

uint64_t header_checksum(std::span<uint8_t> header) {
    // XXH3 cannot skip bytes: hash with the field zeroed in place and put
    // it back (a header can be megabytes; no copy, no allocation).
    constexpr size_t off = offsetof(kv_snap_header, checksum);
    uint64_t saved;
    memcpy(&saved, header.data() + off, sizeof saved);
    memset(header.data() + off, 0, sizeof saved);
    const uint64_t sum = XXH3_64bits(header.data(), header.size());
    memcpy(header.data() + off, &saved, sizeof saved);
    return sum;
}

uint64_t segment_checksum(const void *head) {
    uint8_t copy[kSegmentHead];
    memcpy(copy, head, sizeof copy);
    memset(copy + offsetof(kv_snap_segment, checksum), 0, sizeof(uint64_t));
    return XXH3_64bits(copy, sizeof copy);
}

uint64_t trailer_checksum(const kv_snap_trailer &t) {
    kv_snap_trailer copy = t;
    copy.checksum = 0;
    return XXH3_64bits(&copy, sizeof copy);
}

uint64_t chain_segment(uint64_t h, uint64_t segment_checksum) {
    return XXH3_64bits_withSeed(&segment_checksum, sizeof segment_checksum, h);
}

bool Header::has_namespace(uint32_t id) const {
    auto it = std::lower_bound(namespaces.begin(), namespaces.end(), id,
                               [](const kv_snap_namespace &n, uint32_t v) { return n.id < v; });
    return it != namespaces.end() && it->id == id;
}

std::expected<uint64_t, FormatError> check_header_prefix(std::span<const uint8_t> first,
                                                         uint64_t file_size) {
    if (file_size < kAlign || first.size() < sizeof(kv_snap_header))
        return std::unexpected(fail(
            ENODATA, "file is %" PRIu64 " bytes: expected at least %" PRIu64 " (a snapshot header)",
            file_size, kAlign));
    kv_snap_header h;
    memcpy(&h, first.data(), sizeof h);
    if (h.magic != KV_SNAP_MAGIC)
        return std::unexpected(
            fail(EPROTO, "magic 0x%016" PRIx64 ": expected 0x%016llx (a kvpool snapshot)", h.magic,
                 KV_SNAP_MAGIC));
    if (h.version_major != KV_SNAP_VERSION_MAJOR)
        return std::unexpected(fail(EPROTO, "format version %u.%u: this reader reads version %u.x",
                                    h.version_major, h.version_minor, KV_SNAP_VERSION_MAJOR));
    if (h.incompat_features & ~KV_SNAP_INCOMPAT_KNOWN)
        return std::unexpected(fail(EPROTO,
                                    "incompat features 0x%" PRIx64 ": this reader knows 0x%llx",
                                    h.incompat_features, KV_SNAP_INCOMPAT_KNOWN));
    if (h.header_size < KV_SNAP_HEADER_SIZE_V1 || h.header_size % 8 != 0 || h.header_size > kAlign)
        return std::unexpected(fail(EBADMSG,
                                    "header_size %u: expected a multiple of 8 from %u to %" PRIu64,
                                    h.header_size, KV_SNAP_HEADER_SIZE_V1, kAlign));
    const uint64_t need = header_len_for(h.header_size, h.n_namespaces);
    if (h.header_len % kAlign != 0 || h.header_len < need || h.header_len > kMaxHeaderLen)
        return std::unexpected(fail(EBADMSG,
                                    "header_len %" PRIu64
                                    " for %u namespaces: expected a multiple of %" PRIu64
                                    " from %" PRIu64 " to %" PRIu64,
                                    h.header_len, h.n_namespaces, kAlign, need, kMaxHeaderLen));
    if (h.header_len > file_size)
        return std::unexpected(fail(ENODATA,
                                    "header_len %" PRIu64 ": the file is only %" PRIu64 " bytes",
                                    h.header_len, file_size));
    if (!std::has_single_bit(h.slab_size) || h.slab_size < kAlign || h.slab_size > kMaxSlabSize)
        return std::unexpected(fail(
            EBADMSG, "slab_size %" PRIu64 ": expected a power of two from %" PRIu64 " to %" PRIu64,
            h.slab_size, kAlign, kMaxSlabSize));
    return h.header_len;
}

std::expected<Header, FormatError> parse_header(std::span<uint8_t> buf, uint64_t file_size) {
    auto len = check_header_prefix(buf, file_size);
    if (!len) return std::unexpected(len.error());
    if (buf.size() < *len)
        return std::unexpected(
            fail(ENODATA, "header is %zu bytes: expected header_len %" PRIu64, buf.size(), *len));
    Header out;
    // An older writer's header is shorter: what it lacks reads as zero.
    out.hdr = kv_snap_header{};
    uint32_t writer_size;
    memcpy(&writer_size, buf.data() + offsetof(kv_snap_header, header_size), sizeof writer_size);
    memcpy(&out.hdr, buf.data(), std::min<size_t>(writer_size, sizeof out.hdr));
    const kv_snap_header &h = out.hdr;
    const uint64_t sum = header_checksum(buf.first(*len));
    if (sum != h.checksum)
        return std::unexpected(fail(EBADMSG,
                                    "header checksum 0x%016" PRIx64 ": the header's %" PRIu64
                                    " bytes hash to 0x%016" PRIx64,
                                    h.checksum, *len, sum));
    if (!all_zero(h.reserved, sizeof h.reserved) || h.reserved1 != 0)
        return std::unexpected(fail(EBADMSG, "header reserved fields are not zero"));
    if ((h.compat_features & KV_SNAP_COMPAT_HISTORY) && h.header_size < KV_SNAP_HEADER_SIZE_V2)
        return std::unexpected(fail(EBADMSG,
                                    "header_size %u with the history feature: expected at least %u "
                                    "(room for evict_policy)",
                                    h.header_size, KV_SNAP_HEADER_SIZE_V2));
    if (out.encrypted()) {
        if (h.header_size < KV_SNAP_HEADER_SIZE_V3 || !out.has_history())
            return std::unexpected(fail(EBADMSG,
                                        "header_size %u, compat 0x%" PRIx64
                                        " with the encrypted feature: expected at least %u and "
                                        "the history feature",
                                        h.header_size, h.compat_features, KV_SNAP_HEADER_SIZE_V3));
        if (h.data_key.alg != KV_CRYPTO_AES_256_GCM)
            return std::unexpected(fail(EPROTO,
                                        "data key algorithm %u: this reader knows %u (AES-256-GCM)",
                                        h.data_key.alg, KV_CRYPTO_AES_256_GCM));
        out.key_id = crypto::key_id_of(h.data_key);
        if (!crypto::valid_key_id(out.key_id))
            return std::unexpected(
                fail(EBADMSG, "data key's key id is not 1..31 characters of [A-Za-z0-9_.-]"));
        return out; // the namespaces are sealed: unlock_header
    }
    if (!all_zero(&h.data_key, sizeof h.data_key) || !all_zero(h.ns_tag, sizeof h.ns_tag))
        return std::unexpected(
            fail(EBADMSG, "header of a plain snapshot: data_key and ns_tag are not zero"));
    out.namespaces.resize(h.n_namespaces);
    for (uint32_t i = 0; i < h.n_namespaces; i++)
        memcpy(&out.namespaces[i],
               buf.data() + h.header_size + uint64_t(i) * sizeof(kv_snap_namespace),
               sizeof(kv_snap_namespace));
    if (auto ok = check_namespaces(out); !ok) return std::unexpected(ok.error());
    return out;
}

std::expected<void, FormatError> unlock_header(std::span<const uint8_t> buf, Header &h,
                                               const crypto::Key &pool_key) {
    const kv_snap_header &hd = h.hdr;
    auto crypt = std::make_shared<DataKey>();
    if (!crypto::unwrap_key(crypt->aead, pool_key, KV_SNAP_MAGIC, hd.data_key, crypt->key))
        return std::unexpected(fail(EKEYREJECTED,
                                    "key \"%s\" does not open the snapshot's data key: the key "
                                    "configured under that id is not the one it was written with",
                                    h.key_id.c_str()));
    const uint64_t table = uint64_t(hd.n_namespaces) * sizeof(kv_snap_namespace);
    if (buf.size() < hd.header_size + table) // parse_header checked header_len
        return std::unexpected(fail(ENODATA, "header is %zu bytes: expected %" PRIu64, buf.size(),
                                    hd.header_size + table));
    const std::vector<uint8_t> aad = header_aad(buf, hd.header_size);
    h.namespaces.resize(hd.n_namespaces);
    auto *plain = reinterpret_cast<uint8_t *>(h.namespaces.data());
    if (!crypt->aead.open(crypt->key, crypto::make_iv(KV_SNAP_IV_NAMESPACES, 0, 0), aad,
                          buf.data() + hd.header_size, plain, table, tag_of(hd.ns_tag))) {
        h.namespaces.clear();
        return std::unexpected(fail(EBADMSG,
                                    "header of the snapshot encrypted with key \"%s\": its "
                                    "authentication tag does not match (the header or its "
                                    "namespaces were altered)",
                                    h.key_id.c_str()));
    }
    if (auto ok = check_namespaces(h); !ok) {
        h.namespaces.clear();
        return ok;
    }
    h.crypt = std::move(crypt);
    return {};
}

std::expected<Segment, FormatError> parse_segment(std::span<const uint8_t> head, uint64_t seq,
                                                  uint64_t seg_off, uint64_t file_size,
                                                  const Header &h) {
    if (head.size() < kSegmentHead || seg_off > file_size || file_size - seg_off < kSegmentHead)
        return std::unexpected(
            fail(ENODATA,
                 "segment %" PRIu64 " at offset %" PRIu64 ": the file ends after %" PRIu64
                 " bytes of its %" PRIu64 "-byte head",
                 seq, seg_off, seg_off < file_size ? file_size - seg_off : 0, kSegmentHead));
    Segment out{};
    kv_snap_segment &s = out.seg;
    memcpy(&s, head.data(), sizeof s);
    if (s.magic != KV_SNAP_SEGMENT_MAGIC)
        return std::unexpected(fail(EBADMSG,
                                    "segment %" PRIu64 " at offset %" PRIu64 ": magic 0x%016" PRIx64
                                    ": expected 0x%016llx",
                                    seq, seg_off, s.magic, KV_SNAP_SEGMENT_MAGIC));
    const uint64_t sum = segment_checksum(head.data());
    if (sum != s.checksum)
        return std::unexpected(fail(EBADMSG,
                                    "segment %" PRIu64 " at offset %" PRIu64
                                    ": checksum 0x%016" PRIx64 ": the head hashes to 0x%016" PRIx64,
                                    seq, seg_off, s.checksum, sum));
    if (s.seq != seq)
        return std::unexpected(
            fail(EBADMSG, "segment at offset %" PRIu64 ": seq %" PRIu64 ": expected %" PRIu64,
                 seg_off, s.seq, seq));
    const uint32_t max_records = h.encrypted()     ? KV_SNAP_SEGMENT_RECORDS_ENCRYPTED
                                 : h.has_history() ? KV_SNAP_SEGMENT_RECORDS_HISTORY
                                                   : KV_SNAP_SEGMENT_RECORDS;
    if (s.n_records < 1 || s.n_records > max_records)
        return std::unexpected(fail(EBADMSG, "segment %" PRIu64 ": n_records %u: expected 1..%u",
                                    seq, s.n_records, max_records));
    const uint64_t max_len =
        kSegmentHead + uint64_t(s.n_records) * align_up(h.hdr.slab_size, kAlign);
    if (s.length % kAlign != 0 || s.length < kSegmentHead + kAlign || s.length > max_len)
        return std::unexpected(fail(EBADMSG,
                                    "segment %" PRIu64 ": length %" PRIu64
                                    ": expected a multiple of %" PRIu64 " from %" PRIu64
                                    " to %" PRIu64,
                                    seq, s.length, kAlign, kSegmentHead + kAlign, max_len));
    if (s.reserved0 != 0 || s.reserved != 0 || (!h.encrypted() && !all_zero(s.tag, sizeof s.tag)))
        return std::unexpected(
            fail(EBADMSG, "segment %" PRIu64 ": reserved fields are not zero", seq));
    // Encrypted: everything behind the struct is sealed; take it out
    // authenticated (the checks below then run on the plaintext).
    const uint8_t *body = head.data();
    uint8_t plain[kSegmentHead];
    if (h.encrypted()) {
        if (!h.crypt)
            return std::unexpected(
                fail(ENOKEY, "segment %" PRIu64 ": the header was not unlocked", seq));
        const kv_snap_segment aad = segment_aad(s);
        memcpy(plain, &s, sizeof s);
        if (!h.crypt->aead.open(h.crypt->key, crypto::make_iv(KV_SNAP_IV_SEGMENT, 0, seq),
                                bytes_of(aad), head.data() + sizeof s, plain + sizeof s,
                                kSealedHead, tag_of(s.tag)))
            return std::unexpected(fail(EBADMSG,
                                        "segment %" PRIu64 " at offset %" PRIu64
                                        ": authentication tag does not match",
                                        seq, seg_off));
        body = plain;
        for (uint32_t i = 0; i < s.n_records; i++)
            out.tags[i] =
                tag_of(plain + KV_SNAP_SEGMENT_TAGS_OFF + uint64_t(i) * KV_CRYPTO_TAG_BYTES);
    }
    memcpy(out.records, body + sizeof s, uint64_t(s.n_records) * sizeof(kv_snap_record));
    for (uint32_t i = 0; i < s.n_records; i++) {
        const kv_snap_record &r = out.records[i];
        if (r.length < 1 || r.length > h.hdr.slab_size)
            return std::unexpected(fail(EBADMSG,
                                        "segment %" PRIu64 " record %u: length %" PRIu64
                                        ": expected 1..%" PRIu64 " (slab_size)",
                                        seq, i, r.length, h.hdr.slab_size));
        if (r.data_off < kSegmentHead || r.data_off % kAlign != 0 || r.data_off > s.length ||
            align_up(r.length, kAlign) > s.length - r.data_off)
            return std::unexpected(fail(EBADMSG,
                                        "segment %" PRIu64 " record %u: data_off %" PRIu64
                                        " + %" PRIu64 " bytes: expected a multiple of %" PRIu64
                                        " inside the segment [%" PRIu64 ", %" PRIu64 ")",
                                        seq, i, r.data_off, align_up(r.length, kAlign), kAlign,
                                        kSegmentHead, s.length));
        if (r.reserved0 != 0)
            return std::unexpected(fail(EBADMSG,
                                        "segment %" PRIu64 " record %u: reserved0 %u: expected 0",
                                        seq, i, r.reserved0));
        if (!h.has_namespace(r.ns))
            return std::unexpected(
                fail(EBADMSG, "segment %" PRIu64 " record %u: namespace %u: not in the header", seq,
                     i, r.ns));
    }
    if (h.has_history()) {
        memcpy(out.history, body + KV_SNAP_SEGMENT_HISTORY_OFF,
               uint64_t(s.n_records) * sizeof(kv_snap_history));
        for (uint32_t i = 0; i < s.n_records; i++) {
            const kv_snap_history &hi = out.history[i];
            if (hi.flags & ~KV_SNAP_HISTORY_F_KNOWN)
                return std::unexpected(fail(EBADMSG,
                                            "segment %" PRIu64 " history %u: flags 0x%x: expected "
                                            "a subset of 0x%x",
                                            seq, i, hi.flags, KV_SNAP_HISTORY_F_KNOWN));
            if (!all_zero(hi.reserved, sizeof hi.reserved) ||
                (!(hi.flags & KV_SNAP_HISTORY_F_PARENT) && (hi.parent_lo || hi.parent_hi)))
                return std::unexpected(
                    fail(EBADMSG, "segment %" PRIu64 " history %u: reserved fields are not zero",
                         seq, i));
        }
    }
    out.data_cut = s.length > file_size - seg_off;
    return out;
}

bool record_in_file(const kv_snap_record &r, uint64_t seg_off, uint64_t file_size) {
    // Bounds were checked by parse_segment: no overflow here.
    return seg_off + r.data_off + align_up(r.length, kAlign) <= file_size;
}

std::string check_trailer(std::span<const uint8_t> buf, const TrailerExpect &e, const Header &h) {
    char msg[256];
    if (buf.size() < sizeof(kv_snap_trailer)) {
        snprintf(msg, sizeof msg, "trailer at offset %" PRIu64 ": %zu bytes: expected %zu",
                 e.offset, buf.size(), sizeof(kv_snap_trailer));
        return msg;
    }
    kv_snap_trailer t;
    memcpy(&t, buf.data(), sizeof t);
    struct Field {
        const char *name;
        uint64_t seen, want;
    };
    const Field fields[] = {
        {"magic", t.magic, KV_SNAP_TRAILER_MAGIC},
        {"checksum", t.checksum, trailer_checksum(t)},
        {"n_segments", t.n_segments, e.n_segments},
        {"n_records", t.n_records, e.n_records},
        {"data_bytes", t.data_bytes, e.data_bytes},
        {"file_len", t.file_len, e.offset + kAlign},
        {"segments_hash", t.segments_hash, e.segments_hash},
        {"header_checksum", t.header_checksum, e.header_checksum},
    };
    for (const Field &f : fields) {
        if (f.seen == f.want) continue;
        snprintf(msg, sizeof msg,
                 "trailer at offset %" PRIu64 ": %s 0x%" PRIx64 ": expected 0x%" PRIx64, e.offset,
                 f.name, f.seen, f.want);
        return msg;
    }
    if (!all_zero(t.reserved, sizeof t.reserved) ||
        (!h.encrypted() && !all_zero(t.tag, sizeof t.tag))) {
        snprintf(msg, sizeof msg, "trailer at offset %" PRIu64 ": reserved fields are not zero",
                 e.offset);
        return msg;
    }
    if (h.encrypted()) {
        kv_snap_trailer aad = t;
        aad.checksum = 0;
        memset(aad.tag, 0, sizeof aad.tag);
        if (!h.crypt || !h.crypt->aead.open(h.crypt->key, crypto::make_iv(KV_SNAP_IV_TRAILER, 0, 0),
                                            bytes_of(aad), nullptr, nullptr, 0, tag_of(t.tag))) {
            snprintf(msg, sizeof msg,
                     "trailer at offset %" PRIu64 ": authentication tag does not match", e.offset);
            return msg;
        }
    }
    if (t.file_len > e.file_size) {
        snprintf(msg, sizeof msg,
                 "trailer: file_len %" PRIu64 ": the file is only %" PRIu64 " bytes", t.file_len,
                 e.file_size);
        return msg;
    }
    return {};
}

bool seal_extent(crypto::Aead &aead, const crypto::Key &key, uint64_t seq, uint32_t index,
                 const kv_snap_record &rec, const uint8_t *in, uint8_t *out, crypto::Tag &tag) {
    return aead.seal(key, crypto::make_iv(KV_SNAP_IV_DATA, index, seq), bytes_of(rec), in, out,
                     rec.length, tag);
}

bool open_extent(crypto::Aead &aead, const crypto::Key &key, uint64_t seq, uint32_t index,
                 const kv_snap_record &rec, const uint8_t *in, uint8_t *out,
                 const crypto::Tag &tag) {
    return aead.open(key, crypto::make_iv(KV_SNAP_IV_DATA, index, seq), bytes_of(rec), in, out,
                     rec.length, tag);
}

std::expected<Sealing, std::string> new_sealing(const crypto::Key &pool_key,
                                                std::string_view key_id) {
    Sealing s;
    s.crypt = std::make_shared<DataKey>();
    auto key = crypto::new_data_key();
    if (!key) return std::unexpected("make a data key: " + key.error());
    s.crypt->key = *key;
    if (!crypto::wrap_key(s.crypt->aead, pool_key, key_id, KV_SNAP_MAGIC, s.crypt->key, s.wrapped))
        return std::unexpected("wrap the data key with key \"" + std::string(key_id) + "\"");
    return s;
}

bool build_header(std::span<uint8_t> out, kv_snap_header h,
                  std::span<const kv_snap_namespace> namespaces, const Sealing *sealing) {
    h.magic = KV_SNAP_MAGIC;
    h.version_major = KV_SNAP_VERSION_MAJOR;
    h.version_minor = KV_SNAP_VERSION_MINOR;
    h.header_size = sizeof(kv_snap_header);
    h.n_namespaces = uint32_t(namespaces.size());
    h.header_len = header_len_for(sizeof(kv_snap_header), namespaces.size());
    h.checksum = 0;
    memset(h.ns_tag, 0, sizeof h.ns_tag);
    if (sealing) {
        h.incompat_features |= KV_SNAP_INCOMPAT_ENCRYPTED;
        h.compat_features |= KV_SNAP_COMPAT_HISTORY;
        h.data_key = sealing->wrapped;
    } else {
        h.incompat_features &= ~KV_SNAP_INCOMPAT_ENCRYPTED;
        h.data_key = kv_wrapped_key{};
    }
    memcpy(out.data(), &h, sizeof h);
    const size_t table = namespaces.size() * sizeof(kv_snap_namespace);
    if (!namespaces.empty()) memcpy(out.data() + sizeof h, namespaces.data(), table);
    if (sealing) {
        // h is the aad as stored (checksum and ns_tag still zero).
        crypto::Tag tag;
        DataKey &k = *sealing->crypt;
        if (!k.aead.seal(k.key, crypto::make_iv(KV_SNAP_IV_NAMESPACES, 0, 0), bytes_of(h),
                         out.data() + sizeof h, out.data() + sizeof h, table, tag))
            return false;
        memcpy(out.data() + offsetof(kv_snap_header, ns_tag), tag.data(), tag.size());
    }
    h.checksum = header_checksum(out.first(h.header_len));
    memcpy(out.data() + offsetof(kv_snap_header, checksum), &h.checksum, sizeof h.checksum);
    return true;
}

uint64_t seal_segment(uint8_t *head, uint64_t seq, uint64_t length, uint32_t n_records,
                      DataKey *crypt) {
    kv_snap_segment s{};
    s.magic = KV_SNAP_SEGMENT_MAGIC;
    s.seq = seq;
    s.length = length;
    s.n_records = n_records;
    if (crypt) {
        crypto::Tag tag;
        if (!crypt->aead.seal(crypt->key, crypto::make_iv(KV_SNAP_IV_SEGMENT, 0, seq), bytes_of(s),
                              head + sizeof s, head + sizeof s, kSealedHead, tag))
            return 0;
        memcpy(s.tag, tag.data(), tag.size());
    }
    memcpy(head, &s, sizeof s);
    s.checksum = segment_checksum(head);
    memcpy(head + offsetof(kv_snap_segment, checksum), &s.checksum, sizeof s.checksum);
    return s.checksum;
}

bool build_trailer(kv_snap_trailer *out, uint64_t n_segments, uint64_t n_records,
                   uint64_t data_bytes, uint64_t file_len, uint64_t segments_hash,
                   uint64_t hdr_checksum, DataKey *crypt) {
    kv_snap_trailer t{};
    t.magic = KV_SNAP_TRAILER_MAGIC;
    t.n_segments = n_segments;
    t.n_records = n_records;
    t.data_bytes = data_bytes;
    t.file_len = file_len;
    t.segments_hash = segments_hash;
    t.header_checksum = hdr_checksum;
    if (crypt) {
        crypto::Tag tag;
        uint8_t none = 0;
        if (!crypt->aead.seal(crypt->key, crypto::make_iv(KV_SNAP_IV_TRAILER, 0, 0), bytes_of(t),
                              &none, &none, 0, tag))
            return false;
        memcpy(t.tag, tag.data(), tag.size());
    }
    t.checksum = trailer_checksum(t);
    memcpy(out, &t, sizeof t);
    return true;
}

} // namespace kv::daemon::snapshot
