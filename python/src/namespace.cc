// SPDX-License-Identifier: MIT
// kvpool.Manifest (a model identity) and kvpool.Namespace (the blocks of
// one identity in one pool: put, reserve, get, match_prefix, batches).
#include "internal.h"
#include "pool.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace kvpool_py {
namespace {

struct Manifest {
    kv_manifest m;
};

struct NamedCode {
    const char *name;
    uint32_t code;
};

// torch dtype names (str(torch.float16) is "torch.float16") map too.
constexpr NamedCode dtype_names[] = {
    {"fp16", KV_DTYPE_FP16},
    {"float16", KV_DTYPE_FP16},
    {"half", KV_DTYPE_FP16},
    {"bf16", KV_DTYPE_BF16},
    {"bfloat16", KV_DTYPE_BF16},
    {"fp8_e4m3", KV_DTYPE_FP8_E4M3},
    {"float8_e4m3fn", KV_DTYPE_FP8_E4M3},
    {"fp8_e5m2", KV_DTYPE_FP8_E5M2},
    {"float8_e5m2", KV_DTYPE_FP8_E5M2},
    {"fp32", KV_DTYPE_FP32},
    {"float32", KV_DTYPE_FP32},
    {"float", KV_DTYPE_FP32},
    {"int8", KV_DTYPE_INT8},
};

// The hash schemes of uapi/kvpool/region.h (KV_HASH_*), by name.
constexpr NamedCode hash_names[] = {
    {"kvpool", 1},
    {"xxh3_128_chained", 1},
    {"sha256_cbor", 2},
    {"xxhash_cbor", 3},
};
static_assert(KV_HASH_XXH3_128_CHAINED == 1);
#ifdef KV_HASH_VLLM_SHA256_CBOR
static_assert(KV_HASH_VLLM_SHA256_CBOR == 2 && KV_HASH_VLLM_XXHASH_CBOR == 3);
#endif

template <size_t N>
uint32_t code_of(py::handle v, const NamedCode (&names)[N], const char *what) {
    if (py::isinstance<py::int_>(v)) return v.cast<uint32_t>();
    std::string s = py::str(v);
    if (s.starts_with("torch.")) s = s.substr(6);
    for (const NamedCode &n : names)
        if (s == n.name) return n.code;
    std::string known;
    for (const NamedCode &n : names)
        known += std::string(known.empty() ? "" : ", ") + n.name;
    throw py::value_error(std::string("unknown ") + what + " '" + s + "' (an int, or one of " +
                          known + ")");
}

Manifest make_manifest(const std::string &model_name, uint32_t block_tokens, py::bytes fingerprint,
                       py::handle dtype, uint32_t kv_layout, uint32_t tp_rank, uint32_t tp_world,
                       py::handle hash_scheme, uint64_t hash_seed) {
    Manifest out;
    std::memset(&out.m, 0, sizeof out.m);
    if (model_name.empty() || model_name.size() >= sizeof out.m.model_name)
        throw py::value_error("model_name must be 1.." +
                              std::to_string(sizeof out.m.model_name - 1) +
                              " bytes of UTF-8, not " + std::to_string(model_name.size()));
    if (model_name.find('\0') != std::string::npos)
        throw py::value_error("model_name contains a NUL");
    if (block_tokens == 0) throw py::value_error("block_tokens must be > 0");
    if (tp_world == 0 || tp_rank >= tp_world)
        throw py::value_error("tp_rank (" + std::to_string(tp_rank) + ") must be < tp_world (" +
                              std::to_string(tp_world) + ")");
    std::string fp = fingerprint;
    if (fp.size() > sizeof out.m.weights_fingerprint)
        throw py::value_error("weights_fingerprint has at most 32 bytes, not " +
                              std::to_string(fp.size()));
    std::memcpy(out.m.model_name, model_name.data(), model_name.size());
    std::memcpy(out.m.weights_fingerprint, fp.data(), fp.size());
    out.m.dtype = code_of(dtype, dtype_names, "dtype");
    out.m.kv_layout = kv_layout;
    out.m.block_tokens = block_tokens;
    out.m.tp_rank = tp_rank;
    out.m.tp_world = tp_world;
    out.m.hash_scheme = code_of(hash_scheme, hash_names, "hash_scheme");
    out.m.hash_seed = hash_seed;
    return out;
}

std::string model_name_of(const kv_manifest &m) {
    return std::string(reinterpret_cast<const char *>(m.model_name),
                       strnlen(reinterpret_cast<const char *>(m.model_name), sizeof m.model_name));
}

py::dict manifest_dict(const kv_manifest &m) {
    py::dict d;
    d["model_name"] = model_name_of(m);
    d["block_tokens"] = m.block_tokens;
    d["weights_fingerprint"] = py::bytes(reinterpret_cast<const char *>(m.weights_fingerprint),
                                         sizeof m.weights_fingerprint);
    d["dtype"] = m.dtype;
    d["kv_layout"] = m.kv_layout;
    d["tp_rank"] = m.tp_rank;
    d["tp_world"] = m.tp_world;
    d["hash_scheme"] = m.hash_scheme;
    d["hash_seed"] = m.hash_seed;
    return d;
}

// ---- Namespace operations -------------------------------------------------

Namespace &ns_checked(py::handle self) {
    Namespace &ns = self.cast<Namespace &>();
    ns.pool->check_open();
    return ns;
}

// The C++ Namespace of a kvpool.Namespace instance, for the CPython-level
// methods below (whose descriptors have already checked the type).
Namespace *ns_raw(PyObject *self) noexcept {
    auto *inst = reinterpret_cast<py::detail::instance *>(self);
    return inst->get_value_and_holder().value_ptr<Namespace>();
}

kv_put_opts put_opts(uint32_t tokens, uint32_t priority, uint64_t user_tag, py::handle parent,
                     uint32_t ttl_ms) {
    kv_put_opts o;
    std::memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.meta.tokens = tokens;
    o.meta.priority = priority;
    o.meta.user_tag = user_tag;
    if (!parent.is_none()) {
        o.flags |= KV_PUT_F_PARENT;
        o.parent = to_key(parent);
    }
    o.ttl_ms = ttl_ms;
    return o;
}

// A C-contiguous buffer of a bytes-like object, released at scope exit.
class Bytes {
  public:
    explicit Bytes(py::handle obj) {
        if (PyObject_GetBuffer(obj.ptr(), &b_, PyBUF_C_CONTIGUOUS) < 0)
            throw py::error_already_set();
    }
    ~Bytes() { PyBuffer_Release(&b_); }
    Bytes(const Bytes &) = delete;
    Bytes &operator=(const Bytes &) = delete;
    Bytes(Bytes &&o) noexcept : b_(o.b_) { o.b_.obj = nullptr; }
    const void *data() const { return b_.buf; }
    uint64_t size() const { return static_cast<uint64_t>(b_.len); }

