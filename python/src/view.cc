// SPDX-License-Identifier: MIT
// kvpool.View (a pinned block), kvpool.Reservation (a block being written)
// and kvpool._kvpool.BlockMemory (the exporter behind their buffers).
//
// Plain CPython types rather than pybind11 classes: get + release is the
// hot path (one allocation, no argument parsing), and the buffer protocol
// needs bf_getbuffer to hand out a different owner object (BlockMemory),
// which pybind11's def_buffer cannot do.
#include "internal.h"
#include "pool.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace kvpool_py {
namespace {

// Casting through void (*)(void) keeps -Wcast-function-type quiet for the
// PyCFunction forms that take more arguments.
template <class F>
PyCFunction as_cfunc(F *f) {
    return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f));
}

// Blocks at least this large are checksummed without the GIL.
constexpr uint64_t kGilFreeMinBytes = 256 * 1024;

/*
 * The memory of one block, as exported to memoryviews, numpy arrays and
 * tensors. It owns what keeps the memory valid: the pin of a view, or an
 * uncommitted reservation (aborted here when the last reference goes).
 * It holds no reference back to its View or Reservation, so no cycle forms.
 */
struct BlockMemory {
    PyObject_HEAD void *data;
    Py_ssize_t len;
    Py_ssize_t exports;
    int readonly; // a pinned view; else a reservation
    int owns;     // still owns the pin / the uncommitted reservation
    PyObject *pool_obj;
    PoolState *pool;
    kv_view view;
    kv_reservation res;
};

struct ViewObject {
    PyObject_HEAD PyObject *pool_obj; // with the pin while it is owned here
    PoolState *pool;
    BlockMemory *mem; // once a buffer was exported: owns the pin
    kv_view view;
    kv_key key;
    int released;
};

enum ResState { RES_OPEN, RES_COMMITTING, RES_COMMITTED, RES_ABORTED };

struct ReservationObject {
    PyObject_HEAD BlockMemory *mem; // until committed or aborted
    void *data;
    uint64_t length;
    kv_key key;
    int state;
};

PyTypeObject *memory_type;
PyTypeObject *view_type;
PyTypeObject *reservation_type;

template <class T>
T *as(PyObject *o) {
    return reinterpret_cast<T *>(o);
}

// ---- BlockMemory --------------------------------------------------------

BlockMemory *memory_new(PyObject *pool_obj, PoolState *pool) noexcept {
    BlockMemory *m = PyObject_New(BlockMemory, memory_type);
    if (!m) return nullptr;
    m->data = nullptr;
    m->len = 0;
    m->exports = 0;
    m->readonly = 1;
    m->owns = 0;
    Py_INCREF(pool_obj);
    m->pool_obj = pool_obj;
    m->pool = pool;
    pool->hold();
    return m;
}

void memory_dealloc(PyObject *self) {
    BlockMemory *m = as<BlockMemory>(self);
    if (m->owns && m->pool->owned()) {
        if (m->readonly)
            kv_release(m->pool->pool, &m->view);
        else
            kv_abort(m->pool->pool, &m->res);
    }
    m->pool->unhold();
    PyTypeObject *tp = Py_TYPE(self);
    Py_DECREF(m->pool_obj);
    PyObject_Free(self);
    Py_DECREF(tp);
}

int memory_getbuffer(PyObject *self, Py_buffer *b, int flags) {
    BlockMemory *m = as<BlockMemory>(self);
    if (!m->owns) {
        PyErr_SetString(PyExc_ValueError, "kvpool: the block's memory was released or committed");
        return -1;
    }
    if (PyBuffer_FillInfo(b, self, m->data, m->len, m->readonly, flags) < 0) return -1;
    m->exports++;
    return 0;
}

void memory_releasebuffer(PyObject *self, Py_buffer *) {
    as<BlockMemory>(self)->exports--;
}

PyObject *memory_repr(PyObject *self) {
    BlockMemory *m = as<BlockMemory>(self);
    return PyUnicode_FromFormat("<kvpool._kvpool.BlockMemory %s %zd bytes, %zd exports>",
                                m->readonly ? "pinned" : "reserved", m->len, m->exports);
}

