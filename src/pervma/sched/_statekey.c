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

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

/* How ref() names a value of a type (statekey._classify). */
enum { R_OBJECT = 0, R_TUPLE = 1, R_NAMED = 2, R_METHOD = 3, R_ENUM = 4 };
/* How the walk writes the rows of an object of a type. */
enum { W_UNKNOWN = 0, W_LIST, W_DICT, W_SET, W_CORO, W_GEN, W_CELL, W_SLOTS, W_DICTOBJ,
       W_SPECIAL };

typedef struct {
    PyTypeObject *type; /* strong reference; NULL: empty slot */
    int rkind;          /* -1: not classified yet */
    int wkind;          /* W_UNKNOWN: not planned yet */
    int has_dict;       /* W_SLOTS: instances may carry a __dict__ too */
    Py_ssize_t nslots;
    Py_ssize_t *offsets; /* W_SLOTS: offset of each slot, in statekey._slots_of order */
    PyObject *names;     /* W_SLOTS: the slot names (for AttributeError messages) */
} TypeInfo;

/* The per-type cache: open addressing on the type's address, never shrunk
 * (types are few and live as long as the program). */
static TypeInfo *tcache;
static Py_ssize_t tcache_cap, tcache_len;

/* Set by _setup(). */
static PyObject *cb_special;  /* special(o, ref) -> sequence of rows */
static PyObject *cb_classify; /* _classify(t) -> int */
static PyObject *cb_slots_of; /* _slots_of(t) -> tuple[str, ...] | None */
static PyObject *task_type;   /* pervma.sched.task.Task */

static PyObject *s_eq, *s_at, *s_atm, *s_hash, *s_l, *s_d, *s_s, *s_c, *s_finished;
static PyObject *s_qualname, *s_name, *s_dict, *s_cr_frame, *s_cr_await, *s_gi_frame,
    *s_gi_yieldfrom, *s_done, *s_preempt_count, *s_model, *s_coro, *s_result, *s_sort,
    *s_key, *s_repr;
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

static TypeInfo *
tcache_slot(PyTypeObject *t)
{
    size_t mask = (size_t)tcache_cap - 1;
    size_t i = ptr_hash(t) & mask;
    while (tcache[i].type != NULL && tcache[i].type != t)
        i = (i + 1) & mask;
    return &tcache[i];
}

