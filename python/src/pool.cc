// SPDX-License-Identifier: MIT
// kvpool.Pool (one libkv client of a pool), create_pool and destroy_pool.
#include "pool.h"

#include "internal.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <pthread.h>
#include <pybind11/stl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace kvpool_py {

uint64_t fork_generation;

PoolState::~PoolState() {
    if (owned()) kv_pool_detach(pool);
}

void PoolState::check_open() const {
    if (!check_open_noexcept()) throw py::error_already_set();
}

bool PoolState::check_open_noexcept() const noexcept {
    if (foreign()) {
        PyErr_Format(PyExc_ValueError,
                     "kvpool.Pool %s was attached by the parent process: attach again after fork()",
                     path.c_str());
        return false;
    }
    if (!closed) return true;
    PyErr_Format(PyExc_ValueError, "kvpool.Pool %s is detached", path.c_str());
    return false;
}

void PoolState::unhold() noexcept {
    if (--holds == 0 && closed && owned()) {
        kv_pool_detach(pool);
        pool = nullptr;
    }
}

void PoolState::detach() noexcept {
    closed = true;
    if (holds == 0 && owned()) {
        kv_pool_detach(pool);
        pool = nullptr;
    }
}

PoolState &pool_state(py::handle pool_obj) {
    if (!py::isinstance<PoolState>(pool_obj)) throw py::type_error("expected a kvpool.Pool");
    return pool_obj.cast<PoolState &>();
}

kv_pool *pool_handle(py::handle obj) {
    PoolState *ps = view_pool_state(obj.ptr());
    if (!ps) {
        if (py::isinstance<PoolState>(obj))
            ps = &obj.cast<PoolState &>();
        else if (py::isinstance<Namespace>(obj))
            ps = obj.cast<Namespace &>().pool;
        else
            throw py::type_error("expected a kvpool Pool, Namespace, View or Reservation");
    }
    ps->check_open();
    return ps->pool;
}

