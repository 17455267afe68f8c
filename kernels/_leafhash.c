/* RFC 6962 hashing loops for the CPU path (kernels/merkle.py): the same hashes as the Python loops, with
 * OpenSSL's SHA-256 (SHA-NI where the CPU has it) and without a Python call per leaf. Optional: merkle.py
 * falls back to hashlib when this module is not built. The GIL is released while hashing.
 *
 *   leaf_hashes(data, chunk) -> bytes   SHA-256(0x00 || piece) for each `chunk`-byte piece, concatenated
 *   next_level(level) -> bytes          SHA-256(0x01 || l || r) per pair; a lone last node is promoted
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_* is the lightest entry point: no per-call EVP dispatch */
#include <Python.h>
#include <openssl/sha.h>
#include <string.h>

static PyObject *leaf_hashes(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t chunk;
    if (!PyArg_ParseTuple(args, "y*n", &view, &chunk)) return NULL;
    if (chunk <= 0 || view.len % chunk) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "data of %zd bytes is not a whole number of %zd-byte chunks", view.len, chunk);
        return NULL;
    }
    Py_ssize_t count = view.len / chunk;
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * SHA256_DIGEST_LENGTH);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *src = (const unsigned char *)view.buf;
    const unsigned char prefix = 0x00;
    Py_BEGIN_ALLOW_THREADS
    SHA256_CTX base, ctx;
    SHA256_Init(&base);
    SHA256_Update(&base, &prefix, 1);
    for (Py_ssize_t i = 0; i < count; i++) {
        ctx = base;
        SHA256_Update(&ctx, src + i * chunk, (size_t)chunk);
        SHA256_Final(dst + i * SHA256_DIGEST_LENGTH, &ctx);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return out;
}

static PyObject *next_level(PyObject *self, PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view)) return NULL;
    if (view.len % SHA256_DIGEST_LENGTH) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "%zd bytes is not a whole number of 32-byte hashes", view.len);
        return NULL;
    }
    Py_ssize_t count = view.len / SHA256_DIGEST_LENGTH;
    Py_ssize_t pairs = count / 2;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (pairs + (count & 1)) * SHA256_DIGEST_LENGTH);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *src = (const unsigned char *)view.buf;
    const unsigned char prefix = 0x01;
    Py_BEGIN_ALLOW_THREADS
    SHA256_CTX base, ctx;
    SHA256_Init(&base);
    SHA256_Update(&base, &prefix, 1);
    for (Py_ssize_t i = 0; i < pairs; i++) {
        ctx = base;
        SHA256_Update(&ctx, src + i * 2 * SHA256_DIGEST_LENGTH, 2 * SHA256_DIGEST_LENGTH);
        SHA256_Final(dst + i * SHA256_DIGEST_LENGTH, &ctx);
    }
    if (count & 1) memcpy(dst + pairs * SHA256_DIGEST_LENGTH, src + (count - 1) * SHA256_DIGEST_LENGTH,
                          SHA256_DIGEST_LENGTH);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"leaf_hashes", leaf_hashes, METH_VARARGS, "SHA-256(0x00 || piece) of each chunk-byte piece, concatenated."},
    {"next_level", next_level, METH_VARARGS, "One RFC 6962 level up: SHA-256(0x01 || l || r) per pair."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_leafhash", NULL, -1, methods};

PyMODINIT_FUNC PyInit__leafhash(void) { return PyModule_Create(&module); }
