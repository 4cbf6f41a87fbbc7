/* The phrase matcher's compiled core: one pass over an Arrow string array's bytes finds every (row, pattern) hit of
 * a word trie. It does in one loop what tailstudy.text.split_bytes + WordTrie.word_ids + WordTrie.find do with numpy
 * (those stay the specification and the fallback; tests compare the two on generated text):
 *
 *   - every byte goes through a 256-byte table (kept bytes stay, the rest become ' ');
 *   - a word is a maximal run of bytes the table does not map to ' ';
 *   - a word is looked up among the trie's words (open-addressing hash), -1 when no pattern uses it;
 *   - from each word of a caption, the trie is walked over the following words of the same caption, and every node
 *     that ends a pattern is a hit: (row, pattern index).
 *
 * Hits come out by row, then start word, then length; the matcher sorts the pairs it derives from them, so the order
 * of WordTrie.find (by length first) and this one give the same matches. The GIL is released during the pass.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifndef CORE_SOURCE_SHA256  /* setup.py defines it: the sha256 of this file when it was built */
#define CORE_SOURCE_SHA256 "unknown"
#endif

typedef struct {
    PyObject_HEAD
    int64_t n_words, n_nodes, n_edges, max_len;
    char *word_bytes;          /* the words, concatenated */
    int64_t *word_start;       /* n_words + 1 offsets into word_bytes */
    uint64_t *slots;           /* hash table: hash tag << 32 | word id; EMPTY where no word */
    uint64_t mask;             /* slots - 1 (a power of two minus one) */
    int64_t max_word;          /* longest word: longer runs are never looked up */
    int64_t *root_child, *terminal, *edge_keys, *edge_child;
    uint8_t *follows, lut[256];
    uint64_t filter[1024];     /* one bit per FILTER_BIT of the words' hashes: most other words stop here, in L1 */
} Core;

typedef struct {
    int64_t *rows, *patterns;
    Py_ssize_t len, cap;
} Hits;

/* A word's hash: a rotate-xor per byte (a short dependency chain: the scan computes it byte by byte as it finds the
 * word's end), then one multiply to spread the bits. */
#define HASH_STEP(h, b) (((h) << 5 | (h) >> 59) ^ (b))
#define HASH_END(h) ((h) * 0x9E3779B97F4A7C15ULL ^ ((h) * 0x9E3779B97F4A7C15ULL) >> 32)
#define TAG(hash) ((hash) >> 32 << 32)  /* the product's top bits: a probe rejects other words without reading them */
#define EMPTY UINT64_MAX
#define FILTER_BIT(hash) ((hash) >> 40 & 0xffff)

static uint64_t hash_bytes(const uint8_t *s, Py_ssize_t n) {
    uint64_t h = 0;
    for (Py_ssize_t i = 0; i < n; i++) h = HASH_STEP(h, s[i]);
    return HASH_END(h);
}

/* The id of the word whose bytes, mapped through the table, are s[0..n) (hash: of the mapped bytes), or -1 */
static int64_t lookup(const Core *c, const uint8_t *s, Py_ssize_t n, uint64_t h) {
    if (n > c->max_word || !(c->filter[FILTER_BIT(h) >> 6] >> (FILTER_BIT(h) & 63) & 1)) return -1;
    for (uint64_t at = h & c->mask;; at = (at + 1) & c->mask) {
        uint64_t slot = c->slots[at];
        if (slot == EMPTY) return -1;
        int64_t id = (uint32_t)slot;
        if (TAG(slot) != TAG(h) || c->word_start[id + 1] - c->word_start[id] != n) continue;
        const uint8_t *w = (const uint8_t *)c->word_bytes + c->word_start[id];
        Py_ssize_t i = 0;
        while (i < n && c->lut[s[i]] == w[i]) i++;
        if (i == n) return id;
    }
}

/* ---------------------------------------------------------------- construction */

