/* Copies of model state: pervma.sched._frames.
 *
 * The model's threads are coroutines; a world template or a checkpoint of an
 * execution (pervma.check.template, pervma.check.checkpoint) must copy them.
 * CPython has no API for that, so this module reads and writes the frame a
 * coroutine owns (CPython 3.11's _PyInterpreterFrame inside the coroutine
 * object), within a deep copier of the whole object graph:
 *
 *   Copier(shared_types, fallback, finished, probe)
 *       copier.copy(obj[, owned]) -> (copy, coroutines made); see below;
 *   new(func) -> gen
 *       a fresh coroutine (or generator) of ``func``, made by calling it
 *       with None for every parameter: no code of it runs (the copier then
 *       fills its frame);
 *   kill(gens) -> states
 *       marks coroutines finished without running them (a snapshot must
 *       never run its ``finally`` blocks, not even when the garbage
 *       collector finalizes it) and returns the states they had;
 *   revive(gens, states)
 *       gives killed coroutines back those states, for as long as a copy of
 *       them is made.
 *   kill_chains(gens)
 *       kill() without the states, for each coroutine and every one it is
 *       suspended in (an execution the checker drops);
 *   clear_owned(objs)
 *       clears the fields of the instances a dropped copy made (the list
 *       copier.copy(obj, owned) filled), so reference counting frees it.
 *
 * Built only for CPython 3.11 (the layout changes between versions); without
 * it templates and checkpoints are off and the checker rebuilds worlds and
 * replays prefixes as before.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE


static _PyInterpreterFrame *frame_of(PyObject *gen, int8_t **state)
{
    if (PyCoro_CheckExact(gen)) {
        PyCoroObject *c = (PyCoroObject *)gen;
        *state = &c->cr_frame_state;
        return (_PyInterpreterFrame *)c->cr_iframe;
    }
    if (PyGen_CheckExact(gen)) {
        PyGenObject *g = (PyGenObject *)gen;
        *state = &g->gi_frame_state;
        return (_PyInterpreterFrame *)g->gi_iframe;
    }
    PyErr_Format(PyExc_TypeError, "_frames: not a coroutine or generator: %.100s",
                 Py_TYPE(gen)->tp_name);
    return NULL;
}

static _PyErr_StackItem *exc_of(PyObject *gen)
{
    if (PyCoro_CheckExact(gen))
        return &((PyCoroObject *)gen)->cr_exc_state;
    return &((PyGenObject *)gen)->gi_exc_state;
}

static PyObject *frames_new(PyObject *self, PyObject *func)
{
    if (!PyFunction_Check(func)) {
        PyErr_SetString(PyExc_TypeError, "_frames.new: not a function");
        return NULL;
    }
    PyCodeObject *code = (PyCodeObject *)PyFunction_GET_CODE(func);
    if (!(code->co_flags & (CO_COROUTINE | CO_GENERATOR))) {
        PyErr_SetString(PyExc_TypeError, "_frames.new: not a coroutine or generator function");
        return NULL;
    }
    Py_ssize_t npos = code->co_argcount, nkw = code->co_kwonlyargcount;
    PyObject *stack[64];
    if (npos + nkw > 64) {
        PyErr_SetString(PyExc_TypeError, "_frames.new: too many parameters");
        return NULL;
    }
    PyObject *kwnames = NULL;
    for (Py_ssize_t i = 0; i < npos + nkw; i++)
        stack[i] = Py_None;
    if (nkw) {
        kwnames = PyTuple_New(nkw);
        if (kwnames == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *name = PyTuple_GET_ITEM(code->co_localsplusnames, npos + i);
            Py_INCREF(name);
            PyTuple_SET_ITEM(kwnames, i, name);
        }
    }
    PyObject *gen = PyObject_Vectorcall(func, stack, npos, kwnames);
    Py_XDECREF(kwnames);
    return gen;
}

/* ---- A deep copier for model state ------------------------------------
 *
 * Copier(shared_types, fallback, finished, probe): copier.copy(obj) copies the
 * object graph of obj the way pervma.check.template describes (closures with
 * their cells, suspended coroutines with their frames, plain instances field
 * by field, list iterators at their index, functools.partial objects without
 * attributes of their own) in C, with the objects registered by copier.share(o) and
 * instances of shared_types (classes, code, enum members...) shared.
 * Objects of other kinds go to fallback(obj, copier), which may call
 * copier.sub(x) to copy a part within the same copy and copier.remember(obj,
 * copy).  Every coroutine the copy makes is listed in copier.made (so that a
 * copy kept as a snapshot can be discarded without running its finally
 * blocks: kill()).
 */

typedef struct { void *key; PyObject *val; } PmSlot;
typedef struct { PmSlot *s; Py_ssize_t cap, len; } PtrMap;

static int pm_init(PtrMap *m, Py_ssize_t cap)
{
    m->s = PyMem_Calloc(cap, sizeof(PmSlot));
    m->cap = cap;
    m->len = 0;
    return m->s ? 0 : -1;
}

static inline size_t pm_hash(void *k) { return ((size_t)k >> 4) * 0x9E3779B97F4A7C15ULL; }

static PyObject *pm_get(PtrMap *m, void *key)
{
    size_t mask = m->cap - 1, i = pm_hash(key) & mask;
    for (;;) {
        PmSlot *e = &m->s[i];
        if (e->key == key)
            return e->val;
        if (e->key == NULL)
            return NULL;
        i = (i + 1) & mask;
    }
}

static int pm_put(PtrMap *m, void *key, PyObject *val);

