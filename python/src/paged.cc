// SPDX-License-Identifier: MIT
//
// kvpool._kvpool's paged-KV part, the engine of kvpool.engine (which checks
// the tensors and passes their addresses and strides here):
//   PagedCache    an engine's KV cache as addresses (paged_copy.h Geometry);
//   SaveBatch     reservations for engine blocks, written by layer or whole,
//                 committed with the checksum taken during the copy;
//   save_blocks   reserve, gather and commit block by block, in one call;
//   PinnedBlocks  a pinned prefix (match_prefix), scattered into engine
//                 blocks with each block's checksum verified on the way.
// Copies run without the GIL and write straight between the engine's
// tensors and the pool: no intermediate buffer.
//
// Every pin and reservation held here counts as a hold on the pool
// (pool.h), so Pool.detach() leaves the mapping in place until the last is
// released or aborted; releases and aborts work after detach(), new
// operations do not. In a forked child, whose inherited pool is the
// parent's client, operations raise ValueError and releases and aborts
// leave the parent's pins and reservations alone. An object is used by one thread at a time: a
// second thread calling in while a copy runs gets RuntimeError.
#include "internal.h"
#include "paged_copy.h"
#include "pool.h"

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <pybind11/stl.h>
#include <string>
#include <tuple>
#include <vector>

namespace kvpool_py {

namespace {

using paged::BlockHash;
using paged::Geometry;

// Marks an object busy while its GIL-free part runs.
class Busy {
  public:
    explicit Busy(bool &flag) : flag_(flag) {
        if (flag_) throw std::runtime_error("in use by another thread");
        flag_ = true;
    }
    ~Busy() { flag_ = false; }
    Busy(const Busy &) = delete;
    Busy &operator=(const Busy &) = delete;

  private:
    bool &flag_;
};

class PagedCache {
  public:
    PagedCache(const std::vector<std::tuple<uintptr_t, int64_t, int64_t>> &layers,
               uint64_t frag_bytes, uint64_t num_blocks, py::object owner)
        : owner_(std::move(owner)) {
        if (layers.empty()) throw py::value_error("PagedCache: no layers");
        if (frag_bytes == 0) throw py::value_error("PagedCache: frag_bytes is 0");
        for (auto &[base, kv, blk] : layers)
            g_.layers.push_back({base, kv, blk});
        g_.frag_bytes = frag_bytes;
        g_.num_blocks = num_blocks;
    }
    const Geometry &geometry() const { return g_; }
    std::vector<uint64_t> block_ids(const std::vector<int64_t> &ids) const {
        std::vector<uint64_t> out;
        out.reserve(ids.size());
        for (int64_t id : ids) {
            if (id < 0 || uint64_t(id) >= g_.num_blocks)
                throw py::index_error("engine block id " + std::to_string(id) +
                                      " out of range [0, " + std::to_string(g_.num_blocks) + ")");
            out.push_back(uint64_t(id));
        }
        return out;
    }

