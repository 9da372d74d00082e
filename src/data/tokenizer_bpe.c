/* The BPE model: the vocab (string -> id) and merges ((id, id) -> rank, merged id) as
 * open-addressed hash tables, and the merge loop of `tokenizers`' Word::merge_all: start from one
 * symbol per character (unknown characters become <0xNN> byte tokens under byte_fallback, else the
 * unk token, fused or not), then repeatedly merge the adjacent pair of lowest rank, leftmost first,
 * with a binary heap; entries left stale by earlier merges are skipped when popped. */
#include <string.h>

#include "medtrain/mem.h"
#include "tokenizer_internal.h"

/* ---- string map ------------------------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) { /* splitmix64's finaliser */
    x ^= x >> 30, x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27, x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t strmap_find(const tk_strmap *m, const char *s, size_t n) {
    size_t mask = m->nslot - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        uint32_t e = m->slot[i];
        if (!e) return i;
        const tk_strent *x = &m->ent[e - 1];
        if (x->len == n && !memcmp(m->pool.p + x->off, s, n)) return i;
    }
}

static mt_status strmap_rehash(tk_strmap *m, size_t nslot) {
    uint32_t *slot = mt_calloc(nslot, sizeof *slot, "tokenizer hash table");
    if (!slot) return MT_ERR_NOMEM;
    mt_free(m->slot);
    m->slot = slot, m->nslot = nslot;
    for (size_t k = 0; k < m->n; k++) {
        const tk_strent *x = &m->ent[k];
        m->slot[strmap_find(m, m->pool.p + x->off, x->len)] = (uint32_t)(k + 1);
    }
    return MT_OK;
}

mt_status tk_strmap_put(tk_strmap *m, const char *s, size_t n, int32_t val) {
    if (n > UINT32_MAX) return mt_fail(MT_ERR_FORMAT, "token of %zu bytes is too long", n);
    if ((m->n + 1) * 2 > m->nslot) MT_TRY(strmap_rehash(m, m->nslot ? 2 * m->nslot : 64));
    size_t i = strmap_find(m, s, n);
    if (m->slot[i]) {
        m->ent[m->slot[i] - 1].val = val;
        return MT_OK;
    }
    if (m->n == m->cap)
        MT_TRY(tk_grow((void **)&m->ent, &m->cap, m->n + 1, sizeof *m->ent, "vocab"));
    size_t off = m->pool.n;
    MT_TRY(tk_bytes_add(&m->pool, s, n));
    MT_TRY(tk_bytes_add(&m->pool, "", 1)); /* NUL after each string: token strings are C strings */
    m->ent[m->n] = (tk_strent){off, (uint32_t)n, val};
    m->slot[i] = (uint32_t)++m->n;
    return MT_OK;
}

int32_t tk_strmap_get(const tk_strmap *m, const char *s, size_t n) {
    if (!m->nslot) return -1;
    uint32_t e = m->slot[strmap_find(m, s, n)];
    return e ? m->ent[e - 1].val : -1;
}

void tk_strmap_free(tk_strmap *m) {
    mt_free(m->slot), mt_free(m->ent);
    tk_bytes_free(&m->pool);
    *m = (tk_strmap){0};
}

/* ---- merges ---------------------------------------------------------------------------------- */

static uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static size_t merge_slot(const tk_merge *t, size_t nslot, uint64_t key) {
    size_t mask = nslot - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask)
        if (t[i].rank < 0 || t[i].key == key) return i;
}

/* A later duplicate of a pair replaces the earlier one, as HashMap::insert does in `tokenizers`. */
mt_status tk_bpe_add_merge(tk_bpe *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if ((m->nmerge + 1) * 2 > m->nmerge_slot) {
        size_t nslot = m->nmerge_slot ? 2 * m->nmerge_slot : 1024;
        tk_merge *t = mt_alloc(nslot * sizeof *t, "merge table");
        if (!t) return MT_ERR_NOMEM;
        for (size_t i = 0; i < nslot; i++) t[i] = (tk_merge){0, -1, -1};
        for (size_t i = 0; i < m->nmerge_slot; i++)
            if (m->merge[i].rank >= 0) t[merge_slot(t, nslot, m->merge[i].key)] = m->merge[i];
        mt_free(m->merge);
        m->merge = t, m->nmerge_slot = nslot;
    }
    uint64_t key = pair_key(a, b);
    tk_merge *e = &m->merge[merge_slot(m->merge, m->nmerge_slot, key)];
    m->nmerge += e->rank < 0;
    *e = (tk_merge){key, rank, id};
    return MT_OK;
}

const tk_merge *tk_bpe_find_merge(const tk_bpe *m, int32_t a, int32_t b) {
    if (!m->nmerge_slot) return NULL;
    uint64_t key = pair_key(a, b);
    const tk_merge *e = &m->merge[merge_slot(m->merge, m->nmerge_slot, key)];
    return e->rank >= 0 ? e : NULL;
}

void tk_bpe_free(tk_bpe *m) {
    tk_strmap_free(&m->vocab);
    mt_free(m->tok_of_id), mt_free(m->merge), mt_free(m->prefix), mt_free(m->suffix);
    memset(m, 0, sizeof *m);
}

void tk_bpe_scratch_free(tk_bpe_scratch *s) {
    mt_free(s->sym), mt_free(s->heap);
    tk_bytes_free(&s->word);
    memset(s, 0, sizeof *s);
}

/* ---- the initial symbols --------------------------------------------------------------------- */