  private:
    Py_buffer b_;
};

constexpr uint64_t kGilFreeMinBytes = 256 * 1024;

bool ns_put(py::handle self, py::handle key, py::handle data, uint32_t tokens, uint32_t priority,
            uint64_t user_tag, py::handle parent, uint32_t ttl_ms, py::handle token_ids) {
    Namespace &ns = ns_checked(self);
    kv_key k = to_key(key);
    kv_put_opts o = put_opts(tokens, priority, user_tag, parent, ttl_ms);
    std::vector<uint32_t> ids;
    if (!token_ids.is_none()) ids = to_tokens(token_ids);
    o.n_token_ids = static_cast<uint32_t>(ids.size());
    o.token_ids = ids.empty() ? nullptr : ids.data();
    Bytes b(data);
    int rc;
    if (b.size() >= kGilFreeMinBytes) {
        PoolHold hold(*ns.pool);
        py::gil_scoped_release nogil;
        rc = kv_put_ex(ns.pool->pool, ns.id, &k, b.data(), b.size(), &o);
    } else {
        rc = kv_put_ex(ns.pool->pool, ns.id, &k, b.data(), b.size(), &o);
    }
    if (rc < 0) raise_kv(rc, "put");
    return rc == 0;
}

py::object ns_reserve(py::handle self, py::handle key, uint64_t length, uint32_t tokens,
                      uint32_t priority, uint64_t user_tag, py::handle parent, uint32_t ttl_ms) {
    Namespace &ns = ns_checked(self);
    kv_key k = to_key(key);
    kv_put_opts o = put_opts(tokens, priority, user_tag, parent, ttl_ms);
    kv_reservation r;
    int rc = kv_reserve_ex(ns.pool->pool, ns.id, &k, length, &o, &r);
    if (rc < 0) raise_kv(rc, "reserve");
    if (rc == KV_DEDUP) return py::none();
    return reservation_new(ns.pool_obj, *ns.pool, r, k);
}

bool ns_remove(py::handle self, py::handle key) {
    Namespace &ns = ns_checked(self);
    kv_key k = to_key(key);
    int rc = kv_remove(ns.pool->pool, ns.id, &k);
    if (rc == -ENOENT) return false;
    if (rc < 0) raise_kv(rc, "remove");
    return true;
}

// Views for pins this call holds in views[0..n); on failure every pin not
// yet handed to a View is released (and the Views made so far release
// theirs when the list is dropped).
py::list wrap_views(Namespace &ns, std::vector<kv_view> &views, const std::vector<kv_key> &keys,
                    size_t n, const std::vector<int> *present) {
    py::list out(n);
    for (size_t i = 0; i < n; i++) {
        PyObject *item;
        if (present && !(*present)[i]) {
            item = Py_NewRef(Py_None);
        } else {
            item = view_new(ns.pool_obj.ptr(), *ns.pool, views[i], keys[i]);
            if (!item) {
                for (size_t j = i + 1; j < n; j++)
                    if (!present || (*present)[j]) kv_release(ns.pool->pool, &views[j]);
                throw py::error_already_set();
            }
        }
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), item);
    }
    return out;
}

