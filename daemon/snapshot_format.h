// SPDX-License-Identifier: MIT
//
// The snapshot file format's rules in one place (<kvpool/snapshot.h>):
// checksums, building the header, segment heads and trailer, and validating
// each part a reader takes in. Pure functions over byte buffers, so the
// writer, the reader, kvctl, tests and fuzzers share them; nothing here does
// I/O. A validation failure is a message that names the field, the value
// seen and the value expected.
#pragma once

#include <cstdint>
#include <expected>
#include <kvpool/snapshot.h>
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

// A header that passed every check, with its namespaces.
struct Header {
    kv_snap_header hdr;
    std::vector<kv_snap_namespace> namespaces; // ids unique
    bool has_namespace(uint32_t id) const;
    // Format 1.1: segment heads carry each record's kv_snap_history.
    bool has_history() const { return hdr.compat_features & KV_SNAP_COMPAT_HISTORY; }
};

// Check the fixed part (the file's first KV_SNAP_ALIGN bytes, or fewer if
// the file is shorter): magic, version, features, sizes, and header_len
// against file_size. Returns header_len, the bytes parse_header needs.
std::expected<uint64_t, FormatError> check_header_prefix(std::span<const uint8_t> first,
                                                         uint64_t file_size);
// Check the whole header (header_len bytes): the prefix checks again, the
// checksum, reserved fields, and the namespaces. Fields past the writer's
// header_size read as zero. buf is only written while the checksum is
// computed (restored before return).
std::expected<Header, FormatError> parse_header(std::span<uint8_t> buf, uint64_t file_size);

// A segment head that passed every check. data_cut: the segment runs past
// the end of the file (records whose extent ends after file_size must not
// be read: see record_in_file).
struct Segment {
    kv_snap_segment seg;
    kv_snap_record records[KV_SNAP_SEGMENT_RECORDS]; // [0, seg.n_records) valid; copied out
    // With Header::has_history(): [0, seg.n_records) valid, one per record.
    kv_snap_history history[KV_SNAP_SEGMENT_RECORDS_HISTORY];
    bool data_cut = false;
};
// Check the head of segment seq (KV_SNAP_SEGMENT_HEAD bytes) found at file
// offset seg_off: magic, checksum, seq, n_records, length, reserved fields,
// every record's length (1..slab_size), data_off (aligned, inside the
// segment) and namespace (one of the header's), and with history each
// history's flags (known ones) and reserved fields.
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
// expect.offset. Returns an empty string when it matches.
std::string check_trailer(std::span<const uint8_t> buf, const TrailerExpect &expect);

// Build the parts (buffers zeroed by the caller, sized as documented).
// header_out: header_len_for(sizeof(kv_snap_header), namespaces.size()) bytes.
void build_header(std::span<uint8_t> header_out, kv_snap_header h,
                  std::span<const kv_snap_namespace> namespaces);
// head: KV_SNAP_SEGMENT_HEAD bytes with the records already in place after
// the struct (and the histories at KV_SNAP_SEGMENT_HISTORY_OFF); fills the
// struct and its checksum, returns the checksum.
uint64_t seal_segment(uint8_t *head, uint64_t seq, uint64_t length, uint32_t n_records);
void build_trailer(kv_snap_trailer *out, uint64_t n_segments, uint64_t n_records,
                   uint64_t data_bytes, uint64_t file_len, uint64_t segments_hash,
                   uint64_t hdr_checksum);

} // namespace kv::daemon::snapshot