PyType_Slot memory_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void *>(memory_dealloc)},
    {Py_tp_repr, reinterpret_cast<void *>(memory_repr)},
    {Py_bf_getbuffer, reinterpret_cast<void *>(memory_getbuffer)},
    {Py_bf_releasebuffer, reinterpret_cast<void *>(memory_releasebuffer)},
    {Py_tp_doc, const_cast<char *>(
                    "The memory of one pool block as exported to memoryviews, numpy arrays and\n"
                    "tensors (their .obj / .base). It keeps the block pinned (a View's) or\n"
                    "reserved (a Reservation's) for as long as any of them refers to it.")},
    {0, nullptr},
};
PyType_Spec memory_spec = {"kvpool._kvpool.BlockMemory", sizeof(BlockMemory), 0,
                           Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, memory_slots};

// ---- View ---------------------------------------------------------------

bool view_live(ViewObject *v) noexcept {
    if (!v->released) return true;
    PyErr_SetString(PyExc_ValueError, "kvpool.View is released");
    return false;
}

// Move the pin into a BlockMemory (once), which outlives the View as long
// as buffers refer to it.
BlockMemory *view_memory(ViewObject *v) noexcept {
    if (v->mem) return v->mem;
    BlockMemory *m = memory_new(v->pool_obj, v->pool);
    if (!m) return nullptr;
    m->data = const_cast<void *>(v->view.data);
    m->len = static_cast<Py_ssize_t>(v->view.length);
    m->readonly = 1;
    m->view = v->view;
    m->owns = 1;
    v->pool->unhold(); // the memory object took its own hold
    Py_CLEAR(v->pool_obj);
    v->mem = m;
    return m;
}

void view_drop(ViewObject *v) noexcept {
    if (v->released) return;
    v->released = 1;
    if (v->mem) {
        Py_CLEAR(v->mem);
        return;
    }
    if (v->pool->owned()) kv_release(v->pool->pool, &v->view);
    v->pool->unhold();
    Py_CLEAR(v->pool_obj);
}

void view_dealloc(PyObject *self) {
    view_drop(as<ViewObject>(self));
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(tp);
}

int view_getbuffer(PyObject *self, Py_buffer *b, int flags) {
    ViewObject *v = as<ViewObject>(self);
    if (!view_live(v)) return -1;
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError, "kvpool.View is read-only");
        return -1;
    }
    BlockMemory *m = view_memory(v);
    if (!m) return -1;
    return memory_getbuffer(reinterpret_cast<PyObject *>(m), b, flags);
}

// Never called (the buffers name the BlockMemory as their owner), but its
// presence tells numpy.frombuffer to hold a memoryview, and so the buffer
// export, instead of only a reference to the View.
void view_releasebuffer(PyObject *, Py_buffer *) {}

Py_ssize_t view_len(PyObject *self) {
    return static_cast<Py_ssize_t>(as<ViewObject>(self)->view.length);
}

PyObject *view_release(PyObject *self, PyObject *) {
    view_drop(as<ViewObject>(self));
    Py_RETURN_NONE;
}

PyObject *view_enter(PyObject *self, PyObject *) {
    Py_INCREF(self);
    return self;
}

PyObject *view_exit(PyObject *self, PyObject *const *, Py_ssize_t) {
    view_drop(as<ViewObject>(self));
    Py_RETURN_FALSE;
}

PyObject *view_verify(PyObject *self, PyObject *) {
    ViewObject *v = as<ViewObject>(self);
    if (!view_live(v)) return nullptr;
    int rc;
    if (v->view.length >= kGilFreeMinBytes) {
        // Another thread may release the View meanwhile: the memory object
        // keeps the pin for as long as this call holds it.
        BlockMemory *m = view_memory(v);
        if (!m) return nullptr;
        Py_INCREF(m);
        Py_BEGIN_ALLOW_THREADS rc = kv_view_verify(&m->view);
        Py_END_ALLOW_THREADS Py_DECREF(m);
    } else {
        rc = kv_view_verify(&v->view);
    }
    if (rc == 0) Py_RETURN_TRUE;
    if (rc == -EBADMSG) Py_RETURN_FALSE;
    return set_kv_error(rc, "verify");
}