py::object ns_match_prefix(py::handle self, py::handle keys_obj, bool pin) {
    Namespace &ns = ns_checked(self);
    std::vector<kv_key> keys = to_keys(keys_obj);
    std::vector<kv_view> views(pin ? keys.size() : 0);
    int rc;
    {
        PoolHold hold(*ns.pool);
        if (keys.size() >= kGilFreeMinBlocks) {
            py::gil_scoped_release nogil;
            rc = kv_match_prefix(ns.pool->pool, ns.id, keys.data(), keys.size(),
                                 pin ? KV_MATCH_F_PIN : 0, views.data());
        } else {
            rc = kv_match_prefix(ns.pool->pool, ns.id, keys.data(), keys.size(),
                                 pin ? KV_MATCH_F_PIN : 0, views.data());
        }
    }
    if (rc < 0) raise_kv(rc, "match_prefix");
    if (!pin) return py::int_(rc);
    return wrap_views(ns, views, keys, static_cast<size_t>(rc), nullptr);
}

py::list ns_get_many(py::handle self, py::handle keys_obj) {
    Namespace &ns = ns_checked(self);
    std::vector<kv_key> keys = to_keys(keys_obj);
    std::vector<kv_view> views(keys.size());
    std::vector<int> present(keys.size(), 0);
    int err = 0;
    {
        PoolHold hold(*ns.pool);
        auto run = [&] {
            for (size_t i = 0; i < keys.size(); i++) {
                int rc = kv_get(ns.pool->pool, ns.id, &keys[i], &views[i]);
                if (rc == 0) {
                    present[i] = 1;
                } else if (rc != -ENOENT) {
                    err = rc;
                    for (size_t j = 0; j < i; j++)
                        if (present[j]) kv_release(ns.pool->pool, &views[j]);
                    return;
                }
            }
        };
        if (keys.size() >= kGilFreeMinBlocks) {
            py::gil_scoped_release nogil;
            run();
        } else {
            run();
        }
    }
    if (err) raise_kv(err, "get_many");
    return wrap_views(ns, views, keys, keys.size(), &present);
}

