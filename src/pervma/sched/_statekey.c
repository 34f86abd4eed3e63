/*
 * pervma.sched._statekey: the walk of pervma.sched.statekey.state_key in C.
 *
 * The Python module (statekey.py) is the specification; this file computes
 * the same rows (the same tuples, objects named in the same walk order) and
 * returns hash(tuple(rows)), so the two give equal keys on every state.  It
 * only makes the common cases fast: atoms, tuples, named objects, bound
 * methods, enum members, lists, dicts, sets, coroutine and generator frames,
 * cells, __slots__ objects (slots read at their member offsets, cached per
 * type) and plain __dict__ objects.  Everything else (a Task, an exception,
 * a slots class whose slots are not plain member descriptors, an object only
 * its pickle reduction describes) goes to the Python callback `special(o,
 * ref)`, which returns the object's rows; `ref` is the walk's own naming
 * function, so numbering stays shared.
 *
 * Objects the walk names stay referenced until it ends (their addresses are
 * the table's keys), as do the frame-locals mappings it creates.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <structmember.h>

/* On CPython 3.11 a suspended frame's locals are read where the interpreter
 * keeps them (localsplus), as pervma.sched._frames does, instead of through
 * f_locals, which builds a dict at every call. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define SK_FAST_LOCALS 1
#define Py_BUILD_CORE 1
#include "internal/pycore_code.h"
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE
#endif

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

/* How ref() names a value of a type (statekey._classify). */
enum { R_OBJECT = 0, R_TUPLE = 1, R_NAMED = 2, R_METHOD = 3, R_ENUM = 4 };
/* How the walk writes the rows of an object of a type. */
enum { W_UNKNOWN = 0, W_LIST, W_DICT, W_SET, W_CORO, W_GEN, W_CELL, W_SLOTS, W_DICTOBJ,
       W_SPECIAL, W_ULIST, W_UDICT };

typedef struct {
    PyTypeObject *type; /* strong reference; NULL: empty slot */
    int rkind;          /* -1: not classified yet */
    int wkind;          /* W_UNKNOWN: not planned yet */
    int has_dict;       /* W_SLOTS: instances may carry a __dict__ too */
    int plain_dict;     /* ... which type.__dict__['__dict__'] of a class statement gives */
    Py_ssize_t nslots;
    Py_ssize_t *offsets; /* W_SLOTS: offset of each slot, in statekey._slots_of order */
    PyObject *names;     /* W_SLOTS: the slot names (for AttributeError messages) */
} TypeInfo;

/* The per-type cache: open addressing on the type's address, never shrunk
 * (types are few and live as long as the program).  Entries are allocated
 * one by one so a TypeInfo pointer stays valid while the table grows. */
static TypeInfo **tcache;
static Py_ssize_t tcache_cap, tcache_len;

/* Set by _setup(). */
static PyObject *cb_special;  /* special(o, ref) -> sequence of rows */
static PyObject *cb_live;     /* live(code, lasti) -> frozenset of live locals or None */
static PyObject *cb_classify; /* _classify(t) -> int */
static PyObject *cb_slots_of; /* _slots_of(t) -> tuple[str, ...] | None */
static PyObject *task_type;   /* pervma.sched.task.Task */

static PyObject *s_eq, *s_at, *s_atm, *s_hash, *s_l, *s_d, *s_s, *s_c, *s_finished, *s_u,
    *s_unordered;
static getter std_dict_get;  /* the __dict__ getter of a class made by a class statement */
static PyObject *s_qualname, *s_name, *s_dict, *s_cr_frame, *s_cr_await, *s_gi_frame,
    *s_gi_yieldfrom, *s_done, *s_preempt_count, *s_model, *s_coro, *s_result, *s_sort,
    *s_key, *s_repr, *s_stack;
static PyObject *t_finished; /* ("finished",) */
static PyObject *repr_func;

static inline size_t
ptr_hash(const void *p)
{
    size_t x = (size_t)p;
    x ^= x >> 33;
    x *= (size_t)0xff51afd7ed558ccdULL;
    x ^= x >> 29;
    return x;
}

static TypeInfo **
tcache_slot(PyTypeObject *t)
{
    size_t mask = (size_t)tcache_cap - 1;
    size_t i = ptr_hash(t) & mask;
    while (tcache[i] != NULL && tcache[i]->type != t)
        i = (i + 1) & mask;
    return &tcache[i];
}

