// SPDX-License-Identifier: MIT
//
// The snapshot file format's rules in one place (<kvpool/snapshot.h>):
// checksums, building the header, segment heads and trailer, and validating
// each part a reader takes in. Pure functions over byte buffers, so the
// writer, the reader, kvctl, tests and fuzzers share them; nothing here does
// I/O. A validation failure is a message that names the field, the value
// seen and the value expected.
#pragma once

#include "crypto.h"

#include <cstdint>
#include <expected>
#include <kvpool/snapshot.h>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kv::daemon::snapshot {

constexpr uint64_t kAlign = KV_SNAP_ALIGN;
constexpr uint64_t kSegmentHead = KV_SNAP_SEGMENT_HEAD;
// Readers refuse a header_len over this: it bounds the memory one file can
// make a reader allocate (room for about 350,000 namespaces).
constexpr uint64_t kMaxHeaderLen = 64ULL << 20;
// Largest slab size a region can have (kv_create_opts.slab_size).
constexpr uint64_t kMaxSlabSize = 1ULL << 30;

constexpr uint64_t align_up(uint64_t v, uint64_t a) {
    return (v + a - 1) & ~(a - 1);
}

// A part that failed validation. code: EPROTO (not a snapshot, or a version
// or feature this reader does not know), EBADMSG (damaged or inconsistent),
// ENODATA (the file ends inside it).
struct FormatError {
    int code;
    std::string what;
};

// The checksum of each part, as stored in it (computed with the field zero).
// header: header_len bytes; the field is zeroed in place and restored.
uint64_t header_checksum(std::span<uint8_t> header);
uint64_t segment_checksum(const void *head); // KV_SNAP_SEGMENT_HEAD bytes
uint64_t trailer_checksum(const kv_snap_trailer &t);
// One step of the trailer's segments_hash chain.
uint64_t chain_segment(uint64_t h, uint64_t segment_checksum);

// header_len for n namespaces behind a header of header_size bytes.
constexpr uint64_t header_len_for(uint64_t header_size, uint64_t n_namespaces) {
    return align_up(header_size + n_namespaces * KV_SNAP_NAMESPACE_SIZE_V1, kAlign);
}

// The data key of one encrypted snapshot and a cipher context for it. One
// thread at a time (the context is crypto::Aead's).
struct DataKey {
    crypto::Key key;
    crypto::Aead aead;
};

// A header that passed every check, with its namespaces.
struct Header {
    kv_snap_header hdr;
    std::vector<kv_snap_namespace> namespaces; // ids unique; encrypted: empty until unlocked
    bool has_namespace(uint32_t id) const;
    // Format 1.1: segment heads carry each record's kv_snap_history.
    bool has_history() const { return hdr.compat_features & KV_SNAP_COMPAT_HISTORY; }
    // Format 1.2: encrypted. key_id names the pool key that wrapped the
    // data key; crypt holds the data key once unlock_header took it out
    // (null before: no segment can be read).
    bool encrypted() const { return hdr.incompat_features & KV_SNAP_INCOMPAT_ENCRYPTED; }
    std::string key_id;
    std::shared_ptr<DataKey> crypt;
};

// Check the fixed part (the file's first KV_SNAP_ALIGN bytes, or fewer if
// the file is shorter): magic, version, features, sizes, and header_len
// against file_size. Returns header_len, the bytes parse_header needs.
std::expected<uint64_t, FormatError> check_header_prefix(std::span<const uint8_t> first,
                                                         uint64_t file_size);
// Check the whole header (header_len bytes): the prefix checks again, the
// checksum, reserved fields, and the namespaces. Fields past the writer's
// header_size read as zero. buf is only written while the checksum is
// computed (restored before return). An encrypted header is checked as far
// as it can be without the key (its key id, algorithm, history feature):
// its namespaces stay sealed until unlock_header.
std::expected<Header, FormatError> parse_header(std::span<uint8_t> buf, uint64_t file_size);
// Encrypted headers: unwrap the data key with pool_key (the key of id
// h.key_id) and open and check the namespace table, authenticating the
// header. EKEYREJECTED: pool_key does not unwrap the data key (another key
// under that id); EBADMSG: the namespace table or the header was altered
// (the tag does not match) or a namespace fails its checks. buf: the
// header_len bytes parse_header took.
std::expected<void, FormatError> unlock_header(std::span<const uint8_t> buf, Header &h,
                                               const crypto::Key &pool_key);