PyObject *view_get_address(PyObject *self, void *) {
    ViewObject *v = as<ViewObject>(self);
    if (!view_live(v)) return nullptr;
    return PyLong_FromVoidPtr(const_cast<void *>(v->view.data));
}
PyObject *view_get_length(PyObject *self, void *) {
    return PyLong_FromUnsignedLongLong(as<ViewObject>(self)->view.length);
}
PyObject *view_get_checksum(PyObject *self, void *) {
    return PyLong_FromUnsignedLongLong(as<ViewObject>(self)->view.checksum);
}
PyObject *view_get_tokens(PyObject *self, void *) {
    return PyLong_FromUnsignedLong(as<ViewObject>(self)->view.meta.tokens);
}
PyObject *view_get_priority(PyObject *self, void *) {
    return PyLong_FromUnsignedLong(as<ViewObject>(self)->view.meta.priority);
}
PyObject *view_get_user_tag(PyObject *self, void *) {
    return PyLong_FromUnsignedLongLong(as<ViewObject>(self)->view.meta.user_tag);
}
PyObject *view_get_key(PyObject *self, void *) {
    return key_to_int(as<ViewObject>(self)->key);
}
PyObject *view_get_released(PyObject *self, void *) {
    return PyBool_FromLong(as<ViewObject>(self)->released);
}

PyObject *view_repr(PyObject *self) {
    ViewObject *v = as<ViewObject>(self);
    char buf[128];
    snprintf(buf, sizeof buf, "<kvpool.View key=0x%016llx%016llx %llu bytes%s>",
             static_cast<unsigned long long>(v->key.hi), static_cast<unsigned long long>(v->key.lo),
             static_cast<unsigned long long>(v->view.length), v->released ? " released" : "");
    return PyUnicode_FromString(buf);
}

