// SPDX-License-Identifier: MIT
// Namespace.remote_fetch: kv_remote_fetch (the pool's remote tier, run by
// kvpoold) for a chain of keys.
#include "internal.h"
#include "pool.h"

#include <string>
#include <vector>

namespace kvpool_py {

namespace {

py::dict ns_remote_fetch(py::handle self, py::handle keys_obj, size_t first, uint32_t timeout_ms,
                         py::object socket, py::object pool_name) {
    Namespace &ns = namespace_of(self);
    ns.pool->check_open();
    std::vector<kv_key> keys = to_keys(keys_obj);
    const std::string sock = socket.is_none() ? std::string() : socket.cast<std::string>();
    const std::string name = pool_name.is_none() ? std::string() : pool_name.cast<std::string>();
    kv_remote_fetch_result r{};
    r.struct_size = sizeof r;
    char err[512] = "";
    int rc;
    {
        PoolHold hold(*ns.pool);
        py::gil_scoped_release nogil; // waits on kvpoold, which waits on Redis
        rc = kv_remote_fetch(ns.pool->pool, sock.empty() ? nullptr : sock.c_str(),
                             name.empty() ? nullptr : name.c_str(), ns.id, keys.data(), keys.size(),
                             first, timeout_ms, &r, err, sizeof err);
    }
    if (rc < 0) raise_kv(rc, "remote_fetch", err);
    py::dict d;
    d["committed"] = r.committed;
    d["present"] = r.present;
    d["fetched"] = r.fetched;
    d["missing"] = r.missing;
    d["rejected"] = r.rejected;
    d["errors"] = r.errors;
    d["fetched_bytes"] = r.fetched_bytes;
    return d;
}

} // namespace

void init_remote(py::module_ &m) {
    py::object cls = m.attr("Namespace");
    cls.attr("remote_fetch") = py::cpp_function(
        &ns_remote_fetch, py::name("remote_fetch"), py::is_method(cls), py::arg("keys"),
        py::arg("first") = 0, py::kw_only(), py::arg("timeout_ms") = 0,
        py::arg("socket") = py::none(), py::arg("pool_name") = py::none(),
        "Ask kvpoold to bring keys[first:] of a chain from the pool's remote tier\n"
        "(doc/remote.md) into the pool, stopping at the first block it cannot bring.\n"
        "Returns {'committed': keys[first:first+committed] are now in the pool,\n"
        "'present', 'fetched', 'missing', 'rejected', 'errors', 'fetched_bytes'}.\n"
        "socket: kvpoold's control socket (default /run/kvpool/control); pool_name:\n"
        "kvpoold's name of the pool (default: the pool file's name). Raises\n"
        "kvpool.Error (errno ENODEV: no remote tier) when kvpoold refuses.");
}

} // namespace kvpool_py
