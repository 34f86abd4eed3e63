/* pervma.check._races: the walk of dpor.summary_races in C.
 *
 * summary_pairs(events, end, summary, last, clocks) makes exactly the pairs
 * dpor.summary_pairs (the Python specification) makes, in the same order:
 * for every location of a summary, the events on it (newest first, through
 * each event's ``before`` link, from the last one before ``end``), and for
 * every access of the summary on it, each event of another thread that is
 * dependent with it (one of the two writes), not already before the
 * accessing thread's clock, and not before an event kept earlier for that
 * access: the pair (event index, thread), once.
 *
 * Objects are read through their attributes (tid, seq, acc, before, clock of
 * pervma.check.engine.Event); clocks are lists of ints.  Every error (a
 * missing attribute, a wrong type) propagates as the Python exception. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *s_tid, *s_seq, *s_acc, *s_before, *s_clock;

/* The int attribute ``name`` of ``o`` into *out; -1 with an exception set on error. */
static int
long_attr(PyObject *o, PyObject *name, long *out)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* clock[t] as a C long; -1 with an exception set on error. */
static inline long
clock_at(PyObject *clock, long t)
{
    if (!PyList_Check(clock) || t < 0 || t >= PyList_GET_SIZE(clock)) {
        PyErr_SetString(PyExc_IndexError, "a thread outside a clock");
        return -1;
    }
    return PyLong_AsLong(PyList_GET_ITEM(clock, t));
}