PyMethodDef view_methods[] = {
    {"release", view_release, METH_NOARGS,
     "Give up this View's pin (idempotent). Buffers exported from it (memoryviews,\n"
     "numpy arrays, tensors) stay valid: the block stays pinned until the last of\n"
     "them is gone. Afterwards address, verify() and new buffers raise ValueError."},
    {"verify", view_verify, METH_NOARGS,
     "Read the block and check it against its checksum: True if it matches."},
    {"__enter__", view_enter, METH_NOARGS, nullptr},
    {"__exit__", as_cfunc(view_exit), METH_FASTCALL, "Release the View."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef view_getset[] = {
    {"address", view_get_address, nullptr, "The address of the block's data in this process.",
     nullptr},
    {"length", view_get_length, nullptr, "The block's length in bytes.", nullptr},
    {"checksum", view_get_checksum, nullptr, "The XXH3-64 checksum recorded at commit.", nullptr},
    {"tokens", view_get_tokens, nullptr, "The token count stored with the block.", nullptr},
    {"priority", view_get_priority, nullptr, "The priority stored with the block.", nullptr},
    {"user_tag", view_get_user_tag, nullptr, "The user tag stored with the block.", nullptr},
    {"key", view_get_key, nullptr, "The block's key (int).", nullptr},
    {"released", view_get_released, nullptr, "True once release() was called.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot view_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void *>(view_dealloc)},
    {Py_tp_repr, reinterpret_cast<void *>(view_repr)},
    {Py_tp_methods, view_methods},
    {Py_tp_getset, view_getset},
    {Py_bf_getbuffer, reinterpret_cast<void *>(view_getbuffer)},
    {Py_bf_releasebuffer, reinterpret_cast<void *>(view_releasebuffer)},
    {Py_mp_length, reinterpret_cast<void *>(view_len)},
    {Py_tp_doc, const_cast<char *>(
                    "A pinned, read-only, zero-copy view of a committed block (Namespace.get,\n"
                    "match_prefix(pin=True), get_many). It supports the buffer protocol:\n"
                    "memoryview(v), numpy.frombuffer(v, dtype), torch.frombuffer(v, dtype=...)\n"
                    "read the pool's memory in place. The pin is released by release(), at the\n"
                    "end of a `with` block, or when the View is collected; while a buffer\n"
                    "exported from it is alive the block stays pinned (never a dangling\n"
                    "pointer), and is unpinned when the last one goes.")},
    {0, nullptr},
};
PyType_Spec view_spec = {"kvpool.View", sizeof(ViewObject), 0,
                         Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, view_slots};

// ---- Reservation ---------------------------------------------------------

bool res_open(ReservationObject *r) noexcept {
    if (r->state == RES_OPEN) return true;
    static const char *const names[] = {"open", "being committed", "committed", "aborted"};
    PyErr_Format(PyExc_ValueError, "kvpool.Reservation is %s", names[r->state]);
    return false;
}

void res_dealloc(PyObject *self) {
    ReservationObject *r = as<ReservationObject>(self);
    Py_CLEAR(r->mem); // the memory object aborts an uncommitted reservation
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(tp);
}

PyObject *res_commit_impl(ReservationObject *r, PyObject *checksum,
                          const std::vector<uint32_t> &ids = {}) {
    if (!res_open(r)) return nullptr;
    BlockMemory *m = r->mem;
    if (m->pool->foreign()) {
        m->pool->check_open_noexcept(); // sets the "attach again" ValueError
        return nullptr;
    }
    if (Py_REFCNT(m) > 1) {
        PyErr_SetString(PyExc_BufferError,
                        "kvpool.Reservation: a memoryview, array or tensor still refers to its "
                        "memory; drop it before commit()");
        return nullptr;
    }
    uint32_t flags = 0;
    uint64_t sum = 0;
    if (checksum && checksum != Py_None) {
        sum = PyLong_AsUnsignedLongLong(checksum);
        if (sum == static_cast<uint64_t>(-1) && PyErr_Occurred()) return nullptr;
        flags = KV_COMMIT_F_CHECKSUM;
    }
    int rc;
    r->state = RES_COMMITTING;
    if (!flags && r->length >= kGilFreeMinBytes) {
        Py_BEGIN_ALLOW_THREADS rc = kv_commit_ex(m->pool->pool, &m->res, flags, sum, ids.data(),
                                                 static_cast<uint32_t>(ids.size()));
        Py_END_ALLOW_THREADS
    } else {
        rc = kv_commit_ex(m->pool->pool, &m->res, flags, sum, ids.data(),
                          static_cast<uint32_t>(ids.size()));
    }
    if (rc < 0) {
        // libkv refused (not a live reservation): nothing is left to abort.
        m->owns = 0;
        r->state = RES_ABORTED;
        Py_CLEAR(r->mem);
        return set_kv_error(rc, "commit");
    }
    m->owns = 0;
    r->state = RES_COMMITTED;
    Py_CLEAR(r->mem);
    Py_RETURN_NONE;
}

PyObject *res_commit(PyObject *self, PyObject *args, PyObject *kwds) {
    static const char *kwlist[] = {"checksum", "token_ids", nullptr};
    PyObject *checksum = Py_None, *token_ids = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$O:commit", const_cast<char **>(kwlist),
                                     &checksum, &token_ids))
        return nullptr;
    std::vector<uint32_t> ids;
    if (token_ids != Py_None) {
        try {
            ids = to_tokens(py::handle(token_ids));
        } catch (py::error_already_set &e) {
            e.restore();
            return nullptr;
        }
    }
    return res_commit_impl(as<ReservationObject>(self), checksum, ids);
}

void res_abort_impl(ReservationObject *r) noexcept {
    if (r->state != RES_OPEN) return;
    r->state = RES_ABORTED;
    Py_CLEAR(r->mem);
}

PyObject *res_abort(PyObject *self, PyObject *) {
    ReservationObject *r = as<ReservationObject>(self);
    if (r->state == RES_COMMITTED || r->state == RES_COMMITTING) {
        res_open(r); // sets the "is committed" ValueError
        return nullptr;
    }
    res_abort_impl(r);
    Py_RETURN_NONE;
}

PyObject *res_enter(PyObject *self, PyObject *) {
    Py_INCREF(self);
    return self;
}

PyObject *res_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    ReservationObject *r = as<ReservationObject>(self);
    bool failed = nargs > 0 && args[0] != Py_None;
    if (r->state == RES_OPEN) {
        if (failed) {
            res_abort_impl(r);
        } else {
            PyObject *ok = res_commit_impl(r, nullptr);
            if (!ok) return nullptr;
            Py_DECREF(ok);
        }
    }
    Py_RETURN_FALSE;
}