static TypeInfo *
type_info(PyTypeObject *t)
{
    if (tcache_cap > 0) {
        TypeInfo *ti = *tcache_slot(t);
        if (ti != NULL)
            return ti;
    }
    if (2 * (tcache_len + 1) > tcache_cap) {
        Py_ssize_t ocap = tcache_cap;
        TypeInfo **old = tcache;
        Py_ssize_t ncap = ocap ? 2 * ocap : 256;
        TypeInfo **nt = PyMem_Calloc((size_t)ncap, sizeof(TypeInfo *));
        if (nt == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        tcache = nt;
        tcache_cap = ncap;
        for (Py_ssize_t i = 0; i < ocap; i++)
            if (old[i] != NULL)
                *tcache_slot(old[i]->type) = old[i];
        PyMem_Free(old);
    }
    TypeInfo *ti = PyMem_Calloc(1, sizeof(TypeInfo));
    if (ti == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    ti->type = (PyTypeObject *)Py_NewRef(t);
    ti->rkind = -1;
    ti->wkind = W_UNKNOWN;
    *tcache_slot(t) = ti;
    tcache_len++;
    return ti;
}

static int
classify(TypeInfo *ti)
{
    PyObject *r = PyObject_CallOneArg(cb_classify, (PyObject *)ti->type);
    if (r == NULL)
        return -1;
    long k = PyLong_AsLong(r);
    Py_DECREF(r);
    if (k == -1 && PyErr_Occurred())
        return -1;
    ti->rkind = (int)k;
    return 0;
}

/* Decide how the walk writes objects of ti->type (statekey's main loop and
 * _special, in the same order of tests). */
static int
plan(TypeInfo *ti)
{
    PyTypeObject *t = ti->type;
    if (t == &PyList_Type) { ti->wkind = W_LIST; return 0; }
    if (t == &PyDict_Type) { ti->wkind = W_DICT; return 0; }
    if (t == &PySet_Type || t == &PyFrozenSet_Type) { ti->wkind = W_SET; return 0; }
    if (t == &PyCoro_Type) { ti->wkind = W_CORO; return 0; }
    if (t == &PyGen_Type) { ti->wkind = W_GEN; return 0; }
    if (t == &PyCell_Type) { ti->wkind = W_CELL; return 0; }
    ti->wkind = W_SPECIAL;
    if (PyType_IsSubtype(t, (PyTypeObject *)PyExc_BaseException))
        return 0;
    if (PyType_IsSubtype(t, &PyDict_Type) || PyType_IsSubtype(t, &PyList_Type)) {
        /* a set kept as a list or dict (statekey._special's first case) */
        PyObject *u = PyObject_GetAttr((PyObject *)t, s_unordered);
        if (u == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
            return 0;
        }
        int truth = PyObject_IsTrue(u);
        Py_DECREF(u);
        if (truth < 0)
            return -1;
        if (truth)
            ti->wkind = PyType_IsSubtype(t, &PyDict_Type) ? W_UDICT : W_ULIST;
        return 0; /* otherwise a container's subclass: _special refuses it */
    }
    if (PyType_IsSubtype(t, &PySet_Type) || PyType_IsSubtype(t, &PyFrozenSet_Type))
        return 0; /* a container's subclass: _special refuses it (its items are not fields) */
    int r = PyObject_IsSubclass((PyObject *)t, task_type);
    if (r < 0)
        return -1;
    if (r)
        return 0;
    if (t->tp_getattro != PyObject_GenericGetAttr)
        return 0; /* attribute access is customised: let Python do it */
    PyObject *names = PyObject_CallOneArg(cb_slots_of, (PyObject *)t);
    if (names == NULL)
        return -1;
    if (names == Py_None) {
        Py_DECREF(names);
        ti->wkind = W_DICTOBJ;
        return 0;
    }
    if (!PyTuple_CheckExact(names)) {
        Py_DECREF(names);
        PyErr_SetString(PyExc_TypeError, "_slots_of must return a tuple or None");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    Py_ssize_t *offs = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    if (offs == NULL) {
        Py_DECREF(names);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyObject_GetAttr((PyObject *)t, PyTuple_GET_ITEM(names, i));
        if (d == NULL) {
            PyErr_Clear();
            goto slow;
        }
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)d)->d_member->type == Py_T_OBJECT_EX &&
                 PyType_IsSubtype(t, PyDescr_TYPE(d));
        if (ok)
            offs[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!ok)
            goto slow;
    }
    ti->offsets = offs;
    ti->nslots = n;
    ti->names = names;
    ti->has_dict = t->tp_dictoffset != 0;
#ifdef Py_TPFLAGS_MANAGED_DICT
    ti->has_dict = ti->has_dict || PyType_HasFeature(t, Py_TPFLAGS_MANAGED_DICT);
#endif
    if (ti->has_dict) {
        /* the standard descriptor: the getter of a class statement's
           __dict__ (the one object's subclasses made by a class statement get) */
        PyObject *dd = _PyType_Lookup(t, s_dict);
        ti->plain_dict = dd != NULL && Py_IS_TYPE(dd, &PyGetSetDescr_Type) &&
                         std_dict_get != NULL &&
                         ((PyGetSetDescrObject *)dd)->d_getset->get == std_dict_get;
    }
    ti->wkind = W_SLOTS;
    return 0;
slow:
    PyMem_Free(offs);
    Py_DECREF(names);
    return 0;
}

/* Rows are either built (tuples, as statekey._rows makes them) or only
 * hashed: a hash walk feeds each item's hash into the accumulator CPython's
 * tuple hash uses, so it gets hash(tuple(rows)) without making a tuple.
 * hash_ok says the accumulator below agrees with this interpreter's
 * tuplehash (checked at import; if not, keys are built and hashed). */
#if SIZEOF_PY_UHASH_T > 4
#define XXPRIME_1 ((Py_uhash_t)11400714785074694791ULL)
#define XXPRIME_2 ((Py_uhash_t)14029467366897019727ULL)
#define XXPRIME_5 ((Py_uhash_t)2870177450012600261ULL)
#define XXROTATE(x) ((x << 31) | (x >> 33))
#else
#define XXPRIME_1 ((Py_uhash_t)2654435761UL)
#define XXPRIME_2 ((Py_uhash_t)2246822519UL)
#define XXPRIME_5 ((Py_uhash_t)374761393UL)
#define XXROTATE(x) ((x << 13) | (x >> 19))
#endif

static int hash_ok;
static Py_uhash_t h_eq, h_at, h_atm, h_hash, h_l, h_d, h_s, h_c, h_finished_row, h_u;

static inline Py_uhash_t
xx_lane(Py_uhash_t acc, Py_uhash_t lane)
{
    acc += lane * XXPRIME_2;
    acc = XXROTATE(acc);
    return acc * XXPRIME_1;
}

static inline Py_uhash_t
xx_end(Py_uhash_t acc, Py_ssize_t len)
{
    acc += (Py_uhash_t)len ^ (XXPRIME_5 ^ 3527539UL);
    if (acc == (Py_uhash_t)-1)
        return 1546275796;
    return acc;
}

/* hash(n) of a Python int that fits a C long (|n| < the hash modulus). */
static inline Py_uhash_t
int_hash(long n)
{
    return (Py_uhash_t)(n == -1 ? -2 : n);
}

/* Hashes of immutable objects whose hash is costly and asked often: code
 * objects (3.12+ hashes their bytecode) and enum members (a Python-level
 * __hash__).  Keyed by address, the objects owned; emptied when full. */
#define HCACHE_MAX 4096
static PyObject **hc_keys;
static Py_hash_t *hc_vals;
static Py_ssize_t hc_len;

static void
hcache_clear(void)
{
    for (Py_ssize_t i = 0; i < 2 * HCACHE_MAX; i++) {
        if (hc_keys[i] != NULL) {
            Py_DECREF(hc_keys[i]);
            hc_keys[i] = NULL;
        }
    }
    hc_len = 0;
}

static Py_hash_t
cached_hash(PyObject *o)
{
    size_t mask = 2 * HCACHE_MAX - 1;
    size_t i = ptr_hash(o) & mask;
    while (hc_keys[i] != NULL) {
        if (hc_keys[i] == o)
            return hc_vals[i];
        i = (i + 1) & mask;
    }
    Py_hash_t h = PyObject_Hash(o); /* may run Python code: probe again after */
    if (h == -1)
        return -1;
    if (hc_len >= HCACHE_MAX)
        hcache_clear();
    i = ptr_hash(o) & mask;
    while (hc_keys[i] != NULL) {
        if (hc_keys[i] == o)
            return h;
        i = (i + 1) & mask;
    }
    hc_keys[i] = Py_NewRef(o);
    hc_vals[i] = h;
    hc_len++;
    return h;
}

/* A value in a row: a new reference (built) or its hash (hashed). */
typedef struct {
    PyObject *o;
    Py_uhash_t h;
} Val;

/* A row (a tuple) being made. */
typedef struct {
    PyObject *tup;
    Py_uhash_t acc;
    Py_ssize_t i;
    int hash;
} Row;

static int
row_init(Row *r, int hash, Py_ssize_t n)
{
    r->hash = hash;
    r->i = 0;
    r->acc = XXPRIME_5;
    r->tup = NULL;
    if (hash)
        return 0;
    r->tup = PyTuple_New(n);
    return r->tup ? 0 : -1;
}

/* Add an object as itself (borrowed). */
static int
row_obj(Row *r, PyObject *o)
{
    if (r->hash) {
        Py_hash_t h = PyObject_Hash(o);
        if (h == -1)
            return -1;
        r->acc = xx_lane(r->acc, (Py_uhash_t)h);
    }
    else {
        PyTuple_SET_ITEM(r->tup, r->i, Py_NewRef(o));
    }
    r->i++;
    return 0;
}

/* Add a string constant whose hash is known. */
static void
row_const(Row *r, PyObject *o, Py_uhash_t h)
{
    if (r->hash)
        r->acc = xx_lane(r->acc, h);
    else
        PyTuple_SET_ITEM(r->tup, r->i, Py_NewRef(o));
    r->i++;
}

/* Add a value (stolen). */
static void
row_val(Row *r, Val v)
{
    if (r->hash)
        r->acc = xx_lane(r->acc, v.h);
    else
        PyTuple_SET_ITEM(r->tup, r->i, v.o);
    r->i++;
}

static Val
row_end(Row *r)
{
    Val v = {NULL, 0};
    if (r->hash) {
        v.h = xx_end(r->acc, r->i);
    }
    else {
        if (r->i != PyTuple_GET_SIZE(r->tup) && _PyTuple_Resize(&r->tup, r->i) < 0)
            return v;
        v.o = r->tup;
    }
    r->tup = NULL;
    return v;
}

static void
row_abort(Row *r)
{
    Py_CLEAR(r->tup);
}

/* One walk. */
typedef struct {
    PyObject_HEAD
    PyObject **keys; /* the named objects (owned), by address */
    Py_ssize_t *nums; /* the number each was named with */
    Py_ssize_t cap, len;
    PyObject **todo; /* borrowed: the table owns them */
    Py_ssize_t ntodo, captodo;
    PyObject *keep; /* list: frame locals made during the walk */
    int hash;       /* rows are hashed, not built */
    PyObject *out;  /* built rows */
    Py_uhash_t acc; /* hashed rows */
    Py_ssize_t nrows;
} Walk;

static void
walk_clear(Walk *w)
{
    for (Py_ssize_t i = 0; i < w->cap; i++)
        Py_XDECREF(w->keys[i]);
    PyMem_Free(w->keys);
    PyMem_Free(w->nums);
    PyMem_Free(w->todo);
    w->keys = w->todo = NULL;
    w->nums = NULL;
    w->cap = w->len = w->ntodo = w->captodo = 0;
    Py_CLEAR(w->keep);
    Py_CLEAR(w->out);
}

static void
walk_dealloc(Walk *w)
{
    walk_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyTypeObject Walk_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pervma.sched._statekey.Walk",
    .tp_basicsize = sizeof(Walk),
    .tp_dealloc = (destructor)walk_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

static int
table_grow(Walk *w)
{
    Py_ssize_t ocap = w->cap, ncap = ocap ? 2 * ocap : 1024;
    PyObject **ok = w->keys;
    Py_ssize_t *on = w->nums;
    PyObject **nk = PyMem_Calloc((size_t)ncap, sizeof(PyObject *));
    Py_ssize_t *nn = PyMem_Calloc((size_t)ncap, sizeof(Py_ssize_t));
    if (nk == NULL || nn == NULL) {
        PyMem_Free(nk);
        PyMem_Free(nn);
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = (size_t)ncap - 1;
    for (Py_ssize_t i = 0; i < ocap; i++) {
        if (ok[i] == NULL)
            continue;
        size_t j = ptr_hash(ok[i]) & mask;
        while (nk[j] != NULL)
            j = (j + 1) & mask;
        nk[j] = ok[i];
        nn[j] = on[i];
    }
    PyMem_Free(ok);
    PyMem_Free(on);
    w->keys = nk;
    w->nums = nn;
    w->cap = ncap;
    return 0;
}

/* ("#", n): the n-th object the walk named. */
static int
number(Py_ssize_t n, int hash, Val *out)
{
    if (hash) {
        out->h = xx_end(xx_lane(xx_lane(XXPRIME_5, h_hash), int_hash((long)n)), 2);
        return 0;
    }
    PyObject *num = PyLong_FromSsize_t(n);
    if (num == NULL)
        return -1;
    out->o = PyTuple_Pack(2, s_hash, num);
    Py_DECREF(num);
    return out->o ? 0 : -1;
}

/* What a suspended coroutine (generator) awaits (yields from): the getter
 * of its type's cr_await (gi_yieldfrom) descriptor, called directly
 * (getattr would look the descriptor up at every frame). */
static getter coro_await_get, gen_yf_get;

static PyObject *
awaited(PyObject *o, int coro)
{
    getter g = coro ? coro_await_get : gen_yf_get;
    if (g != NULL && Py_IS_TYPE(o, coro ? &PyCoro_Type : &PyGen_Type))
        return g(o, NULL);
    return PyObject_GetAttr(o, coro ? s_cr_await : s_gi_yieldfrom);
}

/* The fields of a driver's Task the walk reads, by their slot offsets in
 * pervma.sched.task.Task (found at _setup; -1: read by getattr). */
enum { TF_DONE, TF_PREEMPT, TF_MODEL, TF_CORO, TF_RESULT, TF_N };
static Py_ssize_t task_off[TF_N] = {-1, -1, -1, -1, -1};
static PyObject **task_names[TF_N] = {&s_done, &s_preempt_count, &s_model, &s_coro, &s_result};

static PyObject *
task_field(PyObject *task, int f)
{
    if (task_off[f] >= 0 && (PyObject *)Py_TYPE(task) == task_type) {
        PyObject *v = *(PyObject **)((char *)task + task_off[f]);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(task, *task_names[f]);
}

static void
find_task_offsets(void)
{
    for (int f = 0; f < TF_N; f++) {
        task_off[f] = -1;
        if (task_type == NULL || !PyType_Check(task_type))
            continue;
        PyObject *d = _PyType_Lookup((PyTypeObject *)task_type, *task_names[f]);
        if (d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) &&
            ((PyMemberDescrObject *)d)->d_member->type == Py_T_OBJECT_EX)
            task_off[f] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
}

static getter
getset_of(PyTypeObject *t, const char *name)
{
    PyObject *d = PyDict_GetItemString(t->tp_dict, name);
    if (d == NULL || !Py_IS_TYPE(d, &PyGetSetDescr_Type))
        return NULL;
    return ((PyGetSetDescrObject *)d)->d_getset->get;
}

static int ref(Walk *w, PyObject *o, int hash, Val *out);

/* The __qualname__ of a function, a class made by a class statement or a
 * code object, read from the object (what getattr gives for them, without
 * the attribute lookup), or NULL: not one of those, or an empty name. */
static PyObject *
direct_qualname(PyObject *o)
{
    PyObject *q = NULL;
    if (PyFunction_Check(o))
        q = ((PyFunctionObject *)o)->func_qualname;
    else if (PyType_Check(o) && (((PyTypeObject *)o)->tp_flags & Py_TPFLAGS_HEAPTYPE))
        q = ((PyHeapTypeObject *)o)->ht_qualname;
    else if (PyCode_Check(o))
        q = ((PyCodeObject *)o)->co_qualname;
    if (q == NULL || !PyUnicode_CheckExact(q) || PyUnicode_GET_LENGTH(q) == 0)
        return NULL;
    return Py_NewRef(q);
}

/* ("@", name): a function, class, code object or module, by name. */
static int
named(PyObject *o, int hash, Val *out)
{
    /* _PyObject_LookupAttr: a missing attribute (an instance of a hidden
     * class has no __qualname__) costs no AttributeError. */
    PyObject *q = direct_qualname(o);
    if (q != NULL)
        goto have;
    if (_PyObject_LookupAttr(o, s_qualname, &q) < 0)
        return -1;
    if (q != NULL) {
        int truth = PyObject_IsTrue(q);
        if (truth < 0) {
            Py_DECREF(q);
            return -1;
        }
        if (!truth)
            Py_CLEAR(q);
    }
    if (q == NULL) {
        if (_PyObject_LookupAttr(o, s_name, &q) < 0)
            return -1;
        if (q == NULL) {
            q = PyObject_GetAttr((PyObject *)Py_TYPE(o), s_name);
            if (q == NULL)
                return -1;
        }
    }
have:;
    Row r;
    if (row_init(&r, hash, 2) < 0) {
        Py_DECREF(q);
        return -1;
    }
    row_const(&r, s_at, h_at);
    int err = row_obj(&r, q);
    Py_DECREF(q);
    if (err < 0) {
        row_abort(&r);
        return -1;
    }
    *out = row_end(&r);
    return (hash || out->o) ? 0 : -1;
}

static inline int
is_atom(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    return t == &PyLong_Type || t == &PyUnicode_Type || o == Py_None || t == &PyBool_Type ||
           t == &PyBytes_Type || t == &PyFloat_Type || t == &PyComplex_Type ||
           t == &PyRange_Type;
}

/* The value itself. */
static int
as_is(PyObject *o, int hash, Val *out)
{
    if (hash) {
        Py_hash_t h = PyObject_Hash(o);
        if (h == -1)
            return -1;
        out->h = (Py_uhash_t)h;
    }
    else {
        out->o = Py_NewRef(o);
    }
    return 0;
}

/* statekey's ref(): how a row names a value. */
static int
ref(Walk *w, PyObject *o, int hash, Val *out)
{
    if (is_atom(o))
        return as_is(o, hash, out);
    TypeInfo *ti = type_info(Py_TYPE(o));
    if (ti == NULL)
        return -1;
    if (ti->rkind < 0 && classify(ti) < 0)
        return -1;
    switch (ti->rkind) {
    case R_TUPLE: {
        Py_ssize_t n = PyTuple_GET_SIZE(o);
        Row r;
        if (row_init(&r, hash, n + 1) < 0)
            return -1;
        row_const(&r, s_eq, h_eq);
        for (Py_ssize_t i = 0; i < n; i++) {
            Val x;
            if (ref(w, PyTuple_GET_ITEM(o, i), hash, &x) < 0) {
                row_abort(&r);
                return -1;
            }
            row_val(&r, x);
        }
        *out = row_end(&r);
        return (hash || out->o) ? 0 : -1;
    }
    case R_NAMED:
        return named(o, hash, out);
    case R_METHOD: {
        PyObject *fn = PyMethod_GET_FUNCTION(o);
        PyObject *q = PyFunction_Check(fn) ? Py_NewRef(((PyFunctionObject *)fn)->func_qualname)
                                           : PyObject_GetAttr(fn, s_qualname);
        if (q == NULL)
            return -1;
        Row r;
        if (row_init(&r, hash, 3) < 0) {
            Py_DECREF(q);
            return -1;
        }
        row_const(&r, s_atm, h_atm);
        int err = row_obj(&r, q);
        Py_DECREF(q);
        Val s;
        if (err < 0 || ref(w, PyMethod_GET_SELF(o), hash, &s) < 0) {
            row_abort(&r);
            return -1;
        }
        row_val(&r, s);
        *out = row_end(&r);
        return (hash || out->o) ? 0 : -1;
    }
    case R_ENUM:
        if (hash) {
            Py_hash_t h = cached_hash(o);
            if (h == -1)
                return -1;
            out->h = (Py_uhash_t)h;
            return 0;
        }
        return as_is(o, hash, out);
    default:
        break;
    }
    if (2 * (w->len + 1) > w->cap && table_grow(w) < 0)
        return -1;
    size_t mask = (size_t)w->cap - 1;
    size_t i = ptr_hash(o) & mask;
    while (w->keys[i] != NULL) {
        if (w->keys[i] == o)
            return number(w->nums[i], hash, out);
        i = (i + 1) & mask;
    }
    /* A new object: number it, keep it, walk it later. */
    if (w->ntodo == w->captodo) {
        Py_ssize_t nc = w->captodo ? 2 * w->captodo : 256;
        PyObject **nt = PyMem_Realloc(w->todo, sizeof(PyObject *) * (size_t)nc);
        if (nt == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        w->todo = nt;
        w->captodo = nc;
    }
    Py_ssize_t n = w->len;
    if (number(n, hash, out) < 0)
        return -1;
    w->keys[i] = Py_NewRef(o);
    w->nums[i] = n;
    w->len++;
    w->todo[w->ntodo++] = o;
    return 0;
}

/* ref() for Python (special() gets it): builds. */
static PyObject *
py_ref(PyObject *self, PyObject *o)
{
    Val v = {NULL, 0};
    if (ref((Walk *)self, o, 0, &v) < 0)
        return NULL;
    return v.o;
}

static PyMethodDef ref_def = {"ref", py_ref, METH_O, "Name a value in the running walk."};

/* Emit a finished row (stolen). */
static int
emit(Walk *w, Val v)
{
    if (w->hash) {
        w->acc = xx_lane(w->acc, v.h);
        w->nrows++;
        return 0;
    }
    if (v.o == NULL)
        return -1;
    int r = PyList_Append(w->out, v.o);
    Py_DECREF(v.o);
    return r;
}

static int
emit_row(Walk *w, Row *r)
{
    Val v = row_end(r);
    if (!w->hash && v.o == NULL)
        return -1;
    return emit(w, v);
}

/* Add a (key, ref(value)) pair to a row (the key named too if ref_key). */
static int
row_pair(Walk *w, Row *row, PyObject *k, PyObject *v, int ref_key)
{
    Row p;
    Val x;
    if (row_init(&p, w->hash, 2) < 0)
        return -1;
    Py_INCREF(k);
    Py_INCREF(v);
    int err;
    if (ref_key) {
        err = ref(w, k, w->hash, &x);
        if (err == 0)
            row_val(&p, x);
    }
    else {
        err = row_obj(&p, k);
    }
    if (err == 0) {
        err = ref(w, v, w->hash, &x);
        if (err == 0)
            row_val(&p, x);
    }
    Py_DECREF(k);
    Py_DECREF(v);
    if (err < 0) {
        row_abort(&p);
        return -1;
    }
    x = row_end(&p);
    if (!w->hash && x.o == NULL)
        return -1;
    row_val(row, x);
    return 0;
}

/* Emit the row (*head, *pairs) of a mapping; with `keep` (a set; m an exact
 * dict), only the pairs whose key is in it, in m's order. */
static int
emit_pairs(Walk *w, PyObject *const *head, const Py_uhash_t *hh, Py_ssize_t nhead,
           PyObject *m, int ref_keys, PyObject *keep)
{
    PyObject *items = NULL;
    Py_ssize_t n;
    Py_ssize_t kept = -1; /* with keep: how many pairs are kept */
    if (PyDict_CheckExact(m)) {
        n = PyDict_GET_SIZE(m);
        if (keep != NULL) {
            Py_ssize_t pos = 0;
            PyObject *k, *v;
            kept = 0;
            while (PyDict_Next(m, &pos, &k, &v)) {
                int in = PySet_Contains(keep, k);
                if (in < 0)
                    return -1;
                kept += in;
            }
        }
    }
    else {
        items = PyMapping_Items(m);
        if (items == NULL)
            return -1;
        n = PyList_GET_SIZE(items);
    }
    Row row;
    if (row_init(&row, w->hash, nhead + (kept >= 0 ? kept : n)) < 0)
        goto fail0;
    for (Py_ssize_t h = 0; h < nhead; h++) {
        if (hh != NULL)
            row_const(&row, head[h], hh[h]);
        else if (row_obj(&row, head[h]) < 0)
            goto fail;
    }
    Py_ssize_t pos = 0, j = 0;
    PyObject *k, *v;
    for (;;) {
        if (items == NULL) {
            if (!PyDict_Next(m, &pos, &k, &v))
                break;
        }
        else {
            if (j >= n)
                break;
            PyObject *it = PyList_GET_ITEM(items, j);
            if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 2) {
                PyErr_SetString(PyExc_TypeError, "state_key: a mapping's items are not pairs");
                goto fail;
            }
            k = PyTuple_GET_ITEM(it, 0);
            v = PyTuple_GET_ITEM(it, 1);
        }
        if (j >= n)
            break;
        j++;
        if (kept >= 0) {
            int in = PySet_Contains(keep, k);
            if (in < 0)
                goto fail;
            if (!in)
                continue;
        }
        if (row_pair(w, &row, k, v, ref_keys) < 0)
            goto fail;
    }
    if (j != n || (items == NULL && n != PyDict_GET_SIZE(m))) {
        PyErr_SetString(PyExc_RuntimeError, "state_key: a dict changed size during the walk");
        goto fail;
    }
    Py_XDECREF(items);
    return emit_row(w, &row);
fail:
    row_abort(&row);
fail0:
    Py_XDECREF(items);
    return -1;
}

static int
walk_special(Walk *w, PyObject *o, PyObject **refobj)
{
    if (*refobj == NULL) {
        *refobj = PyCFunction_New(&ref_def, (PyObject *)w);
        if (*refobj == NULL)
            return -1;
    }
    PyObject *rows = PyObject_CallFunctionObjArgs(cb_special, o, *refobj, NULL);
    if (rows == NULL)
        return -1;
    PyObject *seq = PySequence_Fast(rows, "special() must return a sequence of rows");
    Py_DECREF(rows);
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        Val v = {NULL, 0};
        if (as_is(PySequence_Fast_GET_ITEM(seq, i), w->hash, &v) < 0 || emit(w, v) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static int
walk_slots(Walk *w, PyObject *o, TypeInfo *ti)
{
    Py_ssize_t n = ti->nslots;
    Row row;
    if (row_init(&row, w->hash, n + 1) < 0)
        return -1;
    if (row_obj(&row, (PyObject *)ti->type) < 0)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = *(PyObject **)((char *)o + ti->offsets[i]);
        if (v == NULL) {
            PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%U'",
                         ti->type->tp_name, PyTuple_GET_ITEM(ti->names, i));
            goto fail;
        }
        Val x;
        Py_INCREF(v);
        int err = ref(w, v, w->hash, &x);
        Py_DECREF(v);
        if (err < 0)
            goto fail;
        row_val(&row, x);
    }
    if (emit_row(w, &row) < 0)
        return -1;
    if (!ti->has_dict)
        return 0;
    PyObject *d = NULL;
    if (ti->plain_dict) {  /* the __dict__ descriptor of object's subclasses */
        d = PyObject_GenericGetDict(o, NULL);
        if (d == NULL)
            return -1;
    }
    else if (_PyObject_LookupAttr(o, s_dict, &d) < 0)
        return -1;
    if (d == NULL)
        return 0;
    int truth = PyObject_IsTrue(d);
    int r = 0;
    if (truth < 0)
        r = -1;
    else if (truth)
        r = emit_pairs(w, &s_d, &h_d, 1, d, 0, NULL);
    Py_DECREF(d);
    return r;
fail:
    row_abort(&row);
    return -1;
}

/* A set's row: its values named (built, to be sorted as statekey sorts
 * them); with `pairs`, a dict's (key, value) pairs, each named; under `tag`. */
static int
walk_set(Walk *w, PyObject *o, PyObject *tag, Py_uhash_t htag, int pairs)
{
    PyObject *vals = PyList_New(0);
    if (vals == NULL)
        return -1;
    if (pairs) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(o, &pos, &k, &v)) {
            Val a = {NULL, 0}, b = {NULL, 0};
            Py_INCREF(k);
            Py_INCREF(v);
            int err = ref(w, k, 0, &a);
            if (err == 0)
                err = ref(w, v, 0, &b);
            Py_DECREF(k);
            Py_DECREF(v);
            PyObject *pair = err == 0 ? PyTuple_Pack(2, a.o, b.o) : NULL;
            Py_XDECREF(a.o);
            Py_XDECREF(b.o);
            if (pair == NULL || PyList_Append(vals, pair) < 0) {
                Py_XDECREF(pair);
                goto fail;
            }
            Py_DECREF(pair);
        }
    }
    else {
        PyObject *it = PyObject_GetIter(o);
        if (it == NULL)
            goto fail;
        PyObject *x;
        while ((x = PyIter_Next(it)) != NULL) {
            Val v = {NULL, 0};
            int err = ref(w, x, 0, &v);
            Py_DECREF(x);
            if (err < 0 || PyList_Append(vals, v.o) < 0) {
                Py_XDECREF(v.o);
                Py_DECREF(it);
                goto fail;
            }
            Py_DECREF(v.o);
        }
        Py_DECREF(it);
    }
    if (PyErr_Occurred())
        goto fail;
    if (PyList_Sort(vals) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError))
            goto fail;
        PyErr_Clear();
        PyObject *sort = PyObject_GetAttr(vals, s_sort);
        if (sort == NULL)
            goto fail;
        PyObject *kw = Py_BuildValue("{OO}", s_key, repr_func);
        PyObject *args = PyTuple_New(0);
        PyObject *res = (kw && args) ? PyObject_Call(sort, args, kw) : NULL;
        Py_XDECREF(kw);
        Py_XDECREF(args);
        Py_DECREF(sort);
        if (res == NULL)
            goto fail;
        Py_DECREF(res);
    }
    Py_ssize_t n = PyList_GET_SIZE(vals);
    Row row;
    if (row_init(&row, w->hash, n + 1) < 0)
        goto fail;
    row_const(&row, tag, htag);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (row_obj(&row, PyList_GET_ITEM(vals, i)) < 0) {
            row_abort(&row);
            goto fail;
        }
    }
    Py_DECREF(vals);
    return emit_row(w, &row);
