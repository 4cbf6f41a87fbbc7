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

/* ---------------------------------------------------------------- the phrase normaliser's folding

 * A Folder rewrites the rows of a string array that tailstudy.text.normalise treats specially (a byte >= 0x80, '&' or
 * an apostrophe) so that mapping every byte through PHRASE_LUT and splitting on spaces gives normalise(row).split(); the
 * other rows are copied as they are. Per row, in normalise's order:
 *
 *   1. HTML character references, as html.unescape finds them (the regex
 *      &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?), the HTML5 names, the longest-prefix rule for names
 *      without ';', and its numeric special cases), from tables built by Python;
 *   2. each code point folded as NFKD + accents dropped + other non-ASCII -> ' ' + U+2019 -> "'" (NFKD decomposes one
 *      code point at a time; its canonical reordering only moves combining marks among themselves, which never changes
 *      what lies between two letters), from a table built by Python from unicodedata, lower-cased;
 *   3. a possessive "'s" before a non-word character (or the end) dropped, then every other apostrophe.
 *
 * A row the tables cannot answer (a code point at or above FOLD_LIMIT, invalid UTF-8) is reported back and left
 * empty: the caller runs Python's normalise on it. */

#define FOLD_LIMIT 0x30000   /* unicodedata has no decomposition above this (checked where the tables are built) */
#define FOLD_SEP 0           /* fold index: the code point becomes a separator */
#define FOLD_DROP 1          /* fold index: the code point disappears (a combining accent) */

typedef struct {
    PyObject_HEAD
    uint16_t *fold;                /* FOLD_LIMIT entries: FOLD_SEP, FOLD_DROP, or index into out_start */
    char *out_bytes;               /* the replacement texts (folded, lower-case ASCII), concatenated */
    int64_t *out_start;            /* n_out + 1 offsets */
    int64_t n_out;
    uint64_t *name_slots;          /* entity names: hash tag << 32 | (name index + 1); 0 where empty */
    uint64_t name_mask;
    char *name_bytes;
    int64_t *name_start, *name_value;  /* n_names + 1 offsets; the replacement (out index) of each name */
    int64_t n_names;
    int64_t *charref_num, *charref_value;  /* html's _invalid_charrefs: number -> replacement, sorted */
    int64_t n_charrefs;
    int64_t *invalid_cps;          /* html's _invalid_codepoints, sorted: the reference becomes nothing */
    int64_t n_invalid;
} Folder;

typedef struct {
    uint8_t *buf;
    Py_ssize_t len, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    uint8_t *p = realloc(b->buf, cap);
    if (!p) return -1;
    b->buf = p, b->cap = cap;
    return 0;
}

