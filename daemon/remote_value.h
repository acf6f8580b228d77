// SPDX-License-Identifier: MIT
//
// The remote tier's value format (uapi/kvpool/remote.h): building the
// header of a block to upload (and sealing it, in an encrypted pool), and
// checking a fetched value field by field before any of its bytes may
// enter a pool. A shared store can be written by anyone holding its
// password, so every check names what it saw.
//
// Encryption follows the pool: a reader with a keyring (the pool's
// [pool.encryption]) accepts only encrypted values, sealed under one of its
// key ids; a reader without one refuses encrypted values (it cannot open
// them). Neither ever commits a byte that did not authenticate.
#pragma once

#include "crypto.h"

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
    Plaintext,  // not encrypted, read by an encrypted pool
    KeyId,      // sealed under a key id this pool does not have (or it has no keys)
    Decrypt,    // the wrapped key or the bytes do not authenticate (wrong key, a changed byte)
};
inline constexpr size_t kRejectCount = size_t(Reject::Decrypt) + 1;
using RejectCounts = std::array<uint64_t, kRejectCount>;

// "truncated", "magic", ..., "plaintext", "key_id", "decrypt" ("none" for None).
const char *reject_name(Reject r);

// printf into a std::string (g++ 12 has no <format>).
__attribute__((format(printf, 1, 2))) std::string strf(const char *fmt, ...);

// <prefix><digest hex>:<key hex>, as remote.h defines it.
std::string remote_key(std::string_view prefix, const NsDigest &ns, const kv_key &key);

class Keyring;

// The header of a value holding length bytes that hash to checksum.
kv_remote_header make_header(const NsDigest &ns, const kv_key &key, uint64_t length,
                             uint64_t checksum);

// What precedes the bytes of a value: the header, and the crypto block of
// an encrypted value.
inline constexpr size_t kSealedHeadBytes = KV_REMOTE_HEADER_SIZE_V1 + KV_REMOTE_CRYPTO_SIZE_V1;
using SealedHead = std::array<uint8_t, kSealedHeadBytes>;

// Seal data as an encrypted value for (ns, key) under keyring's current key
// with a fresh data key: head gets the header and crypto block, out the
// ciphertext (data.size() bytes; out == data.data() is allowed). Empty on
// success, else why (an OpenSSL failure). aead: the calling thread's.
std::string seal_value(crypto::Aead &aead, const Keyring &keyring, const NsDigest &ns,
                       const kv_key &key, std::span<const uint8_t> data, SealedHead &head,
                       uint8_t *out);

// A value whose header passed every check but the checksum (or, encrypted,
// the tags), which needs the bytes read (the caller hashes or decrypts them
// while copying them where they go).
struct CheckedValue {
    Reject reject = Reject::None;
    std::string detail;                    // when rejected: what was seen and what was expected
    std::span<const uint8_t> data;         // the block's bytes, or ciphertext (reject == None)
    uint64_t checksum = 0;                 // the header's checksum of data (plain values)
    bool encrypted = false;                // KV_REMOTE_F_ENCRYPTED: open_value, not the checksum
    std::span<const uint8_t> aad;          // encrypted: the value's first KV_REMOTE_AAD_SIZE bytes
    kv_remote_crypto crypto{};             // encrypted: the crypto block
    const crypto::Key *pool_key = nullptr; // encrypted: the keyring's key of its key id
};

// Checks the header of value (and the crypto block of an encrypted one):
// every field but the checksum or the tags against the bytes, which
// check_value and open_value do, and the caller may do while copying.
// keyring: the reading pool's keys, null when it has none (then an
// encrypted value is refused with KeyId; with one, a plain value with
// Plaintext and an unknown key id with KeyId).
CheckedValue check_header(std::span<const uint8_t> value, const NsDigest &ns, const kv_key &key,
                          const Keyring *keyring = nullptr);

// check_header, then the checksum of the bytes. Plain values only: an
// encrypted one is refused (KeyId) as by a reader without keys.
CheckedValue check_value(std::span<const uint8_t> value, const NsDigest &ns, const kv_key &key);

// Open an encrypted value that passed check_header: unwrap its data key and
// decrypt v.data into out (v.data.size() bytes; must not overlap it).
// Reject::None, or Decrypt with v.detail naming the key id. On a refusal
// out is zeroed: no unauthenticated byte is left there.
Reject open_value(crypto::Aead &aead, CheckedValue &v, uint8_t *out);

} // namespace kv::daemon