fail:
    Py_DECREF(vals);
    return -1;
}

/* The names of the locals of a frame of `code` suspended at `lasti` that are
 * live (statekey._live_locals, cached per code and offset): a borrowed
 * reference to a frozenset, or to None when every local is kept.  The cache
 * is keyed by the code object's address and the offset (hashing a code object
 * rehashes its constants every time); it holds the code objects it names, so
 * no address is reused while it is there, and is emptied by _setup(). */
typedef struct {
    PyObject *code; /* strong reference; NULL: empty slot */
    int lasti;
    PyObject *names; /* strong reference */
} LiveSlot;

static LiveSlot *lv_slots;
static Py_ssize_t lv_cap, lv_len;

static void
live_cache_clear(void)
{
    for (Py_ssize_t i = 0; i < lv_cap; i++) {
        Py_XDECREF(lv_slots[i].code);
        Py_XDECREF(lv_slots[i].names);
    }
    PyMem_Free(lv_slots);
    lv_slots = NULL;
    lv_cap = lv_len = 0;
}

static LiveSlot *
live_slot(LiveSlot *slots, Py_ssize_t cap, PyObject *code, int lasti)
{
    size_t mask = (size_t)cap - 1;
    size_t i = (ptr_hash(code) ^ ((size_t)lasti * (size_t)0x9e3779b97f4a7c15ULL)) & mask;
    while (slots[i].code != NULL && (slots[i].code != code || slots[i].lasti != lasti))
        i = (i + 1) & mask;
    return &slots[i];
}