static uint64_t fnv(const uint8_t *s, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

/* The replacement index of the entity name s[0..n) (ASCII bytes), or -1 */
static int64_t name_lookup(const Folder *f, const uint8_t *s, Py_ssize_t n) {
    uint64_t h = fnv(s, n);
    for (uint64_t at = h & f->name_mask;; at = (at + 1) & f->name_mask) {
        uint64_t slot = f->name_slots[at];
        if (!slot) return -1;
        int64_t id = (int64_t)(uint32_t)slot - 1;
        if (TAG(slot) == TAG(h) && f->name_start[id + 1] - f->name_start[id] == n &&
            memcmp(f->name_bytes + f->name_start[id], s, n) == 0)
            return f->name_value[id];
    }
}

static int64_t sorted_find(const int64_t *xs, int64_t n, int64_t x) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (xs[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo < n && xs[lo] == x ? lo : -1;
}

static int emit_out(const Folder *f, int64_t index, Buf *b) {
    Py_ssize_t n = f->out_start[index + 1] - f->out_start[index];
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->buf + b->len, f->out_bytes + f->out_start[index], n);
    b->len += n;
    return 0;
}

/* Append the folded form of code point c -> 0, 1 when the tables cannot answer, -1 out of memory */
static int emit_cp(const Folder *f, uint32_t c, Buf *b) {
    if (c < 0x80) {
        if (buf_reserve(b, 1) < 0) return -1;
        b->buf[b->len++] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : (uint8_t)c;
        return 0;
    }
    if (c >= FOLD_LIMIT) return 1;
    uint16_t index = f->fold[c];
    if (index == FOLD_DROP) return 0;
    if (index == FOLD_SEP) {
        if (buf_reserve(b, 1) < 0) return -1;
        b->buf[b->len++] = ' ';
        return 0;
    }
    return emit_out(f, index, b);
}

/* html.unescape's numeric reference -> its text, folded */
static int emit_number(const Folder *f, int64_t num, Buf *b) {
    int64_t at = sorted_find(f->charref_num, f->n_charrefs, num);
    if (at >= 0) return emit_out(f, f->charref_value[at], b);
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return emit_cp(f, 0xFFFD, b);
    if (sorted_find(f->invalid_cps, f->n_invalid, num) >= 0) return 0;
    return emit_cp(f, (uint32_t)num, b);
}

/* UTF-8 -> code points (strict: what Python's decoder accepts), or -1 */
static Py_ssize_t utf8_decode(const uint8_t *s, Py_ssize_t n, uint32_t *out) {
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n;) {
        uint8_t b = s[i];
        uint32_t c;
        int more;
        if (b < 0x80) { out[m++] = b; i++; continue; }
        if (b >= 0xC2 && b <= 0xDF) c = b & 0x1F, more = 1;
        else if (b >= 0xE0 && b <= 0xEF) c = b & 0x0F, more = 2;
        else if (b >= 0xF0 && b <= 0xF4) c = b & 0x07, more = 3;
        else return -1;
        for (int k = 1; k <= more; k++) {
            if (i + k >= n || (s[i + k] & 0xC0) != 0x80) return -1;
            c = c << 6 | (s[i + k] & 0x3F);
        }
        if ((more == 2 && (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF))) || (more == 3 && (c < 0x10000 || c > 0x10FFFF)))
            return -1;
        out[m++] = c;
        i += more + 1;
    }
    return m;
}

static int is_stop(uint32_t c) {  /* the characters html's named-reference group cannot hold */
    return c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';';
}

static int hex_value(uint32_t c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* At cps[i] == '&': the reference html.unescape finds there, folded into b -> the index after it; i when there is
 * none (the '&' is then text). *rc: 1 when the tables cannot answer, -1 out of memory. */
static Py_ssize_t reference(const Folder *f, const uint32_t *cps, Py_ssize_t i, Py_ssize_t m, Buf *b, int *rc) {
    Py_ssize_t j = i + 1;
    if (j < m && cps[j] == '#') {
        Py_ssize_t k = j + 1;
        int base = 10;
        if (k < m && (cps[k] == 'x' || cps[k] == 'X') && k + 1 < m && hex_value(cps[k + 1]) >= 0) base = 16, k++;
        else if (!(k < m && cps[k] >= '0' && cps[k] <= '9')) return i;
        int64_t num = 0;
        for (; k < m; k++) {
            int d = base == 16 ? hex_value(cps[k]) : (cps[k] >= '0' && cps[k] <= '9' ? (int)(cps[k] - '0') : -1);
            if (d < 0) break;
            num = num * base + d;
            if (num > 0x10FFFF) num = 0x110000;  /* saturate: html treats every larger number alike */
        }
        if (k < m && cps[k] == ';') k++;
        *rc = emit_number(f, num, b);
        return k;
    }
    Py_ssize_t k = j;
    while (k < m && k - j < 32 && !is_stop(cps[k])) k++;
    if (k == j) return i;
    Py_ssize_t end = k < m && cps[k] == ';' ? k + 1 : k;
    /* the group's leading ASCII run, as bytes: names are ASCII, so a name can only be a prefix of it */
    uint8_t name[40];
    Py_ssize_t ascii = 0;
    while (j + ascii < end && cps[j + ascii] < 0x80) name[ascii] = (uint8_t)cps[j + ascii], ascii++;
    int64_t value = ascii == end - j ? name_lookup(f, name, ascii) : -1;
    Py_ssize_t x = end - j;
    if (value < 0) {  /* the longest prefix that is a name (at least 2 characters), then the rest as text */
        for (x = (end - j) - 1; x >= 2; x--)
            if (x <= ascii && (value = name_lookup(f, name, x)) >= 0) break;
    }
    if (value < 0) return i;  /* '&' + the group, unchanged: the same as no reference */
    if ((*rc = emit_out(f, value, b)) != 0) return k;
    for (Py_ssize_t t = j + x; t < end && *rc == 0; t++) *rc = emit_cp(f, cps[t], b);
    return end;
}

/* normalise's last step on folded (or plain ASCII) text: lower case, then "'s\b" dropped (re.ASCII: \w is
 * [a-zA-Z0-9_]), then every other apostrophe; appended to out */
static int apostrophes(const uint8_t *t, Py_ssize_t n, Buf *out) {
    if (buf_reserve(out, n) < 0) return -1;
    uint8_t *o = out->buf + out->len;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t c = t[i];
        if (c != '\'') { *o++ = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c; continue; }
        if (i + 1 < n && (t[i + 1] | 32) == 's') {  /* c | 32 is 's' for 'S' and 's' only */
            int word = 0;
            if (i + 2 < n) {
                uint8_t after = t[i + 2];
                word = ((after | 32) >= 'a' && (after | 32) <= 'z') || (after >= '0' && after <= '9') || after == '_';
            }
            if (!word) i++;
        }
    }
    out->len = o - out->buf;
    return 0;
}

