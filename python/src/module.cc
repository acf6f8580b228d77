// SPDX-License-Identifier: MIT
// kvpool._kvpool: the extension module. Each part registers itself here, in
// an order where the types a part returns already exist.
#include "pool.h"

PYBIND11_MODULE(_kvpool, m) {
    m.doc() = "kvpool's C++ core (pybind11 over libkv); import kvpool instead.";
    kvpool_py::init_errors(m);
    kvpool_py::init_keys(m);
    kvpool_py::init_views(m);
    kvpool_py::init_namespace(m);
    kvpool_py::init_pool(m);
    kvpool_py::init_hashes(m);
    kvpool_py::init_paged(m);
    kvpool_py::init_remote(m);
}