static PyObject *
live_names(PyObject *code, int lasti)
{
    if (lv_cap > 0) {
        LiveSlot *sl = live_slot(lv_slots, lv_cap, code, lasti);
        if (sl->code != NULL)
            return sl->names;
    }
    PyObject *py_lasti = PyLong_FromLong(lasti);
    if (py_lasti == NULL)
        return NULL;
    PyObject *names = PyObject_CallFunctionObjArgs(cb_live, code, py_lasti, NULL);
    Py_DECREF(py_lasti);
    if (names == NULL)
        return NULL;
    if (2 * (lv_len + 1) > lv_cap) {
        Py_ssize_t ncap = lv_cap ? 2 * lv_cap : 1024;
        LiveSlot *nt = PyMem_Calloc((size_t)ncap, sizeof(LiveSlot));
        if (nt == NULL) {
            Py_DECREF(names);
            PyErr_NoMemory();
            return NULL;
        }
        for (Py_ssize_t i = 0; i < lv_cap; i++)
            if (lv_slots[i].code != NULL)
                *live_slot(nt, ncap, lv_slots[i].code, lv_slots[i].lasti) = lv_slots[i];
        PyMem_Free(lv_slots);
        lv_slots = nt;
        lv_cap = ncap;
    }
    LiveSlot *sl = live_slot(lv_slots, lv_cap, code, lasti);
    sl->code = Py_NewRef(code);
    sl->lasti = lasti;
    sl->names = names; /* the cache holds it */
    lv_len++;
    return names;
}