static int copy_int64s(PyObject *obj, int64_t **out, int64_t *count) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view.itemsize != 8 || (view.format && strchr("qlQL", view.format[strlen(view.format) - 1]) == NULL)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "expected a contiguous int64 array");
        return -1;
    }
    *count = view.len / 8;
    *out = PyMem_Malloc(view.len ? view.len : 8);
    if (*out) memcpy(*out, view.buf, view.len);
    PyBuffer_Release(&view);
    return *out ? 0 : (PyErr_NoMemory(), -1);
}

static int build_words(Core *c, PyObject *words) {
    PyObject *seq = PySequence_Fast(words, "words must be a sequence of bytes");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *w = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(w)) { Py_DECREF(seq); PyErr_SetString(PyExc_TypeError, "words must be bytes"); return -1; }
        total += PyBytes_GET_SIZE(w);
    }
    uint64_t size = 16;
    while (size < (uint64_t)n * 4) size <<= 1;  /* at most a quarter full: most probes end at the first slot */
    c->n_words = n, c->mask = size - 1;
    c->word_bytes = PyMem_Malloc(total + 1), c->word_start = PyMem_Malloc((n + 1) * 8);
    c->slots = PyMem_Malloc(size * sizeof(uint64_t));
    if (!c->word_bytes || !c->word_start || !c->slots) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
    memset(c->slots, 0xff, size * sizeof(uint64_t));
    c->word_start[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *w = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t len = PyBytes_GET_SIZE(w);
        memcpy(c->word_bytes + c->word_start[i], PyBytes_AS_STRING(w), len);
        c->word_start[i + 1] = c->word_start[i] + len;
        if (len > c->max_word) c->max_word = len;
        uint64_t hash = hash_bytes((const uint8_t *)PyBytes_AS_STRING(w), len), at = hash & c->mask;
        while (c->slots[at] != EMPTY) at = (at + 1) & c->mask;
        c->slots[at] = TAG(hash) | (uint64_t)i;
        c->filter[FILTER_BIT(hash) >> 6] |= 1ULL << (FILTER_BIT(hash) & 63);
    }
    Py_DECREF(seq);
    return 0;
}

static int Core_init(Core *c, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"words", "root_child", "terminal", "edge_keys", "edge_child", "follows", "lut",
                            "max_len", NULL};
    PyObject *words, *root, *terminal, *keys, *children;
    Py_buffer follows, lut;
    int64_t n;
    if (c->follows) { PyErr_SetString(PyExc_RuntimeError, "Core is already initialised"); return -1; }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOy*y*L", names, &words, &root, &terminal, &keys, &children,
                                     &follows, &lut, &c->max_len))
        return -1;
    int bad = lut.len != 256;
    c->follows = PyMem_Malloc(follows.len + 1);
    if (!bad && c->follows) memcpy(c->lut, lut.buf, 256), memcpy(c->follows, follows.buf, follows.len);
    Py_ssize_t n_follows = follows.len;
    PyBuffer_Release(&lut), PyBuffer_Release(&follows);
    if (!c->follows) { PyErr_NoMemory(); return -1; }
    if (bad) { PyErr_SetString(PyExc_ValueError, "lut must be 256 bytes"); return -1; }
    if (build_words(c, words) < 0 || copy_int64s(root, &c->root_child, &n) < 0) return -1;
    if (n < c->n_words) { PyErr_SetString(PyExc_ValueError, "root_child shorter than words"); return -1; }
    if (copy_int64s(terminal, &c->terminal, &c->n_nodes) < 0 || copy_int64s(keys, &c->edge_keys, &c->n_edges) < 0 ||
        copy_int64s(children, &c->edge_child, &n) < 0)
        return -1;
    bad = n != c->n_edges || n_follows < c->n_words || c->n_nodes < 1;
    for (int64_t i = 0; i < c->n_words && !bad; i++) bad = c->root_child[i] < -1 || c->root_child[i] >= c->n_nodes;
    for (int64_t i = 0; i < c->n_edges && !bad; i++) bad = c->edge_child[i] < -1 || c->edge_child[i] >= c->n_nodes;
    if (bad) {  /* the walk indexes terminal[] with these: never out of bounds */
        PyErr_SetString(PyExc_ValueError, "root_child / edge_child / follows do not fit the trie");
        return -1;
    }
    return 0;
}