static int pm_grow(PtrMap *m)
{
    PtrMap n;
    if (pm_init(&n, m->cap * 2) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < m->cap; i++)
        if (m->s[i].key)
            pm_put(&n, m->s[i].key, m->s[i].val);
    PyMem_Free(m->s);
    *m = n;
    return 0;
}

/* val is a strong reference the map takes over */
static int pm_put(PtrMap *m, void *key, PyObject *val)
{
    if ((m->len + 1) * 2 > m->cap && pm_grow(m) < 0)
        return -1;
    size_t mask = m->cap - 1, i = pm_hash(key) & mask;
    while (m->s[i].key != NULL && m->s[i].key != key)
        i = (i + 1) & mask;
    if (m->s[i].key == NULL)
        m->len++;
    else
        Py_XDECREF(m->s[i].val);
    m->s[i].key = key;
    m->s[i].val = val;
    return 0;
}

static void pm_free(PtrMap *m, int decref)
{
    if (m->s == NULL)
        return;
    if (decref)
        for (Py_ssize_t i = 0; i < m->cap; i++)
            if (m->s[i].key)
                Py_XDECREF(m->s[i].val);
    PyMem_Free(m->s);
    m->s = NULL;
}

/* K_OWNED: an instance of a plain class hashed by identity, as the model's
   objects are (an mm, a VMA, a lock): what Copier.copy(obj, owned) lists and
   clear_owned() clears.  A class with a hash of its own (a frozen dataclass,
   a task's identity in a location) or none (eq without hash) is K_INSTANCE:
   such values may be keys in what a search keeps. */
enum { K_SHARE = 1, K_INSTANCE = 2, K_FALLBACK = 3, K_OWNED = 4 };

/* Bits of the filter in front of the map of shared objects: most objects a
   copy meets are not shared, and one bit read costs less than a probe of a
   map of thousands of objects. */
#define SHARED_BLOOM (1 << 17)
static inline size_t bloom_bit(void *k) { return (((size_t)k >> 4) * 0x9E3779B97F4A7C15ULL) >> 47; }

typedef struct {
    PyObject_HEAD
    PtrMap shared;      /* object -> itself (strong) */
    PtrMap kinds;       /* type -> small int kind (borrowed ints) */
    PyObject *shared_types;
    PyObject *fallback;
    PyObject *finished;
    PyObject *made;     /* list of coroutines made by the current copy */
    PtrMap memo;        /* the current copy's: original -> copy (strong) */
    Py_ssize_t *used;   /* the memo's occupied slots, in the order they were filled */
    Py_ssize_t nused, used_cap;
    uint64_t bloom[SHARED_BLOOM / 64];  /* a bit per hash of every shared object */
    int copying;
} Copier;

static PyObject *cp(Copier *c, PyObject *o);

/* The memo keeps the original alive too: a temporary the fallback copies
   (a __reduce_ex__ tuple) must not be freed and its address reused within
   the copy.  The memo's table lives as long as the copier (a copy starts
   with it empty and at the size the largest copy needed); the slots a copy
   filled are listed in c->used, so that emptying it costs what the copy
   stored, not the table's size. */
static int memo_grow(Copier *c)
{
    if (pm_grow(&c->memo) < 0)
        return -1;
    c->nused = 0;
    for (Py_ssize_t i = 0; i < c->memo.cap; i++)
        if (c->memo.s[i].key)
            c->used[c->nused++] = i;
    return 0;
}

static int memo_put(Copier *c, PyObject *o, PyObject *n)
{
    PtrMap *m = &c->memo;
    if ((m->len + 1) * 2 > m->cap) {
        if (memo_grow(c) < 0)
            return -1;
    }
    if (c->nused == c->used_cap) {
        Py_ssize_t *u = PyMem_Realloc(c->used, 2 * c->used_cap * sizeof(Py_ssize_t));
        if (u == NULL)
            return -1;
        c->used = u;
        c->used_cap *= 2;
    }
    size_t mask = m->cap - 1, i = pm_hash(o) & mask;
    while (m->s[i].key != NULL && m->s[i].key != o)
        i = (i + 1) & mask;
    Py_INCREF(n);
    if (m->s[i].key == NULL) {
        Py_INCREF(o);  /* a new key */
        m->s[i].key = o;
        m->s[i].val = n;
        m->len++;
        c->used[c->nused++] = (Py_ssize_t)i;
    } else {
        Py_XSETREF(m->s[i].val, n);
    }
    return 0;
}

static void memo_free(Copier *c)
{
    if (c->memo.s == NULL)
        return;
    for (Py_ssize_t j = 0; j < c->nused; j++) {
        PmSlot *e = &c->memo.s[c->used[j]];
        PyObject *k = (PyObject *)e->key, *v = e->val;
        e->key = NULL;
        e->val = NULL;
        Py_DECREF(k);
        Py_XDECREF(v);
    }
    c->nused = 0;
    c->memo.len = 0;
}

static destructor subtype_dealloc = NULL;  /* that of classes made by a class statement */
static PyTypeObject *list_iter_type = NULL;  /* type(iter([])) */
static PyTypeObject *partial_type = NULL;    /* functools.partial */

static int solid_object(PyTypeObject *t)
{
    if (subtype_dealloc == NULL || t->tp_dealloc != subtype_dealloc)
        return 0;  /* a C type, or one made from a spec (its fields are not slots) */
    PyTypeObject *b = t;
    while (b && (b->tp_flags & Py_TPFLAGS_HEAPTYPE))
        b = b->tp_base;
    return b == &PyBaseObject_Type && t->tp_alloc == PyType_GenericAlloc;
}

