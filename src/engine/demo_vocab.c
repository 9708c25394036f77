/* The demo model's WordPiece vocabulary (vocab.txt): deterministic, generated, and shaped so
 * that English tokenizes about as finely as with a real BERT vocabulary: BERT's special and
 * [unused] ids, the printable ASCII characters and their ## forms, a built-in list of common
 * English words (demo_words.c) with their inflected forms, every two-letter ## piece, the
 * word-initial and ## pieces that occur most often inside those words (weighted by the
 * characters they cover), then syllable words to fill the requested size. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/demo.h"
#include "engine/diag.h"

/* First after the characters, so that small vocabularies (the tiny model's 1000) keep them. */
static const char *const common_words[] = {
    "the", "of", "and", "to", "in", "is", "was", "he", "for", "it", "with", "as", "his", "on",
    "be", "at", "by", "i", "this", "had", "not", "are", "but", "from", "or", "have", "an",
    "they", "which", "one", "you", "were", "her", "all", "she", "there", "would", "their", "we",
    "him", "been", "has", "when", "who", "will", "more", "no", "if", "out", "so", "said",
    "what", "up", "its", "about", "into", "than", "them", "can", "only", "other", "new",
    "some", "could", "time", "these", "two", "may", "then", "do", "first", "any", "my", "now",
    "such", "like", "our", "over", "man", "me", "even", "most", "made", "after", "also", "did",
    "many", "before", "must", "through", "back", "years", "where", "much", "your", "way",
    "well", "down", "should", "because", "each", "just", "those", "people", "how", "too",
    "little", "state", "good", "very", "make", "world", "still", "own", "see", "men", "work",
    "long", "get", "here", "between", "both", "life", "being", "under", "never", "day",
    "same", "another", "know", "while", "last", "might", "us", "great", "old", "year", "off",
    "come", "since", "against", "go", "came", "right", "used", "take", "three", "hello",
    "model", "text", "server", "token", "vector", "search", "query", "answer", "question",
    "data", "machine", "learning", "language", "sentence", "word", "house", "city", "water",
    "music", "film", "book", "game", "team", "school", "music", "love", "happy", "sad",
    "fast", "slow", "big", "small", "red", "blue", "green", "cat", "dog", "car", "tree",
};

static const char *const common_pieces[] = {
    "##s", "##ed", "##ing", "##er", "##ly", "##es", "##est", "##ion", "##al", "##ness",
    "##ment", "##able", "##ful", "##less", "##ity", "##ize", "##ous", "##ive", "##ic",
};

/* English derivational endings and prefixes (general morphology). */
static const char *const suffix_pieces[] = {
    "##tion", "##tions", "##ation", "##ations", "##ization", "##sion", "##ions", "##ers",
    "##ings", "##ied", "##ies", "##ier", "##iest", "##ily", "##ally", "##ical", "##ically",
    "##ial", "##ian", "##ians", "##ism", "##isms", "##ist", "##ists", "##ise", "##ised",
    "##ized", "##izes", "##izing", "##ify", "##ified", "##ance", "##ence", "##ances",
    "##ences", "##ant", "##ants", "##ent", "##ents", "##ency", "##ancy", "##ate", "##ated",
    "##ates", "##ating", "##ator", "##ators", "##ative", "##ively", "##ities", "##ments",
    "##able", "##ably", "##ible", "##ibly", "##ship", "##hood", "##ward", "##wards", "##wise",
    "##ology", "##ologist", "##ics", "##ish", "##like", "##man", "##men", "##land", "##ton",
    "##ville", "##berg", "##burg", "##son", "##er", "##or", "##ors", "##ee", "##ees", "##ry",
    "##ary", "##ory", "##ery", "##ure", "##ures", "##age", "##ages", "##y", "##ey", "##ie",
    "##a", "##o", "##i", "##e", "##u", "##ia", "##io", "##us", "##um", "##is", "##os", "##as",
};
static const char *const prefix_pieces[] = {
    "un", "re", "in", "im", "il", "ir", "dis", "en", "em", "non", "pre", "pro", "over",
    "under", "inter", "trans", "sub", "super", "anti", "auto", "co", "de", "ex", "micro",
    "multi", "post", "semi", "tele", "mis", "out", "up", "bio", "geo", "neo", "mid", "mono",
    "poly", "photo", "psycho", "hyper", "ultra", "mega", "cyber", "counter", "fore", "self",
};