static void Core_dealloc(Core *c) {
    PyMem_Free(c->word_bytes), PyMem_Free(c->word_start), PyMem_Free(c->slots);
    PyMem_Free(c->root_child), PyMem_Free(c->terminal), PyMem_Free(c->edge_keys), PyMem_Free(c->edge_child);
    PyMem_Free(c->follows);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* ---------------------------------------------------------------- the pass */

static int push(Hits *h, int64_t row, int64_t pattern) {
    if (h->len == h->cap) {
        Py_ssize_t cap = h->cap ? h->cap * 2 : 4096;
        int64_t *rows = realloc(h->rows, cap * 8), *patterns = rows ? realloc(h->patterns, cap * 8) : NULL;
        if (rows) h->rows = rows;
        if (!patterns) return -1;
        h->patterns = patterns, h->cap = cap;
    }
    h->rows[h->len] = row, h->patterns[h->len++] = pattern;
    return 0;
}

static int64_t child(const Core *c, int64_t node, int64_t word) {
    int64_t key = node * c->n_words + word, lo = 0, hi = c->n_edges;
    while (lo < hi) {  /* edge_keys is sorted */
        int64_t mid = (lo + hi) / 2;
        if (c->edge_keys[mid] < key) lo = mid + 1; else hi = mid;
    }
    return lo < c->n_edges && c->edge_keys[lo] == key ? c->edge_child[lo] : -1;
}

/* Hits of one caption whose word ids are ids[0..n) */
static int walk(const Core *c, const int64_t *ids, Py_ssize_t n, int64_t row, Hits *h) {
    for (Py_ssize_t start = 0; start < n; start++) {
        if (ids[start] < 0) continue;
        int64_t node = c->root_child[ids[start]];
        for (Py_ssize_t at = start; node >= 0;) {
            if (c->terminal[node] >= 0 && push(h, row, c->terminal[node]) < 0) return -1;
            if (++at == n || at - start == c->max_len || ids[at] < 0 || !c->follows[ids[at]]) break;
            node = child(c, node, ids[at]);
        }
    }
    return 0;
}

typedef struct {
    int64_t *ids;
    Py_ssize_t cap;
} Words;

static int scan(const Core *c, const int32_t *offsets, const uint8_t *data, Py_ssize_t first, Py_ssize_t n_rows,
                Hits *h) {
    Words w = {NULL, 0};
    int rc = 0;
    for (Py_ssize_t r = 0; r < n_rows && rc == 0; r++) {
        const uint8_t *s = data + offsets[first + r], *end = data + offsets[first + r + 1];
        Py_ssize_t n = 0;
        while (s < end) {
            while (s < end && c->lut[*s] == ' ') s++;
            const uint8_t *word = s;
            uint64_t hash = 0;
            for (uint8_t b; s < end && (b = c->lut[*s]) != ' '; s++) hash = HASH_STEP(hash, b);
            if (s == word) break;
            if (n == w.cap) {
                Py_ssize_t cap = w.cap ? w.cap * 2 : 256;
                int64_t *ids = realloc(w.ids, cap * 8);
                if (!ids) { rc = -1; break; }
                w.ids = ids, w.cap = cap;
            }
            w.ids[n++] = lookup(c, word, s - word, HASH_END(hash));
        }
        if (rc == 0) rc = walk(c, w.ids, n, r, h);  /* rows counted from first */
    }
    free(w.ids);
    return rc;
}

/* Rows first..first+n_rows of an Arrow string array: int32 offsets that stay inside the data buffer, or an error */
static int check_rows(const Py_buffer *offsets, const Py_buffer *data, Py_ssize_t first, Py_ssize_t n_rows) {
    if (first < 0 || n_rows < 0 || (first + n_rows + 1) * 4 > offsets->len) {
        PyErr_SetString(PyExc_ValueError, "rows out of the offsets buffer");
        return -1;
    }
    const int32_t *off = offsets->buf;
    int bad = off[first] < 0 || off[first + n_rows] > data->len;
    for (Py_ssize_t r = 0; r < n_rows && !bad; r++) bad = off[first + r] > off[first + r + 1];
    if (bad) PyErr_SetString(PyExc_ValueError, "offsets are not a valid string array's");
    return bad ? -1 : 0;
}

static PyObject *Core_find(Core *c, PyObject *args) {
    Py_buffer offsets, data;
    Py_ssize_t first, n_rows;
    if (!PyArg_ParseTuple(args, "y*y*nn", &offsets, &data, &first, &n_rows)) return NULL;
    PyObject *out = NULL;
    Hits h = {NULL, NULL, 0, 0};
    if (!c->edge_child) {
        PyErr_SetString(PyExc_RuntimeError, "Core is not initialised");
    } else if (check_rows(&offsets, &data, first, n_rows) == 0) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = scan(c, offsets.buf, data.buf, first, n_rows, &h);
        Py_END_ALLOW_THREADS
        if (rc < 0) PyErr_NoMemory();
        else out = Py_BuildValue("(y#y#)", h.len ? (char *)h.rows : "", h.len * 8,
                                 h.len ? (char *)h.patterns : "", h.len * 8);  /* NULL would give None */
    }
    free(h.rows), free(h.patterns);
    PyBuffer_Release(&offsets), PyBuffer_Release(&data);
    return out;
}