static int kind_of(Copier *c, PyTypeObject *t)
{
    PyObject *k = pm_get(&c->kinds, t);
    if (k)
        return (int)PyLong_AsLong(k);
    int kind = K_FALLBACK;
    Py_ssize_t n = PyTuple_GET_SIZE(c->shared_types);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *st = PyTuple_GET_ITEM(c->shared_types, i);
        if (PyType_Check(st) && (PyType_IsSubtype(t, (PyTypeObject *)st)
                                 || (st != (PyObject *)&PyType_Type
                                     && PyType_IsSubtype(Py_TYPE(t), (PyTypeObject *)st)))) {
            /* an instance of a shared type, or (for a metaclass other than
               type, such as EnumType) a member of a class made by it */
            kind = K_SHARE;
            break;
        }
    }
    if (kind != K_SHARE && (t->tp_flags & Py_TPFLAGS_HEAPTYPE) && solid_object(t)
        && !PyType_IsSubtype(t, (PyTypeObject *)PyExc_BaseException)) {
        kind = t->tp_hash == PyBaseObject_Type.tp_hash ? K_OWNED : K_INSTANCE;
    }
    Py_INCREF(t);  /* the map keeps the type alive as a key */
    if (pm_put(&c->kinds, t, PyLong_FromLong(kind)) < 0)
        return -1;
    return kind;
}

/* CPython's list iterator (Objects/listobject.c, 3.11): an index and the
 * list, NULL once exhausted. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t it_index;
    PyListObject *it_seq;
} ListIter;

/* A for loop over a list, suspended in a model frame: an iterator over the
 * copy of the list, at the same index (an exhausted one over an empty list). */
static PyObject *cp_list_iter(Copier *c, PyObject *o)
{
    ListIter *li = (ListIter *)o;
    PyObject *seq = li->it_seq ? cp(c, (PyObject *)li->it_seq) : PyList_New(0);
    if (seq == NULL)
        return NULL;
    if (!PyList_CheckExact(seq)) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_TypeError, "a list iterator over something else than a list");
        return NULL;
    }
    PyObject *res = PyObject_GetIter(seq);
    Py_DECREF(seq);
    if (res == NULL)
        return NULL;
    if (li->it_seq)
        ((ListIter *)res)->it_index = li->it_index;
    else
        Py_CLEAR(((ListIter *)res)->it_seq);
    if (memo_put(c, o, res) < 0)
        Py_CLEAR(res);
    return res;
}

/* The Python fallback's copy of `o`, remembered (unless the fallback did) so
 * that every other reference to `o` in this copy gets the same object. */
static PyObject *via_fallback(Copier *c, PyObject *o)
{
    PyObject *res = PyObject_CallFunctionObjArgs(c->fallback, o, (PyObject *)c, NULL);
    if (res && pm_get(&c->memo, o) == NULL && memo_put(c, o, res) < 0)
        Py_CLEAR(res);
    return res;
}

/* functools.partial (an RCU callback with its arguments): a partial of the
 * copies of its function, arguments and keywords; one with attributes of its
 * own goes to the fallback. */
static PyObject *cp_partial(Copier *c, PyObject *o)
{
    PyObject *d = PyObject_GenericGetDict(o, NULL);
    if (d == NULL)
        return NULL;
    Py_ssize_t nd = PyDict_GET_SIZE(d);
    Py_DECREF(d);
    if (nd)
        return via_fallback(c, o);
    PyObject *fn = PyObject_GetAttrString(o, "func");
    PyObject *args = PyObject_GetAttrString(o, "args");
    PyObject *kw = PyObject_GetAttrString(o, "keywords");
    PyObject *nfn = fn ? cp(c, fn) : NULL;
    PyObject *nargs = nfn && args ? cp(c, args) : NULL;
    PyObject *nkw = nargs && kw ? cp(c, kw) : NULL;
    PyObject *res = NULL;
    if (nkw && PyTuple_Check(nargs) && PyDict_Check(nkw)) {
        PyObject *all = PyTuple_New(PyTuple_GET_SIZE(nargs) + 1);
        if (all) {
            PyTuple_SET_ITEM(all, 0, Py_NewRef(nfn));
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(nargs); i++)
                PyTuple_SET_ITEM(all, i + 1, Py_NewRef(PyTuple_GET_ITEM(nargs, i)));
            res = PyObject_Call((PyObject *)partial_type, all, nkw);
            Py_DECREF(all);
        }
    } else if (nkw) {
        PyErr_SetString(PyExc_TypeError, "a partial whose args or keywords copied to other types");
    }
    Py_XDECREF(fn);
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_XDECREF(nfn);
    Py_XDECREF(nargs);
    Py_XDECREF(nkw);
    if (res && memo_put(c, o, res) < 0)
        Py_CLEAR(res);
    return res;
}

/* Give `n` a copy of the __dict__ of `o` (instances of the same class). */
static int copy_dict_into(Copier *c, PyObject *o, PyObject *n)
{
    PyObject *d = PyObject_GenericGetDict(o, NULL);
    PyObject *nd = d ? cp(c, d) : NULL;
    Py_XDECREF(d);
    int r = nd == NULL ? -1 : PyObject_GenericSetDict(n, nd, NULL);
    Py_XDECREF(nd);
    return r;
}