py::list ns_contains_many(py::handle self, py::handle keys_obj) {
    Namespace &ns = ns_checked(self);
    std::vector<kv_key> keys = to_keys(keys_obj);
    std::vector<int> found(keys.size());
    {
        PoolHold hold(*ns.pool);
        auto run = [&] {
            for (size_t i = 0; i < keys.size(); i++)
                found[i] = kv_contains(ns.pool->pool, ns.id, &keys[i]);
        };
        if (keys.size() >= kGilFreeMinBlocks) {
            py::gil_scoped_release nogil;
            run();
        } else {
            run();
        }
    }
    py::list out(keys.size());
    for (size_t i = 0; i < keys.size(); i++) {
        if (found[i] < 0) raise_kv(found[i], "contains_many");
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i),
                        py::bool_(found[i] == 1).release().ptr());
    }
    return out;
}

py::list ns_put_many(py::handle self, py::handle keys_obj, py::handle datas_obj, uint32_t tokens,
                     uint32_t priority, uint64_t user_tag, py::handle parent, bool chain,
                     uint32_t ttl_ms) {
    Namespace &ns = ns_checked(self);
    std::vector<kv_key> keys = to_keys(keys_obj);
    PyObject *fast =
        PySequence_Fast(datas_obj.ptr(), "datas must be a sequence of bytes-like objects");
    if (!fast) throw py::error_already_set();
    py::object holder = py::reinterpret_steal<py::object>(fast);
    size_t n_datas = static_cast<size_t>(PySequence_Fast_GET_SIZE(fast));
    if (n_datas != keys.size())
        throw py::value_error("put_many: " + std::to_string(keys.size()) + " keys but " +
                              std::to_string(n_datas) + " datas");
    std::vector<Bytes> bufs;
    bufs.reserve(keys.size());
    uint64_t total = 0;
    for (size_t i = 0; i < keys.size(); i++) {
        bufs.emplace_back(PySequence_Fast_GET_ITEM(fast, static_cast<Py_ssize_t>(i)));
        total += bufs.back().size();
    }
    kv_put_opts first = put_opts(tokens, priority, user_tag, parent, ttl_ms);
    std::vector<int> rcs(keys.size(), 0);
    size_t done = 0;
    {
        PoolHold hold(*ns.pool);
        auto run = [&] {
            kv_put_opts o = first;
            for (; done < keys.size(); done++) {
                if (chain && done > 0) {
                    o.flags |= KV_PUT_F_PARENT;
                    o.parent = keys[done - 1];
                }
                int rc = kv_put_ex(ns.pool->pool, ns.id, &keys[done], bufs[done].data(),
                                   bufs[done].size(), &o);
                rcs[done] = rc;
                if (rc < 0) return;
            }
        };
        if (keys.size() >= kGilFreeMinBlocks || total >= kGilFreeMinBytes) {
            py::gil_scoped_release nogil;
            run();
        } else {
            run();
        }
    }
    if (done < keys.size())
        raise_kv(rcs[done], ("put_many: key " + std::to_string(done) + " of " +
                             std::to_string(keys.size()) + " (the ones before it are stored)")
                                .c_str());
    py::list out(keys.size());
    for (size_t i = 0; i < keys.size(); i++)
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i),
                        py::bool_(rcs[i] == 0).release().ptr());
    return out;
}

// ---- The hot path, as plain CPython methods (no pybind11 dispatch) --------

PyObject *ns_get(PyObject *self, PyObject *key) {
    Namespace *ns = ns_raw(self);
    PoolState &ps = *ns->pool;
    if (!ps.check_open_noexcept()) return nullptr;
    kv_key k;
    if (!to_key_noexcept(key, &k)) return nullptr;
    kv_view v;
    int rc = kv_get(ps.pool, ns->id, &k, &v);
    if (rc == 0) return view_new(ns->pool_obj.ptr(), ps, v, k);
    if (rc == -ENOENT) Py_RETURN_NONE;
    return set_kv_error(rc, "get");
}