static mt_status sym_push(tk_bpe_scratch *s, int32_t id, size_t len) {
    if (s->nsym == s->symcap)
        MT_TRY(tk_grow((void **)&s->sym, &s->symcap, s->nsym + 1, sizeof *s->sym, "BPE symbols"));
    int32_t k = (int32_t)s->nsym++;
    s->sym[k] = (tk_sym){id, k - 1, -1, (uint32_t)len};
    if (k > 0) s->sym[k - 1].next = k;
    return MT_OK;
}

/* The string a character is looked up as: prefix for all but the first, suffix for the last. */
static mt_status char_key(const tk_bpe *m, tk_bpe_scratch *s, const char *c, size_t len, bool first,
                          bool last) {
    s->word.n = 0;
    if (!first && m->prefix) MT_TRY(tk_bytes_add(&s->word, m->prefix, strlen(m->prefix)));
    MT_TRY(tk_bytes_add(&s->word, c, len));
    if (last && m->suffix) MT_TRY(tk_bytes_add(&s->word, m->suffix, strlen(m->suffix)));
    return MT_OK;
}

/* One symbol per character, as BPE::merge_word builds them. A pending unk (its byte length) is
 * flushed before the next known symbol; with fuse_unk consecutive unknowns grow one unk. */
static mt_status initial_symbols(const tk_bpe *m, const char *w, size_t n, tk_bpe_scratch *s) {
    s->nsym = 0;
    size_t unk_len = 0;
    bool unk = false;
    for (size_t i = 0; i < n;) {
        size_t len = (size_t)tk_utf8_len((unsigned char)w[i]);
        const char *key = w + i;
        size_t key_n = len;
        if (m->prefix || m->suffix) {
            MT_TRY(char_key(m, s, w + i, len, i == 0, i + len == n));
            key = s->word.p, key_n = s->word.n;
        }
        int32_t id = tk_strmap_get(&m->vocab, key, key_n);
        if (id >= 0) {
            if (unk) MT_TRY(sym_push(s, m->unk_id, unk_len));
            unk = false;
            MT_TRY(sym_push(s, id, len));
        } else {
            bool done = false;
            if (m->byte_fallback) {
                done = true;
                for (size_t k = 0; k < key_n; k++) done &= m->byte_id[(unsigned char)key[k]] >= 0;
                /* byte symbols for the looked-up string (prefix and suffix included, as there) */
                for (size_t k = 0; done && k < key_n; k++)
                    MT_TRY(sym_push(s, m->byte_id[(unsigned char)key[k]], 1));
            }
            if (!done && m->unk_id >= 0) {
                if (unk && m->fuse_unk)
                    unk_len += len;
                else {
                    if (unk) MT_TRY(sym_push(s, m->unk_id, unk_len));
                    unk = true, unk_len = len;
                }
            }
            /* neither: the character is dropped, as `tokenizers` drops it */
        }
        i += len;
    }
    if (unk) MT_TRY(sym_push(s, m->unk_id, unk_len));
    return MT_OK;
}

/* ---- the merge loop -------------------------------------------------------------------------- */

static bool heap_less(tk_heapent a, tk_heapent b) {
    return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

static mt_status heap_push(tk_bpe_scratch *s, tk_heapent e) {
    if (s->nheap == s->heapcap)
        MT_TRY(tk_grow((void **)&s->heap, &s->heapcap, s->nheap + 1, sizeof *s->heap, "BPE heap"));
    size_t i = s->nheap++;
    while (i > 0 && heap_less(e, s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = e;
    return MT_OK;
}

static tk_heapent heap_pop(tk_bpe_scratch *s) {
    tk_heapent top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0, n = s->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(s->heap[c + 1], s->heap[c])) c++;
        if (!heap_less(s->heap[c], last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static mt_status push_pair(const tk_bpe *m, tk_bpe_scratch *s, int32_t pos) {
    int32_t next = s->sym[pos].next;
    if (next < 0) return MT_OK;
    const tk_merge *mg = tk_bpe_find_merge(m, s->sym[pos].id, s->sym[next].id);
    return mg ? heap_push(s, (tk_heapent){mg->rank, pos, mg->id}) : MT_OK;
}

static mt_status merge_all(const tk_bpe *m, tk_bpe_scratch *s) {
    s->nheap = 0;
    for (size_t k = 0; k + 1 < s->nsym; k++) MT_TRY(push_pair(m, s, (int32_t)k));
    while (s->nheap) {
        tk_heapent top = heap_pop(s);
        tk_sym *left = &s->sym[top.pos];
        if (left->len == 0 || left->next < 0) continue; /* merged away, or now last */
        tk_sym *right = &s->sym[left->next];
        const tk_merge *mg = tk_bpe_find_merge(m, left->id, right->id);
        if (!mg || mg->id != top.id) continue; /* stale: the pair here changed */
        left->id = top.id;
        left->len += right->len;
        right->len = 0;
        left->next = right->next;
        if (right->next >= 0) s->sym[right->next].prev = top.pos;
        if (left->prev >= 0) MT_TRY(push_pair(m, s, left->prev));
        MT_TRY(push_pair(m, s, top.pos));
    }
    return MT_OK;
}

mt_status tk_bpe_encode(const tk_bpe *m, const char *w, size_t n, tk_bpe_scratch *s,
                        mt_token_ids *out) {
    if (n == 0) return MT_OK;
    if (m->ignore_merges) {
        int32_t id = tk_strmap_get(&m->vocab, w, n);
        if (id >= 0) return tk_ids_push(out, id);
    }
    MT_TRY(initial_symbols(m, w, n, s));
    if (s->nsym == 1) return tk_ids_push(out, s->sym[0].id);
    MT_TRY(merge_all(m, s));
    for (int32_t k = s->nsym ? 0 : -1; k >= 0; k = s->sym[k].next)
        MT_TRY(tk_ids_push(out, s->sym[k].id));
    return MT_OK;
}