static PyObject *cp_instance(Copier *c, PyObject *o, PyTypeObject *t)
{
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL)
        return NULL;
    /* object.__new__: the allocation and the (managed) dict set up, no __init__ */
    PyObject *n = PyBaseObject_Type.tp_new(t, empty, NULL);
    Py_DECREF(empty);
    if (n == NULL || memo_put(c, o, n) < 0)
        return NULL;
    PyObject *mro = t->tp_mro;
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(mro); j++) {
        PyTypeObject *b = (PyTypeObject *)PyTuple_GET_ITEM(mro, j);
        if (!(b->tp_flags & Py_TPFLAGS_HEAPTYPE))
            continue;
        PyMemberDef *mp = (PyMemberDef *)(((char *)b) + Py_TYPE(b)->tp_basicsize);
        for (Py_ssize_t i = 0; i < Py_SIZE(b); i++, mp++) {
            if (mp->type != T_OBJECT_EX || (mp->flags & READONLY))
                continue;
            PyObject *v = *(PyObject **)((char *)o + mp->offset);
            if (v == NULL)
                continue;
            PyObject *nv = cp(c, v);
            if (nv == NULL) {
                Py_DECREF(n);
                return NULL;
            }
            PyObject **dst = (PyObject **)((char *)n + mp->offset);
            Py_XSETREF(*dst, nv);
        }
    }
    if (t->tp_dictoffset != 0 || (t->tp_flags & Py_TPFLAGS_MANAGED_DICT)) {
        if (copy_dict_into(c, o, n) < 0) {
            Py_DECREF(n);
            return NULL;
        }
    }
    return n;
}

/* Copy the items of dict `o` into the new (empty) dict `res`. */
static int fill_dict(Copier *c, PyObject *o, PyObject *res)
{
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(o, &pos, &k, &v)) {
        PyObject *nk = cp(c, k);
        PyObject *nv = nk ? cp(c, v) : NULL;
        if (nv == NULL || PyDict_SetItem(res, nk, nv) < 0) {
            Py_XDECREF(nk);
            Py_XDECREF(nv);
            return -1;
        }
        Py_DECREF(nk);
        Py_DECREF(nv);
    }
    return 0;
}

/* A plain dict.  When every key copies to itself (strings, numbers, tuples
   of them: the fields of an instance, most of the model's tables), the copy
   starts as PyDict_Copy() of it (its key table cloned, a split table of an
   instance's __dict__ kept split) and only the values that copy to another
   object are replaced; else it is filled item by item. */
static PyObject *cp_dict(Copier *c, PyObject *o)
{
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    int same = 1;
    while (same && PyDict_Next(o, &pos, &k, &v)) {
        PyObject *nk = cp(c, k);
        if (nk == NULL)
            return NULL;
        same = nk == k;
        Py_DECREF(nk);
    }
    PyObject *res = pm_get(&c->memo, o);  /* a cycle through a key made it already */
    if (res != NULL)
        return Py_NewRef(res);
    if (!same) {
        res = PyDict_New();
        if (res == NULL || memo_put(c, o, res) < 0 || fill_dict(c, o, res) < 0) {
            Py_XDECREF(res);
            return NULL;
        }
        return res;
    }
    res = PyDict_Copy(o);
    if (res == NULL || memo_put(c, o, res) < 0) {
        Py_XDECREF(res);
        return NULL;
    }
    pos = 0;
    while (PyDict_Next(res, &pos, &k, &v)) {
        /* replacing the value of a key already there is allowed while iterating */
        PyObject *nv = cp(c, v);
        if (nv == NULL || (nv != v && PyDict_SetItem(res, k, nv) < 0)) {
            Py_XDECREF(nv);
            Py_DECREF(res);
            return NULL;
        }
        Py_DECREF(nv);
    }
    return res;
}

static PyObject *cp_gen(Copier *c, PyObject *o)
{
    int8_t *state;
    _PyInterpreterFrame *f = frame_of(o, &state);
    if (f == NULL)
        return NULL;
    if (*state >= FRAME_COMPLETED) {
        PyObject *n = PyObject_CallFunctionObjArgs(c->finished, PyGen_CheckExact(o) ? Py_True : Py_False, NULL);
        if (n == NULL || memo_put(c, o, n) < 0)
            return NULL;
        return n;
    }
    if (*state != FRAME_CREATED && *state != FRAME_SUSPENDED) {
        PyErr_SetString(PyExc_TypeError, "_frames: a running coroutine");
        return NULL;
    }
    PyObject *func = cp(c, (PyObject *)f->f_func);
    if (func == NULL)
        return NULL;
    PyObject *n = frames_new(NULL, func);
    Py_DECREF(func);
    if (n == NULL || memo_put(c, o, n) < 0 || PyList_Append(c->made, n) < 0)
        return NULL;
    int8_t *nstate;
    _PyInterpreterFrame *nf = frame_of(n, &nstate);
    int top = f->stacktop;
    for (int i = 0; i < nf->stacktop; i++)
        Py_CLEAR(nf->localsplus[i]);
    nf->stacktop = 0;
    for (int i = 0; i < top; i++) {
        PyObject *v = f->localsplus[i];
        PyObject *nv = NULL;
        if (v != NULL && (nv = cp(c, v)) == NULL) {
            nf->stacktop = i;
            Py_DECREF(n);
            return NULL;
        }
        nf->localsplus[i] = nv;
        nf->stacktop = i + 1;
    }
    nf->stacktop = top;
    nf->prev_instr = _PyCode_CODE(nf->f_code) + (f->prev_instr - _PyCode_CODE(f->f_code));
    PyObject *exc = exc_of(o)->exc_value;
    if (exc != NULL && exc != Py_None) {
        PyObject *ne = cp(c, exc);
        if (ne == NULL) {
            Py_DECREF(n);
            return NULL;
        }
        Py_XSETREF(exc_of(n)->exc_value, ne);
    }
    *nstate = *state;
    return n;
}

