// SPDX-License-Identifier: MIT
//
// A remote tier value as a fetching kvpoold reads it (daemon/remote_value.h:
// check_header, then the checksum or open_value): whoever holds the Redis
// password writes these bytes.
// Input: byte 0 picks the mode.
//  - even: the rest is a value, read by an encrypted pool (keyring K) and
//    by a plain one. Whatever is accepted has its bytes inside the value,
//    exactly length of them, and a plain pool never accepts an encrypted
//    value nor an encrypted pool a plain one.
//  - odd: a valid value built here (bit 1 clear: sealed under K; set:
//    plain) is changed by the rest, read as (offset LE16, xor byte) triples
//    and, when bit 2 is set, cut to (or padded to) a length of offset of the
//    last triple. A value left as it was opens byte-exact; any change is
//    refused and nothing of it is returned (an encrypted value's output is
//    all zero after a refusal).
#include "../tests/remote/remote_keys.h"
#include "remote_value.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>
#include <xxhash.h>

using namespace kv::daemon;

namespace {

[[noreturn]] void fail(const char *what) {
    fprintf(stderr, "fuzz_remote: %s\n", what);
    abort();
}

constexpr NsDigest kNs{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
constexpr kv_key kKey{0x1111222233334444ULL, 0x5555666677778888ULL};
constexpr size_t kBlock = 300;

struct World {
    std::shared_ptr<const Keyring> keyring;
    std::vector<uint8_t> block, sealed, plain;
};

World &world() {
    static World *w = [] {
        auto *x = new World;
        x->keyring = kvtest::make_keyring({{"fuzz-1", 1}}, "fuzz-1");
        if (!x->keyring) fail("make_keyring failed");
        x->block.resize(kBlock);
        for (size_t i = 0; i < kBlock; i++)
            x->block[i] = uint8_t(i * 7 + 3);
        crypto::Aead aead;
        SealedHead head;
        x->sealed.resize(kSealedHeadBytes + kBlock);
        if (!seal_value(aead, *x->keyring, kNs, kKey, x->block, head,
                        x->sealed.data() + kSealedHeadBytes)
                 .empty())
            fail("seal_value failed");
        std::memcpy(x->sealed.data(), head.data(), head.size());
        const kv_remote_header h =
            make_header(kNs, kKey, kBlock, XXH3_64bits(x->block.data(), kBlock));
        x->plain.resize(sizeof h + kBlock);
        std::memcpy(x->plain.data(), &h, sizeof h);
        std::memcpy(x->plain.data() + sizeof h, x->block.data(), kBlock);
        return x;
    }();
    return *w;
}

// Reads value as a pool with keyring kr would; the accepted bytes, or
// false.
bool read(const std::vector<uint8_t> &value, const Keyring *kr, std::vector<uint8_t> &out) {
    CheckedValue v = check_header(value, kNs, kKey, kr);
    if (v.reject != Reject::None) {
        if (v.detail.empty()) fail("a refusal without a reason");
        return false;
    }
    if (v.data.data() < value.data() || v.data.data() + v.data.size() > value.data() + value.size())
        fail("accepted bytes outside the value");
    kv_remote_header h;
    std::memcpy(&h, value.data(), sizeof h);
    if (v.data.size() != h.length) fail("accepted bytes are not length long");
    if (bool(kr) != v.encrypted) fail("a pool accepted a value of the other kind");
    if (!v.encrypted) {
        if (XXH3_64bits(v.data.data(), v.data.size()) != v.checksum) return false;
        out.assign(v.data.begin(), v.data.end());
        return true;
    }
    crypto::Aead aead;
    out.assign(v.data.size(), 0x5a);
    if (open_value(aead, v, out.data()) != Reject::None) {
        for (uint8_t b : out)
            if (b) fail("unauthenticated bytes left after a refusal");
        return false;
    }
    return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    World &w = world();
    const uint8_t mode = data[0];
    std::vector<uint8_t> out;
    if (!(mode & 1)) {
        const std::vector<uint8_t> value(data + 1, data + size);
        read(value, w.keyring.get(), out);
        read(value, nullptr, out);
        return 0;
    }
    const bool encrypted = !(mode & 2);
    const std::vector<uint8_t> &orig = encrypted ? w.sealed : w.plain;
    std::vector<uint8_t> value = orig;
    size_t cut = value.size();
    for (size_t i = 1; i + 3 <= size; i += 3) {
        const size_t off = size_t(data[i]) | size_t(data[i + 1]) << 8;
        cut = off % (orig.size() + 64);
        value[off % value.size()] ^= data[i + 2];
    }
    if (mode & 4) value.resize(cut, 0);
    const bool changed = value != orig;
    const bool ok = read(value, encrypted ? w.keyring.get() : nullptr, out);
    if (!changed && (!ok || out != w.block)) fail("the unchanged value does not read back");
    if (changed && ok && encrypted) fail("a changed encrypted value was accepted");
    // A changed plain value can pass only if XXH3-64 collides on the
    // changed bytes: treat that as a finding too.
    if (changed && ok && !encrypted) fail("a changed plain value was accepted");
    return 0;
}
