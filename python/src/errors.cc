// SPDX-License-Identifier: MIT
// libkv's -errno codes as a small exception hierarchy under kvpool.Error,
// an OSError subclass, so that e.errno and the libkv message both survive.
#include "pool.h"

#include <cerrno>
#include <string>

namespace kvpool_py {
namespace {

PyObject *error_base;
struct ErrnoClass {
    int code;
    PyObject *cls;
};
// errno -> class; filled by init_errors.
ErrnoClass errno_classes[9];
size_t n_errno_classes;

PyObject *class_for(int code) noexcept {
    for (size_t i = 0; i < n_errno_classes; i++)
        if (errno_classes[i].code == code) return errno_classes[i].cls;
    return error_base;
}

} // namespace

PyObject *set_kv_error(int rc, const char *what, const char *detail) noexcept {
    int code = rc < 0 ? -rc : rc;
    std::string msg = what;
    msg += ": ";
    // libkv's detailed message when it wrote one, its generic text else.
    msg += detail && *detail ? detail : kv_strerror(-code);
    PyObject *args = Py_BuildValue("(is)", code, msg.c_str());
    if (args) {
        PyErr_SetObject(class_for(code), args);
        Py_DECREF(args);
    }
    return nullptr;
}

void raise_kv(int rc, const char *what) {
    set_kv_error(rc, what, nullptr);
    throw py::error_already_set();
}

void raise_kv(int rc, const char *what, const char *detail) {
    set_kv_error(rc, what, detail);
    throw py::error_already_set();
}

void init_errors(py::module_ &m) {
    n_errno_classes = 0;
    error_base = PyErr_NewExceptionWithDoc(
        "kvpool.Error",
        "An error libkv returned. An OSError: .errno is the code, str() carries\n"
        "libkv's description and, where libkv gave one, its detailed message.",
        PyExc_OSError, nullptr);
    if (!error_base) throw py::error_already_set();
    m.add_object("Error", py::handle(error_base));

    struct Spec {
        const char *name;
        const char *doc;
        int codes[3];
    };
    static const Spec specs[] = {
        {"PoolFullError",
         "ENOSPC: no space even after evicting every unpinned block, "
         "or the namespace table is full.",
         {ENOSPC, 0, 0}},
        {"NotFoundError", "ENOENT: no such block, namespace or pool file.", {ENOENT, 0, 0}},
        {"BusyError", "EBUSY: another client holds a reservation on the key.", {EBUSY, 0, 0}},
        {"NoPinsError",
         "ENOBUFS: this client holds pins_per_client pins; release some.",
         {ENOBUFS, 0, 0}},
        {"TooLargeError",
         "EMSGSIZE: a block of 0 bytes or larger than the slab size.",
         {EMSGSIZE, 0, 0}},
        {"BadRegionError",
         "EPROTO, EBADMSG or ENODATA: the file is not a valid pool "
         "(wrong format or version, inconsistent geometry, not yet published or "
         "truncated), or a block failed its checksum.",
         {EPROTO, EBADMSG, ENODATA}},
        {"TooManyClientsError", "EUSERS: the pool's client table is full.", {EUSERS, 0, 0}},
    };
    for (const Spec &s : specs) {
        std::string full = std::string("kvpool.") + s.name;
        PyObject *cls = PyErr_NewExceptionWithDoc(full.c_str(), s.doc, error_base, nullptr);
        if (!cls) throw py::error_already_set();
        m.add_object(s.name, py::handle(cls));
        for (int code : s.codes)
            if (code) errno_classes[n_errno_classes++] = {code, cls};
    }
}

} // namespace kvpool_py