/* One rare row -> its folded text appended to out; 1 when the tables cannot answer, -1 out of memory */
static int fold_row(const Folder *f, const uint8_t *s, Py_ssize_t n, Buf *cps_buf, Buf *tmp, Buf *out) {
    int amp = memchr(s, '&', n) != NULL, ascii = 1;
    for (Py_ssize_t i = 0; i < n && ascii; i++) ascii = s[i] < 0x80;
    if (ascii && !amp) return apostrophes(s, n, out);  /* nothing to decode or fold */
    if (buf_reserve(cps_buf, (n + 1) * 4) < 0) return -1;
    uint32_t *cps = (uint32_t *)cps_buf->buf;
    Py_ssize_t m = utf8_decode(s, n, cps);
    if (m < 0) return 1;
    tmp->len = 0;
    int rc = 0;
    for (Py_ssize_t i = 0; i < m && rc == 0;) {
        if (amp && cps[i] == '&') {
            Py_ssize_t next = reference(f, cps, i, m, tmp, &rc);
            if (next != i) { i = next; continue; }
        }
        rc = emit_cp(f, cps[i++], tmp);
    }
    return rc != 0 ? rc : apostrophes(tmp->buf, tmp->len, out);
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
#define HAS_BYTE(x, b) (((x) ^ (ONES * (b))) - ONES & ~((x) ^ (ONES * (b))) & HIGHS)

/* A row with no byte >= 0x80, no '&' and no apostrophe: the folder copies it as it is (8 bytes per test) */
static int plain(const uint8_t *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if ((x & HIGHS) || HAS_BYTE(x, (uint64_t)'&') || HAS_BYTE(x, (uint64_t)'\'')) return 0;
    }
    for (; i < n; i++)
        if (s[i] >= 0x80 || s[i] == '&' || s[i] == '\'') return 0;
    return 1;
}

/* Pass 1: the rare rows folded into `side` (where[r]: their place there; -1 for a plain row, copied in pass 2), every
 * row's output offsets, the fallback rows (left empty). 0, -1 out of memory, -2 over 2 GiB. */
