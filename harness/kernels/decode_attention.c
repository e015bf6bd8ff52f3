/* Attention for one query a row over a key/value cache, for dia-bench's static engine on the CPU.

   A decode step's attention reads each layer's cache once: at 20 s of dia-1.6b in fp32 that is 256 MB
   a step beside 712 MB of int4 weights, and torch's batched matmuls for 4 query rows read it at a
   third of the bus. Here each (row, key/value head) streams its keys once for all the query heads of
   its group, then its values once, so the cache is read at the rate one core streams memory.

   Keys and values may be bf16 (kv_bf16 = 1), widened to fp32 as they are read: a cache kept in bf16
   halves what a step reads, and the arithmetic stays fp32.

   query  (rows, kv_heads, groups, dim), contiguous
   key    (rows, kv_heads, length, dim) at key_row and key_head strides (in elements); positions `dim` apart
   value  the same at its own strides
   mask   (rows or 1, length), additive, contiguous; mask_row = length or 0
   out    (rows, kv_heads, groups, dim), contiguous
   Returns 0, or 1 when a scratch buffer could not be allocated. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 2^f for f in [-0.5, 0.5]: its Taylor series to degree 6 (relative error about 1e-7, fp32's own), for a
   float or a vector of them. */
#define EXP2_FRACTION(p, f)                                                                                \
    do {                                                                                                   \
        p = f * 1.5403530393381609e-4f + 1.3333558146428443e-3f;                                          \
        p = p * f + 9.6181291076284772e-3f;                                                                \
        p = p * f + 5.5504108664821580e-2f;                                                                \
        p = p * f + 2.4022650695910071e-1f;                                                                \
        p = p * f + 6.9314718055994531e-1f;                                                                \
        p = p * f + 1.0f;                                                                                  \
    } while (0)

/* e^x for x <= 0: 2^(x log2 e) split into an integer power and a fraction in [-0.5, 0.5]. Below -87 (and
   for masked positions) it is exactly 0. One number at a time, for the generic body and the positions
   left over from whole vectors (exp_nonpositive_lanes computes the same a vector at a time). */