static PyObject *cp(Copier *c, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type || t == &PyUnicode_Type || o == Py_None || t == &PyBool_Type
        || t == &PyFloat_Type || t == &PyBytes_Type || t == &PyComplex_Type
        || t == &PyRange_Type || o == Py_Ellipsis)
        return Py_NewRef(o);
    PyObject *r = pm_get(&c->memo, o);
    if (r)
        return Py_NewRef(r);
    size_t b = bloom_bit(o);
    if ((c->bloom[b >> 6] >> (b & 63)) & 1 && (r = pm_get(&c->shared, o)) != NULL)
        return Py_NewRef(r);
    if (t->tp_flags & Py_TPFLAGS_HEAPTYPE) {
        /* an instance of a class already met: straight to its rule (a list
           or dict subclass, never classified, takes the path below) */
        PyObject *k = pm_get(&c->kinds, t);
        if (k != NULL) {
            long kind = PyLong_AsLong(k);
            if (kind == K_INSTANCE || kind == K_OWNED)
                return cp_instance(c, o, t);
            if (kind == K_SHARE)
                return Py_NewRef(o);
        }
    }
    if (t == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(o);
        PyObject *items[64];
        PyObject **it = n <= 64 ? items : PyMem_Malloc(n * sizeof(PyObject *));
        int same = 1;
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            it[i] = cp(c, PyTuple_GET_ITEM(o, i));
            if (it[i] == NULL)
                break;
            same &= it[i] == PyTuple_GET_ITEM(o, i);
        }
        PyObject *res = NULL;
        if (i == n) {
            r = pm_get(&c->memo, o);  /* a cycle through the tuple made it already */
            if (r) {
                res = Py_NewRef(r);
            } else if (same) {
                res = Py_NewRef(o);
            } else if ((res = PyTuple_New(n)) != NULL) {
                for (Py_ssize_t j = 0; j < n; j++)
                    PyTuple_SET_ITEM(res, j, Py_NewRef(it[j]));
            }
            if (res && memo_put(c, o, res) < 0)
                Py_CLEAR(res);
        }
        for (Py_ssize_t j = 0; j < i; j++)
            Py_DECREF(it[j]);
        if (it != items)
            PyMem_Free(it);
        return res;
    }
    if (t == &PyList_Type) {
        Py_ssize_t n = PyList_GET_SIZE(o);
        PyObject *res = PyList_New(n);
        if (res == NULL || memo_put(c, o, res) < 0)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = cp(c, PyList_GET_ITEM(o, i));
            if (v == NULL) {
                /* fill the rest so the list is valid */
                for (Py_ssize_t j = i; j < n; j++)
                    PyList_SET_ITEM(res, j, Py_NewRef(Py_None));
                Py_DECREF(res);
                return NULL;
            }
            PyList_SET_ITEM(res, i, v);
        }
        return res;
    }
    if (t == &PyDict_Type)
        return cp_dict(c, o);
    if (t == &PySet_Type || t == &PyFrozenSet_Type) {
        PyObject *res = t == &PySet_Type ? PySet_New(NULL) : NULL;
        PyObject *tmp = PyList_New(0);
        if (tmp == NULL)
            return NULL;
        if (t == &PySet_Type && (res == NULL || memo_put(c, o, res) < 0)) {
            Py_DECREF(tmp);
            return NULL;
        }
        PyObject *iter = PyObject_GetIter(o), *item;
        while (iter && (item = PyIter_Next(iter)) != NULL) {
            PyObject *ni = cp(c, item);
            Py_DECREF(item);
            if (ni == NULL || PyList_Append(tmp, ni) < 0) {
                Py_XDECREF(ni);
                Py_DECREF(iter);
                Py_DECREF(tmp);
                Py_XDECREF(res);
                return NULL;
            }
            Py_DECREF(ni);
        }
        Py_XDECREF(iter);
        if (PyErr_Occurred()) {
            Py_DECREF(tmp);
            Py_XDECREF(res);
            return NULL;
        }
        if (t == &PySet_Type) {
            if (_PySet_Update(res, tmp) < 0) {
                Py_DECREF(tmp);
                Py_DECREF(res);
                return NULL;
            }
        } else {
            res = PyFrozenSet_New(tmp);
            if (res == NULL || memo_put(c, o, res) < 0) {
                Py_DECREF(tmp);
                return NULL;
            }
        }
        Py_DECREF(tmp);
        return res;
    }
    if (t == &PyCell_Type) {
        PyObject *res = PyCell_New(NULL);
        if (res == NULL || memo_put(c, o, res) < 0)
            return NULL;
        PyObject *v = PyCell_GET(o);
        if (v != NULL) {
            PyObject *nv = cp(c, v);
            if (nv == NULL) {
                Py_DECREF(res);
                return NULL;
            }
            PyCell_SET(res, nv);
        }
        return res;
    }
    if (t == &PyFunction_Type) {
        PyFunctionObject *fo = (PyFunctionObject *)o;
        if (fo->func_closure == NULL)
            return Py_NewRef(o);
        PyObject *res = PyFunction_NewWithQualName(fo->func_code, fo->func_globals, fo->func_qualname);
        if (res == NULL || memo_put(c, o, res) < 0)
            return NULL;
        PyFunctionObject *nf = (PyFunctionObject *)res;
        Py_XSETREF(nf->func_name, Py_NewRef(fo->func_name));
        PyObject *cl = cp(c, fo->func_closure);
        if (cl == NULL) {
            Py_DECREF(res);
            return NULL;
        }
        Py_XSETREF(nf->func_closure, cl);
        if (fo->func_defaults) {
            PyObject *d = cp(c, fo->func_defaults);
            if (d == NULL) { Py_DECREF(res); return NULL; }
            Py_XSETREF(nf->func_defaults, d);
        }
        if (fo->func_kwdefaults) {
            PyObject *d = cp(c, fo->func_kwdefaults);
            if (d == NULL) { Py_DECREF(res); return NULL; }
            Py_XSETREF(nf->func_kwdefaults, d);
        }
        if (fo->func_dict && PyDict_GET_SIZE(fo->func_dict)) {
            PyObject *d = cp(c, fo->func_dict);
            if (d == NULL) { Py_DECREF(res); return NULL; }
            Py_XSETREF(nf->func_dict, d);
        }
        return res;
    }
    if (t == &PyMethod_Type) {
        PyObject *fn = cp(c, PyMethod_GET_FUNCTION(o));
        PyObject *self = fn ? cp(c, PyMethod_GET_SELF(o)) : NULL;
        PyObject *res = self ? PyMethod_New(fn, self) : NULL;
        Py_XDECREF(fn);
        Py_XDECREF(self);
        if (res && memo_put(c, o, res) < 0)
            Py_CLEAR(res);
        return res;
    }
    if (t == &PyCoro_Type || t == &PyGen_Type)
        return cp_gen(c, o);
    if (PyCFunction_Check(o)) {
        PyObject *self = PyCFunction_GET_SELF(o);
        if (self == NULL || PyModule_Check(self))
            return Py_NewRef(o);
        /* a C method bound to an object: the same method of its copy */
        PyObject *ns = cp(c, self);
        if (ns == NULL)
            return NULL;
        PyObject *res = PyObject_GetAttrString(ns, ((PyCFunctionObject *)o)->m_ml->ml_name);
        Py_DECREF(ns);
        if (res && memo_put(c, o, res) < 0)
            Py_CLEAR(res);
        return res;
    }
    if (PyType_Check(o) || PyModule_Check(o) || PyCode_Check(o))
        return Py_NewRef(o);
    if (t == list_iter_type)
        return cp_list_iter(c, o);
    if (t == partial_type)
        return cp_partial(c, o);
    /* A list or dict subclass that adds nothing to the layout (__slots__ = ()):
     * made by calling the class, then filled as a plain one is. */
    if ((t->tp_base == &PyList_Type || t->tp_base == &PyDict_Type) &&
        t->tp_basicsize == t->tp_base->tp_basicsize && t->tp_dictoffset == 0 &&
        t->tp_init == t->tp_base->tp_init && t->tp_new == t->tp_base->tp_new) {
        PyObject *res = PyObject_CallNoArgs((PyObject *)t);
        if (res == NULL || memo_put(c, o, res) < 0) {
            Py_XDECREF(res);
            return NULL;
        }
        if (t->tp_base == &PyList_Type) {
            Py_ssize_t n = PyList_GET_SIZE(o);
            for (Py_ssize_t i = 0; i < n && i < PyList_GET_SIZE(o); i++) {
                PyObject *v = cp(c, PyList_GET_ITEM(o, i));
                if (v == NULL || PyList_Append(res, v) < 0) {
                    Py_XDECREF(v);
                    Py_DECREF(res);
                    return NULL;
                }
                Py_DECREF(v);
            }
            return res;
        }
        if (fill_dict(c, o, res) < 0) {
            Py_DECREF(res);
            return NULL;
        }
        return res;
    }
    /* An int subclass with a __dict__ (a value with labels, as the model's
     * TaskIdent): the same int made by int's own constructor for the class
     * (no __new__ or __init__ of the class runs), then its __dict__ copied. */
    if (t->tp_base == &PyLong_Type && (t->tp_flags & Py_TPFLAGS_HEAPTYPE) &&
        (t->tp_dictoffset != 0 || (t->tp_flags & Py_TPFLAGS_MANAGED_DICT))) {
        PyObject *v = PyNumber_Long(o);
        PyObject *args = v ? PyTuple_Pack(1, v) : NULL;
        Py_XDECREF(v);
        PyObject *res = args ? PyLong_Type.tp_new(t, args, NULL) : NULL;
        Py_XDECREF(args);
        if (res == NULL || memo_put(c, o, res) < 0) {
            Py_XDECREF(res);
            return NULL;
        }
        if (copy_dict_into(c, o, res) < 0) {
            Py_DECREF(res);
            return NULL;
        }
        return res;
    }
    int kind = kind_of(c, t);
    if (kind < 0)
        return NULL;
    if (kind == K_SHARE)
        return Py_NewRef(o);
    if (kind == K_INSTANCE || kind == K_OWNED)
        return cp_instance(c, o, t);
    return via_fallback(c, o);
}