PyObject *res_get_buffer(PyObject *self, void *) {
    ReservationObject *r = as<ReservationObject>(self);
    if (!res_open(r)) return nullptr;
    return PyMemoryView_FromObject(reinterpret_cast<PyObject *>(r->mem));
}
PyObject *res_get_address(PyObject *self, void *) {
    ReservationObject *r = as<ReservationObject>(self);
    if (!res_open(r)) return nullptr;
    return PyLong_FromVoidPtr(r->data);
}
PyObject *res_get_length(PyObject *self, void *) {
    return PyLong_FromUnsignedLongLong(as<ReservationObject>(self)->length);
}
PyObject *res_get_key(PyObject *self, void *) {
    return key_to_int(as<ReservationObject>(self)->key);
}
PyObject *res_get_state(PyObject *self, void *) {
    static const char *const names[] = {"open", "committing", "committed", "aborted"};
    return PyUnicode_FromString(names[as<ReservationObject>(self)->state]);
}

PyObject *res_repr(PyObject *self) {
    ReservationObject *r = as<ReservationObject>(self);
    static const char *const names[] = {"open", "committing", "committed", "aborted"};
    char buf[128];
    snprintf(buf, sizeof buf, "<kvpool.Reservation key=0x%016llx%016llx %llu bytes %s>",
             static_cast<unsigned long long>(r->key.hi), static_cast<unsigned long long>(r->key.lo),
             static_cast<unsigned long long>(r->length), names[r->state]);
    return PyUnicode_FromString(buf);
}