// A segment head that passed every check. data_cut: the segment runs past
// the end of the file (records whose extent ends after file_size must not
// be read: see record_in_file).
struct Segment {
    kv_snap_segment seg;
    kv_snap_record records[KV_SNAP_SEGMENT_RECORDS]; // [0, seg.n_records) valid; copied out
    // With Header::has_history(): [0, seg.n_records) valid, one per record.
    kv_snap_history history[KV_SNAP_SEGMENT_RECORDS_HISTORY];
    // Encrypted: the tag of each record's data.
    crypto::Tag tags[KV_SNAP_SEGMENT_RECORDS_ENCRYPTED];
    bool data_cut = false;
};
// Check the head of segment seq (KV_SNAP_SEGMENT_HEAD bytes) found at file
// offset seg_off: magic, checksum, seq, n_records, length, reserved fields,
// every record's length (1..slab_size), data_off (aligned, inside the
// segment) and namespace (one of the header's), and with history each
// history's flags (known ones) and reserved fields. Encrypted (h.crypt set
// by unlock_header): the head's tag after its checksum, then the checks on
// the decrypted records (a head that does not authenticate is EBADMSG,
// like any damaged head).
std::expected<Segment, FormatError> parse_segment(std::span<const uint8_t> head, uint64_t seq,
                                                  uint64_t seg_off, uint64_t file_size,
                                                  const Header &h);
// The record's padded extent lies whole in a file of file_size bytes.
bool record_in_file(const kv_snap_record &r, uint64_t seg_off, uint64_t file_size);

// What a reader saw, to compare with the trailer.
struct TrailerExpect {
    uint64_t n_segments, n_records, data_bytes, offset, segments_hash, header_checksum;
    uint64_t file_size;
};
// Check the trailer (at least sizeof(kv_snap_trailer) bytes) found at
// expect.offset, and its tag when h is encrypted. Returns an empty string
// when it matches.
std::string check_trailer(std::span<const uint8_t> buf, const TrailerExpect &expect,
                          const Header &h);

// Data extents of an encrypted snapshot: record index of segment seq,
// sealed with the record as aad. seal_extent: false only on an OpenSSL
// failure; open_extent: false when the tag does not match (out then holds
// bytes that must not be used). in == out is allowed.
// The forms with an Aead of their own are for other threads (one cipher
// context per thread).
bool seal_extent(crypto::Aead &aead, const crypto::Key &key, uint64_t seq, uint32_t index,
                 const kv_snap_record &rec, const uint8_t *in, uint8_t *out, crypto::Tag &tag);
bool open_extent(crypto::Aead &aead, const crypto::Key &key, uint64_t seq, uint32_t index,
                 const kv_snap_record &rec, const uint8_t *in, uint8_t *out,
                 const crypto::Tag &tag);
inline bool seal_extent(DataKey &k, uint64_t seq, uint32_t index, const kv_snap_record &rec,
                        const uint8_t *in, uint8_t *out, crypto::Tag &tag) {
    return seal_extent(k.aead, k.key, seq, index, rec, in, out, tag);
}
inline bool open_extent(DataKey &k, uint64_t seq, uint32_t index, const kv_snap_record &rec,
                        const uint8_t *in, uint8_t *out, const crypto::Tag &tag) {
    return open_extent(k.aead, k.key, seq, index, rec, in, out, tag);
}

// A writer's encryption: a fresh data key, wrapped by the pool key
// (key_id), for build_header. Error: what failed.
struct Sealing {
    std::shared_ptr<DataKey> crypt;
    kv_wrapped_key wrapped;
};
std::expected<Sealing, std::string> new_sealing(const crypto::Key &pool_key,
                                                std::string_view key_id);

// Build the parts (buffers zeroed by the caller, sized as documented).
// With a sealing (s non-null): the encrypted form (KV_SNAP_INCOMPAT_ENCRYPTED,
// the wrapped data key, sealed namespaces, heads and trailer with their
// tags); false only on an OpenSSL failure.
// header_out: header_len_for(sizeof(kv_snap_header), namespaces.size()) bytes.
bool build_header(std::span<uint8_t> header_out, kv_snap_header h,
                  std::span<const kv_snap_namespace> namespaces, const Sealing *s = nullptr);
// head: KV_SNAP_SEGMENT_HEAD bytes with the records already in place after
// the struct (and the histories at KV_SNAP_SEGMENT_HISTORY_OFF, the tags at
// KV_SNAP_SEGMENT_TAGS_OFF when encrypted); fills the struct and its
// checksum (encrypting the rest first), returns the checksum (0: an
// OpenSSL failure).
uint64_t seal_segment(uint8_t *head, uint64_t seq, uint64_t length, uint32_t n_records,
                      DataKey *crypt = nullptr);
bool build_trailer(kv_snap_trailer *out, uint64_t n_segments, uint64_t n_records,
                   uint64_t data_bytes, uint64_t file_len, uint64_t segments_hash,
                   uint64_t hdr_checksum, DataKey *crypt = nullptr);

} // namespace kv::daemon::snapshot