static PyObject *Copier_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *types, *fallback, *finished, *probe;
    if (!PyArg_ParseTuple(args, "O!OOO!", &PyTuple_Type, &types, &fallback, &finished,
                          &PyType_Type, &probe))
        return NULL;
    if (!(((PyTypeObject *)probe)->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        PyErr_SetString(PyExc_TypeError, "Copier: the probe must be a class made by a class statement");
        return NULL;
    }
    subtype_dealloc = ((PyTypeObject *)probe)->tp_dealloc;
    Copier *c = (Copier *)type->tp_alloc(type, 0);
    if (c == NULL)
        return NULL;
    c->used_cap = 512;
    c->used = PyMem_Malloc(c->used_cap * sizeof(Py_ssize_t));
    if (c->used == NULL || pm_init(&c->shared, 1024) < 0 || pm_init(&c->kinds, 256) < 0
        || pm_init(&c->memo, 1024) < 0) {
        Py_DECREF(c);
        return PyErr_NoMemory();
    }
    c->shared_types = Py_NewRef(types);
    c->fallback = Py_NewRef(fallback);
    c->finished = Py_NewRef(finished);
    c->made = Py_NewRef(Py_None);
    return (PyObject *)c;
}

static void Copier_dealloc(Copier *c)
{
    /* kinds' keys are types we took a reference to */
    if (c->kinds.s)
        for (Py_ssize_t i = 0; i < c->kinds.cap; i++)
            if (c->kinds.s[i].key)
                Py_DECREF((PyObject *)c->kinds.s[i].key);
    pm_free(&c->kinds, 1);
    pm_free(&c->shared, 1);
    memo_free(c);
    pm_free(&c->memo, 0);
    PyMem_Free(c->used);
    Py_XDECREF(c->shared_types);
    Py_XDECREF(c->fallback);
    Py_XDECREF(c->finished);
    Py_XDECREF(c->made);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *Copier_share(Copier *c, PyObject *o)
{
    if (pm_get(&c->shared, o) == NULL && pm_put(&c->shared, o, Py_NewRef(o)) < 0)
        return NULL;
    size_t b = bloom_bit(o);
    c->bloom[b >> 6] |= (uint64_t)1 << (b & 63);
    Py_RETURN_NONE;
}

/* The K_OWNED instances the current copy made, appended to `owned`. */
static int list_owned(Copier *c, PyObject *owned)
{
    for (Py_ssize_t j = 0; j < c->nused; j++) {
        PmSlot *e = &c->memo.s[c->used[j]];
        if ((PyObject *)e->key == e->val)
            continue;
        PyObject *k = pm_get(&c->kinds, Py_TYPE(e->val));
        if (k && PyLong_AsLong(k) == K_OWNED && PyList_Append(owned, e->val) < 0)
            return -1;
    }
    return 0;
}

/* copy(obj[, owned]) -> (copy, coroutines made); with a list `owned`, the
   K_OWNED instances the copy made are appended to it (for clear_owned()
   once the copy is dropped) */
static PyObject *Copier_copy(Copier *c, PyObject *args)
{
    PyObject *o, *owned = Py_None;
    if (!PyArg_ParseTuple(args, "O|O", &o, &owned))
        return NULL;
    if (owned != Py_None && !PyList_Check(owned)) {
        PyErr_SetString(PyExc_TypeError, "Copier.copy: owned must be a list");
        return NULL;
    }
    if (c->copying) {
        PyErr_SetString(PyExc_RuntimeError, "Copier.copy: already copying (use sub)");
        return NULL;
    }
    PyObject *made = PyList_New(0);
    if (made == NULL)
        return NULL;
    Py_XSETREF(c->made, made);
    c->copying = 1;
    PyObject *res = cp(c, o);
    c->copying = 0;
    if (res != NULL && owned != Py_None && list_owned(c, owned) < 0)
        Py_CLEAR(res);
    memo_free(c);
    made = c->made;
    c->made = Py_NewRef(Py_None);
    if (res == NULL) {
        /* the coroutines of a failed copy must not run their finally blocks */
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(made); i++) {
            int8_t *st;
            if (frame_of(PyList_GET_ITEM(made, i), &st) && *st < FRAME_COMPLETED)
                *st = FRAME_COMPLETED;
        }
        Py_DECREF(made);
        return NULL;
    }
    PyObject *out = PyTuple_Pack(2, res, made);
    Py_DECREF(res);
    Py_DECREF(made);
    return out;
}

