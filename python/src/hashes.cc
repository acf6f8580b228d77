// SPDX-License-Identifier: MIT
//
// vLLM's prefix-cache block hashes for Python: kvpool.vllm_block_hashes,
// vllm_none_hash, vllm_key and vllm_seed_id over kv_vllm_* (libkv). Extra
// keys are encoded here to canonical CBOR, as cbor2.dumps(x, canonical=True)
// encodes the types vLLM puts in them; the hashing runs without the GIL.
#include "pool.h"

#include <cerrno>
#include <cstdlib>
#include <kv/kv.h>
#include <kv/kv.hpp>
#include <optional>
#include <pybind11/pybind11.h>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace py = pybind11;

namespace kvpool_py {
namespace {

constexpr const char *kDefaultSeed = "vllm-none-hash";
// libkv refuses extra keys nested deeper (kv_vllm_block_hashes).
constexpr int kMaxDepth = 64;
// Chains at least this long are hashed with the GIL released; shorter ones
// cost less than the release and reacquire.
constexpr size_t kReleaseGilBlocks = 8;

// The UTF-8 of a str; a lone surrogate raises UnicodeEncodeError as in cbor2.
std::string_view utf8(py::handle s) {
    Py_ssize_t n = 0;
    const char *p = PyUnicode_AsUTF8AndSize(s.ptr(), &n);
    if (!p) throw py::error_already_set();
    return {p, static_cast<size_t>(n)};
}

uint32_t scheme_of(py::handle algo) {
    if (py::isinstance<py::str>(algo)) {
        const std::string s(utf8(algo));
        if (s == "sha256_cbor") return KV_HASH_VLLM_SHA256_CBOR;
        if (s == "xxhash_cbor") return KV_HASH_VLLM_XXHASH_CBOR;
        throw py::value_error("algo '" + s + "': expected 'sha256_cbor' or 'xxhash_cbor'");
    }
    if (py::isinstance<py::int_>(algo) && !py::isinstance<py::bool_>(algo)) {
        const long long v = algo.cast<long long>();
        if (v == KV_HASH_VLLM_SHA256_CBOR || v == KV_HASH_VLLM_XXHASH_CBOR)
            return static_cast<uint32_t>(v);
        throw py::value_error("algo " + std::to_string(v) + ": expected " +
                              std::to_string(KV_HASH_VLLM_SHA256_CBOR) + " (sha256_cbor) or " +
                              std::to_string(KV_HASH_VLLM_XXHASH_CBOR) + " (xxhash_cbor)");
    }
    throw py::type_error("algo: expected a str ('sha256_cbor', 'xxhash_cbor') or an int, got " +
                         std::string(py::str(py::type::handle_of(algo).attr("__name__"))));
}

// seed None: what vLLM reads, PYTHONHASHSEED, when it is set.
std::string seed_of(py::handle seed) {
    if (seed.is_none()) {
        const char *env = std::getenv("PYTHONHASHSEED");
        return env ? env : kDefaultSeed;
    }
    if (py::isinstance<py::str>(seed)) return std::string(utf8(seed));
    throw py::type_error("seed: expected a str or None, got " +
                         std::string(py::str(py::type::handle_of(seed).attr("__name__"))));
}

[[noreturn]] void raise_hash(int64_t rc, const char *what) {
    if (rc == -ENOMEM) throw std::bad_alloc();
    raise_kv(static_cast<int>(rc), what);
}

std::vector<uint8_t> none_hash(uint32_t scheme, const std::string &seed) {
    std::vector<uint8_t> h(KV_VLLM_HASH_MAX);
    int rc = kv_vllm_none_hash(scheme, seed.data(), seed.size(), h.data());
    if (rc < 0) raise_hash(rc, "kv_vllm_none_hash");
    h.resize(static_cast<size_t>(rc));
    return h;
}

py::bytes to_bytes(std::span<const uint8_t> b) {
    return py::bytes(reinterpret_cast<const char *>(b.data()), b.size());
}

// An int outside [-2^64, 2^64): cbor2 writes tag 2 or 3 over the magnitude.
void encode_bignum(kv::cbor::Writer &w, py::handle v, bool negative) {
    py::int_ mag = py::reinterpret_borrow<py::int_>(v);
    if (negative) mag = py::int_(-1) - mag;
    const size_t nbytes = (mag.attr("bit_length")().cast<size_t>() + 7) / 8;
    const std::string b = mag.attr("to_bytes")(nbytes, "big").cast<std::string>();
    w.bignum(negative, {reinterpret_cast<const uint8_t *>(b.data()), b.size()});
}

void encode(kv::cbor::Writer &w, py::handle v, int depth) {
    if (depth > kMaxDepth)
        throw py::value_error("extra keys nested deeper than " + std::to_string(kMaxDepth));
    PyObject *o = v.ptr();
    if (o == Py_None) {
        w.null();
    } else if (PyBool_Check(o)) {
        w.boolean(o == Py_True);
    } else if (PyLong_Check(o)) {
        int overflow = 0;
        const long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
        if (!overflow) {
            w.integer(x);
        } else if (overflow > 0) {
            const unsigned long long u = PyLong_AsUnsignedLongLong(o);
            if (u == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
                PyErr_Clear();
                encode_bignum(w, v, false);
            } else {
                w.uint(u);
            }
        } else {
            py::int_ m = py::int_(-1) - py::reinterpret_borrow<py::int_>(v); // -1 - x >= 0
            const unsigned long long u = PyLong_AsUnsignedLongLong(m.ptr());
            if (u == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
                PyErr_Clear();
                encode_bignum(w, v, true);
            } else {
                w.negint(u);
            }
        }
    } else if (PyUnicode_Check(o)) {
        w.text(utf8(v));
    } else if (PyBytes_Check(o)) {
        w.bytes({reinterpret_cast<const uint8_t *>(PyBytes_AS_STRING(o)),
                 static_cast<size_t>(PyBytes_GET_SIZE(o))});
    } else if (PyByteArray_Check(o)) {
        w.bytes({reinterpret_cast<const uint8_t *>(PyByteArray_AS_STRING(o)),
                 static_cast<size_t>(PyByteArray_GET_SIZE(o))});
    } else if (PyTuple_Check(o) || PyList_Check(o)) {
        py::sequence seq = py::reinterpret_borrow<py::sequence>(v);
        const size_t n = seq.size();
        w.array(n);
        for (size_t i = 0; i < n; i++)
            encode(w, seq[i], depth + 1);
    } else {
        throw py::type_error("extra keys: cannot encode a " +
                             std::string(py::str(py::type::handle_of(v).attr("__name__"))) +
                             " (expected None, bool, int, str, bytes, bytearray, tuple or list)");
    }
}

// A contiguous bytes-like object's bytes, released on scope exit. Lighter
// than py::buffer_info, which copies shape and strides into vectors.
class Bytes {
  public:
    explicit Bytes(py::handle o) {
        if (PyObject_GetBuffer(o.ptr(), &view_, PyBUF_SIMPLE) != 0) throw py::error_already_set();
    }
    Bytes(const Bytes &) = delete;
    Bytes &operator=(const Bytes &) = delete;
    ~Bytes() { PyBuffer_Release(&view_); }
    const uint8_t *data() const { return static_cast<const uint8_t *>(view_.buf); }
    size_t size() const { return static_cast<size_t>(view_.len); }

