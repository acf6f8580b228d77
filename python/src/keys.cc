// SPDX-License-Identifier: MIT
// Keys between Python and libkv, token lists, and kvpool's chained hash.
#include "internal.h"
#include "pool.h"

#include <cstring>
#include <vector>

namespace kvpool_py {
namespace {

uint64_t load_be64(const unsigned char *p) noexcept {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

bool key_from_bytes(const unsigned char *p, Py_ssize_t len, kv_key *out) noexcept {
    if (len != 16 && len != 32) {
        PyErr_Format(
            PyExc_ValueError,
            "a kvpool key given as bytes has 16 or 32 bytes (an engine block hash), not %zd", len);
        return false;
    }
    out->hi = load_be64(p + len - 16);
    out->lo = load_be64(p + len - 8);
    return true;
}

bool key_from_long(PyObject *obj, kv_key *out) noexcept {
    unsigned char buf[16];
#if PY_VERSION_HEX >= 0x030d0000
    if (_PyLong_AsByteArray(reinterpret_cast<PyLongObject *>(obj), buf, sizeof buf, 1, 0, 1) < 0)
#else
    if (_PyLong_AsByteArray(reinterpret_cast<PyLongObject *>(obj), buf, sizeof buf, 1, 0) < 0)
#endif
    {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_OverflowError, "a kvpool key is an int in [0, 2**128)");
        }
        return false;
    }
    std::memcpy(&out->lo, buf, 8); // little-endian host: x86-64, aarch64
    std::memcpy(&out->hi, buf + 8, 8);
    return true;
}

// The tokens of a Python sequence, a buffer of 4- or 8-byte integers
// (array('I'), numpy), or any iterable of ints; each in [0, 2**32).
std::vector<uint32_t> tokens_from_buffer(const Py_buffer &b) {
    char fmt = b.format ? b.format[0] : 'B';
    if (fmt == '@' || fmt == '=' || fmt == '<') fmt = b.format[1];
    std::vector<uint32_t> out;
    size_t n = static_cast<size_t>(b.len / b.itemsize);
    out.resize(n);
    auto bad = [](long long v) {
        PyErr_Format(PyExc_OverflowError, "token id %lld is outside [0, 2**32)", v);
        throw py::error_already_set();
    };
    if (b.itemsize == 4 && (fmt == 'I' || fmt == 'L')) {
        std::memcpy(out.data(), b.buf, n * 4);
    } else if (b.itemsize == 4 && (fmt == 'i' || fmt == 'l')) {
        const int32_t *p = static_cast<const int32_t *>(b.buf);
        for (size_t i = 0; i < n; i++) {
            if (p[i] < 0) bad(p[i]);
            out[i] = static_cast<uint32_t>(p[i]);
        }
    } else if (b.itemsize == 8 && (fmt == 'q' || fmt == 'l' || fmt == 'Q' || fmt == 'L')) {
        const uint64_t *p = static_cast<const uint64_t *>(b.buf);
        bool is_signed = fmt == 'q' || fmt == 'l';
        for (size_t i = 0; i < n; i++) {
            if (p[i] > UINT32_MAX) bad(is_signed ? static_cast<long long>(p[i]) : -1);
            out[i] = static_cast<uint32_t>(p[i]);
        }
    } else {
        throw py::type_error(
            std::string("token ids in a buffer must be 4- or 8-byte integers, not format '") +
            (b.format ? b.format : "B") + "'");
    }
    return out;
}

} // namespace

bool to_key_noexcept(PyObject *obj, kv_key *out) noexcept {
    if (PyLong_Check(obj)) return key_from_long(obj, out);
    if (PyBytes_Check(obj))
        return key_from_bytes(reinterpret_cast<const unsigned char *>(PyBytes_AS_STRING(obj)),
                              PyBytes_GET_SIZE(obj), out);
    // Integer scalars (numpy.uint64) export a buffer too: __index__ first;
    // arrays have the slot but refuse unless 0-d, and then go by bytes.
    if (PyIndex_Check(obj)) {
        PyObject *i = PyNumber_Index(obj);
        if (i) {
            bool ok = key_from_long(i, out);
            Py_DECREF(i);
            return ok;
        }
        if (!PyObject_CheckBuffer(obj) || !PyErr_ExceptionMatches(PyExc_TypeError)) return false;
        PyErr_Clear();
    }
    if (PyObject_CheckBuffer(obj)) {
        Py_buffer b;
        if (PyObject_GetBuffer(obj, &b, PyBUF_SIMPLE) < 0) return false;
        bool ok = key_from_bytes(static_cast<const unsigned char *>(b.buf), b.len, out);
        PyBuffer_Release(&b);
        return ok;
    }
    PyErr_Format(PyExc_TypeError,
                 "a kvpool key is an int in [0, 2**128) or 16 or 32 bytes, not %.100s",
                 Py_TYPE(obj)->tp_name);
    return false;
}

kv_key to_key(py::handle obj) {
    kv_key k;
    if (!to_key_noexcept(obj.ptr(), &k)) throw py::error_already_set();
    return k;
}

PyObject *key_to_int(kv_key key) noexcept {
    if (key.hi == 0) return PyLong_FromUnsignedLongLong(key.lo);
    unsigned char buf[16];
    std::memcpy(buf, &key.lo, 8);
    std::memcpy(buf + 8, &key.hi, 8);
    return _PyLong_FromByteArray(buf, sizeof buf, 1, 0);
}