PyObject *ns_contains(PyObject *self, PyObject *key) {
    Namespace *ns = ns_raw(self);
    PoolState &ps = *ns->pool;
    if (!ps.check_open_noexcept()) return nullptr;
    kv_key k;
    if (!to_key_noexcept(key, &k)) return nullptr;
    int rc = kv_contains(ps.pool, ns->id, &k);
    if (rc < 0) return set_kv_error(rc, "contains");
    return PyBool_FromLong(rc);
}

PyMethodDef ns_get_def = {
    "get", ns_get, METH_O,
    "get(key) -> View | None\n"
    "Pin the committed block under key and return a zero-copy View of it, or\n"
    "None if there is none (absent, expired or still being written).\n"
    "NoPinsError when this client already holds pins_per_client pins."};
PyMethodDef ns_contains_def = {"contains", ns_contains, METH_O,
                               "contains(key) -> bool\nTrue if a block is committed under key."};

py::object py_manifest(const kv_manifest &m) {
    return py::cast(Manifest{m});
}

} // namespace

Namespace &namespace_of(py::handle obj) {
    if (!py::isinstance<Namespace>(obj)) throw py::type_error("expected a kvpool.Namespace");
    return obj.cast<Namespace &>();
}

py::object make_namespace(py::object pool_obj, py::handle arg) {
    PoolState &ps = pool_state(pool_obj);
    ps.check_open();
    Namespace ns{pool_obj, &ps, 0, 0, {}};
    if (py::isinstance<Manifest>(arg)) {
        ns.manifest = arg.cast<Manifest &>().m;
        int rc = kv_ns_register(ps.pool, &ns.manifest, &ns.id, &ns.seed);
        if (rc == -ENOSPC)
            raise_kv(rc, "namespace",
                     ("the namespace table is full (max_namespaces " +
                      std::to_string(kv_pool_header(ps.pool)->max_namespaces) + ")")
                         .c_str());
        if (rc < 0) raise_kv(rc, "namespace");
    } else if (py::isinstance<py::int_>(arg)) {
        ns.id = arg.cast<uint32_t>();
        int rc = kv_ns_get(ps.pool, ns.id, &ns.manifest, &ns.seed);
        if (rc < 0) raise_kv(rc, ("namespace " + std::to_string(ns.id)).c_str());
    } else {
        throw py::type_error("pool.namespace() takes a kvpool.Manifest or a namespace id");
    }
    return py::cast(std::move(ns));
}

