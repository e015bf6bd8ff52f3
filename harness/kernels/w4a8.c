/* dia-bench's int4-weight, int8-activation matrix kernel for the decode step's few rows.
 *
 * Why it exists: a decode step multiplies 2 rows (CFG) by every weight of the decoder, so it is a
 * stream of weights and nothing else. torch's int4 CPU kernel dequantizes to bf16 and is compute
 * bound at 2 rows (about 12 GB/s of int4 on a 2-core Xeon, slower than fbgemm's int8); here the
 * 4-bit codes go straight into 8-bit integer dot products (AVX-512 VNNI, or AVX2's maddubs), so a
 * core does a few instructions per 64 bytes of weights and the memory bus is the limit.
 *
 * Numbers: weights w[n,k] = q[n,k] * scale[n,g] + low[n,g] with q in 0..15 and g = k / G.
 * Activations are quantized per row and group: x[m,k] ~ xq[m,k] * xs[m,g], xq in -127..127. Then
 *   y[m,n] = sum_g scale[n,g] * xs[m,g] * sum_k q*xq  +  low[n,g] * sum_k x[m,k]   (the last sum exact).
 *
 * Layout of the codes (built by w4a8.py): tiles of TN=64 outputs; a tile holds, for each 8 inputs,
 * 4 chunks of 64 bytes, each 16 outputs x 4 bytes; byte b of output j holds input k0+b in its low
 * nibble and input k0+4+b in its high nibble. So one tile is one contiguous stream, and one 32-bit
 * lane of a 512-bit load is exactly what one VNNI dot product of 4 inputs reads.
 * Scales and lows: [tile][group][64] IEEE halves (fp16), widened exactly to fp32 as they are read: in fp32
 * they were an eighth of what a step reads beside the codes, and halving them made a decode step's GEMVs
 * 6% faster (2-core Zen 5, in turns in one process) while rounding a low by at most 0.05% of its size, a
 * few thousandths of a quantization step. Outputs are padded to a multiple of 64 with zero codes.
 *
 * Built at first use with the machine's own flags (-march=native) and cached by w4a8.py. The
 * integer dot products are exact in every path, so the paths differ only in the order of float sums.
 */
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define TN 64