/* ---------------------------------------------------------------- row flags */

static PyObject *row_flags(PyObject *self, PyObject *args) {
    Py_buffer offsets, data, table;
    Py_ssize_t first, n_rows, found = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nny*", &offsets, &data, &first, &n_rows, &table)) return NULL;
    PyObject *out = NULL;
    int64_t *rows = NULL;
    uint8_t *flags = NULL;
    if (table.len != 256) {
        PyErr_SetString(PyExc_ValueError, "table must be 256 bytes");
    } else if (check_rows(&offsets, &data, first, n_rows) == 0) {
        rows = malloc(n_rows * 8 + 8), flags = malloc(n_rows + 1);
        if (!rows || !flags) {
            PyErr_NoMemory();
        } else {
            const int32_t *off = offsets.buf;
            const uint8_t *bytes = data.buf, *t = table.buf;
            Py_BEGIN_ALLOW_THREADS
            for (Py_ssize_t r = 0; r < n_rows; r++) {
                uint8_t f = 0;
                for (int32_t i = off[first + r]; i < off[first + r + 1]; i++) f |= t[bytes[i]];
                if (f) rows[found] = r, flags[found++] = f;
            }
            Py_END_ALLOW_THREADS
            out = Py_BuildValue("(y#y#)", (char *)rows, found * 8, (char *)flags, found);
        }
    }
    free(rows), free(flags);
    PyBuffer_Release(&offsets), PyBuffer_Release(&data), PyBuffer_Release(&table);
    return out;
}

static PyMethodDef module_methods[] = {
    {"row_flags", row_flags, METH_VARARGS,
     "row_flags(offsets, data, first, n_rows, table) -> (rows as int64 bytes, flags as uint8 bytes): the rows (counted "
     "from first) holding a byte that the 256-byte table maps to non-zero, and the OR of their bytes' values"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Core_methods[] = {
    {"find", (PyCFunction)Core_find, METH_VARARGS,
     "find(offsets, data, first, n_rows) -> (rows, patterns) as int64 bytes: every hit in rows first..first+n_rows "
     "of a string array (int32 offsets buffer, data buffer), rows counted from first"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tailstudy._core.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Core(words, root_child, terminal, edge_keys, edge_child, follows, lut, max_len): a WordTrie, compiled",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_core", .m_doc = "The phrase matcher's compiled core.", .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__core(void) {
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddStringConstant(m, "source_sha256", CORE_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