  private:
    Geometry g_;
    py::object owner_; // keeps the tensors alive
};

// The parent of each key: explicit (parents, one per key, None for none),
// else a chain (key i - 1; the first gets first_parent).
std::vector<std::optional<kv_key>> parents_of(const std::vector<kv_key> &keys, py::object parents,
                                              py::object first_parent) {
    std::vector<std::optional<kv_key>> out(keys.size());
    if (!parents.is_none()) {
        if (!first_parent.is_none()) throw py::value_error("give parents or parent, not both");
        auto seq = parents.cast<py::sequence>();
        if (seq.size() != keys.size())
            throw py::value_error("parents has " + std::to_string(seq.size()) + " entries, keys " +
                                  std::to_string(keys.size()));
        for (size_t i = 0; i < keys.size(); i++)
            if (!seq[i].is_none()) out[i] = to_key(seq[i]);
        return out;
    }
    if (!first_parent.is_none() && !keys.empty()) out[0] = to_key(first_parent);
    for (size_t i = 1; i < keys.size(); i++)
        out[i] = keys[i - 1];
    return out;
}

std::vector<kv_key> keys_of(py::iterable keys) {
    std::vector<kv_key> out;
    for (py::handle k : keys)
        out.push_back(to_key(k));
    return out;
}

kv_put_opts put_opts(const std::optional<kv_key> &parent, uint32_t tokens) {
    kv_put_opts o{};
    o.struct_size = sizeof o;
    o.meta.tokens = tokens;
    if (parent) {
        o.flags = KV_PUT_F_PARENT;
        o.parent = *parent;
    }
    return o;
}

class SaveBatch {
  public:
    SaveBatch(py::object ns_obj, py::object cache_obj, py::iterable keys_in,
              const std::vector<int64_t> &ids, py::object parents, py::object parent,
              uint32_t tokens, py::object token_ids)
        : ns_obj_(std::move(ns_obj)), ns_(namespace_of(ns_obj_)), cache_obj_(std::move(cache_obj)),
          cache_(cache_obj_.cast<const PagedCache &>()) {
        const std::vector<kv_key> keys = keys_of(keys_in);
        if (keys.size() != ids.size())
            throw py::value_error(std::to_string(keys.size()) + " keys but " +
                                  std::to_string(ids.size()) + " block ids");
        const std::vector<uint64_t> blocks = cache_.block_ids(ids);
        const auto par = parents_of(keys, std::move(parents), std::move(parent));
        auto toks = to_block_tokens(token_ids, keys.size());
        const Geometry &g = cache_.geometry();
        written_.assign(g.layers.size(), false);
        present_.assign(keys.size(), true);
        ns_.pool->check_open();
        kv_pool *p = ns_.pool->pool;
        int rc = 0;
        size_t failed = 0;
        {
            PoolHold hold(*ns_.pool);
            py::gil_scoped_release nogil;
            for (size_t i = 0; i < keys.size(); i++) {
                kv_put_opts o = put_opts(par[i], tokens);
                kv_reservation r;
                rc = kv_reserve_ex(p, ns_.id, &keys[i], g.block_bytes(), &o, &r);
                if (rc == 0) {
                    slots_.push_back(
                        {r, keys[i], blocks[i], BlockHash(g.block_bytes()), std::move(toks[i])});
                    continue;
                }
                rc = rc == KV_DEDUP || rc == -EBUSY ? 0 : rc; // present, or another writer's
                if (rc) {
                    failed = i;
                    for (Slot &s : slots_)
                        kv_abort(p, &s.r);
                    break;
                }
                present_[i] = false;
            }
        }
        if (rc) {
            slots_.clear();
            raise_kv(rc, ("reserve block " + std::to_string(failed) + " of " +
                          std::to_string(keys.size()))
                             .c_str());
        }
        for (size_t i = 0; i < slots_.size(); i++)
            ns_.pool->hold();
    }
    SaveBatch(const SaveBatch &) = delete;
    SaveBatch &operator=(const SaveBatch &) = delete;
    ~SaveBatch() { drop(); }

    void write_layers(uint32_t first, uint32_t last) {
        Busy busy(busy_);
        const Geometry &g = cache_.geometry();
        if (last > g.layers.size() || first >= last)
            throw py::index_error("layer " + std::to_string(first) + " out of range [0, " +
                                  std::to_string(g.layers.size()) + ")");
        if (slots_.empty()) return;
        ns_.pool->check_open();
        for (uint32_t l = first; l < last; l++)
            if (written_[l]) throw py::value_error("layer " + std::to_string(l) + " written twice");
        // In order, the checksum streams through the copy; out of order, it
        // is taken over the finished block at commit.
        if (first != next_layer_) streamed_ = false;
        {
            PoolHold hold(*ns_.pool);
            py::gil_scoped_release nogil;
            for (Slot &s : slots_)
                paged::gather(g, s.block, first, last, static_cast<uint8_t *>(s.r.data),
                              streamed_ ? &s.hash : nullptr);
        }
        for (uint32_t l = first; l < last; l++)
            written_[l] = true;
        if (streamed_) next_layer_ = last;
    }