static int fold_rows(const Folder *f, const int32_t *off, const uint8_t *data, Py_ssize_t first, Py_ssize_t n_rows,
                     int32_t *out_off, int64_t *where, Buf *side, Buf *fallback) {
    Buf cps = {NULL, 0, 0}, tmp = {NULL, 0, 0};
    int rc = 0;
    int64_t total = 0;
    out_off[0] = 0;
    for (Py_ssize_t r = 0; r < n_rows && rc >= 0; r++) {
        const uint8_t *s = data + off[first + r];
        Py_ssize_t n = off[first + r + 1] - off[first + r], before = side->len;
        where[r] = -1;
        if (!plain(s, n)) {
            where[r] = before;
            if ((rc = fold_row(f, s, n, &cps, &tmp, side)) == 1) {
                side->len = before;
                if ((rc = buf_reserve(fallback, 8)) == 0) {
                    int64_t row = r;
                    memcpy(fallback->buf + fallback->len, &row, 8), fallback->len += 8;
                }
            }
            n = side->len - before;
        }
        if ((total += n) > INT32_MAX) rc = -2;
        out_off[r + 1] = (int32_t)total;
    }
    free(cps.buf), free(tmp.buf);
    return rc;
}

/* Pass 2: every row's text into dst */
static void assemble(const int32_t *off, const uint8_t *data, Py_ssize_t first, Py_ssize_t n_rows,
                     const int32_t *out_off, const int64_t *where, const uint8_t *side, uint8_t *dst) {
    for (Py_ssize_t r = 0; r < n_rows; r++) {
        const uint8_t *src = where[r] < 0 ? data + off[first + r] : side + where[r];
        memcpy(dst + out_off[r], src, out_off[r + 1] - out_off[r]);
    }
}

static PyObject *Folder_fold(Folder *f, PyObject *args) {
    Py_buffer offsets, data;
    Py_ssize_t first, n_rows;
    if (!PyArg_ParseTuple(args, "y*y*nn", &offsets, &data, &first, &n_rows)) return NULL;
    PyObject *out = NULL, *text = NULL;
    if (!f->fold) {
        PyErr_SetString(PyExc_RuntimeError, "Folder is not initialised");
    } else if (check_rows(&offsets, &data, first, n_rows) == 0) {
        int32_t *out_off = malloc((n_rows + 1) * 4);
        int64_t *where = malloc((n_rows + 1) * 8);
        Buf side = {NULL, 0, 0}, fallback = {NULL, 0, 0};
        int rc = -1;
        if (out_off && where) {
            Py_BEGIN_ALLOW_THREADS
            rc = fold_rows(f, offsets.buf, data.buf, first, n_rows, out_off, where, &side, &fallback);
            Py_END_ALLOW_THREADS
        }
        if (rc == -2) PyErr_SetString(PyExc_OverflowError, "folded text over 2 GiB: pass fewer rows");
        else if (rc < 0) PyErr_NoMemory();
        else if ((text = PyBytes_FromStringAndSize(NULL, out_off[n_rows])) != NULL) {
            uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(text);
            Py_BEGIN_ALLOW_THREADS
            assemble(offsets.buf, data.buf, first, n_rows, out_off, where, side.buf, dst);
            Py_END_ALLOW_THREADS
            out = Py_BuildValue("(y#Oy#)", (char *)out_off, (n_rows + 1) * 4, text,
                                fallback.len ? (char *)fallback.buf : "", fallback.len);
            Py_DECREF(text);
        }
        free(out_off), free(where), free(side.buf), free(fallback.buf);
    }
    PyBuffer_Release(&offsets), PyBuffer_Release(&data);
    return out;
}

/* A sequence of strictly increasing ints (a PySequence_Fast) into out, or -1 with an error */
static int sorted_ints(PyObject *seq, int64_t *out, const char *name) {
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        out[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (out[i] == -1 && PyErr_Occurred()) return -1;
        if (i && out[i] <= out[i - 1]) {
            PyErr_Format(PyExc_ValueError, "%s must be sorted", name);
            return -1;
        }
    }
    return 0;
}

/* Folder(fold_cps, fold_values, names, name_values, charref_nums, charref_values, invalid_cps):
 *   fold_cps / fold_values: code points below FOLD_LIMIT that do not become a separator, and their folded text
 *   (bytes; b"" drops the code point); names / name_values: HTML5 entity names (bytes) and their folded text;
 *   charref_nums / charref_values: html's invalid numeric references and their folded text; invalid_cps: the numbers
 *   html drops. */