/* The index of the event on ``loc`` before event ``e`` (its ``before``). */
static int
before_of(PyObject *e, PyObject *loc, Py_ssize_t *out)
{
    PyObject *before = PyObject_GetAttr(e, s_before);
    if (before == NULL)
        return -1;
    PyObject *v = PyObject_GetItem(before, loc);
    Py_DECREF(before);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

typedef struct {
    long t;          /* the accessing thread */
    int w;           /* whether the access writes */
    PyObject *clock; /* its thread's clock (borrowed) */
    PyObject **kept; /* clocks of the events kept for it (borrowed) */
    Py_ssize_t nkept, cap;
} Access;

static PyObject *
summary_pairs(PyObject *self, PyObject *args)
{
    PyObject *events, *summary, *last, *clocks;
    Py_ssize_t end;
    if (!PyArg_ParseTuple(args, "O!nOO!O!:summary_pairs", &PyList_Type, &events, &end,
                          &summary, &PyDict_Type, &last, &PyList_Type, &clocks))
        return NULL;
    PyObject *pairs = PyList_New(0);
    PyObject *done = PySet_New(NULL);
    PyObject *by_loc = PyDict_New(); /* loc -> [(thread, writes)], in the summary's order */
    Access *acc = NULL;
    Py_ssize_t acc_cap = 0;
    if (pairs == NULL || done == NULL || by_loc == NULL)
        goto fail;
    PyObject *it = PyObject_GetIter(summary);
    if (it == NULL)
        goto fail;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            Py_DECREF(item);
            Py_DECREF(it);
            PyErr_SetString(PyExc_TypeError, "an access must be a (thread, location, writes) tuple");
            goto fail;
        }
        PyObject *l = PyTuple_GET_ITEM(item, 1);
        PyObject *tw = PyTuple_Pack(2, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 2));
        Py_DECREF(item);
        if (tw == NULL) {
            Py_DECREF(it);
            goto fail;
        }
        PyObject *lst = PyDict_GetItemWithError(by_loc, l);
        int bad;
        if (lst == NULL) {
            bad = PyErr_Occurred() != NULL;
            if (!bad) {
                lst = PyList_New(0);
                bad = lst == NULL || PyDict_SetItem(by_loc, l, lst) < 0;
                Py_XDECREF(lst); /* the dict holds it */
            }
        } else {
            bad = 0;
        }
        bad = bad || PyList_Append(lst, tw) < 0;
        Py_DECREF(tw);
        if (bad) {
            Py_DECREF(it);
            goto fail;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        goto fail;
    Py_ssize_t nevents = PyList_GET_SIZE(events);
    Py_ssize_t pos = 0;
    PyObject *loc, *accesses;
    while (PyDict_Next(by_loc, &pos, &loc, &accesses)) {
        Py_ssize_t j = -1;
        PyObject *lj = PyDict_GetItemWithError(last, loc);
        if (lj == NULL && PyErr_Occurred())
            goto fail;
        if (lj != NULL) {
            j = PyLong_AsSsize_t(lj);
            if (j == -1 && PyErr_Occurred())
                goto fail;
        }
        while (j >= end) {
            if (j >= nevents) {
                PyErr_SetString(PyExc_IndexError, "an event index past the execution");
                goto fail;
            }
            if (before_of(PyList_GET_ITEM(events, j), loc, &j) < 0)
                goto fail;
        }
        if (j < 0)
            continue;
        Py_ssize_t n = PyList_GET_SIZE(accesses);
        if (n > acc_cap) {
            Access *grown = PyMem_Realloc(acc, n * sizeof(Access));
            if (grown == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            for (Py_ssize_t a = acc_cap; a < n; a++) {
                grown[a].kept = NULL;
                grown[a].cap = 0;
            }
            acc = grown;
            acc_cap = n;
        }
        for (Py_ssize_t a = 0; a < n; a++) {
            PyObject *tw = PyList_GET_ITEM(accesses, a); /* (thread, writes), made above */
            acc[a].t = PyLong_AsLong(PyTuple_GET_ITEM(tw, 0));
            if (acc[a].t == -1 && PyErr_Occurred())
                goto fail;
            acc[a].w = PyObject_IsTrue(PyTuple_GET_ITEM(tw, 1));
            if (acc[a].w < 0)
                goto fail;
            if (acc[a].t < 0 || acc[a].t >= PyList_GET_SIZE(clocks)) {
                PyErr_SetString(PyExc_IndexError, "a thread without a clock");
                goto fail;
            }
            acc[a].clock = PyList_GET_ITEM(clocks, acc[a].t);
            acc[a].nkept = 0;
        }
        while (j >= 0) { /* the events on loc, newest first */
            if (j >= nevents) {
                PyErr_SetString(PyExc_IndexError, "an event index past the execution");
                goto fail;
            }
            PyObject *e = PyList_GET_ITEM(events, j);
            Py_ssize_t i = j;
            if (before_of(e, loc, &j) < 0)
                goto fail;
            long t0, s0;
            if (long_attr(e, s_tid, &t0) < 0 || long_attr(e, s_seq, &s0) < 0)
                goto fail;
            int ew = -1; /* read only when an access does not write */
            PyObject *eclock = NULL; /* its clock, once kept */
            for (Py_ssize_t a = 0; a < n; a++) {
                Access *x = &acc[a];
                if (t0 == x->t)
                    continue;
                if (!x->w) {
                    if (ew < 0) {
                        PyObject *ea = PyObject_GetAttr(e, s_acc);
                        if (ea == NULL)
                            goto fail;
                        PyObject *v = PyObject_GetItem(ea, loc);
                        Py_DECREF(ea);
                        if (v == NULL)
                            goto fail;
                        ew = PyObject_IsTrue(v);
                        Py_DECREF(v);
                        if (ew < 0)
                            goto fail;
                    }
                    if (!ew)
                        continue;
                }
                long c = clock_at(x->clock, t0);
                if (c == -1 && PyErr_Occurred())
                    goto fail;
                if (c >= s0)
                    continue;
                int before_kept = 0;
                for (Py_ssize_t k = 0; k < x->nkept; k++) {
                    long kc = clock_at(x->kept[k], t0);
                    if (kc == -1 && PyErr_Occurred())
                        goto fail;
                    if (kc >= s0) {
                        before_kept = 1;
                        break;
                    }
                }
                if (before_kept)
                    continue; /* before a later dependent event: that one races it */
                if (eclock == NULL) {
                    eclock = PyObject_GetAttr(e, s_clock); /* a new reference... */
                    if (eclock == NULL)
                        goto fail;
                    Py_DECREF(eclock); /* ...kept alive by the event, which the list holds */
                }
                if (x->nkept == x->cap) {
                    Py_ssize_t cap = x->cap ? 2 * x->cap : 4;
                    PyObject **grown = PyMem_Realloc(x->kept, cap * sizeof(PyObject *));
                    if (grown == NULL) {
                        PyErr_NoMemory();
                        goto fail;
                    }
                    x->kept = grown;
                    x->cap = cap;
                }
                x->kept[x->nkept++] = eclock;
                PyObject *pair = Py_BuildValue("(nl)", i, x->t);
                if (pair == NULL)
                    goto fail;
                int seen = PySet_Contains(done, pair);
                if (seen < 0 || (!seen && (PySet_Add(done, pair) < 0 ||
                                           PyList_Append(pairs, pair) < 0))) {
                    Py_DECREF(pair);
                    goto fail;
                }
                Py_DECREF(pair);
            }
        }
    }
    for (Py_ssize_t a = 0; a < acc_cap; a++)
        PyMem_Free(acc[a].kept);
    PyMem_Free(acc);
    Py_DECREF(done);
    Py_DECREF(by_loc);
    return pairs;
fail:
    for (Py_ssize_t a = 0; a < acc_cap; a++)
        PyMem_Free(acc[a].kept);
    PyMem_Free(acc);
    Py_XDECREF(by_loc);
    Py_XDECREF(done);
    Py_XDECREF(pairs);
    return NULL;
}

static PyMethodDef methods[] = {
    {"summary_pairs", summary_pairs, METH_VARARGS,
     "summary_pairs(events, end, summary, last, clocks) -> list of (event index, thread):\n"
     "dpor.summary_pairs, in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pervma.check._races",
    "The walk of pervma.check.dpor.summary_races in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__races(void)
{
    s_tid = PyUnicode_InternFromString("tid");
    s_seq = PyUnicode_InternFromString("seq");
    s_acc = PyUnicode_InternFromString("acc");
    s_before = PyUnicode_InternFromString("before");
    s_clock = PyUnicode_InternFromString("clock");
    if (!s_tid || !s_seq || !s_acc || !s_before || !s_clock)
        return NULL;
    return PyModule_Create(&module);
}