    void write_layer(uint32_t i) {
        if (i >= cache_.geometry().layers.size())
            throw py::index_error("layer " + std::to_string(i) + " out of range [0, " +
                                  std::to_string(cache_.geometry().layers.size()) + ")");
        write_layers(i, i + 1);
    }

    // Every layer not yet written, in runs of consecutive layers.
    void write_all() {
        const uint32_t n = uint32_t(written_.size());
        for (uint32_t l = 0; l < n;) {
            if (written_[l]) {
                l++;
                continue;
            }
            uint32_t e = l;
            while (e < n && !written_[e])
                e++;
            write_layers(l, e);
            l = e;
        }
    }

    size_t commit() {
        Busy busy(busy_);
        std::string missing;
        for (size_t l = 0; l < written_.size(); l++)
            if (!written_[l]) missing += (missing.empty() ? "" : ", ") + std::to_string(l);
        if (!slots_.empty() && !missing.empty())
            throw py::value_error("commit before layers " + missing + " were written");
        if (slots_.empty()) return 0;
        ns_.pool->check_open();
        kv_pool *p = ns_.pool->pool;
        size_t done = 0;
        int rc = 0;
        {
            PoolHold hold(*ns_.pool);
            py::gil_scoped_release nogil;
            for (Slot &s : slots_) {
                const auto *data = static_cast<const uint8_t *>(s.r.data);
                const uint64_t sum =
                    streamed_ ? s.hash.digest(data) : paged::xxh3_64(data, s.r.length);
                rc = kv_commit_ex(p, &s.r, KV_COMMIT_F_CHECKSUM, sum, s.token_ids.data(),
                                  static_cast<uint32_t>(s.token_ids.size()));
                if (rc) break;
                done++;
            }
            for (size_t i = done + (rc ? 1 : 0); i < slots_.size(); i++)
                kv_abort(p, &slots_[i].r);
        }
        for (size_t i = 0; i < slots_.size(); i++)
            ns_.pool->unhold();
        slots_.clear();
        if (rc) raise_kv(rc, ("commit block " + std::to_string(done)).c_str());
        committed_ = done;
        return done;
    }

    // Drop the reservations not committed; their space is freed.
    void abort() {
        Busy busy(busy_);
        drop();
    }

  private:
    void drop() {
        if (slots_.empty()) return;
        // In a forked child the reservations are the parent's: leave them.
        if (kv_pool *p = ns_.pool->owned())
            for (Slot &s : slots_)
                kv_abort(p, &s.r);
        for (size_t i = 0; i < slots_.size(); i++)
            ns_.pool->unhold();
        slots_.clear();
    }

  public:
    const std::vector<bool> &present() const { return present_; }
    size_t pending() const { return slots_.size(); }
    size_t committed() const { return committed_; }

