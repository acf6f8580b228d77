// SPDX-License-Identifier: MIT
//
// libkv C++ API: RAII over the C API in <kv/kv.h>. Header-only, so the C ABI
// stays the only binary interface. Errors are std::expected<T, kv::Error>;
// nothing here throws.
#pragma once

#include <kv/kv.h>

#include <version>
#if !defined(__cpp_lib_expected)
#error "kv.hpp needs C++23 (std::expected): compile with -std=c++23 (pkg-config --variable=cxxflags libkv)"
#endif

#include <cstring>
#include <expected>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace kv {

struct Error {
    int code = 0;        // -errno as returned by the C API
    std::string message; // what was seen and expected, when the C API said
};

using Key = kv_key;
using Meta = kv_meta;

// A pinned read-only view; released when destroyed.
class View {
  public:
    View() = default;
    View(kv_pool *pool, const kv_view &v) : pool_(pool), v_(v) {}
    View(View &&o) noexcept : pool_(std::exchange(o.pool_, nullptr)), v_(o.v_) {}
    View &operator=(View &&o) noexcept {
        if (this != &o) {
            reset();
            pool_ = std::exchange(o.pool_, nullptr);
            v_ = o.v_;
        }
        return *this;
    }
    View(const View &) = delete;
    View &operator=(const View &) = delete;
    ~View() { reset(); }

    std::span<const std::byte> bytes() const {
        return {static_cast<const std::byte *>(v_.data), static_cast<size_t>(v_.length)};
    }
    const kv_meta &meta() const { return v_.meta; }
    uint64_t checksum() const { return v_.checksum; }
    bool verify() const { return kv_view_verify(&v_) == 0; }
    void reset() {
        if (pool_) kv_release(pool_, &v_);
        pool_ = nullptr;
    }

  private:
    kv_pool *pool_ = nullptr;
    kv_view v_{};
};

// A reservation to write in place; aborted when destroyed uncommitted.
class Reservation {
  public:
    Reservation() = default;
    Reservation(kv_pool *pool, const kv_reservation &r) : pool_(pool), r_(r) {}
    Reservation(Reservation &&o) noexcept : pool_(std::exchange(o.pool_, nullptr)), r_(o.r_) {}
    Reservation &operator=(Reservation &&o) noexcept {
        if (this != &o) {
            if (pool_) kv_abort(pool_, &r_);
            pool_ = std::exchange(o.pool_, nullptr);
            r_ = o.r_;
        }
        return *this;
    }
    Reservation(const Reservation &) = delete;
    Reservation &operator=(const Reservation &) = delete;
    ~Reservation() {
        if (pool_) kv_abort(pool_, &r_);
    }

    std::span<std::byte> bytes() {
        return {static_cast<std::byte *>(r_.data), static_cast<size_t>(r_.length)};
    }
    // Publish; the reservation is spent whatever the result.
    int commit() {
        int rc = kv_commit(std::exchange(pool_, nullptr), &r_, 0, 0);
        return rc;
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

    kv_put_opts to_c() const {
        kv_put_opts o{};
        o.struct_size = sizeof o;
        if (meta) o.meta = *meta;
        if (parent) {
            o.flags |= KV_PUT_F_PARENT;
            o.parent = *parent;
        }
        o.ttl_ms = ttl_ms;
        return o;
    }
};

class Pool {
  public:
    static std::expected<Pool, Error> attach(const std::string &path, uint32_t flags = 0) {
        char msg[256] = "";
        kv_pool *p = nullptr;
        int rc = kv_pool_attach(path.c_str(), flags, &p, msg, sizeof msg);
        if (rc < 0) return std::unexpected(Error{rc, msg});
        return Pool(p);
    }
    static std::expected<void, Error> create(const std::string &path, const kv_create_opts &o) {
        char msg[256] = "";
        int rc = kv_pool_create(path.c_str(), &o, msg, sizeof msg);
        if (rc < 0) return std::unexpected(Error{rc, msg});
        return {};
    }

    Pool(Pool &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Pool &operator=(Pool &&o) noexcept {
        if (this != &o) {
            if (p_) kv_pool_detach(p_);
            p_ = std::exchange(o.p_, nullptr);
        }
        return *this;
    }
    Pool(const Pool &) = delete;
    Pool &operator=(const Pool &) = delete;
    ~Pool() {
        if (p_) kv_pool_detach(p_);
    }

    kv_pool *get() const { return p_; }

    std::expected<uint32_t, Error> ns(const kv_manifest &m) {
        uint32_t id = 0;
        int rc = kv_ns_register(p_, &m, &id, nullptr);
        if (rc < 0) return std::unexpected(Error{rc, kv_strerror(rc)});
        return id;
    }
    std::expected<PutResult, Error> put(uint32_t ns, const Key &k, std::span<const std::byte> data,
                                        const Meta *meta = nullptr) {
        int rc = kv_put(p_, ns, &k, data.data(), data.size(), meta);
        if (rc < 0) return std::unexpected(Error{rc, kv_strerror(rc)});
        return rc == KV_DEDUP ? PutResult::Deduplicated : PutResult::Stored;
    }
    std::expected<PutResult, Error> put(uint32_t ns, const Key &k, std::span<const std::byte> data,
                                        const PutOptions &opts) {
        const kv_put_opts o = opts.to_c();
        int rc = kv_put_ex(p_, ns, &k, data.data(), data.size(), &o);
        if (rc < 0) return std::unexpected(Error{rc, kv_strerror(rc)});
        return rc == KV_DEDUP ? PutResult::Deduplicated : PutResult::Stored;
    }
    // An empty optional-like result: Error{-ENOENT} when absent.
    std::expected<View, Error> get(uint32_t ns, const Key &k) {
        kv_view v{};
        int rc = kv_get(p_, ns, &k, &v);
        if (rc < 0) return std::unexpected(Error{rc, kv_strerror(rc)});
        return View(p_, v);
    }
    // Error{KV_DEDUP} is not an error: the block exists; check for it.
    std::expected<Reservation, Error> reserve(uint32_t ns, const Key &k, uint64_t len,
                                              const Meta *meta = nullptr) {
        kv_reservation r{};
        int rc = kv_reserve(p_, ns, &k, len, meta, &r);
        if (rc != 0) return std::unexpected(Error{rc, rc == KV_DEDUP ? "deduplicated" : kv_strerror(rc)});
        return Reservation(p_, r);
    }
    std::expected<Reservation, Error> reserve(uint32_t ns, const Key &k, uint64_t len, const PutOptions &opts) {
        const kv_put_opts o = opts.to_c();
        kv_reservation r{};
        int rc = kv_reserve_ex(p_, ns, &k, len, &o, &r);
        if (rc != 0) return std::unexpected(Error{rc, rc == KV_DEDUP ? "deduplicated" : kv_strerror(rc)});
        return Reservation(p_, r);
    }
    bool contains(uint32_t ns, const Key &k) { return kv_contains(p_, ns, &k) == 1; }
    int remove(uint32_t ns, const Key &k) { return kv_remove(p_, ns, &k); }
    size_t match_prefix(uint32_t ns, std::span<const Key> keys) {
        int rc = kv_match_prefix(p_, ns, keys.data(), keys.size(), 0, nullptr);
        return rc < 0 ? 0 : static_cast<size_t>(rc);
    }
    int reap() { return kv_reap(p_); }

  private:
    explicit Pool(kv_pool *p) : p_(p) {}
    kv_pool *p_ = nullptr;
};

} // namespace kv