static PyObject *Copier_sub(Copier *c, PyObject *o)
{
    if (!c->copying) {
        PyErr_SetString(PyExc_RuntimeError, "Copier.sub: only within copy");
        return NULL;
    }
    return cp(c, o);
}

static PyObject *Copier_remember(Copier *c, PyObject *args)
{
    PyObject *o, *n;
    if (!PyArg_ParseTuple(args, "OO", &o, &n))
        return NULL;
    if (!c->copying) {
        PyErr_SetString(PyExc_RuntimeError, "Copier.remember: only within copy");
        return NULL;
    }
    if (memo_put(c, o, n) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef Copier_methods[] = {
    {"share", (PyCFunction)Copier_share, METH_O, "Share an object (never copy it)."},
    {"copy", (PyCFunction)Copier_copy, METH_VARARGS, "(copy, coroutines made) of an object graph."},
    {"sub", (PyCFunction)Copier_sub, METH_O, "Copy a part within the current copy."},
    {"remember", (PyCFunction)Copier_remember, METH_VARARGS, "Record orig -> copy."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CopierType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pervma.sched._frames.Copier",
    .tp_basicsize = sizeof(Copier),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Copier_new,
    .tp_dealloc = (destructor)Copier_dealloc,
    .tp_methods = Copier_methods,
};

static PyObject *frames_kill(PyObject *self, PyObject *gens)
{
    /* returns the states the coroutines had, one byte each, for revive() */
    PyObject *seq = PySequence_Fast(gens, "_frames.kill: not a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    char *was = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        int8_t *st;
        was[i] = (char)FRAME_COMPLETED;
        if (frame_of(PySequence_Fast_GET_ITEM(seq, i), &st) == NULL) {
            PyErr_Clear();
            continue;
        }
        was[i] = (char)*st;  /* FRAME_CREATED or _SUSPENDED: negative */
        if (*st < FRAME_COMPLETED)
            *st = FRAME_COMPLETED;
    }
    Py_DECREF(seq);
    return out;
}

/* kill_chains(coros): kill() each coroutine (generator) and every one it is
   suspended in (its cr_await / gi_yieldfrom chain, to the first awaitable
   that is neither). */
static getter coro_await_get, gen_yf_get;

static PyObject *frames_kill_chains(PyObject *self, PyObject *tops)
{
    PyObject *seq = PySequence_Fast(tops, "_frames.kill_chains: not a sequence");
    if (seq == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *c = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
        while (c != NULL && (PyCoro_CheckExact(c) || PyGen_CheckExact(c))) {
            int8_t *st;
            (void)frame_of(c, &st);
            getter g = PyCoro_CheckExact(c) ? coro_await_get : gen_yf_get;
            PyObject *sub = g != NULL ? g(c, NULL)
                                      : PyObject_GetAttrString(c, PyCoro_CheckExact(c)
                                                                   ? "cr_await" : "gi_yieldfrom");
            if (*st < FRAME_COMPLETED)
                *st = FRAME_COMPLETED;  /* after the awaited one was read: it reads the state */
            Py_DECREF(c);
            c = sub;
        }
        if (c == NULL) {
            Py_DECREF(seq);
            return NULL;
        }
        Py_DECREF(c);
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

static getter getset_of(PyTypeObject *t, const char *name)
{
    PyObject *d = PyDict_GetItemString(t->tp_dict, name);
    if (d == NULL || !Py_IS_TYPE(d, &PyGetSetDescr_Type))
        return NULL;
    return ((PyGetSetDescrObject *)d)->d_getset->get;
}

static PyObject *frames_revive(PyObject *self, PyObject *args)
{
    /* revive(gens, states): give killed coroutines back the states kill()
     * returned (only to copy them: a revived snapshot is killed again before
     * anything could run or finalize it) */
    PyObject *gens, *states;
    if (!PyArg_ParseTuple(args, "OS", &gens, &states))
        return NULL;
    PyObject *seq = PySequence_Fast(gens, "_frames.revive: not a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (PyBytes_GET_SIZE(states) != n) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "_frames.revive: one state per coroutine");
        return NULL;
    }
    const char *was = PyBytes_AS_STRING(states);
    for (Py_ssize_t i = 0; i < n; i++) {
        int8_t *st;
        if (frame_of(PySequence_Fast_GET_ITEM(seq, i), &st) == NULL) {
            PyErr_Clear();
            continue;
        }
        if (*st == FRAME_COMPLETED && (int8_t)was[i] < FRAME_COMPLETED)
            *st = (int8_t)was[i];
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

/* clear_owned(objs): clear the fields (__slots__ and __dict__) of each
   object, instances a copy made (listed by Copier.copy(obj, owned)), once
   the copy they belong to is dropped for good: the cycles of a model's
   object graph (an mm and its VMAs, a world and its threads' closures) are
   broken, so reference counting frees the graph at once instead of the
   cyclic garbage collector finding it later.  It is the type's tp_clear, the
   one the collector would call on them. */
static PyObject *frames_clear_owned(PyObject *self, PyObject *objs)
{
    if (!PyList_Check(objs)) {
        PyErr_SetString(PyExc_TypeError, "_frames.clear_owned: a list");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objs); i++) {
        PyObject *o = PyList_GET_ITEM(objs, i);
        inquiry clear = Py_TYPE(o)->tp_clear;
        if (clear != NULL)
            (void)clear(o);
    }
    Py_RETURN_NONE;
}

/* stack(gen): the items on the value stack of a suspended coroutine or
   generator (a for loop's iterator, a partial expression, the awaited object
   on top), NULLs left out; () when it is not suspended. */
static PyObject *frames_stack(PyObject *self, PyObject *gen)
{
    int8_t *st;
    _PyInterpreterFrame *f = frame_of(gen, &st);
    if (f == NULL)
        return NULL;
    if (*st >= FRAME_COMPLETED)
        return PyTuple_New(0);
    int n = f->f_code->co_nlocalsplus;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = n; i < f->stacktop; i++) {
        PyObject *v = f->localsplus[i];
        if (v != NULL && PyList_Append(out, v) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    PyObject *t = PyList_AsTuple(out);
    Py_DECREF(out);
    return t;
}

static PyMethodDef methods[] = {
    {"stack", frames_stack, METH_O, "The value stack of a suspended coroutine or generator."},
    {"clear_owned", frames_clear_owned, METH_O, "Clear the fields of the instances a dropped copy made."},
    {"new", frames_new, METH_O, "A fresh coroutine (or generator) of a function (none of it runs)."},
    {"kill", frames_kill, METH_O, "Mark coroutines finished without running them; returns their states."},
    {"kill_chains", frames_kill_chains, METH_O, "kill() coroutines and every one each is suspended in."},
    {"revive", frames_revive, METH_VARARGS, "Give killed coroutines back the states kill() returned."},
    {NULL, NULL, 0, NULL},
};
#else
static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};
#endif

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_frames",
    "Save and load the frame of a suspended coroutine (CPython 3.11).", -1, methods,
};

PyMODINIT_FUNC PyInit__frames(void)
{
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    if (PyType_Ready(&CopierType) < 0)
        return NULL;
    coro_await_get = getset_of(&PyCoro_Type, "cr_await");
    gen_yf_get = getset_of(&PyGen_Type, "gi_yieldfrom");
    PyObject *empty = PyList_New(0);
    PyObject *it = empty ? PyObject_GetIter(empty) : NULL;
    if (it == NULL) {
        Py_XDECREF(empty);
        return NULL;
    }
    list_iter_type = Py_TYPE(it);
    Py_DECREF(it);
    Py_DECREF(empty);
    PyObject *ft = PyImport_ImportModule("functools");
    PyObject *pt = ft ? PyObject_GetAttrString(ft, "partial") : NULL;
    Py_XDECREF(ft);
    if (pt == NULL || !PyType_Check(pt)) {
        Py_XDECREF(pt);
        return NULL;
    }
    partial_type = (PyTypeObject *)pt;  /* kept for the module's life */
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CopierType);
    if (PyModule_AddObject(m, "Copier", (PyObject *)&CopierType) < 0) {
        Py_DECREF(&CopierType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
#else
    PyErr_SetString(PyExc_ImportError, "_frames is built for CPython 3.11 only");
    return NULL;
#endif
}