static inline float exp_nonpositive(float x) {
    float t = x * 1.44269504088896341f;
    float n = __builtin_floorf(t + 0.5f);
    float f = t - n, p;
    EXP2_FRACTION(p, f);
    int32_t e = ((int32_t)(x < -87.0f ? 0.0f : n) + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

static inline float from_f32(const float *p, int64_t i) { return p[i]; }

/* bf16 is the top half of an fp32: shifted into place, exactly. */
static inline float from_bf16(const uint16_t *p, int64_t i) {
    uint32_t bits = (uint32_t)p[i] << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* One (row, key/value head): its group's scores over every position, softmax, then the values, each
   key and value read once. One body for both storage types, so that each loop vectorizes for its own. */
#define ATTEND(NAME, T, LOAD)                                                                              \
    static void NAME(const float *q, const T *k, const T *v, const float *m, float *o, float *s,          \
                     int64_t groups, int64_t dim, int64_t length, float scale) {                          \
        for (int64_t t = 0; t < length; t++) {                                                            \
            const T *kt = k + t * dim;                                                                    \
            for (int64_t g = 0; g < groups; g++) {                                                        \
                const float *qg = q + g * dim;                                                            \
                float acc = 0.0f;                                                                         \
                _Pragma("omp simd reduction(+ : acc)") for (int64_t d = 0; d < dim; d++) acc +=            \
                    qg[d] * LOAD(kt, d);                                                                  \
                s[g * length + t] = acc * scale + m[t];                                                   \
            }                                                                                             \
        }                                                                                                 \
        softmax_rows(s, groups, length);                                                                  \
        memset(o, 0, sizeof(float) * (size_t)(groups * dim));                                            \
        for (int64_t t = 0; t < length; t++) {                                                            \
            const T *vt = v + t * dim;                                                                    \
            for (int64_t g = 0; g < groups; g++) {                                                        \
                float p = s[g * length + t], *og = o + g * dim;                                           \
                _Pragma("omp simd") for (int64_t d = 0; d < dim; d++) og[d] += p * LOAD(vt, d);           \
            }                                                                                             \
        }                                                                                                 \
    }

/* Dia's heads are 128 wide. For them, a head's 128 numbers are 8 vectors of 16 (GCC's vector extensions:
   AVX-512 registers), or 16 vectors of 8 with AVX2 only, and the loops are arranged for the
   processor rather than left to the vectorizer, which made the generic body compute-bound at 2 cores
   (one dependent chain of multiply-adds per dot product, a bf16 cache slower than an fp32 one):
   - a key is widened once and multiplied by every query of the group (up to 4 chains at once), and
     two keys go together when the group is one query (cross-attention);
   - each query's output stays in registers while the values stream past, two queries at a time. */
#if defined(__AVX512F__) || !defined(__AVX2__)
typedef float vecf __attribute__((vector_size(64)));
typedef int32_t lanei __attribute__((vector_size(64)));
#define LANES 16
#else
/* With AVX2 only, a vector is one 256-bit register: GCC split 64-byte vectors into pairs that it moved
   through the stack. On a 2-core Zen 3 that made 18 layers' self-attention over 20 s of bf16 cache take
   41.5 ms, and 10.8 ms with 8-lane vectors. */
#include <immintrin.h>
typedef float vecf __attribute__((vector_size(32)));
typedef int32_t lanei __attribute__((vector_size(32)));
#define LANES 8
#endif
#define WIDE 128
#define CHUNKS (WIDE / LANES)

/* Vector c (0-7) of a 128-wide row, and which of the row's numbers its lane j holds (`place`): fp32 rows
   in order; bf16 rows 32 numbers a load, widened by interleaving them with zeros (one unpack a vector,
   where zero-extending and shifting took two), which leaves each 128-bit lane's numbers in two halves.
   A dot product does not care about the order as long as the query is laid out the same way, and the
   outputs are put back in order once a head. */
static inline vecf widen_f32(const float *row, int c) {
    vecf v;
    memcpy(&v, row + c * LANES, sizeof v);
    return v;
}

static inline int place_f32(int c, int j) { return c * LANES + j; }

#if defined(__AVX512F__) || !defined(__AVX2__)
typedef uint16_t half32 __attribute__((vector_size(64)));

static inline vecf widen_bf16(const uint16_t *row, int c) {
    half32 h, w;
    memcpy(&h, row + (c / 2) * 32, sizeof h);
    const half32 zero = {0};
    if (c % 2)
        w = __builtin_shuffle(zero, h, (half32){4, 36, 5, 37, 6, 38, 7, 39, 12, 44, 13, 45, 14, 46, 15, 47,
                                                20, 52, 21, 53, 22, 54, 23, 55, 28, 60, 29, 61, 30, 62, 31, 63});
    else
        w = __builtin_shuffle(zero, h, (half32){0, 32, 1, 33, 2, 34, 3, 35, 8, 40, 9, 41, 10, 42, 11, 43,
                                                16, 48, 17, 49, 18, 50, 19, 51, 24, 56, 25, 57, 26, 58, 27, 59});
    vecf v;
    memcpy(&v, &w, sizeof v);
    return v;
}

static inline int place_bf16(int c, int j) { return (c / 2) * 32 + (c % 2) * 4 + (j / 4) * 8 + j % 4; }
#else
/* With AVX2 only, a vector's 8 numbers are one 16-byte load widened by unpacking with zeros (GCC had split a
   64-byte shuffle into a scalar move a number: bf16 ran 3x slower than fp32 on a Zen 3), in order. */
static inline vecf widen_bf16(const uint16_t *row, int c) {
    const __m128i h = _mm_loadu_si128((const __m128i *)(row + c * LANES)), zero = _mm_setzero_si128();
    const __m256i w = _mm256_set_m128i(_mm_unpackhi_epi16(zero, h), _mm_unpacklo_epi16(zero, h));
    vecf v;
    memcpy(&v, &w, sizeof v);
    return v;
}

static inline int place_bf16(int c, int j) { return c * LANES + j; }
#endif

/* The lanes summed as a tree of halves: four dependent adds (three for AVX2's 8), where a plain loop is
   sixteen (C keeps the order of a float sum as written). */
static inline float total(vecf v) {
#if LANES == 16
    v += __builtin_shuffle(v, (lanei){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    v += __builtin_shuffle(v, (lanei){4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11});
    v += __builtin_shuffle(v, (lanei){2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13});
    v += __builtin_shuffle(v, (lanei){1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
#else
    v += __builtin_shuffle(v, (lanei){4, 5, 6, 7, 0, 1, 2, 3});
    v += __builtin_shuffle(v, (lanei){2, 3, 0, 1, 6, 7, 4, 5});
    v += __builtin_shuffle(v, (lanei){1, 0, 3, 2, 5, 4, 7, 6});
#endif
    return v[0];
}

/* e^x lane by lane, as exp_nonpositive computes each (the same floor, fraction and polynomial); lanes below
   -87 are computed at 0 and then zeroed, so no lane's power leaves an int32. */
static inline vecf exp_nonpositive_lanes(vecf x) {
    const lanei low = x < -87.0f;
    x = (vecf)((lanei)x & ~low);
    const vecf t = x * 1.44269504088896341f, y = t + 0.5f;
    lanei n = __builtin_convertvector(y, lanei); /* toward zero, then down where that rounded a negative up */
    n += (lanei)(__builtin_convertvector(n, vecf) > y);
    const vecf f = t - __builtin_convertvector(n, vecf);
    vecf p;
    EXP2_FRACTION(p, f);
    const lanei bits = (n + 127) << 23;
    vecf scale;
    memcpy(&scale, &bits, sizeof scale);
    return (vecf)((lanei)(p * scale) & ~low);
}

/* Each group's scores, in place, to their softmax. The exponentials a vector at a time: left to the
   auto-vectorizer, GCC 12 kept this loop scalar, each sum waiting on the one before, and it cost a group
   of 4 queries over a 10 s cache as much as their dot products. */
static void softmax_rows(float *s, int64_t groups, int64_t length) {
    for (int64_t g = 0; g < groups; g++) {
        float *sg = s + g * length, top = sg[0];
#pragma omp simd reduction(max : top)
        for (int64_t t = 1; t < length; t++) top = sg[t] > top ? sg[t] : top;
        vecf sums = {0};
        int64_t t = 0;
        for (; t + LANES <= length; t += LANES) {
            vecf x;
            memcpy(&x, sg + t, sizeof x);
            x = exp_nonpositive_lanes(x - top);
            memcpy(sg + t, &x, sizeof x);
            sums += x;
        }
        float sum = total(sums);
        for (; t < length; t++) {
            sg[t] = exp_nonpositive(sg[t] - top);
            sum += sg[t];
        }
        float inv = 1.0f / sum;
#pragma omp simd
        for (int64_t t = 0; t < length; t++) sg[t] *= inv;
    }
}

ATTEND(attend_f32, float, from_f32)
ATTEND(attend_bf16, uint16_t, from_bf16)

/* Four accumulators' totals at once, each by the same tree of halves as total() (so the same sums, bit for
   bit), in lanes 0, TOTAL4_AT, 2 TOTAL4_AT and 3 TOTAL4_AT: 13 vector operations where four total()s are 32,
   for a group of 4 queries at every position. */
static inline vecf total4(vecf a0, vecf a1, vecf a2, vecf a3) {
#if LANES == 16
    const lanei lo = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const lanei hi = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    vecf a01 = __builtin_shuffle(a0, a1, lo) + __builtin_shuffle(a0, a1, hi);
    vecf a23 = __builtin_shuffle(a2, a3, lo) + __builtin_shuffle(a2, a3, hi);
    vecf b = __builtin_shuffle(a01, a23, (lanei){0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27}) +
             __builtin_shuffle(a01, a23, (lanei){4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31});
    b += __builtin_shuffle(b, (lanei){2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13});
    b += __builtin_shuffle(b, (lanei){1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
#else
    const lanei lo = {0, 1, 2, 3, 8, 9, 10, 11}, hi = {4, 5, 6, 7, 12, 13, 14, 15};
    vecf a01 = __builtin_shuffle(a0, a1, lo) + __builtin_shuffle(a0, a1, hi);
    vecf a23 = __builtin_shuffle(a2, a3, lo) + __builtin_shuffle(a2, a3, hi);
    vecf b = __builtin_shuffle(a01, a23, (lanei){0, 1, 8, 9, 4, 5, 12, 13}) +
             __builtin_shuffle(a01, a23, (lanei){2, 3, 10, 11, 6, 7, 14, 15});
    b += __builtin_shuffle(b, (lanei){1, 0, 3, 2, 5, 4, 7, 6});
    b = __builtin_shuffle(b, (lanei){0, 4, 2, 6, 1, 5, 3, 7}); /* a0, a1, a2, a3 in lanes 0, 1, 2, 3 */
#endif
    return b;
}
#if LANES == 16
#define TOTAL4_AT 4
#else
#define TOTAL4_AT 1
#endif

/* Position `at`'s row, when there is one, asked of the caches 4 KB ahead of its use. A row is 256 or 512
   bytes, so a page holds 8-16 positions; the hardware's prefetchers start over at each page, and a group of
   4 queries does enough arithmetic a position that too few loads are in flight to hide the wait. On a 2-core
   Zen 5, 18 layers' self-attention over half of a 10 s cache read it from memory 3-10% faster with (30.6 ->
   33.6 and 33.3 -> 34.2 GB/s, two runs); cross-attention (one query a head, less arithmetic a byte) gained
   nothing, so it goes without. */
#define AHEAD_BYTES 4096
#define FETCH_ROW(T, base, at, length)                                                                     \
    do {                                                                                                   \
        if ((at) < (length))                                                                               \
            for (int64_t b_ = 0; b_ < (int64_t)(WIDE * sizeof(T)); b_ += 64)                               \
                __builtin_prefetch((const char *)((base) + (at) * WIDE) + b_, 0, 3);                       \
    } while (0)

/* G, the queries a key/value head serves, is a constant of each instance: with a loop bound known when
   compiling, the queries' vectors and the sums stay in registers (with `groups` as a variable they
   went through the stack, a store and a load around every multiply-add). */
#define ATTEND_128(NAME, T, WIDEN, PLACE, G)                                                               \
    static void NAME(const float *q, const T *k, const T *v, const float *m, float *o, float *s,          \
                     int64_t length, float scale) {                                                       \
        vecf qv[G][CHUNKS];                                                                              \
        for (int g = 0; g < G; g++)                                                                       \
            for (int c = 0; c < CHUNKS; c++)                                                              \
                for (int j = 0; j < LANES; j++) qv[g][c][j] = q[g * WIDE + PLACE(c, j)] * scale;          \
        const int64_t ahead = AHEAD_BYTES / (int64_t)(WIDE * sizeof(T));                                  \
        int64_t t = 0;                                                                                    \
        if (G == 1)                                                                                       \
            for (; t + 1 < length; t += 2) {                                                              \
                vecf a = {0}, b = {0};                                                                   \
                for (int c = 0; c < CHUNKS; c++) {                                                        \
                    a += qv[0][c] * WIDEN(k + t * WIDE, c);                                               \
                    b += qv[0][c] * WIDEN(k + (t + 1) * WIDE, c);                                         \
                }                                                                                         \
                s[t] = total(a) + m[t];                                                                   \
                s[t + 1] = total(b) + m[t + 1];                                                           \
            }                                                                                             \
        /* Four queries (self-attention's groups) two positions at a time: their 32 vectors do not fit in      \
           registers beside the sums, so each one read serves two multiply-adds; the sums reduced together. */ \
        if (G == 4)                                                                                       \
            for (; t + 1 < length; t += 2) {                                                              \
                FETCH_ROW(T, k, t + ahead, length);                                                       \
                FETCH_ROW(T, k, t + 1 + ahead, length);                                                   \
                vecf a[4] = {{0}}, b[4] = {{0}};                                                         \
                for (int c = 0; c < CHUNKS; c++) {                                                        \
                    vecf kc = WIDEN(k + t * WIDE, c), kd = WIDEN(k + (t + 1) * WIDE, c);                  \
                    for (int g = 0; g < 4; g++) {                                                         \
                        a[g] += qv[g % G][c] * kc;                                                        \
                        b[g] += qv[g % G][c] * kd;                                                        \
                    }                                                                                     \
                }                                                                                         \
                vecf ra = total4(a[0], a[1], a[2], a[3]), rb = total4(b[0], b[1], b[2], b[3]);           \
                for (int g = 0; g < 4; g++) {                                                             \
                    s[g * length + t] = ra[g * TOTAL4_AT] + m[t];                                         \
                    s[g * length + t + 1] = rb[g * TOTAL4_AT] + m[t + 1];                                 \
                }                                                                                         \
            }                                                                                             \
        for (; t < length; t++) {                                                                         \
            if (G > 1) FETCH_ROW(T, k, t + ahead, length);                                                \
            vecf acc[G];                                                                                 \
            for (int g = 0; g < G; g++) acc[g] = (vecf){0};                                              \
            for (int c = 0; c < CHUNKS; c++) {                                                            \
                vecf kc = WIDEN(k + t * WIDE, c);                                                        \
                for (int g = 0; g < G; g++) acc[g] += qv[g][c] * kc;                                      \
            }                                                                                             \
            for (int g = 0; g < G; g++) s[g * length + t] = total(acc[g]) + m[t];                         \
        }                                                                                                 \
        softmax_rows(s, G, length);                                                                       \
        for (int g = 0; g < G; g += 2) {                                                                  \
            const int two = g + 1 < G;                                                                    \
            const float *p0 = s + g * length, *p1 = s + (g + two) * length;                               \
            vecf o0[CHUNKS] = {{0}}, o1[CHUNKS] = {{0}};                                                 \
            for (int64_t u = 0; u < length; u++) {                                                        \
                if (G > 1 && g == 0) FETCH_ROW(T, v, u + ahead, length);                                  \
                for (int c = 0; c < CHUNKS; c++) {                                                        \
                    vecf vt = WIDEN(v + u * WIDE, c);                                                    \
                    o0[c] += p0[u] * vt;                                                                  \
                    if (two) o1[c] += p1[u] * vt;                                                         \
                }                                                                                         \
            }                                                                                             \
            for (int c = 0; c < CHUNKS; c++)                                                              \
                for (int j = 0; j < LANES; j++) {                                                         \
                    o[g * WIDE + PLACE(c, j)] = o0[c][j];                                                 \
                    if (two) o[(g + 1) * WIDE + PLACE(c, j)] = o1[c][j];                                  \
                }                                                                                         \
        }                                                                                                 \
    }

ATTEND_128(attend_f32_g1, float, widen_f32, place_f32, 1)
ATTEND_128(attend_f32_g2, float, widen_f32, place_f32, 2)
ATTEND_128(attend_f32_g4, float, widen_f32, place_f32, 4)
ATTEND_128(attend_bf16_g1, uint16_t, widen_bf16, place_bf16, 1)
ATTEND_128(attend_bf16_g2, uint16_t, widen_bf16, place_bf16, 2)
ATTEND_128(attend_bf16_g4, uint16_t, widen_bf16, place_bf16, 4)

typedef void (*attend_128)(const float *, const void *, const void *, const float *, float *, float *, int64_t,
                           float);

/* The instance for this storage type and group, or NULL: the generic body then runs. */
static attend_128 pick_128(int64_t dim, int64_t groups, int64_t kv_bf16) {
    if (dim != WIDE) return NULL;
    switch (groups * 2 + (kv_bf16 != 0)) {
    case 2: return (attend_128)attend_f32_g1;
    case 3: return (attend_128)attend_bf16_g1;
    case 4: return (attend_128)attend_f32_g2;
    case 5: return (attend_128)attend_bf16_g2;
    case 8: return (attend_128)attend_f32_g4;
    case 9: return (attend_128)attend_bf16_g4;
    default: return NULL;
    }
}

/* Positions whose additive mask is below this lose to every other by more than exp's range here (e^-87 is
   0): each adds exactly nothing, so reading its key and value is wasted. A compiled step keeps one shape,
   the cache allocated for the whole request, and masks the positions not yet written: at 10 s of
   dia-1.6b in bf16 that is, on average, 32 MB of a step's 65 MB of self-attention. */
#define MASKED(x) ((x) < -1e30f)

/* The positions from the first a row may see to the last, [*lo, *hi); all of them where it may see none
   (then every position weighs the same, as softmax over the whole mask gives). */
static void attended_span(const float *m, int64_t length, int64_t *lo, int64_t *hi) {
    int64_t first = 0, last = length;
    while (first < length && MASKED(m[first])) first++;
    while (last > first && MASKED(m[last - 1])) last--;
    if (first == length) first = 0, last = length;
    *lo = first, *hi = last;
}

int decode_attention(const float *query, const void *key, int64_t key_row, int64_t key_head,
                     const void *value, int64_t value_row, int64_t value_head,
                     const float *mask, int64_t mask_row, float *out,
                     int64_t rows, int64_t kv_heads, int64_t groups, int64_t dim, int64_t length, float scale,
                     int64_t kv_bf16) {
    int failed = 0;
#pragma omp parallel for collapse(2) schedule(static) reduction(| : failed)
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t h = 0; h < kv_heads; h++) {
            const float *q = query + (r * kv_heads + h) * groups * dim;
            float *o = out + (r * kv_heads + h) * groups * dim;
            float *s = malloc(sizeof(float) * (size_t)(groups * length));
            if (!s) {
                failed = 1;
                continue;
            }
            int64_t lo, hi;
            attended_span(mask + r * mask_row, length, &lo, &hi);
            int64_t at_k = r * key_row + h * key_head + lo * dim, at_v = r * value_row + h * value_head + lo * dim;
            const uint16_t *k16 = (const uint16_t *)key + at_k, *v16 = (const uint16_t *)value + at_v;
            const float *k32 = (const float *)key + at_k, *v32 = (const float *)value + at_v;
            const float *m = mask + r * mask_row + lo;
            attend_128 fast = pick_128(dim, groups, kv_bf16);
            if (fast)
                fast(q, kv_bf16 ? (const void *)k16 : k32, kv_bf16 ? (const void *)v16 : v32, m, o, s, hi - lo, scale);
            else if (kv_bf16)
                attend_bf16(q, k16, v16, m, o, s, groups, dim, hi - lo, scale);
            else
                attend_f32(q, k32, v32, m, o, s, groups, dim, hi - lo, scale);
            free(s);
        }
    }
    return failed;
}