#ifdef SK_FAST_LOCALS
/* walk_frame() for 3.11: the same row, the live locals in localsplus order
 * (statekey._rows sorts f_locals the same way). */
static int
walk_frame_fast(Walk *w, PyObject *o, int coro)
{
    int8_t state;
    _PyInterpreterFrame *f;
    if (coro) {
        state = ((PyCoroObject *)o)->cr_frame_state;
        f = (_PyInterpreterFrame *)((PyCoroObject *)o)->cr_iframe;
    }
    else {
        state = ((PyGenObject *)o)->gi_frame_state;
        f = (_PyInterpreterFrame *)((PyGenObject *)o)->gi_iframe;
    }
    if (state >= FRAME_COMPLETED) {
        Val v = {NULL, h_finished_row};
        if (!w->hash)
            v.o = Py_NewRef(t_finished);
        return emit(w, v);
    }
    PyCodeObject *co = f->f_code;
    int lasti = _PyInterpreterFrame_LASTI(f);
    lasti = lasti < 0 ? -1 : lasti * (int)sizeof(_Py_CODEUNIT); /* as PyFrame_GetLasti */
    PyObject *keep = NULL;
    if (cb_live != NULL) {
        keep = live_names((PyObject *)co, lasti);
        if (keep == NULL)
            return -1;
        if (keep == Py_None)
            keep = NULL;
    }
    /* the locals f_locals would show, in localsplus order, the live ones only */
    int n = co->co_nlocalsplus;
    PyObject *vals[256];
    PyObject *names[256];
    if (n > 256) {
        PyErr_SetString(PyExc_TypeError, "state_key: a frame with more than 256 locals");
        return -1;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        _PyLocals_Kind kind = _PyLocals_GetKind(co->co_localspluskinds, i);
        if ((kind & CO_FAST_FREE) && !(co->co_flags & CO_OPTIMIZED))
            continue;
        PyObject *v = f->localsplus[i];
        if (v == NULL)
            continue;
        if ((kind & (CO_FAST_FREE | CO_FAST_CELL)) && PyCell_Check(v)) {
            v = PyCell_GET(v);
            if (v == NULL)
                continue;
        }
        PyObject *name = PyTuple_GET_ITEM(co->co_localsplusnames, i);
        if (keep != NULL) {
            int in = PySet_Contains(keep, name);
            if (in < 0)
                return -1;
            if (!in)
                continue;
        }
        names[m] = name;
        vals[m] = v;
        m++;
    }
    for (int j = 0; j < m; j++) {  /* ref() may run Python code: hold them */
        Py_INCREF(names[j]);
        Py_INCREF(vals[j]);
    }
    int r = -1;
    PyObject *sub = awaited(o, coro);
    PyObject *py_lasti = sub ? PyLong_FromLong(lasti) : NULL;
    /* the value stack below the awaited object: a for loop's iterator, a
     * partial expression (statekey._stack_items) */
    PyObject *stk = NULL;
    Val rsub = {NULL, 0};
    if (sub != NULL) {
        int k = 0;
        for (int i = n; i < f->stacktop; i++) {
            PyObject *v = f->localsplus[i];
            if (v != NULL && v != sub)
                k++;
        }
        if (k > 0 && (stk = PyTuple_New(k)) != NULL) {
            k = 0;
            for (int i = n; i < f->stacktop; i++) {
                PyObject *v = f->localsplus[i];
                if (v != NULL && v != sub)
                    PyTuple_SET_ITEM(stk, k++, Py_NewRef(v));
            }
        }
        else if (k > 0)
            goto done;
    }
    Row row;
    if (py_lasti == NULL || ref(w, sub, w->hash, &rsub) < 0 ||
            row_init(&row, w->hash, 3 + m + (stk != NULL)) < 0)
        goto done;
    if (w->hash) {
        Py_hash_t hc = cached_hash((PyObject *)co);
        if (hc == -1) {
            row_abort(&row);
            goto done;
        }
        row_const(&row, (PyObject *)co, (Py_uhash_t)hc);
        row_const(&row, py_lasti, int_hash(lasti));
        row_val(&row, rsub);
    }
    else {
        row_const(&row, (PyObject *)co, 0);
        row_const(&row, py_lasti, 0);
        row_val(&row, rsub);
    }
    rsub.o = NULL; /* the row holds it */
    for (int j = 0; j < m; j++) {
        if (row_pair(w, &row, names[j], vals[j], 0) < 0) {
            row_abort(&row);
            goto done;
        }
    }
    if (stk != NULL && row_pair(w, &row, s_stack, stk, 0) < 0) {
        row_abort(&row);
        goto done;
    }
    r = emit_row(w, &row);
done:
    Py_XDECREF(stk);
    Py_XDECREF(rsub.o);
    Py_XDECREF(sub);
    Py_XDECREF(py_lasti);
    for (int j = 0; j < m; j++) {
        Py_DECREF(names[j]);
        Py_DECREF(vals[j]);
    }
    return r;
}
#endif