namespace {

uint32_t parse_named(py::handle v, const char *what, int (*parse)(const char *)) {
    if (py::isinstance<py::str>(v)) {
        std::string s = v.cast<std::string>();
        int r = parse(s.c_str());
        if (r < 0) throw py::value_error(std::string("unknown ") + what + " '" + s + "'");
        return static_cast<uint32_t>(r);
    }
    return v.cast<uint32_t>();
}

int parse_hugepages(const char *s) {
    std::string v = s;
    if (v == "never") return KV_HUGEPAGES_NEVER;
    if (v == "prefer") return KV_HUGEPAGES_PREFER;
    if (v == "require") return KV_HUGEPAGES_REQUIRE;
    return -1;
}

void create_pool(const std::string &path, uint64_t size, uint64_t slab_size,
                 uint64_t avg_block_size, uint32_t max_clients, uint32_t pins_per_client,
                 uint32_t max_namespaces, uint32_t max_entries, py::handle evict_policy,
                 py::handle hugepages, int numa_node, uint32_t mode, bool replace, bool prefault,
                 uint32_t feed_slots, bool secure_erase) {
    kv_create_opts o;
    kv_create_opts_init(&o, size);
    o.slab_size = slab_size;
    o.avg_block_size = avg_block_size;
    o.max_clients = max_clients;
    o.pins_per_client = pins_per_client;
    o.max_namespaces = max_namespaces;
    o.max_entries = max_entries;
    o.feed_slots = feed_slots;
    o.evict_policy = parse_named(evict_policy, "eviction policy", kv_evict_policy_parse);
    o.hugepages =
        parse_named(hugepages, "hugepages mode (never, prefer, require)", parse_hugepages);
    o.numa_node = numa_node;
    o.mode = mode;
    if (replace) o.flags |= KV_CREATE_F_REPLACE;
    if (prefault) o.flags |= KV_CREATE_F_PREFAULT;
    if (secure_erase) o.flags |= KV_CREATE_F_SECURE_ERASE;
    char err[256] = "";
    int rc;
    {
        py::gil_scoped_release nogil;
        rc = kv_pool_create(path.c_str(), &o, err, sizeof err);
    }
    if (rc < 0) raise_kv(rc, ("create_pool " + path).c_str(), err);
}

py::dict stats_dict(const kv_stats &s) {
    py::dict d;
#define KVPY_FIELD(f) d[#f] = s.f
    KVPY_FIELD(capacity);
    KVPY_FIELD(slab_size);
    KVPY_FIELD(page_size);
    KVPY_FIELD(numa_node);
    KVPY_FIELD(backing);
    KVPY_FIELD(clients);
    KVPY_FIELD(n_entries);
    KVPY_FIELD(gets);
    KVPY_FIELD(hits);
    KVPY_FIELD(misses);
    KVPY_FIELD(puts);
    KVPY_FIELD(dedups);
    KVPY_FIELD(evictions);
    KVPY_FIELD(removes);
    KVPY_FIELD(bytes_committed);
    KVPY_FIELD(bytes_freed);
    KVPY_FIELD(reaps);
    return d;
}

py::dict usage_dict(const kv_usage &s) {
    py::dict d;
    KVPY_FIELD(entries_committed);
    KVPY_FIELD(entries_reserved);
    KVPY_FIELD(entries_dead);
    KVPY_FIELD(entries_free);
    KVPY_FIELD(bytes_committed);
    KVPY_FIELD(blocks_free);
    KVPY_FIELD(blocks_used);
    KVPY_FIELD(block_bytes_used);
    KVPY_FIELD(pins);
    KVPY_FIELD(journal_pins);
    KVPY_FIELD(slabs_free);
    KVPY_FIELD(slabs_active);
    KVPY_FIELD(orphan_blocks);
    KVPY_FIELD(bad_links);
    KVPY_FIELD(unreachable);
    return d;
}

py::dict client_dict(const kv_client_info &s) {
    py::dict d;
    KVPY_FIELD(slot);
    KVPY_FIELD(pid);
    KVPY_FIELD(state);
    d["alive"] = s.alive != 0;
    KVPY_FIELD(start_time);
    KVPY_FIELD(attach_ns);
    KVPY_FIELD(pins);
    KVPY_FIELD(reservations);
    KVPY_FIELD(bytes_reserved);
#undef KVPY_FIELD
    return d;
}

kv_pool *open_pool(PoolState &ps) {
    ps.check_open();
    return ps.pool;
}

std::vector<kv_client_info> client_rows(PoolState &ps) {
    kv_pool *p = open_pool(ps);
    std::vector<kv_client_info> rows(kv_pool_header(p)->max_clients + 1);
    int n = kv_pool_clients(p, rows.data(), rows.size());
    if (n < 0) raise_kv(n, "clients");
    rows.resize(std::min(rows.size(), static_cast<size_t>(n)));
    return rows;
}

} // namespace

