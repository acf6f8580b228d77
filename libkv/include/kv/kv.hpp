// SPDX-License-Identifier: MIT
//
// libkv C++ API: RAII over the C API in <kv/kv.h>. Header-only, so the C ABI
// stays the only binary interface. Errors are std::expected<T, kv::Error>;
// nothing here throws but std::bad_alloc.
#pragma once

#include <kv/kv.h>

#include <version>
#if !defined(__cpp_lib_expected)
#error "kv.hpp needs C++23 (std::expected): compile with -std=c++23 (pkg-config --variable=cxxflags libkv)"
#endif

#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <expected>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kv
{

// The one error type of kvpool's C++ code: this API and the daemon (its
// pool manager and snapshot engine) both return it. code is what the C API
// returns: -errno, or KV_DEDUP where a put found the block already there;
// never a positive errno. Where one is needed (a control-socket status,
// strerror), the reader negates code.
struct Error {
	int code = 0;        // -errno (or KV_DEDUP), as returned by the C API
	std::string message; // what was seen and expected, when the C API said
};

using Key = kv_key;
using Meta = kv_meta;

// A pinned read-only view; released when destroyed.
class View
{
      public:
	View() = default;
	View(kv_pool *pool, const kv_view &v) : pool_(pool), v_(v)
	{
	}
	View(View &&o) noexcept : pool_(std::exchange(o.pool_, nullptr)), v_(o.v_)
	{
	}
	View &operator=(View &&o) noexcept
	{
		if (this != &o) {
			reset();
			pool_ = std::exchange(o.pool_, nullptr);
			v_ = o.v_;
		}
		return *this;
	}
	View(const View &) = delete;
	View &operator=(const View &) = delete;
	~View()
	{
		reset();
	}

	std::span<const std::byte> bytes() const
	{
		return {static_cast<const std::byte *>(v_.data), static_cast<size_t>(v_.length)};
	}
	const kv_meta &meta() const
	{
		return v_.meta;
	}
	uint64_t checksum() const
	{
		return v_.checksum;
	}
	bool verify() const
	{
		return kv_view_verify(&v_) == 0;
	}
	void reset()
	{
		if (pool_)
			kv_release(pool_, &v_);
		pool_ = nullptr;
	}

      private:
	kv_pool *pool_ = nullptr;
	kv_view v_{};
};

// A reservation to write in place; aborted when destroyed uncommitted.
class Reservation
{
      public:
	Reservation() = default;
	Reservation(kv_pool *pool, const kv_reservation &r) : pool_(pool), r_(r)
	{
	}
	Reservation(Reservation &&o) noexcept : pool_(std::exchange(o.pool_, nullptr)), r_(o.r_)
	{
	}
	Reservation &operator=(Reservation &&o) noexcept
	{
		if (this != &o) {
			if (pool_)
				kv_abort(pool_, &r_);
			pool_ = std::exchange(o.pool_, nullptr);
			r_ = o.r_;
		}
		return *this;
	}
	Reservation(const Reservation &) = delete;
	Reservation &operator=(const Reservation &) = delete;
	~Reservation()
	{
		if (pool_)
			kv_abort(pool_, &r_);
	}

	std::span<std::byte> bytes()
	{
		return {static_cast<std::byte *>(r_.data), static_cast<size_t>(r_.length)};
	}
	// Publish; the reservation is spent whatever the result.
	int commit()
	{
		int rc = kv_commit(std::exchange(pool_, nullptr), &r_, 0, 0);
		return rc;
	}
	// Publish with the block's token ids, recorded in the pool's change feed.
	int commit(std::span<const uint32_t> token_ids)
	{
		return kv_commit_ex(std::exchange(pool_, nullptr), &r_, 0, 0, token_ids.data(),
		                    uint32_t(token_ids.size()));
	}

      private:
	kv_pool *pool_ = nullptr;
	kv_reservation r_{};
};

// Outcome of a put or reserve that did not fail.
enum class PutResult { Stored, Deduplicated };

// What kv_put_ex / kv_reserve_ex take beyond the data: metadata, the block
// before this one in its chain (PREFIX pools evict children first), and a
// time to live (0: none).
struct PutOptions {
	const Meta *meta = nullptr;
	const Key *parent = nullptr;
	uint32_t ttl_ms = 0;
	// Recorded in the pool's change feed with the commit (put only).
	std::span<const uint32_t> token_ids{};

	kv_put_opts to_c() const
	{
		kv_put_opts o{};
		o.struct_size = sizeof o;
		if (meta)
			o.meta = *meta;
		if (parent) {
			o.flags |= KV_PUT_F_PARENT;
			o.parent = *parent;
		}
		o.ttl_ms = ttl_ms;
		o.n_token_ids = uint32_t(token_ids.size());
		o.token_ids = token_ids.empty() ? nullptr : token_ids.data();
		return o;
	}
};

class Pool
{
      public:
	static std::expected<Pool, Error> attach(const std::string &path, uint32_t flags = 0)
	{
		char msg[256] = "";
		kv_pool *p = nullptr;
		int rc = kv_pool_attach(path.c_str(), flags, &p, msg, sizeof msg);
		if (rc < 0)
			return std::unexpected(Error{rc, msg});
		return Pool(p);
	}
	static std::expected<void, Error> create(const std::string &path, const kv_create_opts &o)
	{
		char msg[256] = "";
		int rc = kv_pool_create(path.c_str(), &o, msg, sizeof msg);
		if (rc < 0)
			return std::unexpected(Error{rc, msg});
		return {};
	}

	Pool(Pool &&o) noexcept : p_(std::exchange(o.p_, nullptr))
	{
	}
	Pool &operator=(Pool &&o) noexcept
	{
		if (this != &o) {
			if (p_)
				kv_pool_detach(p_);
			p_ = std::exchange(o.p_, nullptr);
		}
		return *this;
	}
	Pool(const Pool &) = delete;
	Pool &operator=(const Pool &) = delete;
	~Pool()
	{
		if (p_)
			kv_pool_detach(p_);
	}

	kv_pool *get() const
	{
		return p_;
	}

	std::expected<uint32_t, Error> ns(const kv_manifest &m)
	{
		uint32_t id = 0;
		int rc = kv_ns_register(p_, &m, &id, nullptr);
		if (rc < 0)
			return std::unexpected(Error{rc, kv_strerror(rc)});
		return id;
	}
	std::expected<PutResult, Error> put(uint32_t ns, const Key &k, std::span<const std::byte> data,
	                                    const Meta *meta = nullptr)
	{
		int rc = kv_put(p_, ns, &k, data.data(), data.size(), meta);
		if (rc < 0)
			return std::unexpected(Error{rc, kv_strerror(rc)});
		return rc == KV_DEDUP ? PutResult::Deduplicated : PutResult::Stored;
	}
	std::expected<PutResult, Error> put(uint32_t ns, const Key &k, std::span<const std::byte> data,
	                                    const PutOptions &opts)
	{
		const kv_put_opts o = opts.to_c();
		int rc = kv_put_ex(p_, ns, &k, data.data(), data.size(), &o);
		if (rc < 0)
			return std::unexpected(Error{rc, kv_strerror(rc)});
		return rc == KV_DEDUP ? PutResult::Deduplicated : PutResult::Stored;
	}
	// An empty optional-like result: Error{-ENOENT} when absent.
	std::expected<View, Error> get(uint32_t ns, const Key &k)
	{
		kv_view v{};
		int rc = kv_get(p_, ns, &k, &v);
		if (rc < 0)
			return std::unexpected(Error{rc, kv_strerror(rc)});
		return View(p_, v);
	}
	// Error{KV_DEDUP} is not an error: the block exists; check for it.
	std::expected<Reservation, Error> reserve(uint32_t ns, const Key &k, uint64_t len, const Meta *meta = nullptr)
	{
		kv_reservation r{};
		int rc = kv_reserve(p_, ns, &k, len, meta, &r);
		if (rc != 0)
			return std::unexpected(Error{rc, rc == KV_DEDUP ? "deduplicated" : kv_strerror(rc)});
		return Reservation(p_, r);
	}
	std::expected<Reservation, Error> reserve(uint32_t ns, const Key &k, uint64_t len, const PutOptions &opts)
	{
		const kv_put_opts o = opts.to_c();
		kv_reservation r{};
		int rc = kv_reserve_ex(p_, ns, &k, len, &o, &r);
		if (rc != 0)
			return std::unexpected(Error{rc, rc == KV_DEDUP ? "deduplicated" : kv_strerror(rc)});
		return Reservation(p_, r);
	}
	bool contains(uint32_t ns, const Key &k)
	{
		return kv_contains(p_, ns, &k) == 1;
	}
	int remove(uint32_t ns, const Key &k)
	{
		return kv_remove(p_, ns, &k);
	}
	size_t match_prefix(uint32_t ns, std::span<const Key> keys)
	{
		int rc = kv_match_prefix(p_, ns, keys.data(), keys.size(), 0, nullptr);
		return rc < 0 ? 0 : static_cast<size_t>(rc);
	}
	int reap()
	{
		return kv_reap(p_);
	}
	// kv_remote_fetch: the count of keys[first..] now in the pool.
	std::expected<kv_remote_fetch_result, Error> remote_fetch(uint32_t ns, std::span<const Key> keys, size_t first,
	                                                          uint32_t timeout_ms = 0,
	                                                          const char *pool_name = nullptr,
	                                                          const char *control_socket = nullptr)
	{
		kv_remote_fetch_result r{};
		r.struct_size = sizeof r;
		char err[512] = "";
		int rc = kv_remote_fetch(p_, control_socket, pool_name, ns, keys.data(), keys.size(), first, timeout_ms,
		                         &r, err, sizeof err);
		if (rc < 0)
			return std::unexpected(Error{rc, err[0] ? err : kv_strerror(rc)});
		return r;
	}

      private:
	explicit Pool(kv_pool *p) : p_(p)
	{
	}
	kv_pool *p_ = nullptr;
};

// ---- Canonical CBOR (RFC 8949 4.2.1), as Python's cbor2.dumps(canonical=True)
// writes the values vLLM puts in its block hashes: integers, byte and text
// strings, arrays (Python tuples and lists), null and booleans. Heads take
// the shortest form; lengths are definite.
namespace cbor
{

inline constexpr uint8_t kUint = 0, kNegint = 1, kBytes = 2, kText = 3, kArray = 4, kTag = 6, kSimple = 7;
inline constexpr uint8_t kFalse = 0xf4, kTrue = 0xf5, kNull = 0xf6;
// The longest head: initial byte + 8 bytes of argument.
inline constexpr size_t kMaxHead = 9;

// x as big-endian bytes in memory order.
template <typename T> inline T big_endian(T x) noexcept
{
	if constexpr (std::endian::native == std::endian::little)
		return std::byteswap(x);
	return x;
}

// Write the head of a major type with argument v at p; returns the end.
inline uint8_t *put_head(uint8_t *p, uint8_t major, uint64_t v) noexcept
{
	const uint8_t mt = static_cast<uint8_t>(major << 5);
	if (v < 24) {
		*p = static_cast<uint8_t>(mt | v);
		return p + 1;
	}
	if (v <= 0xff) {
		p[0] = mt | 24;
		p[1] = static_cast<uint8_t>(v);
		return p + 2;
	}
	if (v <= 0xffff) {
		const uint16_t be = big_endian(static_cast<uint16_t>(v));
		p[0] = mt | 25;
		std::memcpy(p + 1, &be, 2);
		return p + 3;
	}
	if (v <= 0xffffffffULL) {
		const uint32_t be = big_endian(static_cast<uint32_t>(v));
		p[0] = mt | 26;
		std::memcpy(p + 1, &be, 4);
		return p + 5;
	}
	const uint64_t be = big_endian(v);
	p[0] = mt | 27;
	std::memcpy(p + 1, &be, 8);
	return p + 9;
}

// Builds one CBOR item into a byte vector (may throw std::bad_alloc).
class Writer
{
      public:
	Writer &uint(uint64_t v)
	{
		return head(kUint, v);
	}
	// The negative integer -1 - n.
	Writer &negint(uint64_t n)
	{
		return head(kNegint, n);
	}
	Writer &integer(int64_t v)
	{
		return v >= 0 ? uint(static_cast<uint64_t>(v)) : negint(~static_cast<uint64_t>(v));
	}
	// An integer outside [-2^64, 2^64): tag 2 (or 3 when negative, for
	// -1 - magnitude) over the big-endian magnitude without leading zeros.
	Writer &bignum(bool negative, std::span<const uint8_t> magnitude)
	{
		head(kTag, negative ? 3 : 2);
		return bytes(magnitude);
	}
	Writer &bytes(std::span<const uint8_t> b)
	{
		head(kBytes, b.size());
		buf_.insert(buf_.end(), b.begin(), b.end());
		return *this;
	}
	Writer &text(std::string_view utf8)
	{
		head(kText, utf8.size());
		buf_.insert(buf_.end(), utf8.begin(), utf8.end());
		return *this;
	}
	// Start an array of n items: the next n items written are its elements.
	Writer &array(size_t n)
	{
		return head(kArray, n);
	}
	Writer &null()
	{
		buf_.push_back(kNull);
		return *this;
	}
	Writer &boolean(bool b)
	{
		buf_.push_back(b ? kTrue : kFalse);
		return *this;
	}

	std::span<const uint8_t> data() const
	{
		return buf_;
	}
	std::vector<uint8_t> take()
	{
		return std::exchange(buf_, {});
	}
	void clear()
	{
		buf_.clear();
	}

      private:
	Writer &head(uint8_t major, uint64_t v)
	{
		uint8_t h[kMaxHead];
		buf_.insert(buf_.end(), h, put_head(h, major, v));
		return *this;
	}
	std::vector<uint8_t> buf_;
};

} // namespace cbor

// ---- vLLM block hashes (kv_vllm_* in kv.h) -----------------------------------

// A chain of vLLM block hashes, hash_len bytes each, back to back.
struct VllmHashes {
	size_t hash_len = 0;
	std::vector<uint8_t> bytes;

	size_t size() const
	{
		return hash_len ? bytes.size() / hash_len : 0;
	}
	std::span<const uint8_t> operator[](size_t i) const
	{
		return {bytes.data() + i * hash_len, hash_len};
	}
	Key key(size_t i) const
	{
		return kv_vllm_key(bytes.data() + i * hash_len, hash_len);
	}
};

inline std::expected<std::vector<uint8_t>, Error> vllm_none_hash(uint32_t scheme, std::string_view seed)
{
	std::vector<uint8_t> h(KV_VLLM_HASH_MAX);
	int rc = kv_vllm_none_hash(scheme, seed.data(), seed.size(), h.data());
	if (rc < 0)
		return std::unexpected(Error{rc, kv_strerror(rc)});
	h.resize(static_cast<size_t>(rc));
	return h;
}

// Hashes of the full blocks of tokens under parent (NONE_HASH for a first
// block). extra, when not empty, holds one CBOR item per block (see
// cbor::Writer); an empty span stands for null.
inline std::expected<VllmHashes, Error> vllm_block_hashes(uint32_t scheme, std::span<const uint8_t> parent,
                                                          std::span<const uint32_t> tokens, uint32_t block_size,
                                                          std::span<const std::span<const uint8_t>> extra = {})
{
	VllmHashes out;
	out.hash_len = kv_vllm_hash_len(scheme);
	if (!out.hash_len || !block_size)
		return std::unexpected(Error{-EINVAL, "unknown scheme or block_size 0"});
	const size_t n = tokens.size() / block_size;
	if (!extra.empty() && extra.size() < n)
		return std::unexpected(Error{-EINVAL, "extra keys: " + std::to_string(extra.size()) + " entries for " +
		                                              std::to_string(n) + " blocks"});
	std::vector<const uint8_t *> ptrs;
	std::vector<size_t> lens;
	for (size_t i = 0; i < n && !extra.empty(); i++) {
		ptrs.push_back(extra[i].data());
		lens.push_back(extra[i].size());
	}
	out.bytes.resize(n * out.hash_len);
	int64_t rc = kv_vllm_block_hashes(scheme, parent.data(), parent.size(), tokens.data(), tokens.size(),
	                                  block_size, extra.empty() ? nullptr : ptrs.data(),
	                                  extra.empty() ? nullptr : lens.data(), out.bytes.data(), n);
	if (rc < 0)
		return std::unexpected(Error{static_cast<int>(rc), kv_strerror(static_cast<int>(rc))});
	return out;
}

} // namespace kv