static int Folder_init(Folder *f, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"fold_cps", "fold_values", "names", "name_values", "charref_nums", "charref_values",
                            "invalid_cps", NULL};
    PyObject *fold_cps, *fold_values, *ent_names, *ent_values, *ref_nums, *ref_values, *invalid;
    if (f->fold || f->out_start) { PyErr_SetString(PyExc_RuntimeError, "Folder is already initialised"); return -1; }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOO", names, &fold_cps, &fold_values, &ent_names, &ent_values,
                                     &ref_nums, &ref_values, &invalid))
        return -1;
    PyObject *cps = PySequence_Fast(fold_cps, "fold_cps: a sequence"), *fv = PySequence_Fast(fold_values, "fold_values");
    PyObject *en = PySequence_Fast(ent_names, "names"), *ev = PySequence_Fast(ent_values, "name_values");
    PyObject *rn = PySequence_Fast(ref_nums, "charref_nums"), *rv = PySequence_Fast(ref_values, "charref_values");
    PyObject *inv = PySequence_Fast(invalid, "invalid_cps");
    int rc = -1;
    if (!cps || !fv || !en || !ev || !rn || !rv || !inv) goto done;
    Py_ssize_t n_fold = PySequence_Fast_GET_SIZE(cps), n_names = PySequence_Fast_GET_SIZE(en);
    Py_ssize_t n_refs = PySequence_Fast_GET_SIZE(rn), n_inv = PySequence_Fast_GET_SIZE(inv);
    if (PySequence_Fast_GET_SIZE(fv) != n_fold || PySequence_Fast_GET_SIZE(ev) != n_names ||
        PySequence_Fast_GET_SIZE(rv) != n_refs) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in length");
        goto done;
    }
    /* every replacement text in one pool: indexes 0 and 1 are FOLD_SEP and FOLD_DROP's (" " and "") */
    Py_ssize_t n_out = 2 + n_fold + n_names + n_refs, total = 1;
    PyObject *groups[3] = {fv, ev, rv};
    for (int g = 0; g < 3; g++)
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(groups[g]); i++) {
            PyObject *v = PySequence_Fast_GET_ITEM(groups[g], i);
            if (!PyBytes_Check(v)) { PyErr_SetString(PyExc_TypeError, "replacement texts must be bytes"); goto done; }
            total += PyBytes_GET_SIZE(v);
        }
    if (n_out > 65535) { PyErr_SetString(PyExc_ValueError, "too many replacement texts"); goto done; }
    f->n_out = n_out;
    f->out_bytes = PyMem_Malloc(total), f->out_start = PyMem_Malloc((n_out + 1) * 8);
    f->fold = PyMem_Calloc(FOLD_LIMIT, sizeof(uint16_t));
    uint64_t size = 16;
    while (size < (uint64_t)n_names * 4) size <<= 1;
    f->name_mask = size - 1, f->n_names = n_names;
    f->name_slots = PyMem_Calloc(size, 8), f->name_start = PyMem_Malloc((n_names + 1) * 8);
    f->name_value = PyMem_Malloc((n_names + 1) * 8);
    f->charref_num = PyMem_Malloc((n_refs + 1) * 8), f->charref_value = PyMem_Malloc((n_refs + 1) * 8);
    f->invalid_cps = PyMem_Malloc((n_inv + 1) * 8), f->n_charrefs = n_refs, f->n_invalid = n_inv;
    Py_ssize_t name_total = 0;
    for (Py_ssize_t i = 0; i < n_names; i++) {
        PyObject *v = PySequence_Fast_GET_ITEM(en, i);
        if (!PyBytes_Check(v) || PyBytes_GET_SIZE(v) > 32) {
            PyErr_SetString(PyExc_ValueError, "entity names must be bytes of at most 32");
            goto done;
        }
        name_total += PyBytes_GET_SIZE(v);
    }
    f->name_bytes = PyMem_Malloc(name_total + 1);
    if (!f->out_bytes || !f->out_start || !f->fold || !f->name_slots || !f->name_start || !f->name_value ||
        !f->charref_num || !f->charref_value || !f->invalid_cps || !f->name_bytes) {
        PyErr_NoMemory();
        goto done;
    }
    f->out_bytes[0] = ' ', f->out_start[0] = 0, f->out_start[1] = 1, f->out_start[2] = 1;
    Py_ssize_t at = 2;
    for (int g = 0; g < 3; g++)
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(groups[g]); i++, at++) {
            PyObject *v = PySequence_Fast_GET_ITEM(groups[g], i);
            Py_ssize_t len = PyBytes_GET_SIZE(v);
            memcpy(f->out_bytes + f->out_start[at], PyBytes_AS_STRING(v), len);
            f->out_start[at + 1] = f->out_start[at] + len;
        }
    for (Py_ssize_t i = 0; i < n_fold; i++) {
        long long c = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(cps, i));
        if (c < 0x80 || c >= FOLD_LIMIT) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "fold_cps: code points 0x80 .. FOLD_LIMIT");
            goto done;
        }
        /* b"" drops the code point (FOLD_DROP), b" " is the default (FOLD_SEP), else its own entry */
        Py_ssize_t len = f->out_start[2 + i + 1] - f->out_start[2 + i];
        f->fold[c] = len == 0 ? FOLD_DROP : (uint16_t)(2 + i);
    }
    f->name_start[0] = 0;
    for (Py_ssize_t i = 0; i < n_names; i++) {
        PyObject *v = PySequence_Fast_GET_ITEM(en, i);
        Py_ssize_t len = PyBytes_GET_SIZE(v);
        memcpy(f->name_bytes + f->name_start[i], PyBytes_AS_STRING(v), len);
        f->name_start[i + 1] = f->name_start[i] + len;
        f->name_value[i] = 2 + n_fold + i;
        uint64_t h = fnv((const uint8_t *)PyBytes_AS_STRING(v), len), slot = h & f->name_mask;
        while (f->name_slots[slot]) slot = (slot + 1) & f->name_mask;
        f->name_slots[slot] = TAG(h) | (uint64_t)(i + 1);
    }
    for (Py_ssize_t i = 0; i < n_refs; i++) f->charref_value[i] = 2 + n_fold + n_names + i;
    if (sorted_ints(rn, f->charref_num, "charref_nums") < 0 || sorted_ints(inv, f->invalid_cps, "invalid_cps") < 0)
        goto done;
    rc = PyErr_Occurred() ? -1 : 0;