/* fp16 to fp32, exactly (subnormals included), for the paths without F16C's instruction. */
static inline float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 31, mantissa = h & 1023;
    uint32_t bits;
    if (exponent == 31)
        bits = sign | 0x7F800000u | (mantissa << 13);
    else if (exponent)
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    else if (!mantissa)
        bits = sign;
    else { /* subnormal: m x 2^-24, normalized */
        int shift = 0;
        uint32_t m = mantissa;
        while (!(m & 1024)) {
            m <<= 1;
            shift++;
        }
        bits = sign | ((uint32_t)(113 - shift) << 23) | ((m & 1023) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* How the kernel walks its weights, chosen per processor by a short calibration when the library is
 * built (w4a8.py: `calibrate`, stored beside the library), since what fills the memory bus differs by
 * processor and cannot be read from its vendor: software prefetch made a decode step's GEMVs 4-9% faster on
 * a 2-core Xeon, 10-27% slower on a 2-core Zen 4 and about 30% faster on a 2-core Zen 3 (AVX2).
 *   near, far: bytes ahead of the current load prefetched into L1 and into L2 (0: none), SIMD paths only;
 *   nta:       bytes ahead prefetched with the non-temporal hint (0: none), SIMD paths only: a weight is
 *              read once a step, and where the processor honours the hint the stream does not push the
 *              step's other data (attention's caches, activations, the graph's code) out of the caches;
 *   streams:   tiles far apart that one thread walks in turn, a group of each (1..MAX_STREAMS): a core
 *              with one stream of loads in flight left a third of the bus idle on that Xeon;
 *   split:     0 gives each thread one contiguous run of tile positions (a thread done with its own takes
 *              from the back of another's), 1 deals them out in turn.
 * None of these changes which products are summed or in what order: the output is bit-identical. */
#define MAX_STREAMS 4
static int tune_near = 0, tune_far = 0, tune_streams = 2, tune_split = 0, tune_nta = 0;

void w4a8_set_tuning(int near, int far, int streams, int split, int nta) {
    tune_near = near > 0 ? near : 0;
    tune_far = far > 0 ? far : 0;
    tune_nta = nta > 0 ? nta : 0;
    tune_streams = streams < 1 ? 1 : streams > MAX_STREAMS ? MAX_STREAMS : streams;
    tune_split = split != 0;
}

/* The tuning in effect, into out[5]: near, far, streams, split, nta; the distances read 0 on paths that
 * never prefetch. */
void w4a8_tuning(int *out) {
#if defined(__AVX2__)
    out[0] = tune_near;
    out[1] = tune_far;
    out[4] = tune_nta;
#else
    out[0] = out[1] = out[4] = 0;
#endif
    out[2] = tune_streams;
    out[3] = tune_split;
}

const char *w4a8_isa(void) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    return "avx512-vnni";
#elif defined(__AVX2__)
    return "avx2";
#else
    return "scalar";
#endif
}

/* Per row and group of G inputs: the int8 codes, their scale, and the exact sum of the inputs. */
void w4a8_quantize_rows(const float *x, int64_t m_rows, int64_t k, int64_t group, int8_t *xq, float *xs,
                        float *xsum) {
    const int64_t groups = k / group;
    for (int64_t m = 0; m < m_rows; m++) {
        for (int64_t g = 0; g < groups; g++) {
            const float *src = x + m * k + g * group;
            float amax = 0.f, sum = 0.f;
            /* Written so the compiler vectorizes it (a libm call per input cost 130 us for 2 x 8192). */
#pragma omp simd reduction(max : amax) reduction(+ : sum)
            for (int64_t i = 0; i < group; i++) {
                const float v = src[i];
                const float a = v < 0.f ? -v : v;
                amax = a > amax ? a : amax;
                sum += v;
            }
            const float scale = amax > 0.f ? amax / 127.f : 1.f;
            const float inv = 1.f / scale;
            int8_t *dst = xq + m * k + g * group;
#pragma omp simd
            for (int64_t i = 0; i < group; i++) {
                const float v = src[i] * inv;
                dst[i] = (int8_t)(int32_t)(v + (v < 0.f ? -0.5f : 0.5f));
            }
            xs[m * groups + g] = scale;
            xsum[m * groups + g] = sum;
        }
    }
}

#if defined(__AVX2__)
/* A chunk's 4 lines, `far` bytes ahead into L2, `near` ahead into L1 and `nta` ahead non-temporally (0:
 * none; see w4a8_set_tuning). */
static inline __attribute__((always_inline)) void prefetch_chunk(const uint8_t *chunk, const int near, const int far,
                                                                 const int nta) {
    if (nta)
        for (int line = 0; line < 4; line++) _mm_prefetch((const char *)(chunk + nta + line * 64), _MM_HINT_NTA);
    if (far)
        for (int line = 0; line < 4; line++) _mm_prefetch((const char *)(chunk + far + line * 64), _MM_HINT_T1);
    if (near)
        for (int line = 0; line < 4; line++) _mm_prefetch((const char *)(chunk + near + line * 64), _MM_HINT_T0);
}
#endif

/* One group of one tile for rows m0..m0+MR-1: integer dot products, then into the float sums. */
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
/* vpdpbusd through inline assembly: its accumulator is read and written, and with the intrinsic GCC
 * copied each accumulator to another register and spilled some to the stack every iteration once a loop
 * held 16 of them. */
static inline __attribute__((always_inline)) __m512i dpbusd(__m512i acc, const __m512i u8, const __m512i s8) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
    return acc;
}

static inline __attribute__((always_inline)) void tile_group(const uint8_t *w, const int8_t *xq, int64_t k,
                                                              int64_t group, const uint16_t *rs, const uint16_t *lo,
                                                              const float *xs, const float *xsum, int64_t groups,
                                                              int64_t g, float *acc, const int MR, const int near,
                                                              const int far, const int nta) {
    /* With up to 2 rows the high nibbles' products go into accumulators of their own, added at the group's
     * end (exact: integers), so that each accumulator waits on one vpdpbusd per 8 inputs, not two. With
     * this and the assembly above, a compiled decode step took 0.972x the time with the same walk (2-core
     * Zen 5, step by step, tests/bench/step_ab.py --compare source --same-walk: 1.014-1.044 the other way
     * in all 12 requests), and 4 to 16 rows were 1.02-1.10x faster from memory. */
    const int high_apart = MR <= 2;
    __m512i iacc[4][4], hacc[4][4];
    for (int s = 0; s < 4; s++)
        for (int r = 0; r < MR; r++) {
            iacc[s][r] = _mm512_setzero_si512();
            if (high_apart) hacc[s][r] = _mm512_setzero_si512();
        }
    const __m512i nib = _mm512_set1_epi8(0x0F);
    const int8_t *xg = xq + g * group;
    for (int64_t kk = 0; kk < group / 8; kk++) {
        const uint8_t *chunk = w + kk * 4 * 64;
        prefetch_chunk(chunk, near, far, nta);
        __m512i xa[4], xb[4];
        for (int r = 0; r < MR; r++) {
            int32_t a, b;
            memcpy(&a, xg + r * k + kk * 8, 4);
            memcpy(&b, xg + r * k + kk * 8 + 4, 4);
            xa[r] = _mm512_set1_epi32(a);
            xb[r] = _mm512_set1_epi32(b);
        }
        for (int s = 0; s < 4; s++) {
            const __m512i v = _mm512_loadu_si512((const void *)(chunk + s * 64));
            const __m512i low = _mm512_and_si512(v, nib);
            const __m512i high = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
            for (int r = 0; r < MR; r++) {
                iacc[s][r] = dpbusd(iacc[s][r], low, xa[r]);
                if (high_apart)
                    hacc[s][r] = dpbusd(hacc[s][r], high, xb[r]);
                else
                    iacc[s][r] = dpbusd(iacc[s][r], high, xb[r]);
            }
        }
    }
    if (high_apart)
        for (int s = 0; s < 4; s++)
            for (int r = 0; r < MR; r++) iacc[s][r] = _mm512_add_epi32(iacc[s][r], hacc[s][r]);
    for (int s = 0; s < 4; s++) {
        const __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(rs + s * 16)));
        const __m512 mn = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(lo + s * 16)));
        for (int r = 0; r < MR; r++) {
            float *a = acc + r * TN + s * 16;
            __m512 f = _mm512_loadu_ps(a);
            f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[s][r]), _mm512_mul_ps(sc, _mm512_set1_ps(xs[r * groups + g])), f);
            f = _mm512_fmadd_ps(mn, _mm512_set1_ps(xsum[r * groups + g]), f);
            _mm512_storeu_ps(a, f);
        }
    }
}
#define ROWS_PER_PASS 4
#elif defined(__AVX2__)
/* AVX2 has 16 registers, too few for a tile's 8 halves of 256 bits in 2 rows: so each row pair walks the
 * group twice, outputs 0-31 and then 32-63 (the second walk finds its lines in cache). Each maddubs pair
 * sums u8 codes (<= 15) times s8 inputs (|x| <= 127) to at most 7620, so 4 inputs' worth add up in 16
 * bits (30480 < 32767) before one madd widens them: that and reading the weights once for both CFG rows
 * made the GEMVs 1.5x faster in cache on a 2-core Zen 3. From memory the gain there came with software
 * prefetch (the calibration's to choose): 1.3x over the one-row walk at its best. */