  private:
    struct Slot {
        kv_reservation r;
        kv_key key;
        uint64_t block;
        BlockHash hash;
        std::vector<uint32_t> token_ids; // recorded with the commit (change feed)
    };
    py::object ns_obj_;
    Namespace &ns_;
    py::object cache_obj_;
    const PagedCache &cache_;
    std::vector<Slot> slots_;   // open reservations, in key order
    std::vector<bool> present_; // per key: reserved here (false: present or being written)
    std::vector<bool> written_; // per layer
    uint32_t next_layer_ = 0;   // while streamed_: the layer the checksums have reached
    bool streamed_ = true;
    size_t committed_ = 0;
    bool busy_ = false;
};

// Reserve, gather and commit each block in turn: a block's parent is then
// committed when it is reserved, so libkv links the chain for PREFIX
// eviction (a parent still reserved is not linked). Returns one flag per key:
// stored here, or skipped (present, or being written by another client).
std::vector<bool> save_blocks(py::object ns_obj, py::object cache_obj, py::iterable keys_in,
                              const std::vector<int64_t> &ids, py::object parents,
                              py::object parent, uint32_t tokens, py::object token_ids) {
    Namespace &ns = namespace_of(ns_obj);
    const PagedCache &cache = cache_obj.cast<const PagedCache &>();
    const std::vector<kv_key> keys = keys_of(keys_in);
    if (keys.size() != ids.size())
        throw py::value_error(std::to_string(keys.size()) + " keys but " +
                              std::to_string(ids.size()) + " block ids");
    const std::vector<uint64_t> blocks = cache.block_ids(ids);
    const auto par = parents_of(keys, std::move(parents), std::move(parent));
    const auto toks = to_block_tokens(token_ids, keys.size());
    const Geometry &g = cache.geometry();
    std::vector<bool> stored(keys.size(), false);
    ns.pool->check_open();
    kv_pool *p = ns.pool->pool;
    int rc = 0;
    size_t i = 0;
    {
        PoolHold hold(*ns.pool);
        py::gil_scoped_release nogil;
        for (; i < keys.size(); i++) {
            kv_put_opts o = put_opts(par[i], tokens);
            kv_reservation r;
            rc = kv_reserve_ex(p, ns.id, &keys[i], g.block_bytes(), &o, &r);
            if (rc == KV_DEDUP || rc == -EBUSY) {
                rc = 0;
                continue;
            }
            if (rc) break;
            auto *data = static_cast<uint8_t *>(r.data);
            BlockHash h(r.length);
            paged::gather(g, blocks[i], 0, uint32_t(g.layers.size()), data, &h);
            rc = kv_commit_ex(p, &r, KV_COMMIT_F_CHECKSUM, h.digest(data), toks[i].data(),
                              static_cast<uint32_t>(toks[i].size()));
            if (rc) {
                kv_abort(p, &r);
                break;
            }
            stored[i] = true;
        }
    }
    if (rc)
        raise_kv(
            rc, ("save block " + std::to_string(i) + " of " + std::to_string(keys.size())).c_str());
    return stored;
}

class PinnedBlocks {
  public:
    PinnedBlocks(py::object ns_obj, py::iterable keys_in)
        : ns_obj_(std::move(ns_obj)), ns_(namespace_of(ns_obj_)), keys_(keys_of(keys_in)) {
        ns_.pool->check_open();
        views_.resize(keys_.size());
        int rc;
        {
            PoolHold hold(*ns_.pool);
            py::gil_scoped_release nogil;
            rc = kv_match_prefix(ns_.pool->pool, ns_.id, keys_.data(), keys_.size(), KV_MATCH_F_PIN,
                                 views_.data());
        }
        if (rc < 0) raise_kv(rc, "match_prefix");
        views_.resize(size_t(rc));
        for (int i = 0; i < rc; i++)
            ns_.pool->hold();
    }
    PinnedBlocks(const PinnedBlocks &) = delete;
    PinnedBlocks &operator=(const PinnedBlocks &) = delete;
    ~PinnedBlocks() { drop(); }