typedef struct vocab_set {
    char **tok;
    int32_t n, cap;
    int32_t *slot;      /* open addressing: index+1, 0 empty */
    uint32_t mask;
} vocab_set;

static uint32_t str_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Adds s if new and there is room; returns 1 added, 0 present or full, -ENOMEM. */
static int vocab_add(vocab_set *v, const char *s)
{
    uint32_t h;
    if (v->n >= v->cap)
        return 0;
    h = str_hash(s) & v->mask;
    while (v->slot[h]) {
        if (!strcmp(v->tok[v->slot[h] - 1], s))
            return 0;
        h = (h + 1) & v->mask;
    }
    v->tok[v->n] = strdup(s);
    if (!v->tok[v->n])
        return -ENOMEM;
    v->slot[h] = ++v->n;
    return 1;
}

/* ---- inflected forms -------------------------------------------------------------------- */

static int is_vowel(char c)
{
    return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
}

/* One vowel group ending consonant-vowel-consonant (stop, plan, run): the last consonant
 * doubles before -ing/-ed/-er. */
static int doubles(const char *w, size_t n)
{
    int groups = 0;
    if (n < 3 || is_vowel(w[n - 1]) || strchr("wxy", w[n - 1]) || !is_vowel(w[n - 2]) ||
        is_vowel(w[n - 3]))
        return 0;
    for (size_t i = 0; i < n; i++)
        groups += is_vowel(w[i]) && (i == 0 || !is_vowel(w[i - 1]));
    return groups == 1;
}

enum { F_S, F_ED, F_ING, F_ER, F_LY, F_COUNT };

/* The form f of word w (lower-case letters, at least 3) into out (cap >= strlen(w) + 8),
 * by the regular English spelling rules. */
static void inflect(const char *w, int f, char *out, size_t cap)
{
    size_t n = strlen(w);
    char last = w[n - 1], prev = w[n - 2];
    int cy = last == 'y' && !is_vowel(prev);           /* carry -> carries, carried */
    int e = last == 'e';
    int dbl = doubles(w, n);
    const char *stem_cut = "", *end = "";
    size_t keep = n;

    switch (f) {
    case F_S:
        if (cy) {
            keep = n - 1;
            end = "ies";
        } else if (last == 's' || last == 'x' || last == 'z' ||
                   ((last == 'h') && (prev == 'c' || prev == 's'))) {
            end = "es";
        } else {
            end = "s";
        }
        break;
    case F_ED:
    case F_ER:
        if (cy) {
            keep = n - 1;
            end = f == F_ED ? "ied" : "ier";
        } else if (e) {
            end = f == F_ED ? "d" : "r";
        } else {
            end = f == F_ED ? "ed" : "er";
            stem_cut = dbl ? "x" : "";
        }
        break;
    case F_ING:
        if (e && prev == 'i') {
            keep = n - 2;
            end = "ying";
        } else if (e && prev != 'e' && prev != 'y' && prev != 'o') {
            keep = n - 1;
            end = "ing";
        } else {
            end = "ing";
            stem_cut = dbl ? "x" : "";
        }
        break;
    default:                                            /* F_LY */
        if (last == 'e' && prev == 'l') {
            keep = n - 1;
            end = "y";
        } else if (cy) {
            keep = n - 1;
            end = "ily";
        } else if (last == 'c' && prev == 'i') {
            end = "ally";
        } else {
            end = "ly";
        }
        break;
    }
    snprintf(out, cap, "%.*s%s%s", (int)keep, w, *stem_cut ? (char[2]){ last, 0 } : "", end);
}

/* ---- pieces derived from the word list -------------------------------------------------- */

#define GRAM_MAX 6            /* letters in a derived piece */

typedef struct gram {
    char s[GRAM_MAX + 3];     /* "##" + letters, or the letters of a word-initial piece */
    int32_t score;
} gram;

typedef struct gram_set {
    gram *g;
    uint32_t mask, n;
} gram_set;