static TypeInfo *
type_info(PyTypeObject *t)
{
    if (tcache_cap == 0 || 2 * (tcache_len + 1) > tcache_cap) {
        Py_ssize_t ocap = tcache_cap;
        TypeInfo *old = tcache;
        Py_ssize_t ncap = ocap ? 2 * ocap : 256;
        TypeInfo *nt = PyMem_Calloc((size_t)ncap, sizeof(TypeInfo));
        if (nt == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        tcache = nt;
        tcache_cap = ncap;
        for (Py_ssize_t i = 0; i < ocap; i++)
            if (old[i].type != NULL)
                *tcache_slot(old[i].type) = old[i];
        PyMem_Free(old);
    }
    TypeInfo *ti = tcache_slot(t);
    if (ti->type == NULL) {
        Py_INCREF(t);
        ti->type = t;
        ti->rkind = -1;
        ti->wkind = W_UNKNOWN;
        tcache_len++;
    }
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
    ti->wkind = W_SLOTS;
    return 0;
slow:
    PyMem_Free(offs);
    Py_DECREF(names);
    return 0;
}

/* One walk. */
typedef struct {
    PyObject_HEAD
    /* the table of named objects: address -> ("#", n), objects owned */
    PyObject **keys;
    PyObject **vals;
    Py_ssize_t cap, len;
    PyObject **todo; /* borrowed: the table owns them */
    Py_ssize_t ntodo, captodo;
    PyObject *keep; /* list: frame locals made during the walk */
} Walk;

static void
walk_clear(Walk *w)
{
    for (Py_ssize_t i = 0; i < w->cap; i++) {
        if (w->keys && w->keys[i] != NULL) {
            Py_DECREF(w->keys[i]);
            Py_DECREF(w->vals[i]);
            w->keys[i] = NULL;
        }
    }
    PyMem_Free(w->keys);
    PyMem_Free(w->vals);
    PyMem_Free(w->todo);
    w->keys = w->vals = w->todo = NULL;
    w->cap = w->len = w->ntodo = w->captodo = 0;
    Py_CLEAR(w->keep);
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
    PyObject **ok = w->keys, **ov = w->vals;
    PyObject **nk = PyMem_Calloc((size_t)ncap, sizeof(PyObject *));
    PyObject **nv = PyMem_Calloc((size_t)ncap, sizeof(PyObject *));
    if (nk == NULL || nv == NULL) {
        PyMem_Free(nk);
        PyMem_Free(nv);
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
        nv[j] = ov[i];
    }
    PyMem_Free(ok);
    PyMem_Free(ov);
    w->keys = nk;
    w->vals = nv;
    w->cap = ncap;
    return 0;
}

static PyObject *ref(Walk *w, PyObject *o);

/* ("@", name): a function, class, code object or module, by name. */
static PyObject *
named(PyObject *o)
{
    PyObject *q = PyObject_GetAttr(o, s_qualname);
    if (q == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
    }
    else {
        int truth = PyObject_IsTrue(q);
        if (truth < 0) {
            Py_DECREF(q);
            return NULL;
        }
        if (!truth)
            Py_CLEAR(q);
    }
    if (q == NULL) {
        q = PyObject_GetAttr(o, s_name);
        if (q == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return NULL;
            PyErr_Clear();
            q = PyObject_GetAttr((PyObject *)Py_TYPE(o), s_name);
            if (q == NULL)
                return NULL;
        }
    }
    PyObject *r = PyTuple_Pack(2, s_at, q);
    Py_DECREF(q);
    return r;
}

static inline int
is_atom(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    return t == &PyLong_Type || t == &PyUnicode_Type || o == Py_None || t == &PyBool_Type ||
           t == &PyBytes_Type || t == &PyFloat_Type || t == &PyComplex_Type ||
           t == &PyRange_Type;
}

/* A new object met: number it ("#", n), keep it, walk it later. */
static PyObject *
name_new(Walk *w, PyObject *o, size_t slot)
{
    PyObject *n = PyLong_FromSsize_t(w->len);
    if (n == NULL)
        return NULL;
    PyObject *v = PyTuple_Pack(2, s_hash, n);
    Py_DECREF(n);
    if (v == NULL)
        return NULL;
    if (w->ntodo == w->captodo) {
        Py_ssize_t nc = w->captodo ? 2 * w->captodo : 256;
        PyObject **nt = PyMem_Realloc(w->todo, sizeof(PyObject *) * (size_t)nc);
        if (nt == NULL) {
            Py_DECREF(v);
            PyErr_NoMemory();
            return NULL;
        }
        w->todo = nt;
        w->captodo = nc;
    }
    w->keys[slot] = Py_NewRef(o);
    w->vals[slot] = v;
    w->len++;
    w->todo[w->ntodo++] = o;
    return Py_NewRef(v);
}

/* statekey's ref(): how a row names a value. */
static PyObject *
ref(Walk *w, PyObject *o)
{
    if (is_atom(o))
        return Py_NewRef(o);
    TypeInfo *ti = type_info(Py_TYPE(o));
    if (ti == NULL)
        return NULL;
    if (ti->rkind < 0 && classify(ti) < 0)
        return NULL;
    switch (ti->rkind) {
    case R_TUPLE: {
        Py_ssize_t n = PyTuple_GET_SIZE(o);
        PyObject *r = PyTuple_New(n + 1);
        if (r == NULL)
            return NULL;
        PyTuple_SET_ITEM(r, 0, Py_NewRef(s_eq));
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *x = ref(w, PyTuple_GET_ITEM(o, i));
            if (x == NULL) {
                Py_DECREF(r);
                return NULL;
            }
            PyTuple_SET_ITEM(r, i + 1, x);
        }
        return r;
    }
    case R_NAMED:
        return named(o);
    case R_METHOD: {
        PyObject *q = PyObject_GetAttr(PyMethod_GET_FUNCTION(o), s_qualname);
        if (q == NULL)
            return NULL;
        PyObject *s = ref(w, PyMethod_GET_SELF(o));
        if (s == NULL) {
            Py_DECREF(q);
            return NULL;
        }
        PyObject *r = PyTuple_Pack(3, s_atm, q, s);
        Py_DECREF(q);
        Py_DECREF(s);
        return r;
    }
    case R_ENUM:
        return Py_NewRef(o);
    default:
        break;
    }
    if (2 * (w->len + 1) > w->cap && table_grow(w) < 0)
        return NULL;
    size_t mask = (size_t)w->cap - 1;
    size_t i = ptr_hash(o) & mask;
    while (w->keys[i] != NULL) {
        if (w->keys[i] == o)
            return Py_NewRef(w->vals[i]);
        i = (i + 1) & mask;
    }
    return name_new(w, o, i);
}

static PyObject *
py_ref(PyObject *self, PyObject *o)
{
    return ref((Walk *)self, o);
}