PyMethodDef res_methods[] = {
    {"commit", as_cfunc(res_commit), METH_VARARGS | METH_KEYWORDS,
     "commit(checksum=None, *, token_ids=None)\n"
     "Publish the block: it becomes immutable and visible to every client.\n"
     "checksum: the XXH3-64 of the data if the caller computed it (else libkv\n"
     "computes it); token_ids: the block's tokens, recorded in the pool's change\n"
     "feed (KV events). BufferError while a memoryview, array or tensor over the\n"
     "reservation's memory is alive (writes after commit would change a\n"
     "published block); ValueError if already committed or aborted."},
    {"abort", res_abort, METH_NOARGS,
     "Drop the reservation (idempotent). Its space is freed once no buffer over\n"
     "it is left. ValueError if already committed."},
    {"__enter__", res_enter, METH_NOARGS, nullptr},
    {"__exit__", as_cfunc(res_exit), METH_FASTCALL,
     "Commit on a normal exit, abort on an exception."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef res_getset[] = {
    {"buffer", res_get_buffer, nullptr,
     "A writable memoryview over the reserved bytes in the pool (a new one at\n"
     "each access; drop them before commit()).",
     nullptr},
    {"address", res_get_address, nullptr, "The address of the reserved bytes in this process.",
     nullptr},
    {"length", res_get_length, nullptr, "The reserved length in bytes.", nullptr},
    {"key", res_get_key, nullptr, "The block's key (int).", nullptr},
    {"state", res_get_state, nullptr, "'open', 'committed' or 'aborted'.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot res_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void *>(res_dealloc)},
    {Py_tp_repr, reinterpret_cast<void *>(res_repr)},
    {Py_tp_methods, res_methods},
    {Py_tp_getset, res_getset},
    {Py_tp_doc,
     const_cast<char *>("Space reserved in the pool for one block (Namespace.reserve): write it\n"
                        "through .buffer (or .address from native code), then commit() or\n"
                        "abort(). `with r:` commits on a normal exit and aborts on an exception;\n"
                        "a Reservation collected uncommitted is aborted.")},
    {0, nullptr},
};
PyType_Spec res_spec = {"kvpool.Reservation", sizeof(ReservationObject), 0,
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, res_slots};

} // namespace

PyObject *view_new(PyObject *pool_obj, PoolState &ps, const kv_view &view, kv_key key) noexcept {
    ViewObject *v = PyObject_New(ViewObject, view_type);
    if (!v) {
        kv_view copy = view;
        kv_release(ps.pool, &copy);
        return nullptr;
    }
    Py_INCREF(pool_obj);
    v->pool_obj = pool_obj;
    v->pool = &ps;
    ps.hold();
    v->mem = nullptr;
    v->view = view;
    v->key = key;
    v->released = 0;
    return reinterpret_cast<PyObject *>(v);
}

const kv_view &view_of(py::handle obj) {
    if (!PyObject_TypeCheck(obj.ptr(), view_type)) throw py::type_error("expected a kvpool.View");
    ViewObject *v = as<ViewObject>(obj.ptr());
    if (!view_live(v)) throw py::error_already_set();
    return v->view;
}

py::object reservation_new(py::handle pool_obj, PoolState &ps, const kv_reservation &res,
                           kv_key key) {
    BlockMemory *m = memory_new(pool_obj.ptr(), &ps);
    if (!m) {
        kv_reservation copy = res;
        kv_abort(ps.pool, &copy);
        throw py::error_already_set();
    }
    m->data = res.data;
    m->len = static_cast<Py_ssize_t>(res.length);
    m->readonly = 0;
    m->res = res;
    m->owns = 1;
    ReservationObject *r = PyObject_New(ReservationObject, reservation_type);
    if (!r) {
        Py_DECREF(m); // aborts
        throw py::error_already_set();
    }
    r->mem = m;
    r->data = res.data;
    r->length = res.length;
    r->key = key;
    r->state = RES_OPEN;
    return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject *>(r));
}

kv_reservation &reservation_of(py::handle obj) {
    if (!PyObject_TypeCheck(obj.ptr(), reservation_type))
        throw py::type_error("expected a kvpool.Reservation");
    ReservationObject *r = as<ReservationObject>(obj.ptr());
    if (!res_open(r)) throw py::error_already_set();
    return r->mem->res;
}

PoolState *view_pool_state(PyObject *obj) noexcept {
    if (Py_IS_TYPE(obj, view_type)) {
        ViewObject *v = as<ViewObject>(obj);
        return v->mem ? v->mem->pool : v->pool;
    }
    if (Py_IS_TYPE(obj, reservation_type)) {
        ReservationObject *r = as<ReservationObject>(obj);
        return r->mem ? r->mem->pool : nullptr;
    }
    if (Py_IS_TYPE(obj, memory_type)) return as<BlockMemory>(obj)->pool;
    return nullptr;
}

PyObject *view_release_all(PyObject *views) noexcept {
    PyObject *it = PyObject_GetIter(views);
    if (!it) return nullptr;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        if (Py_IS_TYPE(item, view_type)) {
            view_drop(as<ViewObject>(item));
        } else if (item != Py_None) {
            PyErr_Format(PyExc_TypeError, "release_all: expected kvpool.View or None, not %.100s",
                         Py_TYPE(item)->tp_name);
            Py_DECREF(item);
            Py_DECREF(it);
            return nullptr;
        }
        Py_DECREF(item);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return nullptr;
    Py_RETURN_NONE;
}

void init_views(py::module_ &m) {
    PyObject *mod = m.ptr();
    memory_type =
        reinterpret_cast<PyTypeObject *>(PyType_FromModuleAndSpec(mod, &memory_spec, nullptr));
    if (!memory_type) throw py::error_already_set();
    view_type =
        reinterpret_cast<PyTypeObject *>(PyType_FromModuleAndSpec(mod, &view_spec, nullptr));
    if (!view_type) throw py::error_already_set();
    reservation_type =
        reinterpret_cast<PyTypeObject *>(PyType_FromModuleAndSpec(mod, &res_spec, nullptr));
    if (!reservation_type) throw py::error_already_set();
    // The module keeps these references for its lifetime.
    m.add_object("BlockMemory", py::handle(reinterpret_cast<PyObject *>(memory_type)));
    m.add_object("View", py::handle(reinterpret_cast<PyObject *>(view_type)));
    m.add_object("Reservation", py::handle(reinterpret_cast<PyObject *>(reservation_type)));
    m.def(
        "release_all",
        [](py::handle views) {
            if (!view_release_all(views.ptr())) throw py::error_already_set();
        },
        py::arg("views"),
        "Release every View of an iterable (None items are skipped), as\n"
        "View.release() does.");
}

} // namespace kvpool_py