#ifdef SK_FAST_LOCALS
#define walk_frame walk_frame_fast
#else
/* A suspended frame's row through f_locals (Pythons other than 3.11). */
static int
walk_frame(Walk *w, PyObject *o, int coro)
{
    PyObject *f = PyObject_GetAttr(o, coro ? s_cr_frame : s_gi_frame);
    if (f == NULL)
        return -1;
    if (f == Py_None) {
        Py_DECREF(f);
        Val v = {NULL, h_finished_row};
        if (!w->hash)
            v.o = Py_NewRef(t_finished);
        return emit(w, v);
    }
    if (!PyFrame_Check(f)) {
        Py_DECREF(f);
        PyErr_SetString(PyExc_TypeError, "state_key: a coroutine's frame is not a frame");
        return -1;
    }
    PyFrameObject *fr = (PyFrameObject *)f;
    PyObject *loc = PyFrame_GetLocals(fr);
    if (loc == NULL || PyList_Append(w->keep, loc) < 0) {
        Py_XDECREF(loc);
        Py_DECREF(f);
        return -1;
    }
    Py_DECREF(loc); /* w->keep holds it */
    PyObject *sub = PyObject_GetAttr(o, coro ? s_cr_await : s_gi_yieldfrom);
    if (sub == NULL) {
        Py_DECREF(f);
        return -1;
    }
    PyObject *code = (PyObject *)PyFrame_GetCode(fr);
    PyObject *lasti = PyLong_FromLong(PyFrame_GetLasti(fr));
    Val rsub = {NULL, 0};
    int r = -1;
    PyObject *keep = NULL; /* the names of the live locals (statekey._live_locals) */
    if (lasti != NULL && cb_live != NULL) {
        keep = live_names(code, PyFrame_GetLasti(fr));
        if (keep == NULL) {
            Py_DECREF(f);
            Py_DECREF(sub);
            Py_DECREF(code);
            Py_DECREF(lasti);
            return -1;
        }
        if (keep == Py_None)
            keep = NULL; /* every local */
    }
    if (lasti != NULL && ref(w, sub, w->hash, &rsub) == 0) {
        PyObject *head[3] = {code, lasti, rsub.o};
        if (w->hash) {
            Py_hash_t hc = cached_hash(code);
            if (hc != -1) {
                Py_uhash_t hh[3] = {(Py_uhash_t)hc, int_hash(PyFrame_GetLasti(fr)), rsub.h};
                r = emit_pairs(w, head, hh, 3, loc, 0, keep);
            }
        }
        else {
            r = emit_pairs(w, head, NULL, 3, loc, 0, keep);
        }
    }
    Py_DECREF(f);
    Py_DECREF(sub);
    Py_DECREF(code);
    Py_XDECREF(lasti);
    Py_XDECREF(rsub.o);
    return r;
}

#endif