static inline __attribute__((always_inline)) void tile_group(const uint8_t *w, const int8_t *xq, int64_t k,
                                                              int64_t group, const uint16_t *rs, const uint16_t *lo,
                                                              const float *xs, const float *xsum, int64_t groups,
                                                              int64_t g, float *acc, const int MR, const int near,
                                                              const int far, const int nta) {
    const __m256i nib = _mm256_set1_epi8(0x0F);
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t *xg = xq + g * group;
    const int64_t steps = group / 8;
    for (int half = 0; half < 2; half++) {
        __m256i iacc[2][4];
        for (int r = 0; r < MR; r++)
            for (int h = 0; h < 4; h++) iacc[r][h] = _mm256_setzero_si256();
        for (int64_t k0 = 0; k0 < steps; k0 += 4) {
            const int64_t k1 = k0 + 4 < steps ? k0 + 4 : steps;
            __m256i sum16[2][4];
            for (int r = 0; r < MR; r++)
                for (int h = 0; h < 4; h++) sum16[r][h] = _mm256_setzero_si256();
            for (int64_t kk = k0; kk < k1; kk++) {
                const uint8_t *chunk = w + kk * 4 * 64;
                if (!half) /* the first walk fetches ahead for both */
                    prefetch_chunk(chunk, near, far, nta);
                __m256i xa[2], xb[2];
                for (int r = 0; r < MR; r++) {
                    int32_t a, b;
                    memcpy(&a, xg + r * k + kk * 8, 4);
                    memcpy(&b, xg + r * k + kk * 8 + 4, 4);
                    xa[r] = _mm256_set1_epi32(a);
                    xb[r] = _mm256_set1_epi32(b);
                }
                for (int h = 0; h < 4; h++) {
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(chunk + half * 128 + h * 32));
                    const __m256i low = _mm256_and_si256(v, nib);
                    const __m256i high = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
                    for (int r = 0; r < MR; r++)
                        sum16[r][h] = _mm256_add_epi16(sum16[r][h], _mm256_add_epi16(_mm256_maddubs_epi16(low, xa[r]),
                                                                                     _mm256_maddubs_epi16(high, xb[r])));
                }
            }
            for (int r = 0; r < MR; r++)
                for (int h = 0; h < 4; h++) iacc[r][h] = _mm256_add_epi32(iacc[r][h], _mm256_madd_epi16(sum16[r][h], ones));
        }
        for (int h = 0; h < 4; h++) {
            const int o = (half * 4 + h) * 8; /* the tile's outputs o..o+7 */
#if defined(__F16C__)
            const __m256 scale = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rs + o)));
            const __m256 low = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(lo + o)));
