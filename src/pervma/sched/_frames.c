/* Copy a suspended coroutine or generator: pervma.sched._frames.
 *
 * The model's threads are coroutines; a checkpoint of an execution
 * (pervma.check.checkpoint) must copy them.  CPython has no API for that, so
 * this module reads and writes the frame a coroutine owns (CPython 3.11's
 * _PyInterpreterFrame inside the coroutine object):
 *
 *   save(gen)  -> (func, lasti, stacktop, frame_state, values, exc), or None
 *                 for a finished one
 *       the function the coroutine was made from, the offset of its last
 *       instruction, its value-stack depth, its state (created or
 *       suspended), every local, cell, free variable and value-stack entry
 *       (NULL as the sentinel registered with set_null), and the exception
 *       it is handling (None if none);
 *   new(func)  -> gen
 *       a fresh coroutine (or generator) of ``func``, made by calling it
 *       with None for every parameter: no code of it runs;
 *   load(gen, (lasti, stacktop, frame_state, values, exc))
 *       puts a saved state into a fresh one.
 *
 * Pickling a coroutine is then new() at load time and load() as its state
 * setter, so cycles through a coroutine's locals unpickle like any object's.
 * Built only for CPython 3.11 (the layout changes between versions); without
 * it checkpoints are off and the checker replays prefixes as before.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE

static PyObject *null_sentinel = NULL;

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

static PyObject *frames_set_null(PyObject *self, PyObject *obj)
{
    Py_XDECREF(null_sentinel);
    Py_INCREF(obj);
    null_sentinel = obj;
    Py_RETURN_NONE;
}

static PyObject *frames_save(PyObject *self, PyObject *gen)
{
    int8_t *state;
    _PyInterpreterFrame *f = frame_of(gen, &state);
    if (f == NULL)
        return NULL;
    if (null_sentinel == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_frames: set_null() first");
        return NULL;
    }
    if (*state >= FRAME_COMPLETED)  /* finished: nothing of it can run again */
        Py_RETURN_NONE;
    if (*state != FRAME_CREATED && *state != FRAME_SUSPENDED) {
        PyErr_SetString(PyExc_TypeError, "_frames: a running coroutine");
        return NULL;
    }
    if (f->f_func == NULL || f->f_locals != NULL) {
        PyErr_SetString(PyExc_TypeError, "_frames: a frame without its function");
        return NULL;
    }
    int top = f->stacktop;
    PyObject *values = PyTuple_New(top);
    if (values == NULL)
        return NULL;
    for (int i = 0; i < top; i++) {
        PyObject *v = f->localsplus[i];
        if (v == NULL)
            v = null_sentinel;
        Py_INCREF(v);
        PyTuple_SET_ITEM(values, i, v);
    }
    PyObject *exc = exc_of(gen)->exc_value;
    if (exc == NULL)
        exc = Py_None;
    int lasti = (int)(f->prev_instr - _PyCode_CODE(f->f_code));
    return Py_BuildValue("(OiiiNO)", (PyObject *)f->f_func, lasti, top, (int)*state, values, exc);
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

static PyObject *frames_load(PyObject *self, PyObject *args)
{
    PyObject *gen, *st;
    if (!PyArg_ParseTuple(args, "OO!", &gen, &PyTuple_Type, &st))
        return NULL;
    int lasti, top, fstate;
    PyObject *values, *exc;
    if (!PyArg_ParseTuple(st, "iiiO!O", &lasti, &top, &fstate, &PyTuple_Type, &values, &exc))
        return NULL;
    int8_t *state;
    _PyInterpreterFrame *f = frame_of(gen, &state);
    if (f == NULL)
        return NULL;
    PyCodeObject *code = f->f_code;
    if (*state != FRAME_CREATED || PyTuple_GET_SIZE(values) != top
        || top < code->co_nlocalsplus || top > code->co_nlocalsplus + code->co_stacksize
        || lasti < -1 || lasti >= Py_SIZE(code)
        || (fstate != FRAME_CREATED && fstate != FRAME_SUSPENDED)) {
        PyErr_SetString(PyExc_ValueError, "_frames.load: a state that does not fit");
        return NULL;
    }
    for (int i = 0; i < f->stacktop; i++)
        Py_CLEAR(f->localsplus[i]);
    for (int i = 0; i < top; i++) {
        PyObject *v = PyTuple_GET_ITEM(values, i);
        if (v == null_sentinel) {
            f->localsplus[i] = NULL;
        } else {
            Py_INCREF(v);
            f->localsplus[i] = v;
        }
    }
    f->stacktop = top;
    f->prev_instr = _PyCode_CODE(code) + lasti;
    *state = (int8_t)fstate;
    _PyErr_StackItem *es = exc_of(gen);
    Py_CLEAR(es->exc_value);
    if (exc != Py_None) {
        Py_INCREF(exc);
        es->exc_value = exc;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_null", frames_set_null, METH_O, "The object that stands for an empty slot."},
    {"save", frames_save, METH_O, "The state of a suspended coroutine or generator."},
    {"new", frames_new, METH_O, "A fresh coroutine (or generator) of a function."},
    {"load", frames_load, METH_VARARGS, "Put a saved state into a fresh coroutine."},
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
    return PyModule_Create(&module);
#else
    PyErr_SetString(PyExc_ImportError, "_frames is built for CPython 3.11 only");
    return NULL;
#endif
}