static PyMethodDef ref_def = {"ref", py_ref, METH_O, "Name a value in the running walk."};

/* A list of (key, ref(value)) pairs (keys named too if ref_keys) of a
 * mapping, after `head` items: the row (*head, *pairs). */
static PyObject *
pairs_row(Walk *w, PyObject *head0, PyObject *head1, PyObject *head2, Py_ssize_t nhead,
          PyObject *m, int ref_keys)
{
    PyObject *items = NULL;
    Py_ssize_t n;
    if (PyDict_CheckExact(m)) {
        n = PyDict_GET_SIZE(m);
    }
    else {
        items = PyMapping_Items(m);
        if (items == NULL)
            return NULL;
        n = PyList_GET_SIZE(items);
    }
    PyObject *row = PyTuple_New(nhead + n);
    if (row == NULL)
        goto fail;
    PyObject *heads[3] = {head0, head1, head2};
    for (Py_ssize_t h = 0; h < nhead; h++)
        PyTuple_SET_ITEM(row, h, Py_NewRef(heads[h]));
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
        if (j >= n) {
            PyErr_SetString(PyExc_RuntimeError, "state_key: a dict changed size during the walk");
            goto fail;
        }
        Py_INCREF(k);
        Py_INCREF(v);
        PyObject *rk = ref_keys ? ref(w, k) : Py_NewRef(k);
        PyObject *rv = rk ? ref(w, v) : NULL;
        Py_DECREF(k);
        Py_DECREF(v);
        if (rv == NULL) {
            Py_XDECREF(rk);
            goto fail;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(rk);
            Py_DECREF(rv);
            goto fail;
        }
        PyTuple_SET_ITEM(pair, 0, rk);
        PyTuple_SET_ITEM(pair, 1, rv);
        PyTuple_SET_ITEM(row, nhead + j, pair);
        j++;
    }
    if (j != n) {
        PyErr_SetString(PyExc_RuntimeError, "state_key: a dict changed size during the walk");
        goto fail;
    }
    Py_XDECREF(items);
    return row;
fail:
    Py_XDECREF(row);
    Py_XDECREF(items);
    return NULL;
}

/* Append a new reference (stolen) to the rows; NULL passes an error on. */
static int
emit(PyObject *out, PyObject *row)
{
    if (row == NULL)
        return -1;
    int r = PyList_Append(out, row);
    Py_DECREF(row);
    return r;
}

static int
walk_special(Walk *w, PyObject *out, PyObject *o, PyObject **refobj)
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
        if (PyList_Append(out, PySequence_Fast_GET_ITEM(seq, i)) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static int
walk_slots(Walk *w, PyObject *out, PyObject *o, TypeInfo *ti)
{
    Py_ssize_t n = ti->nslots;
    PyObject *row = PyTuple_New(n + 1);
    if (row == NULL)
        return -1;
    PyTuple_SET_ITEM(row, 0, Py_NewRef((PyObject *)ti->type));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = *(PyObject **)((char *)o + ti->offsets[i]);
        if (v == NULL) {
            PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%U'",
                         ti->type->tp_name, PyTuple_GET_ITEM(ti->names, i));
            Py_DECREF(row);
            return -1;
        }
        Py_INCREF(v);
        PyObject *x = ref(w, v);
        Py_DECREF(v);
        if (x == NULL) {
            Py_DECREF(row);
            return -1;
        }
        PyTuple_SET_ITEM(row, i + 1, x);
    }
    if (emit(out, row) < 0)
        return -1;
    if (!ti->has_dict)
        return 0;
    PyObject *d = PyObject_GetAttr(o, s_dict);
    if (d == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    int truth = PyObject_IsTrue(d);
    int r = 0;
    if (truth < 0)
        r = -1;
    else if (truth)
        r = emit(out, pairs_row(w, s_d, NULL, NULL, 1, d, 0));
    Py_DECREF(d);
    return r;
}

static int
walk_set(Walk *w, PyObject *out, PyObject *o)
{
    PyObject *vals = PyList_New(0);
    if (vals == NULL)
        return -1;
    PyObject *it = PyObject_GetIter(o);
    if (it == NULL)
        goto fail;
    PyObject *x;
    while ((x = PyIter_Next(it)) != NULL) {
        PyObject *r = ref(w, x);
        Py_DECREF(x);
        if (r == NULL || emit(vals, r) < 0) {
            Py_DECREF(it);
            goto fail;
        }
    }
    Py_DECREF(it);
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
    PyObject *row = PyTuple_New(n + 1);
    if (row == NULL)
        goto fail;
    PyTuple_SET_ITEM(row, 0, Py_NewRef(s_s));
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(row, i + 1, Py_NewRef(PyList_GET_ITEM(vals, i)));
    Py_DECREF(vals);
    return emit(out, row);
fail:
    Py_DECREF(vals);
    return -1;
}