#else
            float rs8[8], lo8[8];
            for (int j = 0; j < 8; j++) {
                rs8[j] = half_to_float(rs[o + j]);
                lo8[j] = half_to_float(lo[o + j]);
            }
            const __m256 scale = _mm256_loadu_ps(rs8), low = _mm256_loadu_ps(lo8);
#endif
            for (int r = 0; r < MR; r++) {
                float *a = acc + r * TN + o;
                const __m256 sc = _mm256_mul_ps(scale, _mm256_set1_ps(xs[r * groups + g]));
                __m256 f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][h]), sc, _mm256_loadu_ps(a));
                f = _mm256_fmadd_ps(low, _mm256_set1_ps(xsum[r * groups + g]), f);
                _mm256_storeu_ps(a, f);
            }
        }
    }
}
#define ROWS_PER_PASS 2
#else
static void tile_group(const uint8_t *w, const int8_t *xq, int64_t k, int64_t group, const uint16_t *rs,
                       const uint16_t *lo, const float *xs, const float *xsum, int64_t groups, int64_t g, float *acc,
                       const int MR, const int near, const int far, const int nta) {
    (void)near;
    (void)far;
    (void)nta;
    for (int r = 0; r < MR; r++) {
        int32_t dots[TN] = {0};
        const int8_t *xg = xq + r * k + g * group;
        for (int64_t kk = 0; kk < group / 8; kk++)
            for (int s = 0; s < 4; s++)
                for (int j = 0; j < 16; j++)
                    for (int b = 0; b < 4; b++) {
                        const uint8_t byte = w[kk * 256 + s * 64 + j * 4 + b];
                        dots[s * 16 + j] += (byte & 15) * xg[kk * 8 + b] + (byte >> 4) * xg[kk * 8 + 4 + b];
                    }
        for (int n = 0; n < TN; n++)
            acc[r * TN + n] +=
                dots[n] * half_to_float(rs[n]) * xs[r * groups + g] + half_to_float(lo[n]) * xsum[r * groups + g];
    }
}
#define ROWS_PER_PASS 4
#endif