static void gram_count(gram_set *t, const char *s, int32_t w)
{
    uint32_t h = str_hash(s) & t->mask;
    while (t->g[h].s[0]) {
        if (!strcmp(t->g[h].s, s)) {
            t->g[h].score += w;
            return;
        }
        h = (h + 1) & t->mask;
    }
    if (t->n + 1 >= t->mask / 2)      /* keep the table at most half full */
        return;
    strcpy(t->g[h].s, s);
    t->g[h].score = w;
    t->n++;
}

/* Word-initial pieces of 2..GRAM_MAX letters shorter than the word, and ## pieces of 2..
 * GRAM_MAX letters at every later position; each scores (letters − 1) per occurrence, twice
 * at the end of the word (endings recur). */
static void gram_word(gram_set *t, const char *w)
{
    size_t n = strlen(w);
    char buf[GRAM_MAX + 3];
    for (size_t l = 2; l <= GRAM_MAX && l < n; l++) {
        snprintf(buf, sizeof buf, "%.*s", (int)l, w);
        gram_count(t, buf, (int32_t)l - 1);
    }
    for (size_t i = 1; i < n; i++)
        for (size_t l = 2; l <= GRAM_MAX && i + l <= n; l++) {
            snprintf(buf, sizeof buf, "##%.*s", (int)l, w + i);
            gram_count(t, buf, ((int32_t)l - 1) * (i + l == n ? 2 : 1));
        }
}

static int gram_cmp(const void *a, const void *b)
{
    const gram *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return strcmp(x->s, y->s);
}

/* Calls fn(word) for every word of the built-in list; stops at a negative return. */
static int each_word(int (*fn)(void *, const char *), void *ctx)
{
    const char *p = xf_demo_english;
    char w[64];
    while (*p) {
        size_t l = strcspn(p, " ");
        if (l > 0 && l < sizeof w) {
            memcpy(w, p, l);
            w[l] = 0;
            int rc = fn(ctx, w);
            if (rc < 0)
                return rc;
        }
        p += l;
        p += strspn(p, " ");
    }
    return 0;
}

static int add_word(void *ctx, const char *w)
{
    return vocab_add(ctx, w) < 0 ? -ENOMEM : 0;
}