static int
walk_frame(Walk *w, PyObject *out, PyObject *o, int coro)
{
    PyObject *f = PyObject_GetAttr(o, coro ? s_cr_frame : s_gi_frame);
    if (f == NULL)
        return -1;
    if (f == Py_None) {
        Py_DECREF(f);
        return emit(out, Py_NewRef(t_finished));
    }
    if (!PyFrame_Check(f)) {
        Py_DECREF(f);
        PyErr_SetString(PyExc_TypeError, "state_key: a coroutine's frame is not a frame");
        return -1;
    }
    PyFrameObject *fr = (PyFrameObject *)f;
    PyObject *loc = PyFrame_GetLocals(fr);
    if (loc == NULL || emit(w->keep, loc) < 0) {
        Py_DECREF(f);
        return -1;
    }
    PyObject *sub = PyObject_GetAttr(o, coro ? s_cr_await : s_gi_yieldfrom);
    if (sub == NULL) {
        Py_DECREF(f);
        return -1;
    }
    PyObject *code = (PyObject *)PyFrame_GetCode(fr);
    PyObject *lasti = PyLong_FromLong(PyFrame_GetLasti(fr));
    Py_DECREF(f);
    PyObject *rsub = lasti ? ref(w, sub) : NULL;
    Py_DECREF(sub);
    PyObject *row = rsub ? pairs_row(w, code, lasti, rsub, 3, loc, 0) : NULL;
    Py_DECREF(code);
    Py_XDECREF(lasti);
    Py_XDECREF(rsub);
    return emit(out, row);
}

static int
walk_one(Walk *w, PyObject *out, PyObject *o, PyObject **refobj)
{
    TypeInfo *ti = type_info(Py_TYPE(o));
    if (ti == NULL)
        return -1;
    if (ti->wkind == W_UNKNOWN && plan(ti) < 0)
        return -1;
    switch (ti->wkind) {
    case W_SLOTS:
        return walk_slots(w, out, o, ti);
    case W_LIST: {
        Py_ssize_t n = PyList_GET_SIZE(o);
        PyObject *row = PyTuple_New(n + 1);
        if (row == NULL)
            return -1;
        PyTuple_SET_ITEM(row, 0, Py_NewRef(s_l));
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i >= PyList_GET_SIZE(o)) {
                Py_DECREF(row);
                PyErr_SetString(PyExc_RuntimeError, "state_key: a list changed during the walk");
                return -1;
            }
            PyObject *v = Py_NewRef(PyList_GET_ITEM(o, i));
            PyObject *x = ref(w, v);
            Py_DECREF(v);
            if (x == NULL) {
                Py_DECREF(row);
                return -1;
            }
            PyTuple_SET_ITEM(row, i + 1, x);
        }
        return emit(out, row);
    }
    case W_DICT:
        return emit(out, pairs_row(w, s_d, NULL, NULL, 1, o, 1));
    case W_SET:
        return walk_set(w, out, o);
    case W_CORO:
        return walk_frame(w, out, o, 1);
    case W_GEN:
        return walk_frame(w, out, o, 0);
    case W_CELL: {
        PyObject *v = PyCell_GET(o);
        if (v == NULL)
            return emit(out, PyTuple_Pack(1, s_c));
        Py_INCREF(v);
        PyObject *x = ref(w, v);
        Py_DECREF(v);
        if (x == NULL)
            return -1;
        PyObject *row = PyTuple_Pack(2, s_c, x);
        Py_DECREF(x);
        return emit(out, row);
    }
    case W_DICTOBJ: {
        PyObject *d = PyObject_GetAttr(o, s_dict);
        if (d == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
        }
        else if (PyDict_CheckExact(d)) {
            int r = emit(out, pairs_row(w, (PyObject *)ti->type, NULL, NULL, 1, d, 0));
            Py_DECREF(d);
            return r;
        }
        Py_XDECREF(d);
        return walk_special(w, out, o, refobj);
    }
    default:
        return walk_special(w, out, o, refobj);
    }
}