  private:
    Py_buffer view_{};
};

std::vector<uint32_t> tokens_of(py::handle tokens) {
    PyObject *fast = PySequence_Fast(tokens.ptr(), "tokens: expected a sequence of ints");
    if (!fast) throw py::error_already_set();
    py::object hold = py::reinterpret_steal<py::object>(fast);
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    std::vector<uint32_t> t(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = items[i];
        py::object idx;
        if (!PyLong_Check(it)) { // numpy integers and other __index__ types
            idx = py::reinterpret_steal<py::object>(PyNumber_Index(it));
            if (!idx) throw py::error_already_set();
            it = idx.ptr();
        }
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(it, &overflow);
        if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
        if (overflow || v < 0 || v > 0xffffffffLL)
            throw py::value_error("tokens[" + std::to_string(i) +
                                  "] = " + std::string(py::str(it)) + ": expected 0..4294967295");
        t[static_cast<size_t>(i)] = static_cast<uint32_t>(v);
    }
    return t;
}

py::list vllm_block_hashes(py::handle tokens, long long block_size, py::handle algo,
                           py::handle seed, py::handle extra_keys, py::handle parent) {
    const uint32_t scheme = scheme_of(algo);
    if (block_size <= 0 || block_size > 0xffffffffLL)
        throw py::value_error("block_size " + std::to_string(block_size) +
                              ": expected 1..4294967295");
    const auto bs = static_cast<uint32_t>(block_size);
    const std::vector<uint32_t> t = tokens_of(tokens);
    const size_t n = t.size() / bs;

    // vLLM's hash_block_tokens: a falsy parent (None, b"") means NONE_HASH.
    std::vector<uint8_t> par;
    if (!parent.is_none()) {
        const Bytes b(parent);
        par.assign(b.data(), b.data() + b.size());
    }
    if (par.empty()) par = none_hash(scheme, seed_of(seed));

    std::vector<std::vector<uint8_t>> items;
    std::vector<const uint8_t *> ptrs;
    std::vector<size_t> lens;
    if (!extra_keys.is_none()) {
        py::sequence seq = py::reinterpret_borrow<py::sequence>(extra_keys);
        if (seq.size() < n)
            throw py::value_error("extra_keys has " + std::to_string(seq.size()) + " entries for " +
                                  std::to_string(n) + " full blocks: expected one per block");
        items.resize(n);
        ptrs.assign(n, nullptr);
        lens.assign(n, 0);
        kv::cbor::Writer w;
        for (size_t i = 0; i < n; i++) {
            py::object e = seq[i];
            if (e.is_none()) continue; // null: kv_vllm_block_hashes writes it
            w.clear();
            encode(w, e, 0);
            items[i] = w.take();
            ptrs[i] = items[i].data();
            lens[i] = items[i].size();
        }
    }

    const size_t hl = kv_vllm_hash_len(scheme);
    std::vector<uint8_t> out(n * hl);
    int64_t rc;
    {
        std::optional<py::gil_scoped_release> nogil;
        if (n >= kReleaseGilBlocks) nogil.emplace();
        rc = kv_vllm_block_hashes(scheme, par.data(), par.size(), t.data(), t.size(), bs,
                                  ptrs.empty() ? nullptr : ptrs.data(),
                                  lens.empty() ? nullptr : lens.data(), out.data(), n);
    }
    if (rc < 0) raise_hash(rc, "kv_vllm_block_hashes");
    py::list result(n);
    for (size_t i = 0; i < n; i++)
        result[i] = to_bytes({out.data() + i * hl, hl});
    return result;
}

py::int_ vllm_key(py::handle hash) {
    const Bytes b(hash);
    if (b.size() != 16 && b.size() != 32)
        throw py::value_error(
            "hash: expected 16 or 32 bytes (a vLLM block hash without its group id), got " +
            std::to_string(b.size()));
    const kv_key k = kv_vllm_key(b.data(), b.size());
    uint8_t be[16];
    for (int i = 0; i < 8; i++) {
        be[i] = static_cast<uint8_t>(k.hi >> (56 - 8 * i));
        be[8 + i] = static_cast<uint8_t>(k.lo >> (56 - 8 * i));
    }
    // One int from 16 big-endian unsigned bytes (what int.from_bytes calls);
    // building it from the halves with shifts and ors takes 4 more objects.
    PyObject *r = _PyLong_FromByteArray(be, sizeof be, /*little_endian=*/0, /*is_signed=*/0);
    if (!r) throw py::error_already_set();
    return py::reinterpret_steal<py::int_>(r);
}

} // namespace

void init_hashes(py::module_ &m) {
    m.def("vllm_block_hashes", &vllm_block_hashes, py::arg("tokens"), py::arg("block_size"),
          py::arg("algo") = "sha256_cbor", py::arg("seed") = py::none(),
          py::arg("extra_keys") = py::none(), py::arg("parent") = py::none(),
          R"doc(vLLM's prefix-cache block hashes of the full blocks of ``tokens``.

Block i hashes (parent, tuple(tokens[i*block_size:(i+1)*block_size]),
extra_keys[i]) canonically CBOR-encoded, with ``algo`` "sha256_cbor"
(32-byte hashes) or "xxhash_cbor" (16 bytes); the parent of block 0 is
``parent`` or, when that is None or empty, NONE_HASH of ``seed``, and each
later block's parent is the hash before it. Bit for bit what vLLM's
request_block_hasher computes.

seed: None means $PYTHONHASHSEED when set, else "vllm-none-hash".
extra_keys: None, or one entry per full block (more are ignored): None or
a tuple of str / bytes / int / bool / None / nested tuples (vLLM's LoRA
name, multimodal (identifier, offset) pairs, cache salt, prompt-embeds
digest). A trailing partial block is not hashed.
Raises ValueError (unknown algo, block_size < 1, a token outside
0..2**32-1, too few extra_keys), TypeError (an extra key of another type).
The GIL is released while a long chain is hashed.)doc");
    m.def(
        "vllm_none_hash",
        [](py::handle algo, py::handle seed) {
            const auto h = none_hash(scheme_of(algo), seed_of(seed));
            return to_bytes(h);
        },
        py::arg("algo") = "sha256_cbor", py::arg("seed") = py::none(),
        R"doc(vLLM's NONE_HASH, the parent of a sequence's first block: H(seed).

seed None means $PYTHONHASHSEED when set, else "vllm-none-hash".)doc");
    m.def("vllm_key", &vllm_key, py::arg("hash"),
          R"doc(The kvpool key of a vLLM block hash: int.from_bytes(hash[-16:], "big").

Its low 64 bits are vLLM's KV-event form of the hash. ``hash`` is 16 or
32 bytes (strip a BlockHashWithGroupId's 4-byte group id first).)doc");
    m.def(
        "vllm_seed_id",
        [](py::handle algo, py::handle seed) {
            uint64_t id = 0;
            const uint32_t scheme = scheme_of(algo);
            const std::string s = seed_of(seed);
            int rc = kv_vllm_seed_id(scheme, s.data(), s.size(), &id);
            if (rc < 0) raise_hash(rc, "kv_vllm_seed_id");
            return id;
        },
        py::arg("algo") = "sha256_cbor", py::arg("seed") = py::none(),
        R"doc(The manifest hash_seed of a vLLM scheme and seed: the first 8 bytes of
NONE_HASH, big-endian. Engines whose seeds differ get different
namespaces. seed None means $PYTHONHASHSEED when set, else "vllm-none-hash".)doc");
}

} // namespace kvpool_py