static int add_forms(void *ctx, const char *w)
{
    char buf[80];
    if (strlen(w) < 3)
        return 0;
    for (int f = 0; f < F_COUNT; f++) {
        inflect(w, f, buf, sizeof buf);
        if (vocab_add(ctx, buf) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int count_forms(void *ctx, const char *w)
{
    char buf[80];
    gram_word(ctx, w);
    if (strlen(w) < 3)
        return 0;
    for (int f = 0; f < F_COUNT; f++) {
        inflect(w, f, buf, sizeof buf);
        gram_word(ctx, buf);
    }
    return 0;
}

/* Adds the derived pieces, best first, until the vocabulary is full or they run out. */
static int add_grams(vocab_set *v)
{
    gram_set t = { 0 };
    gram *list;
    uint32_t k = 0;
    int rc = 0;

    if (v->n >= v->cap)
        return 0;
    t.mask = (1u << 20) - 1;
    t.g = calloc((size_t)t.mask + 1, sizeof *t.g);
    if (!t.g)
        return -ENOMEM;
    each_word(count_forms, &t);
    list = t.g;                                 /* compact the used slots in place */
    for (uint32_t i = 0; i <= t.mask; i++)
        if (t.g[i].s[0] && t.g[i].score >= 2)
            list[k++] = t.g[i];
    qsort(list, k, sizeof *list, gram_cmp);
    for (uint32_t i = 0; i < k && v->n < v->cap && rc >= 0; i++)
        rc = vocab_add(v, list[i].s);
    free(t.g);
    return rc < 0 ? -ENOMEM : 0;
}

/* ---- filler ----------------------------------------------------------------------------- */

/* Syllable word number i >= 1 (bijective base over CV/V syllables: unique strings). */
static void syllable_word(uint64_t i, char *out, size_t cap)
{
    static const char cons[] = "bcdfghjklmnprstvwz";
    static const char vow[] = "aeiou";
    const uint64_t ns = 5 + 18 * 5;
    char tmp[64];
    size_t len = 0;

    while (i > 0 && len + 2 < sizeof tmp) {
        uint64_t d = (i - 1) % ns;
        i = (i - 1) / ns;
        /* syllables are pushed reversed: vowel first, then its consonant */
        if (d < 5) {
            tmp[len++] = vow[d];
        } else {
            d -= 5;
            tmp[len++] = vow[d % 5];
            tmp[len++] = cons[d / 5];
        }
    }
    size_t j = 0;
    for (; j < len && j + 1 < cap; j++)
        out[j] = tmp[len - 1 - j];
    out[j] = 0;
}

int xf_demo_vocab_write(const char *path, int32_t n, xf_diag_t *diag)
{
    vocab_set v = { 0 };
    char buf[80];
    char *text = NULL;
    size_t tlen = 0, size = 1;
    uint32_t nslot = 1;
    int rc = 0;

    if (n < XF_DEMO_VOCAB_MIN || n > 10000000)
        return xf_diag_set(diag, XF_EPARAM, "vocab_size %d out of range [%d, 10000000]", n,
                           XF_DEMO_VOCAB_MIN);
    while (nslot < 2u * (uint32_t)n)
        nslot <<= 1;
    v.cap = n;
    v.mask = nslot - 1;
    v.tok = calloc((size_t)n, sizeof *v.tok);
    v.slot = calloc(nslot, sizeof *v.slot);
    if (!v.tok || !v.slot)
        goto oom;

#define ADD(s)                                                                             \
    do {                                                                                   \
        if (vocab_add(&v, (s)) < 0)                                                        \
            goto oom;                                                                      \
    } while (0)
#define ADD_ALL(a)                                                                         \
    for (size_t i_ = 0; i_ < sizeof(a) / sizeof *(a); i_++)                                \
    ADD((a)[i_])
    ADD("[PAD]");
    for (int i = 0; i < 99; i++) {
        snprintf(buf, sizeof buf, "[unused%d]", i);
        ADD(buf);
    }
    ADD("[UNK]");
    ADD("[CLS]");
    ADD("[SEP]");
    ADD("[MASK]");
    for (int c = 33; c < 127; c++) {
        if (c >= 'A' && c <= 'Z')
            continue;
        buf[0] = (char)c;
        buf[1] = 0;
        ADD(buf);
    }
    for (int c = 33; c < 127; c++) {
        if (c >= 'A' && c <= 'Z')
            continue;
        snprintf(buf, sizeof buf, "##%c", c);
        ADD(buf);
    }
    ADD_ALL(common_words);
    ADD_ALL(common_pieces);
    if (each_word(add_word, &v) < 0)
        goto oom;
    ADD_ALL(suffix_pieces);
    ADD_ALL(prefix_pieces);
    for (int a = 'a'; a <= 'z'; a++)
        for (int b = 'a'; b <= 'z'; b++) {
            snprintf(buf, sizeof buf, "##%c%c", a, b);
            ADD(buf);
        }
    if (each_word(add_forms, &v) < 0 || add_grams(&v) < 0)
        goto oom;
    for (uint64_t i = 1; v.n < n; i++) {
        /* three words, then one ## piece */
        syllable_word(i, buf, 60);
        if (i % 4 == 0) {
            char piece[80];
            snprintf(piece, sizeof piece, "##%s", buf);
            ADD(piece);
        } else {
            ADD(buf);
        }
    }
#undef ADD_ALL
#undef ADD

    for (int32_t i = 0; i < n; i++)
        size += strlen(v.tok[i]) + 1;
    text = malloc(size);
    if (!text)
        goto oom;
    for (int32_t i = 0; i < n; i++) {
        size_t l = strlen(v.tok[i]);
        memcpy(text + tlen, v.tok[i], l);
        tlen += l;
        text[tlen++] = '\n';
    }
    rc = xf_demo_write_file(path, text, tlen, diag);
    goto out;
oom:
    rc = xf_diag_set(diag, -ENOMEM, "%s: out of memory", path);
out:
    if (v.tok)
        for (int32_t i = 0; i < v.n; i++)
            free(v.tok[i]);
    free(v.tok);
    free(v.slot);
    free(text);
    return rc;
}