static int
walk_one(Walk *w, PyObject *o, PyObject **refobj)
{
    TypeInfo *ti = type_info(Py_TYPE(o));
    if (ti == NULL)
        return -1;
    if (ti->wkind == W_UNKNOWN && plan(ti) < 0)
        return -1;
    switch (ti->wkind) {
    case W_SLOTS:
        return walk_slots(w, o, ti);
    case W_LIST: {
        Py_ssize_t n = PyList_GET_SIZE(o);
        Row row;
        if (row_init(&row, w->hash, n + 1) < 0)
            return -1;
        row_const(&row, s_l, h_l);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i >= PyList_GET_SIZE(o)) {
                row_abort(&row);
                PyErr_SetString(PyExc_RuntimeError, "state_key: a list changed during the walk");
                return -1;
            }
            PyObject *v = Py_NewRef(PyList_GET_ITEM(o, i));
            Val x;
            int err = ref(w, v, w->hash, &x);
            Py_DECREF(v);
            if (err < 0) {
                row_abort(&row);
                return -1;
            }
            row_val(&row, x);
        }
        return emit_row(w, &row);
    }
    case W_DICT:
        return emit_pairs(w, &s_d, &h_d, 1, o, 1, NULL);
    case W_SET:
        return walk_set(w, o, s_s, h_s, 0);
    case W_ULIST:
        return walk_set(w, o, s_u, h_u, 0);
    case W_UDICT:
        return walk_set(w, o, s_u, h_u, 1);
    case W_CORO:
        return walk_frame(w, o, 1);
    case W_GEN:
        return walk_frame(w, o, 0);
    case W_CELL: {
        PyObject *v = PyCell_GET(o);
        Row row;
        if (row_init(&row, w->hash, v ? 2 : 1) < 0)
            return -1;
        row_const(&row, s_c, h_c);
        if (v != NULL) {
            Val x;
            Py_INCREF(v);
            int err = ref(w, v, w->hash, &x);
            Py_DECREF(v);
            if (err < 0) {
                row_abort(&row);
                return -1;
            }
            row_val(&row, x);
        }
        return emit_row(w, &row);
    }
    case W_DICTOBJ: {
        PyObject *d = PyObject_GetAttr(o, s_dict);
        if (d == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
        }
        else if (PyDict_CheckExact(d)) {
            PyObject *head = (PyObject *)ti->type;
            int r = emit_pairs(w, &head, NULL, 1, d, 0, NULL);
            Py_DECREF(d);
            return r;
        }
        Py_XDECREF(d);
        return walk_special(w, o, refobj);
    }
    default:
        return walk_special(w, o, refobj);
    }
}

/* The walk from `tasks` (statekey._rows): rows built into w->out or hashed
 * into w->acc. */
static int
walk_tasks(Walk *w, PyObject *tasks)
{
    PyObject *refobj = NULL;
    PyObject *seq = PySequence_Fast(tasks, "state_key: tasks must be iterable");
    if (seq == NULL)
        return -1;
    Py_ssize_t nt = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < nt; i++) {
        PyObject *task = PySequence_Fast_GET_ITEM(seq, i);
        Row row;
        if (row_init(&row, w->hash, 5) < 0)
            goto fail;
        for (int j = 0; j < TF_N; j++) {
            PyObject *v = task_field(task, j);
            int err = v == NULL ? -1 : 0;
            if (v != NULL && j < 2) {
                err = row_obj(&row, v);
            }
            else if (v != NULL) {
                Val x;
                err = ref(w, v, w->hash, &x);
                if (err == 0)
                    row_val(&row, x);
            }
            Py_XDECREF(v);
            if (err < 0) {
                row_abort(&row);
                goto fail;
            }
        }
        if (emit_row(w, &row) < 0)
            goto fail;
    }
    while (w->ntodo > 0) {
        PyObject *o = w->todo[--w->ntodo];
        if (walk_one(w, o, &refobj) < 0)
            goto fail;
    }
    Py_DECREF(seq);
    Py_XDECREF(refobj);
    return 0;
fail:
    Py_DECREF(seq);
    Py_XDECREF(refobj);
    return -1;
}

static int
check_setup(void)
{
    if (cb_special == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pervma.sched._statekey: _setup() not called");
        return -1;
    }
    return 0;
}

static Walk *
walk_new(int hash)
{
    Walk *w = PyObject_New(Walk, &Walk_Type);
    if (w == NULL)
        return NULL;
    w->keys = w->todo = NULL;
    w->nums = NULL;
    w->cap = w->len = w->ntodo = w->captodo = 0;
    w->hash = hash;
    w->acc = XXPRIME_5;
    w->nrows = 0;
    w->out = NULL;
    w->keep = PyList_New(0);
    if (w->keep == NULL || (!hash && (w->out = PyList_New(0)) == NULL)) {
        Py_DECREF(w);
        return NULL;
    }
    return w;
}

static PyObject *
sk_rows(PyObject *mod, PyObject *tasks)
{
    if (check_setup() < 0)
        return NULL;
    Walk *w = walk_new(0);
    if (w == NULL)
        return NULL;
    PyObject *out = NULL;
    if (walk_tasks(w, tasks) == 0)
        out = Py_NewRef(w->out);
    walk_clear(w);
    Py_DECREF(w);
    return out;
}

static PyObject *
sk_state_key(PyObject *mod, PyObject *tasks)
{
    if (!hash_ok) {
        PyObject *out = sk_rows(mod, tasks);
        if (out == NULL)
            return NULL;
        PyObject *tup = PyList_AsTuple(out);
        Py_DECREF(out);
        if (tup == NULL)
            return NULL;
        Py_hash_t h = PyObject_Hash(tup);
        Py_DECREF(tup);
        if (h == -1)
            return NULL;
        return PyLong_FromSsize_t(h);
    }
    if (check_setup() < 0)
        return NULL;
    Walk *w = walk_new(1);
    if (w == NULL)
        return NULL;
    PyObject *res = NULL;
    if (walk_tasks(w, tasks) == 0)
        res = PyLong_FromSsize_t((Py_hash_t)xx_end(w->acc, w->nrows));
    walk_clear(w);
    Py_DECREF(w);
    return res;
}

static PyObject *
sk_setup(PyObject *mod, PyObject *args)
{
    PyObject *special, *classify_, *slots_of, *task, *live = Py_None;
    if (!PyArg_ParseTuple(args, "OOOO|O:_setup", &special, &classify_, &slots_of, &task, &live))
        return NULL;
    if (!PyType_Check(task)) {
        PyErr_SetString(PyExc_TypeError, "_setup: the task type must be a class");
        return NULL;
    }
    Py_XSETREF(cb_special, Py_NewRef(special));
    Py_XSETREF(cb_classify, Py_NewRef(classify_));
    Py_XSETREF(cb_slots_of, Py_NewRef(slots_of));
    Py_XSETREF(task_type, Py_NewRef(task));
    find_task_offsets();
    if (live == Py_None) {
        Py_CLEAR(cb_live);
    }
    else {
        Py_XSETREF(cb_live, Py_NewRef(live));
    }
    live_cache_clear();
    Py_RETURN_NONE;
}

/* signature(task) -> tuple: (done, preempt_count, then the qualified name and
 * offset of each suspended frame from the body down): check.symmetry's order
 * of interchangeable threads. */