/* A thread's run of pass positions, [front, back) in one word (front in the low half): its owner takes
 * from the front and a thread done with its own run from the back, each by one compare-and-swap. On a
 * 2-core Zen 5 the two threads of the MLP's gate and up layer (256 tiles) finished a mean 13 us apart,
 * and a thread left alone reads less than two; taking turns step by step within each request
 * (tests/bench/step_ab.py --compare source --by-step) the step took 0.989x the time without this
 * (1.003-1.028 the other way, in all 10 requests). Each run has a cache line of its own: sharing one, the
 * owners' compare-and-swaps passed it between the cores and the step was 2% slower where memory was fast. */
typedef struct {
    _Atomic uint64_t ends;
    char pad[64 - sizeof(uint64_t)];
} Run;

static inline int take_pass(Run *run, const int from_back, int64_t *p) {
    uint64_t cur = atomic_load_explicit(&run->ends, memory_order_relaxed);
    for (;;) {
        const uint64_t front = cur & 0xffffffffu, back = cur >> 32;
        if (front >= back) return 0;
        const uint64_t next = from_back ? ((back - 1) << 32) | front : cur + 1;
        if (atomic_compare_exchange_weak_explicit(&run->ends, &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *p = (int64_t)(from_back ? back - 1 : front);
            return 1;
        }
    }
}

/* The run with the most passes left, or -1 when every run is empty. */
static int fullest_run(Run *runs, const int n) {
    int best = -1;
    uint64_t most = 0;
    for (int i = 0; i < n; i++) {
        const uint64_t cur = atomic_load_explicit(&runs[i].ends, memory_order_relaxed);
        const uint64_t front = cur & 0xffffffffu, back = cur >> 32;
        if (back > front && back - front > most) {
            most = back - front;
            best = i;
        }
    }
    return best;
}

/* The pass position this thread walks next, into *p (-1 before its first); 0 when none is left. Dealt in
 * turn: every threads-th position from its id. In runs: its own run's front, then the back of the fullest. */
static inline int next_pass(Run *runs, const int nruns, const int split, const int64_t id, const int64_t threads,
                            const int64_t spread, int64_t *p) {
    if (split) {
        *p = *p < 0 ? id : *p + threads;
        return *p < spread;
    }
    if (id < nruns && take_pass(&runs[id], 0, p)) return 1;
    for (;;) {
        const int victim = fullest_run(runs, nruns);
        if (victim < 0) return 0;
        if (take_pass(&runs[victim], 1, p)) return 1;
    }
}

#define MAX_RUNS 64

/* y[m, n] for n < n_out (y's row stride ldy); bias may be NULL. n_pad is a multiple of 64.
 * Each thread walks tune_streams tiles far apart, a group of each in turn (see w4a8_set_tuning). */
void w4a8_matmul(const int8_t *xq, const float *xs, const float *xsum, int64_t m_rows, int64_t k, int64_t group,
                 const uint8_t *codes, const uint16_t *scales, const uint16_t *lows, int64_t n_pad, int64_t n_out,
                 const float *bias, float *y, int64_t ldy) {
    const int64_t tiles = n_pad / TN, groups = k / group;
    const int64_t tile_bytes = k / 2 * TN;
    const int streams = tune_streams;
    const int64_t spread = (tiles + streams - 1) / streams;
#if defined(__AVX2__)
    const int near = tune_near, far = tune_far, nta = tune_nta;
#else
    const int near = 0, far = 0, nta = 0;
#endif
    /* The runs are laid out for the team omp_get_max_threads() promises; a smaller team still takes them
     * all, since a thread done with its own run takes from any. */
    const int nruns = omp_get_max_threads();
    const int split = tune_split || nruns > MAX_RUNS;
    Run runs[MAX_RUNS] __attribute__((aligned(64)));
    if (!split)
        for (int i = 0; i < nruns; i++)
            atomic_init(&runs[i].ends, ((uint64_t)((i + 1) * spread / nruns) << 32) | (uint64_t)(i * spread / nruns));
#pragma omp parallel
    {
        const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
        for (int64_t p = -1; next_pass(runs, nruns, split, id, threads, spread, &p);) {
            float acc[MAX_STREAMS][ROWS_PER_PASS * TN];
            for (int64_t m0 = 0; m0 < m_rows; m0 += ROWS_PER_PASS) {
                const int64_t mr = m_rows - m0 < ROWS_PER_PASS ? m_rows - m0 : ROWS_PER_PASS;
                memset(acc, 0, sizeof(acc[0]) * streams); /* only the streams in use */
                const int8_t *xr = xq + m0 * k;
                const float *xsr = xs + m0 * groups, *xsumr = xsum + m0 * groups;
                for (int64_t g = 0; g < groups; g++) {
                    for (int64_t s = 0; s < streams; s++) {
                        const int64_t t = p + s * spread;
                        if (t >= tiles) break;
                        const uint8_t *w = codes + t * tile_bytes + g * (group / 2) * TN;
                        const uint16_t *rs = scales + (t * groups + g) * TN, *lo = lows + (t * groups + g) * TN;
                        float *a = acc[s];
                        switch (mr) { /* constant row counts, so each case unrolls into registers */
                        case 1: tile_group(w, xr, k, group, rs, lo, xsr, xsumr, groups, g, a, 1, near, far, nta); break;
#if ROWS_PER_PASS == 2
                        default: tile_group(w, xr, k, group, rs, lo, xsr, xsumr, groups, g, a, 2, near, far, nta); break;
#else
                        case 2: tile_group(w, xr, k, group, rs, lo, xsr, xsumr, groups, g, a, 2, near, far, nta); break;
                        case 3: tile_group(w, xr, k, group, rs, lo, xsr, xsumr, groups, g, a, 3, near, far, nta); break;
                        default: tile_group(w, xr, k, group, rs, lo, xsr, xsumr, groups, g, a, 4, near, far, nta); break;
#endif
                        }
                    }
                }
                for (int64_t s = 0; s < streams; s++) {
                    const int64_t t = p + s * spread;
                    if (t >= tiles) break;
                    const int64_t n0 = t * TN, n1 = n0 + TN < n_out ? n0 + TN : n_out;
                    for (int64_t r = 0; r < mr; r++)
                        for (int64_t n = n0; n < n1; n++)
                            y[(m0 + r) * ldy + n] = acc[s][r * TN + (n - n0)] + (bias ? bias[n] : 0.f);
                }
            }
        }
    }
}

/* The whole layer in one call (each call from Python costs microseconds): quantize x's rows, multiply. */
int w4a8_linear(const float *x, int64_t m_rows, int64_t k, int64_t group, const uint8_t *codes,
                const uint16_t *scales, const uint16_t *lows, int64_t n_pad, int64_t n_out, const float *bias, float *y) {
    const int64_t groups = k / group;
    int8_t *xq = malloc((size_t)(m_rows * k));
    float *xs = malloc(sizeof(float) * (size_t)(2 * m_rows * groups));
    if (!xq || !xs) {
        free(xq);
        free(xs);
        return 1;
    }
    w4a8_quantize_rows(x, m_rows, k, group, xq, xs, xs + m_rows * groups);
    w4a8_matmul(xq, xs, xs + m_rows * groups, m_rows, k, group, codes, scales, lows, n_pad, n_out, bias, y, n_out);
    free(xq);
    free(xs);
    return 0;
}