py::object key_object(kv_key key) {
    PyObject *o = key_to_int(key);
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(o);
}

std::vector<kv_key> to_keys(py::handle seq) {
    std::vector<kv_key> keys;
    PyObject *fast = PySequence_Fast(seq.ptr(), "keys must be a sequence or an iterable");
    if (!fast) throw py::error_already_set();
    py::object holder = py::reinterpret_steal<py::object>(fast);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    keys.resize(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; i++)
        if (!to_key_noexcept(items[i], &keys[static_cast<size_t>(i)]))
            throw py::error_already_set();
    return keys;
}

py::list keys_to_list(const kv_key *keys, size_t n) {
    py::list out(n);
    for (size_t i = 0; i < n; i++)
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), key_object(keys[i]).release().ptr());
    return out;
}

std::vector<uint32_t> to_tokens(py::handle obj) {
    PyObject *o = obj.ptr();
    if (!PyList_Check(o) && !PyTuple_Check(o) && PyObject_CheckBuffer(o)) {
        Py_buffer b;
        if (PyObject_GetBuffer(o, &b, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
            throw py::error_already_set();
        std::unique_ptr<Py_buffer, void (*)(Py_buffer *)> guard(&b, PyBuffer_Release);
        return tokens_from_buffer(b);
    }
    PyObject *fast =
        PySequence_Fast(o, "tokens must be a sequence of ints or a buffer of integers");
    if (!fast) throw py::error_already_set();
    py::object holder = py::reinterpret_steal<py::object>(fast);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    std::vector<uint32_t> out(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long v = PyLong_AsUnsignedLong(items[i]);
        if (v == static_cast<unsigned long>(-1) && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError) ||
                PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_OverflowError, "token %zd (%R) is not an int in [0, 2**32)", i,
                             items[i]);
            }
            throw py::error_already_set();
        }
        if (v > UINT32_MAX) {
            PyErr_Format(PyExc_OverflowError, "token %zd (%lu) is not an int in [0, 2**32)", i, v);
            throw py::error_already_set();
        }
        out[static_cast<size_t>(i)] = static_cast<uint32_t>(v);
    }
    return out;
}

std::vector<std::vector<uint32_t>> to_block_tokens(py::handle obj, size_t n) {
    std::vector<std::vector<uint32_t>> out(n);
    if (obj.is_none()) return out;
    PyObject *fast =
        PySequence_Fast(obj.ptr(), "token_ids must be a sequence (one item per block)");
    if (!fast) throw py::error_already_set();
    py::object holder = py::reinterpret_steal<py::object>(fast);
    const size_t m = static_cast<size_t>(PySequence_Fast_GET_SIZE(fast));
    if (m != n)
        throw py::value_error(std::to_string(n) + " blocks but token_ids for " + std::to_string(m));
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (size_t i = 0; i < n; i++)
        if (items[i] != Py_None) out[i] = to_tokens(py::handle(items[i]));
    return out;
}

std::vector<kv_key> hash_chain_keys(const std::vector<uint32_t> &tokens, uint32_t block_tokens,
                                    uint64_t seed) {
    if (block_tokens == 0) throw py::value_error("block_tokens must be > 0");
    size_t n = tokens.size() / block_tokens;
    std::vector<kv_key> keys(n);
    if (n >= kGilFreeMinBlocks) {
        py::gil_scoped_release nogil;
        kv_hash_chain(seed, tokens.data(), tokens.size(), block_tokens, keys.data(), n);
    } else {
        kv_hash_chain(seed, tokens.data(), tokens.size(), block_tokens, keys.data(), n);
    }
    return keys;
}

void init_keys(py::module_ &m) {
    m.def(
        "to_key", [](py::handle k) { return key_object(to_key(k)); }, py::arg("key"),
        "The int form of a key: an int in [0, 2**128) as is, or 16 or 32 bytes\n"
        "(an engine block hash) as the int of their last 16 bytes, big-endian.");
    m.def(
        "hash_chain",
        [](py::handle tokens, uint32_t block_tokens, uint64_t seed) {
            std::vector<uint32_t> t = to_tokens(tokens);
            std::vector<kv_key> keys = hash_chain_keys(t, block_tokens, seed);
            return keys_to_list(keys.data(), keys.size());
        },
        py::arg("tokens"), py::arg("block_tokens"), py::arg("seed"),
        "kvpool's chained block keys of the full blocks of tokens (a sequence of\n"
        "ints in [0, 2**32) or a buffer of 4- or 8-byte integers):\n"
        "key[i] = XXH3-128(seed, key[i-1] || tokens of block i), key[-1] = 0.\n"
        "seed is a namespace's seed (Namespace.seed) for keys of that namespace.");
    m.def(
        "hash_block",
        [](uint64_t seed, py::handle prev, py::handle tokens) {
            kv_key p{0, 0};
            if (!prev.is_none()) p = to_key(prev);
            std::vector<uint32_t> t = to_tokens(tokens);
            return key_object(kv_hash_block(seed, &p, t.data(), t.size()));
        },
        py::arg("seed"), py::arg("prev"), py::arg("tokens"),
        "One link of kvpool's chain: XXH3-128(seed, prev || tokens); prev None\n"
        "(or 0) for the first block.");
}

} // namespace kvpool_py