done:
    Py_XDECREF(cps), Py_XDECREF(fv), Py_XDECREF(en), Py_XDECREF(ev), Py_XDECREF(rn), Py_XDECREF(rv), Py_XDECREF(inv);
    if (rc < 0 && f->fold) PyMem_Free(f->fold), f->fold = NULL;  /* not initialised: fold() refuses */
    return rc;
}

static void Folder_dealloc(Folder *f) {
    PyMem_Free(f->fold), PyMem_Free(f->out_bytes), PyMem_Free(f->out_start), PyMem_Free(f->name_slots);
    PyMem_Free(f->name_bytes), PyMem_Free(f->name_start), PyMem_Free(f->name_value), PyMem_Free(f->charref_num);
    PyMem_Free(f->charref_value), PyMem_Free(f->invalid_cps);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static PyMethodDef Folder_methods[] = {
    {"fold", (PyCFunction)Folder_fold, METH_VARARGS,
     "fold(offsets, data, first, n_rows) -> (offsets as int32 bytes, text bytes, fallback rows as int64 bytes): rows "
     "first..first+n_rows folded (see the C source); a fallback row is left empty for Python's normalise"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FolderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tailstudy._core.Folder",
    .tp_basicsize = sizeof(Folder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Folder(fold_cps, fold_values, names, name_values, charref_nums, charref_values, invalid_cps): "
              "normalise's folding of rare rows, compiled",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Folder_init,
    .tp_dealloc = (destructor)Folder_dealloc,
    .tp_methods = Folder_methods,
};

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
    if (PyType_Ready(&CoreType) < 0 || PyType_Ready(&FolderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddStringConstant(m, "source_sha256", CORE_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CoreType), Py_INCREF(&FolderType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddObject(m, "Folder", (PyObject *)&FolderType) < 0) {
        Py_DECREF(&CoreType), Py_DECREF(&FolderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
