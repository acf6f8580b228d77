// SPDX-License-Identifier: MIT
//
// The remote tier's value format (uapi/kvpool/remote.h): building the
// header of a block to upload, and checking a fetched value field by field
// before any of its bytes may enter a pool. A shared store can be written
// by anyone holding its password, so every check names what it saw.
#pragma once

#include <array>
#include <cstdint>
#include <kv/kv.h>
#include <kvpool/remote.h>
#include <span>
#include <string>
#include <string_view>

namespace kv::daemon {

// XXH3-128 of a namespace's kv_manifest bytes: the namespace's identity
// across hosts.
struct NsDigest {
    uint64_t lo = 0;
    uint64_t hi = 0;
    friend bool operator==(const NsDigest &, const NsDigest &) = default;
};

NsDigest ns_digest(const kv_manifest &m);

// Why a fetched value was refused. Values are stable: counters and status
// reports index by them.
enum class Reject : uint8_t {
    None = 0,
    Truncated,  // shorter than the header, or fewer bytes than its length says
    Magic,      // not KV_REMOTE_MAGIC
    Version,    // another format version
    HeaderSize, // header_size is not KV_REMOTE_HEADER_SIZE_V1
    Flags,      // a flag this reader does not know
    Reserved,   // a reserved word is not zero
    Namespace,  // written for another namespace (manifest)
    Key,        // written for another key
    Length,     // length is 0, or more bytes follow the header than it says
    Checksum,   // the bytes do not hash to the header's checksum
    Oversize,   // longer than the pool can hold (larger than its slab)
};
inline constexpr size_t kRejectCount = size_t(Reject::Oversize) + 1;
using RejectCounts = std::array<uint64_t, kRejectCount>;

// "truncated", "magic", ... ("none" for None).
const char *reject_name(Reject r);

// printf into a std::string (g++ 12 has no <format>).
__attribute__((format(printf, 1, 2))) std::string strf(const char *fmt, ...);

// <prefix><digest hex>:<key hex>, as remote.h defines it.
std::string remote_key(std::string_view prefix, const NsDigest &ns, const kv_key &key);

// The header of a value holding length bytes that hash to checksum.
kv_remote_header make_header(const NsDigest &ns, const kv_key &key, uint64_t length,
                             uint64_t checksum);

// A value whose header passed every check but the checksum, which needs
// the bytes read (the caller hashes them while copying them where they go).
struct CheckedValue {
    Reject reject = Reject::None;
    std::string detail;            // when rejected: what was seen and what was expected
    std::span<const uint8_t> data; // the block's bytes (reject == None)
    uint64_t checksum = 0;         // the header's checksum of data
};

// Checks the header of value: every field but the checksum against the
// bytes, which check_value does, and the caller may do while copying.
CheckedValue check_header(std::span<const uint8_t> value, const NsDigest &ns, const kv_key &key);

// check_header, then the checksum of the bytes.
CheckedValue check_value(std::span<const uint8_t> value, const NsDigest &ns, const kv_key &key);

} // namespace kv::daemon