/* The rows of the walk from `tasks` (statekey._rows). */
static PyObject *
walk_rows(Walk *w, PyObject *tasks)
{
    PyObject *out = PyList_New(0), *refobj = NULL, *seq = NULL;
    if (out == NULL)
        return NULL;
    seq = PySequence_Fast(tasks, "state_key: tasks must be iterable");
    if (seq == NULL)
        goto fail;
    Py_ssize_t nt = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < nt; i++) {
        PyObject *task = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *row = PyTuple_New(5);
        if (row == NULL)
            goto fail;
        PyObject *names[5] = {s_done, s_preempt_count, s_model, s_coro, s_result};
        for (int j = 0; j < 5; j++) {
            PyObject *v = PyObject_GetAttr(task, names[j]);
            if (v != NULL && j >= 2) {
                PyObject *x = ref(w, v);
                Py_DECREF(v);
                v = x;
            }
            if (v == NULL) {
                Py_DECREF(row);
                goto fail;
            }
            PyTuple_SET_ITEM(row, j, v);
        }
        if (emit(out, row) < 0)
            goto fail;
    }
    while (w->ntodo > 0) {
        PyObject *o = w->todo[--w->ntodo];
        if (walk_one(w, out, o, &refobj) < 0)
            goto fail;
    }
    Py_DECREF(seq);
    Py_XDECREF(refobj);
    return out;
fail:
    Py_XDECREF(seq);
    Py_XDECREF(refobj);
    Py_DECREF(out);
    return NULL;
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
walk_new(void)
{
    Walk *w = PyObject_New(Walk, &Walk_Type);
    if (w == NULL)
        return NULL;
    w->keys = w->vals = w->todo = NULL;
    w->cap = w->len = w->ntodo = w->captodo = 0;
    w->keep = PyList_New(0);
    if (w->keep == NULL) {
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
    Walk *w = walk_new();
    if (w == NULL)
        return NULL;
    PyObject *out = walk_rows(w, tasks);
    walk_clear(w);
    Py_DECREF(w);
    return out;
}

static PyObject *
sk_state_key(PyObject *mod, PyObject *tasks)
{
    PyObject *out = sk_rows(mod, tasks);
    if (out == NULL)
        return NULL;
    PyObject *tup = PyList_AsTuple(out);
    Py_DECREF(out);
    if (tup == NULL)
        return NULL;
    Py_hash_t h = PyObject_Hash(tup);
    Py_DECREF(tup);
    if (h == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(h);
}

static PyObject *
sk_setup(PyObject *mod, PyObject *args)
{
    PyObject *special, *classify_, *slots_of, *task;
    if (!PyArg_ParseTuple(args, "OOOO:_setup", &special, &classify_, &slots_of, &task))
        return NULL;
    if (!PyType_Check(task)) {
        PyErr_SetString(PyExc_TypeError, "_setup: the task type must be a class");
        return NULL;
    }
    Py_XSETREF(cb_special, Py_NewRef(special));
    Py_XSETREF(cb_classify, Py_NewRef(classify_));
    Py_XSETREF(cb_slots_of, Py_NewRef(slots_of));
    Py_XSETREF(task_type, Py_NewRef(task));
    Py_RETURN_NONE;
}

static PyMethodDef sk_methods[] = {
    {"state_key", sk_state_key, METH_O,
     "state_key(tasks) -> int: statekey.state_key computed in C (same value)."},
    {"rows", sk_rows, METH_O, "rows(tasks) -> list: the rows state_key hashes."},
    {"_setup", sk_setup, METH_VARARGS,
     "_setup(special, classify, slots_of, task_type): the Python side's callbacks."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef sk_module = {
    PyModuleDef_HEAD_INIT, "pervma.sched._statekey",
    "The walk of pervma.sched.statekey.state_key in C.", -1, sk_methods,
};

#define INTERN(var, text)                                  \
    do {                                                   \
        if ((var = PyUnicode_InternFromString(text)) == NULL) \
            return NULL;                                   \
    } while (0)

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
    INTERN(s_qualname, "__qualname__");
    INTERN(s_name, "__name__");
    INTERN(s_dict, "__dict__");
    INTERN(s_cr_frame, "cr_frame");
    INTERN(s_cr_await, "cr_await");
    INTERN(s_gi_frame, "gi_frame");
    INTERN(s_gi_yieldfrom, "gi_yieldfrom");
    INTERN(s_done, "done");
    INTERN(s_preempt_count, "preempt_count");
    INTERN(s_model, "model");
    INTERN(s_coro, "coro");
    INTERN(s_result, "result");
    INTERN(s_sort, "sort");
    INTERN(s_key, "key");
    INTERN(s_repr, "repr");
    if ((t_finished = PyTuple_Pack(1, s_finished)) == NULL)
        return NULL;
    repr_func = PyDict_GetItemWithError(PyEval_GetBuiltins(), s_repr);
    if (repr_func == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "no builtins.repr");
        return NULL;
    }
    Py_INCREF(repr_func);
    return PyModule_Create(&sk_module);
}