    // Scatter the next ids.size() pinned blocks into those engine blocks.
    size_t load(py::object cache_obj, const std::vector<int64_t> &ids, bool verify) {
        Busy busy(busy_);
        const PagedCache &cache = cache_obj.cast<const PagedCache &>();
        const std::vector<uint64_t> blocks = cache.block_ids(ids);
        if (blocks.size() > remaining())
            throw py::value_error(std::to_string(blocks.size()) + " block ids for " +
                                  std::to_string(remaining()) + " pinned blocks");
        ns_.pool->check_open();
        const Geometry &g = cache.geometry();
        size_t n = 0;
        enum { kOk, kLength, kChecksum } bad = kOk;
        {
            PoolHold hold(*ns_.pool);
            py::gil_scoped_release nogil;
            for (; n < blocks.size(); n++) {
                const kv_view &v = views_[next_ + n];
                if (v.length != g.block_bytes()) {
                    bad = kLength;
                    break;
                }
                const auto *data = static_cast<const uint8_t *>(v.data);
                uint32_t layers = uint32_t(g.layers.size());
                if (!verify) {
                    paged::scatter(g, blocks[n], 0, layers, data, nullptr);
                    continue;
                }
                BlockHash h(v.length);
                paged::scatter(g, blocks[n], 0, layers, data, &h);
                if (h.digest(data) != v.checksum) {
                    bad = kChecksum;
                    break;
                }
            }
        }
        loaded_ += n;
        if (bad == kOk) {
            release_range(next_, next_ + n);
            next_ += n;
            return n;
        }
        // The chain is broken here: the engine recomputes from this block, so
        // the later pins are of no use either.
        const size_t at = next_ + n;
        if (bad == kChecksum) {
            kv_remove(ns_.pool->pool, ns_.id, &keys_[at]);
            failure_ = "checksum mismatch in block " + std::to_string(at) + ": removed";
        } else {
            failure_ = "block " + std::to_string(at) + " holds " +
                       std::to_string(views_[at].length) + " bytes, expected " +
                       std::to_string(g.block_bytes());
        }
        drop();
        return n;
    }

    // Release the pins not yet loaded.
    void release() {
        Busy busy(busy_);
        drop();
    }

    size_t pinned() const { return views_.size(); }
    size_t remaining() const { return views_.size() - next_; }
    size_t loaded() const { return loaded_; }
    py::object failure() const {
        if (failure_.empty()) return py::none();
        return py::str(failure_);
    }

  private:
    void drop() {
        release_range(next_, views_.size());
        next_ = views_.size();
    }

    void release_range(size_t from, size_t to) {
        kv_pool *p = ns_.pool->owned(); // null in a forked child: the parent's pins
        for (size_t i = from; i < to; i++) {
            if (p) kv_release(p, &views_[i]);
            ns_.pool->unhold();
        }
    }