void init_namespace(py::module_ &m) {
    py::class_<Manifest>(
        m, "Manifest",
        "A model identity: blocks are shared only between clients whose manifests\n"
        "are equal byte for byte (same model, weights, dtype, layout, block size,\n"
        "tensor-parallel rank and world, hash scheme and seed).")
        .def(py::init(&make_manifest), py::arg("model_name"), py::arg("block_tokens"),
             py::kw_only(), py::arg("weights_fingerprint") = py::bytes(), py::arg("dtype") = 0,
             py::arg("kv_layout") = 0, py::arg("tp_rank") = 0, py::arg("tp_world") = 1,
             py::arg("hash_scheme") = 1, py::arg("hash_seed") = 0,
             "model_name: 1..63 bytes of UTF-8; block_tokens > 0; weights_fingerprint:\n"
             "up to 32 bytes (zero-padded), e.g. a digest of the weights; dtype: an int\n"
             "(KV_DTYPE_*, or engine-defined above 1024) or 'fp16', 'bf16', 'fp32',\n"
             "'fp8_e4m3', 'fp8_e5m2', 'int8' (torch names such as torch.float16 too);\n"
             "kv_layout: engine-defined; tp_rank < tp_world; hash_scheme: an int or\n"
             "'kvpool' (1), 'sha256_cbor' (2), 'xxhash_cbor' (3); hash_seed: the\n"
             "scheme's seed id (kvpool.vllm_seed_id for the vLLM schemes). ValueError\n"
             "names the field that is out of range.")
        .def_property_readonly("model_name", [](const Manifest &x) { return model_name_of(x.m); })
        .def_property_readonly("block_tokens", [](const Manifest &x) { return x.m.block_tokens; })
        .def_property_readonly("weights_fingerprint",
                               [](const Manifest &x) {
                                   return py::bytes(
                                       reinterpret_cast<const char *>(x.m.weights_fingerprint),
                                       sizeof x.m.weights_fingerprint);
                               })
        .def_property_readonly("dtype", [](const Manifest &x) { return x.m.dtype; })
        .def_property_readonly("kv_layout", [](const Manifest &x) { return x.m.kv_layout; })
        .def_property_readonly("tp_rank", [](const Manifest &x) { return x.m.tp_rank; })
        .def_property_readonly("tp_world", [](const Manifest &x) { return x.m.tp_world; })
        .def_property_readonly("hash_scheme", [](const Manifest &x) { return x.m.hash_scheme; })
        .def_property_readonly("hash_seed", [](const Manifest &x) { return x.m.hash_seed; })
        .def_property_readonly(
            "seed", [](const Manifest &x) { return kv_manifest_seed(&x.m); },
            "The chain seed this manifest yields (XXH3-64 of its bytes), as\n"
            "Namespace.seed.")
        .def(
            "to_bytes",
            [](const Manifest &x) {
                return py::bytes(reinterpret_cast<const char *>(&x.m), sizeof x.m);
            },
            "The 160-byte struct kv_manifest as stored in the pool.")
        .def(
            "as_dict", [](const Manifest &x) { return manifest_dict(x.m); },
            "The fields as a dict of the constructor's keyword arguments.")
        .def("__eq__",
             [](const Manifest &a, py::handle b) {
                 return py::isinstance<Manifest>(b) &&
                        std::memcmp(&a.m, &b.cast<const Manifest &>().m, sizeof a.m) == 0;
             })
        .def("__hash__",
             [](const Manifest &x) { return static_cast<Py_hash_t>(kv_manifest_seed(&x.m) >> 1); })
        .def("__repr__", [](const Manifest &x) {
            return "kvpool.Manifest(" + std::string(py::repr(py::str(model_name_of(x.m)))) + ", " +
                   std::to_string(x.m.block_tokens) + ", dtype=" + std::to_string(x.m.dtype) +
                   ", kv_layout=" + std::to_string(x.m.kv_layout) +
                   ", tp_rank=" + std::to_string(x.m.tp_rank) +
                   ", tp_world=" + std::to_string(x.m.tp_world) +
                   ", hash_scheme=" + std::to_string(x.m.hash_scheme) +
                   ", hash_seed=" + std::to_string(x.m.hash_seed) + ")";
        });

    py::class_<Namespace> cls(
        m, "Namespace",
        "The blocks of one model identity in one pool (Pool.namespace). Keys are\n"
        "ints in [0, 2**128) or 16/32-byte engine block hashes (kvpool.to_key).");
    cls.def_property_readonly(
           "id", [](const Namespace &ns) { return ns.id; }, "The namespace id in the pool.")
        .def_property_readonly(
            "seed", [](const Namespace &ns) { return ns.seed; },
            "The chain seed of kvpool's own keys (kvpool.hash_chain).")
        .def_property_readonly("manifest",
                               [](const Namespace &ns) { return py_manifest(ns.manifest); })
        .def_property_readonly("pool", [](const Namespace &ns) { return ns.pool_obj; })
        .def_property_readonly("block_tokens",
                               [](const Namespace &ns) { return ns.manifest.block_tokens; })
        .def("put", &ns_put, py::arg("key"), py::arg("data"), py::kw_only(), py::arg("tokens") = 0,
             py::arg("priority") = 0, py::arg("user_tag") = 0, py::arg("parent") = py::none(),
             py::arg("ttl_ms") = 0, py::arg("token_ids") = py::none(),
             "Copy data (any C-contiguous bytes-like object) into the pool under key\n"
             "and commit it, checksummed during the copy. True if stored, False if\n"
             "the key was already committed (nothing copied). parent: the key of the\n"
             "block before this one in its chain (prefix eviction takes children\n"
             "first); ttl_ms: expiry after commit (0: none); token_ids: the block's\n"
             "tokens, recorded in the pool's change feed (KV events). PoolFullError,\n"
             "BusyError (a writer holds the key), TooLargeError (empty or above the\n"
             "slab size).")
        .def("reserve", &ns_reserve, py::arg("key"), py::arg("length"), py::kw_only(),
             py::arg("tokens") = 0, py::arg("priority") = 0, py::arg("user_tag") = 0,
             py::arg("parent") = py::none(), py::arg("ttl_ms") = 0,
             "Reserve length bytes under key to write in place: a kvpool.Reservation,\n"
             "or None if the key is already committed. Until committed the key is\n"
             "invisible to readers and other writers get BusyError. Errors as put().")
        .def("remove", &ns_remove, py::arg("key"),
             "Remove the block under key: True if removed, False if there was none.\n"
             "Views of it stay valid until released. BusyError while it is reserved.")
        .def("match_prefix", &ns_match_prefix, py::arg("keys"), py::arg("pin") = false,
             "The number of leading keys of a chain that are committed; with pin=True\n"
             "a list of Views of those blocks instead (all pinned at once, or\n"
             "NoPinsError and none). Runs without the GIL for 16 keys or more.")
        .def("get_many", &ns_get_many, py::arg("keys"),
             "get() of each key: a list of View or None. NoPinsError (and no pins kept)\n"
             "if pins run out. Runs without the GIL for 16 keys or more.")
        .def("contains_many", &ns_contains_many, py::arg("keys"),
             "contains() of each key, as a list of bool (without the GIL for 16 keys\n"
             "or more).")
        .def("put_many", &ns_put_many, py::arg("keys"), py::arg("datas"), py::kw_only(),
             py::arg("tokens") = 0, py::arg("priority") = 0, py::arg("user_tag") = 0,
             py::arg("parent") = py::none(), py::arg("chain") = false, py::arg("ttl_ms") = 0,
             "put() of each (key, data) pair, in order, without the GIL for 16 blocks\n"
             "or 256 KiB or more: a list of bool (True stored, False already there).\n"
             "Metadata applies to every block; chain=True makes each block's parent\n"
             "the key before it (the first one's is parent). The first error stops\n"
             "the batch and is raised; the blocks before it stay stored.")
        .def(
            "hash_chain",
            [](const Namespace &ns, py::handle tokens) {
                std::vector<uint32_t> t = to_tokens(tokens);
                std::vector<kv_key> keys = hash_chain_keys(t, ns.manifest.block_tokens, ns.seed);
                return keys_to_list(keys.data(), keys.size());
            },
            py::arg("tokens"),
            "kvpool.hash_chain(tokens, self.block_tokens, self.seed): the keys of\n"
            "kvpool's own scheme for this namespace.")
        .def("__repr__", [](const Namespace &ns) {
            return "<kvpool.Namespace " + std::to_string(ns.id) + " of " + ns.pool->path + " (" +
                   model_name_of(ns.manifest) + ")>";
        });

    for (PyMethodDef *def : {&ns_get_def, &ns_contains_def}) {
        PyObject *descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject *>(cls.ptr()), def);
        if (!descr) throw py::error_already_set();
        py::setattr(cls, def->ml_name, py::reinterpret_steal<py::object>(descr));
    }
    cls.def("__contains__", [](py::handle self, py::handle key) {
        Namespace &ns = ns_checked(self);
        kv_key k = to_key(key);
        int rc = kv_contains(ns.pool->pool, ns.id, &k);
        if (rc < 0) raise_kv(rc, "contains");
        return rc == 1;
    });
}

} // namespace kvpool_py