static PyObject *
sk_signature(PyObject *mod, PyObject *task)
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    PyObject *done = task_field(task, TF_DONE);
    PyObject *pc = done ? task_field(task, TF_PREEMPT) : NULL;
    PyObject *c = pc ? task_field(task, TF_CORO) : NULL;
    if (c == NULL || PyList_Append(out, done) < 0 || PyList_Append(out, pc) < 0)
        goto fail;
    Py_CLEAR(done);
    Py_CLEAR(pc);
    while (c != NULL && c != Py_None) {
        int coro = PyCoro_CheckExact(c);
        if (!coro && !PyGen_CheckExact(c))
            break; /* an awaitable that is no coroutine (an Op): the chain ends */
        PyObject *f = PyObject_GetAttr(c, coro ? s_cr_frame : s_gi_frame);
        if (f == NULL)
            goto fail;
        if (f == Py_None) {
            Py_DECREF(f);
            break;
        }
        PyFrameObject *fr = (PyFrameObject *)f;
        PyCodeObject *code = PyFrame_GetCode(fr);
        PyObject *lasti = PyLong_FromLong(PyFrame_GetLasti(fr));
        int err = lasti == NULL || PyList_Append(out, code->co_qualname) < 0 ||
                  PyList_Append(out, lasti) < 0;
        Py_DECREF(code);
        Py_XDECREF(lasti);
        Py_DECREF(f);
        if (err)
            goto fail;
        PyObject *sub = awaited(c, coro);
        Py_DECREF(c);
        c = sub;
        if (c == NULL)
            goto fail;
    }
    Py_XDECREF(c);
    PyObject *t = PyList_AsTuple(out);
    Py_DECREF(out);
    return t;
fail:
    Py_XDECREF(done);
    Py_XDECREF(pc);
    Py_XDECREF(c);
    Py_DECREF(out);
    return NULL;
}

static PyObject *
sk_hashes_rows(PyObject *mod, PyObject *noargs)
{
    return PyBool_FromLong(hash_ok);
}

static int hash_ok_checked;

/* For tests: state_key builds its rows (False) or hashes them as it walks
 * (True, only if the interpreter's tuple hash is the one reproduced here). */
static PyObject *
sk_set_hashing(PyObject *mod, PyObject *flag)
{
    int on = PyObject_IsTrue(flag);
    if (on < 0)
        return NULL;
    hash_ok = on && hash_ok_checked;
    Py_RETURN_NONE;
}

static PyMethodDef sk_methods[] = {
    {"state_key", sk_state_key, METH_O,
     "state_key(tasks) -> int: statekey.state_key computed in C (same value)."},
    {"rows", sk_rows, METH_O, "rows(tasks) -> list: the rows state_key hashes."},
    {"signature", sk_signature, METH_O,
     "signature(task) -> tuple: check.symmetry._signature computed in C (same value)."},
    {"hashes_rows", sk_hashes_rows, METH_NOARGS,
     "hashes_rows() -> bool: state_key hashes rows without making them (the interpreter's "
     "tuple hash is the one this module reproduces)."},
    {"_set_hashing", sk_set_hashing, METH_O,
     "_set_hashing(flag): tests choose how state_key hashes (see hashes_rows)."},
    {"_setup", sk_setup, METH_VARARGS,
     "_setup(special, classify, slots_of, task_type[, live]): the Python side's callbacks."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef sk_module = {
    PyModuleDef_HEAD_INIT, "pervma.sched._statekey",
    "The walk of pervma.sched.statekey.state_key in C.", -1, sk_methods,
};

#define INTERN(var, text)                                     \
    do {                                                      \
        if ((var = PyUnicode_InternFromString(text)) == NULL) \
            return NULL;                                      \
    } while (0)

#define HASH(var, obj)                         \
    do {                                       \
        Py_hash_t h_ = PyObject_Hash(obj);     \
        if (h_ == -1)                          \
            return NULL;                       \
        var = (Py_uhash_t)h_;                  \
    } while (0)

/* Does xx_lane/xx_end give this interpreter's hash of a tuple? */
static int
check_tuple_hash(void)
{
    PyObject *t = Py_BuildValue("(s(ni)()(Os))", "#", (Py_ssize_t)7, -1, Py_None, "x");
    if (t == NULL)
        return -1;
    Py_uhash_t acc = XXPRIME_5;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        PyObject *x = PyTuple_GET_ITEM(t, i);
        Py_uhash_t lane;
        if (PyTuple_Check(x)) {
            Py_uhash_t a = XXPRIME_5;
            for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(x); j++) {
                Py_hash_t h = PyObject_Hash(PyTuple_GET_ITEM(x, j));
                if (h == -1) {
                    Py_DECREF(t);
                    return -1;
                }
                a = xx_lane(a, (Py_uhash_t)h);
            }
            lane = xx_end(a, PyTuple_GET_SIZE(x));
        }
        else {
            Py_hash_t h = PyObject_Hash(x);
            if (h == -1) {
                Py_DECREF(t);
                return -1;
            }
            lane = (Py_uhash_t)h;
        }
        acc = xx_lane(acc, lane);
    }
    Py_hash_t want = PyObject_Hash(t);
    Py_DECREF(t);
    if (want == -1)
        return -1;
    return (Py_hash_t)xx_end(acc, 4) == want && int_hash(-1) == (Py_uhash_t)(Py_hash_t)-2 &&
           int_hash(12345) == 12345;
}

PyMODINIT_FUNC
PyInit__statekey(void)
{
    if (PyType_Ready(&Walk_Type) < 0)
        return NULL;
    INTERN(s_eq, "=");
    INTERN(s_at, "@");
    INTERN(s_atm, "@m");
    INTERN(s_hash, "#");
    INTERN(s_l, "l");
    INTERN(s_d, "d");
    INTERN(s_s, "s");
    INTERN(s_c, "c");
    INTERN(s_finished, "finished");
    INTERN(s_u, "u");
    INTERN(s_unordered, "__statekey_unordered__");
    INTERN(s_qualname, "__qualname__");
    INTERN(s_name, "__name__");
    INTERN(s_dict, "__dict__");
    INTERN(s_cr_frame, "cr_frame");
    INTERN(s_cr_await, "cr_await");
    INTERN(s_gi_frame, "gi_frame");
    INTERN(s_gi_yieldfrom, "gi_yieldfrom");
    INTERN(s_stack, "<stack>");
    INTERN(s_done, "done");
    INTERN(s_preempt_count, "preempt_count");
    INTERN(s_model, "model");
    INTERN(s_coro, "coro");
    INTERN(s_result, "result");
    INTERN(s_sort, "sort");
    INTERN(s_key, "key");
    INTERN(s_repr, "repr");
    coro_await_get = getset_of(&PyCoro_Type, "cr_await");
    gen_yf_get = getset_of(&PyGen_Type, "gi_yieldfrom");
    {
        PyObject *ns = PyDict_New();
        PyObject *probe = ns ? PyObject_CallFunction((PyObject *)&PyType_Type, "s()O",
                                                     "_SkProbe", ns) : NULL;
        Py_XDECREF(ns);
        if (probe == NULL)
            return NULL;
        PyObject *dd = _PyType_Lookup((PyTypeObject *)probe, s_dict);
        if (dd != NULL && Py_IS_TYPE(dd, &PyGetSetDescr_Type))
            std_dict_get = ((PyGetSetDescrObject *)dd)->d_getset->get;
        Py_DECREF(probe);
    }
    if ((t_finished = PyTuple_Pack(1, s_finished)) == NULL)
        return NULL;
    HASH(h_eq, s_eq);
    HASH(h_at, s_at);
    HASH(h_atm, s_atm);
    HASH(h_hash, s_hash);
    HASH(h_l, s_l);
    HASH(h_d, s_d);
    HASH(h_s, s_s);
    HASH(h_c, s_c);
    HASH(h_u, s_u);
    HASH(h_finished_row, t_finished);
    repr_func = PyDict_GetItemWithError(PyEval_GetBuiltins(), s_repr);
    if (repr_func == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "no builtins.repr");
        return NULL;
    }
    Py_INCREF(repr_func);
    hc_keys = PyMem_Calloc(2 * HCACHE_MAX, sizeof(PyObject *));
    hc_vals = PyMem_Calloc(2 * HCACHE_MAX, sizeof(Py_hash_t));
    if (hc_keys == NULL || hc_vals == NULL)
        return PyErr_NoMemory();
    hash_ok = hash_ok_checked = check_tuple_hash();
    if (hash_ok < 0)
        return NULL;
    return PyModule_Create(&sk_module);
}