    py::object ns_obj_;
    Namespace &ns_;
    std::vector<kv_key> keys_;
    std::vector<kv_view> views_; // pinned, the leading matched keys
    size_t next_ = 0;            // views_[next_..] are still pinned
    size_t loaded_ = 0;
    std::string failure_;
    bool busy_ = false;
};

// The baseline of tests/bench/bench_paged.py: memcpy(dst, src, n) for each
// (dst, src, n) triple of uint64 in a buffer, in order, without the GIL, so
// that a copy in many pieces is timed without a Python call per piece (one
// ctypes.memmove per 32 KiB fragment slows it measurably). Addresses are not
// checked, as with ctypes.memmove.
void bench_memcpy(py::handle pieces) {
    Py_buffer b{};
    if (PyObject_GetBuffer(pieces.ptr(), &b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0)
        throw py::error_already_set();
    const std::unique_ptr<Py_buffer, void (*)(Py_buffer *)> hold(&b, PyBuffer_Release);
    const std::string fmt = b.format ? b.format : "B";
    if (b.itemsize != 8 || (fmt.back() != 'Q' && fmt.back() != 'L'))
        throw py::type_error("pieces: expected a buffer of uint64 (format 'Q'), got format '" +
                             fmt + "' of " + std::to_string(b.itemsize) + "-byte items");
    const size_t n = size_t(b.len) / 8;
    if (n % 3)
        throw py::value_error("pieces: " + std::to_string(n) +
                              " values, expected (dst, src, n) triples");
    const auto *t = static_cast<const uint64_t *>(b.buf);
    py::gil_scoped_release nogil;
    for (size_t i = 0; i < n; i += 3)
        memcpy(reinterpret_cast<void *>(t[i]), reinterpret_cast<const void *>(t[i + 1]), t[i + 2]);
}

} // namespace

void init_paged(py::module_ &m) {
    py::class_<PagedCache>(m, "PagedCache",
                           "An engine's paged KV cache as addresses (kvpool.engine builds it).")
        .def(py::init<const std::vector<std::tuple<uintptr_t, int64_t, int64_t>> &, uint64_t,
                      uint64_t, py::object>(),
             py::arg("layers"), py::arg("frag_bytes"), py::arg("num_blocks"), py::arg("owner"),
             "layers: (K address of block 0, K-to-V byte stride, block byte stride) per layer; "
             "frag_bytes: contiguous bytes of one layer's K (or V) of one block; owner: kept "
             "alive (the tensors).")
        .def_property_readonly("block_bytes",
                               [](const PagedCache &c) { return c.geometry().block_bytes(); })
        .def_property_readonly("frag_bytes",
                               [](const PagedCache &c) { return c.geometry().frag_bytes; })
        .def_property_readonly("num_layers",
                               [](const PagedCache &c) { return c.geometry().layers.size(); })
        .def_property_readonly("num_blocks",
                               [](const PagedCache &c) { return c.geometry().num_blocks; });

    py::class_<SaveBatch>(m, "SaveBatch",
                          "Reservations for engine blocks, written by layer or whole.")
        .def(py::init<py::object, py::object, py::iterable, const std::vector<int64_t> &,
                      py::object, py::object, uint32_t, py::object>(),
             py::arg("ns"), py::arg("cache"), py::arg("keys"), py::arg("block_ids"),
             py::arg("parents") = py::none(), py::arg("parent") = py::none(), py::arg("tokens") = 0,
             py::arg("token_ids") = py::none())
        .def("write_layer", &SaveBatch::write_layer, py::arg("layer"))
        .def("write_all", &SaveBatch::write_all)
        .def("commit", &SaveBatch::commit)
        .def("abort", &SaveBatch::abort)
        .def_property_readonly("present", &SaveBatch::present)
        .def_property_readonly("pending", &SaveBatch::pending)
        .def_property_readonly("committed", &SaveBatch::committed);

    m.def("save_blocks", &save_blocks, py::arg("ns"), py::arg("cache"), py::arg("keys"),
          py::arg("block_ids"), py::arg("parents") = py::none(), py::arg("parent") = py::none(),
          py::arg("tokens") = 0, py::arg("token_ids") = py::none(),
          "Reserve, gather and commit each block in turn; one flag per key (stored here).\n"
          "token_ids: None, or per block None or its tokens (the pool's change feed).");

    py::class_<PinnedBlocks>(m, "PinnedBlocks",
                             "The pinned leading blocks of a key chain, loadable into an engine.")
        .def(py::init<py::object, py::iterable>(), py::arg("ns"), py::arg("keys"))
        .def("load", &PinnedBlocks::load, py::arg("cache"), py::arg("block_ids"),
             py::arg("verify") = true)
        .def("release", &PinnedBlocks::release)
        .def_property_readonly("pinned", &PinnedBlocks::pinned)
        .def_property_readonly("remaining", &PinnedBlocks::remaining)
        .def_property_readonly("loaded", &PinnedBlocks::loaded)
        .def_property_readonly("failure", &PinnedBlocks::failure);

    m.def(
        "paged_simd_width",
        [](std::optional<unsigned> width) {
            return width ? paged::set_simd_width(*width) : paged::simd_width();
        },
        py::arg("width") = py::none(),
        "The vector width (bytes) of the paged copy loops; with width, cap it (0: the widest).");

    m.def("_bench_memcpy", &bench_memcpy, py::arg("pieces"),
          "memcpy(dst, src, n) for each (dst, src, n) uint64 triple of a buffer, without the "
          "GIL: the baseline of tests/bench/bench_paged.py. Addresses are not checked.");
}

} // namespace kvpool_py