void init_pool(py::module_ &m) {
    // The child runs one thread at this point: a plain increment is enough.
    if (int rc = pthread_atfork(nullptr, nullptr, [] { fork_generation++; }); rc != 0)
        raise_kv(-rc, "pthread_atfork");
    m.def("create_pool", &create_pool, py::arg("path"), py::arg("size"), py::kw_only(),
          py::arg("slab_size") = 0, py::arg("avg_block_size") = 0, py::arg("max_clients") = 0,
          py::arg("pins_per_client") = 0, py::arg("max_namespaces") = 0, py::arg("max_entries") = 0,
          py::arg("evict_policy") = "prefix", py::arg("hugepages") = "never",
          py::arg("numa_node") = -1, py::arg("mode") = 0, py::arg("replace") = false,
          py::arg("prefault") = false, py::arg("feed_slots") = 0, py::arg("secure_erase") = false,
          "Create a pool of size bytes backed by the file at path (/dev/shm for 4 KiB\n"
          "pages, a hugetlbfs mount for hugepages), as kv_pool_create does. Zero\n"
          "options take libkv's defaults (4 MiB slabs, 16 KiB average blocks, 64\n"
          "clients, 4096 pins per client, 64 namespaces). evict_policy: 'clock',\n"
          "'lru', 'lfu', 'fifo', 'priority' or 'prefix' (or its KV_EVICT_* value);\n"
          "hugepages: 'never', 'prefer' or 'require'. secure_erase=True zeroes a\n"
          "block's bytes before its space can be reused (libkv before ABI v1.4\n"
          "cannot attach the pool). An existing file raises kvpool.Error (EEXIST)\n"
          "unless replace=True.");
    m.def(
        "destroy_pool",
        [](const std::string &path) {
            int rc = kv_pool_destroy(path.c_str());
            if (rc < 0) raise_kv(rc, ("destroy_pool " + path).c_str());
        },
        py::arg("path"),
        "Remove the pool file at path. Attached processes keep their mapping.\n"
        "NotFoundError if there is none.");

    py::class_<PoolState>(
        m, "Pool",
        "One client of a kvpool pool: attaching claims a slot in the pool's client\n"
        "table; detach() (or leaving a `with` block, or collection) gives it back,\n"
        "releasing every pin and reservation the client still holds.\n"
        "After detach() every call raises ValueError; the mapping itself stays\n"
        "until the last View, Reservation or exported buffer over it is gone.")
        .def(py::init([](const std::string &path, bool no_reap) {
                 auto ps = std::make_unique<PoolState>();
                 ps->path = path;
                 char err[256] = "";
                 int rc;
                 {
                     // kv_pool_attach's open, kept here so that the file mapped
                     // is the file fstat describes (replaced() compares it with
                     // what the path names later).
                     py::gil_scoped_release nogil;
                     int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
                     struct stat st;
                     if (fd < 0) {
                         rc = -errno;
                         snprintf(err, sizeof err, "%s: %s", path.c_str(), strerror(-rc));
                     } else if (fstat(fd, &st) != 0) {
                         rc = -errno;
                         snprintf(err, sizeof err, "fstat %s: %s", path.c_str(), strerror(-rc));
                     } else {
                         ps->file_dev = st.st_dev;
                         ps->file_ino = st.st_ino;
                         rc = kv_pool_attach_fd(fd, no_reap ? KV_ATTACH_F_NO_REAP : 0, &ps->pool,
                                                err, sizeof err);
                     }
                     if (fd >= 0) close(fd); // the mapping keeps the file alive
                 }
                 if (rc < 0) raise_kv(rc, ("attach " + path).c_str(), err);
                 return ps;
             }),
             py::arg("path"), py::kw_only(), py::arg("no_reap") = false,
             "Attach to the pool at path (reaping dead clients first unless no_reap).\n"
             "BadRegionError for a file that is not a valid pool (the message names\n"
             "the value seen and the value expected), TooManyClientsError when the\n"
             "client table is full, NotFoundError when there is no such file.")
        .def("detach", &PoolState::detach,
             "Give the client slot back (idempotent). Pins and reservations still\n"
             "referenced from Python keep the mapping until they are released.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PoolState &ps, py::handle, py::handle, py::handle) { ps.detach(); })
        .def_property_readonly(
            "path", [](const PoolState &ps) { return ps.path; }, "The pool file's path.")
        .def_property_readonly(
            "attached", [](const PoolState &ps) { return !ps.closed; },
            "False once detach() was called.")
        .def_property_readonly(
            "st_dev", [](const PoolState &ps) { return ps.file_dev; },
            "st_dev of the file this client maps (fixed at attach).")
        .def_property_readonly(
            "st_ino", [](const PoolState &ps) { return ps.file_ino; },
            "st_ino of the file this client maps (fixed at attach).")
        .def(
            "replaced",
            [](const PoolState &ps) {
                struct stat st;
                if (stat(ps.path.c_str(), &st) != 0) {
                    if (errno == ENOENT || errno == ENOTDIR) return true;
                    PyErr_SetFromErrnoWithFilename(PyExc_OSError, ps.path.c_str());
                    throw py::error_already_set();
                }
                return uint64_t(st.st_dev) != ps.file_dev || uint64_t(st.st_ino) != ps.file_ino;
            },
            "True when path no longer names the file this client maps: the file was\n"
            "removed, or another file (a pool re-created by kvpoold, a restored\n"
            "snapshot) took its name. The mapping stays valid either way, but no\n"
            "new attacher sees it: detach and attach path again. One stat(2).\n"
            "On a detached pool it still answers, but the old file's inode number\n"
            "may then be reused. OSError when path cannot be examined (EACCES on a\n"
            "directory, ...).")
        .def_property_readonly(
            "base_address",
            [](PoolState &ps) {
                return reinterpret_cast<uintptr_t>(kv_pool_header(open_pool(ps)));
            },
            "The address the region is mapped at in this process.")
        .def_property_readonly(
            "mapping_size",
            [](PoolState &ps) { return kv_pool_header(open_pool(ps))->region_size; },
            "The length of the mapping in bytes.")
        .def_property_readonly(
            "slab_size", [](PoolState &ps) { return kv_pool_header(open_pool(ps))->slab_size; },
            "The pool's slab size: also the largest block.")
        .def_property_readonly(
            "evict_policy",
            [](PoolState &ps) {
                const char *n = kv_evict_policy_name(kv_pool_header(open_pool(ps))->evict_policy);
                return std::string(n ? n : "unknown");
            },
            "The pool's eviction policy by name.")
        .def_property_readonly(
            "client_index", [](PoolState &ps) { return kv_pool_client_index(open_pool(ps)); },
            "This client's slot in the pool's client table.")
        .def("namespace", &make_namespace, py::arg("manifest"),
             "The namespace of a kvpool.Manifest, registered if new (PoolFullError\n"
             "when the namespace table is full), or a registered one by id (int;\n"
             "NotFoundError if there is none). Clients whose manifests are equal byte\n"
             "for byte share a namespace and so its blocks.")
        .def(
            "stats",
            [](PoolState &ps) {
                kv_stats s;
                int rc = kv_pool_stats(open_pool(ps), &s);
                if (rc < 0) raise_kv(rc, "stats");
                return stats_dict(s);
            },
            "Counter totals over every client and the pool's geometry (kv_pool_stats):\n"
            "a dict of capacity, slab_size, page_size, numa_node, backing, clients,\n"
            "n_entries, gets, hits, misses, puts, dedups, evictions, removes,\n"
            "bytes_committed, bytes_freed, reaps.")
        .def(
            "usage",
            [](PoolState &ps) {
                kv_usage u;
                int rc;
                {
                    PoolHold hold(ps);
                    kv_pool *p = open_pool(ps);
                    py::gil_scoped_release nogil;
                    rc = kv_pool_usage(p, &u);
                }
                if (rc < 0) raise_kv(rc, "usage");
                return usage_dict(u);
            },
            "Exact accounting by a full scan of the pool (kv_pool_usage): a dict of\n"
            "entries_committed, entries_reserved, entries_dead, entries_free,\n"
            "bytes_committed, blocks_free, blocks_used, block_bytes_used, pins,\n"
            "journal_pins, slabs_free, slabs_active, orphan_blocks, bad_links,\n"
            "unreachable. Exact on a quiescent pool.")
        .def(
            "live_bytes",
            [](PoolState &ps) {
                uint64_t b = 0;
                int rc = kv_pool_live_bytes(open_pool(ps), &b);
                if (rc < 0) raise_kv(rc, "live_bytes");
                return b;
            },
            "Bytes of the blocks committed and not yet freed (kv_pool_live_bytes).")
        .def(
            "clients",
            [](PoolState &ps) {
                py::list out;
                for (const kv_client_info &c : client_rows(ps))
                    out.append(client_dict(c));
                return out;
            },
            "One dict per occupied client slot: slot, pid, state, alive, start_time,\n"
            "attach_ns, pins, reservations, bytes_reserved.")
        .def(
            "pins_held",
            [](PoolState &ps) {
                uint32_t me = kv_pool_client_index(open_pool(ps));
                for (const kv_client_info &c : client_rows(ps))
                    if (c.slot == me) return c.pins;
                return 0U;
            },
            "The number of pins this client holds, as the pool's client table says.")
        .def(
            "reap",
            [](PoolState &ps) {
                int rc = kv_reap(open_pool(ps));
                if (rc < 0) raise_kv(rc, "reap");
                return rc;
            },
            "Reap clients whose process is gone; returns how many were reaped.")
        .def(
            "evict_bytes",
            [](PoolState &ps, uint64_t bytes) {
                int64_t rc = kv_evict_bytes(open_pool(ps), bytes);
                if (rc < 0) raise_kv(static_cast<int>(rc), "evict_bytes");
                return rc;
            },
            py::arg("bytes"),
            "Evict unpinned blocks by the pool's policy until at least bytes are\n"
            "freed; returns the bytes freed.")
        .def("__repr__", [](const PoolState &ps) {
            return "<kvpool.Pool " + ps.path + (ps.closed ? " detached>" : ">");
        });
}

} // namespace kvpool_py
