/* Mock walks over int4 codes for tests/bench/gemv_walks.py: the 8da4w kernel's inner loop taken apart, to
 * find which part keeps it below a plain read. Each thread walks its half of the buffer in groups of 4 KB,
 * 256 B an iteration, with software prefetch `far` bytes ahead into L2 (0: none).
 *   mode 0: the loads and the 16 VNNI products an iteration of two rows, against constant activations;
 *   mode 1: + the activations broadcast from memory each iteration, as the kernel does;
 *   mode 2: + the kernel's group epilogue every 4 KB: 128 fp32 scales and lows from a second stream,
 *           float accumulators in memory. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

int64_t walk(const uint8_t *p, int64_t n, const float *scales, const int8_t *xq, int mode, int far) {
    int64_t total = 0;
#pragma omp parallel reduction(+ : total)
    {
        const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
        const int64_t lo = n / 4096 * id / threads * 4096, hi = n / 4096 * (id + 1) / threads * 4096;
        const __m512i nib = _mm512_set1_epi8(0x0F);
        float acc[2 * 64] = {0};
        __m512i keep = _mm512_setzero_si512();
        for (int64_t at = lo; at < hi; at += 4096) {
            __m512i iacc[4][2];
            for (int s = 0; s < 4; s++) iacc[s][0] = iacc[s][1] = _mm512_setzero_si512();
            const int64_t group = at / 4096;
            for (int kk = 0; kk < 16; kk++) {
                const uint8_t *chunk = p + at + kk * 256;
                if (far)
                    for (int line = 0; line < 4; line++)
                        _mm_prefetch((const char *)(chunk + far + line * 64), _MM_HINT_T1);
                __m512i xa[2], xb[2];
                for (int r = 0; r < 2; r++) {
                    if (mode >= 1) {
                        int32_t a, b;
                        memcpy(&a, xq + r * 2048 + (group % 16) * 128 + kk * 8, 4);
                        memcpy(&b, xq + r * 2048 + (group % 16) * 128 + kk * 8 + 4, 4);
                        xa[r] = _mm512_set1_epi32(a);
                        xb[r] = _mm512_set1_epi32(b);
                    } else {
                        xa[r] = xb[r] = _mm512_set1_epi32(0x01020304);
                    }
                }
                for (int s = 0; s < 4; s++) {
                    const __m512i v = _mm512_loadu_si512((const void *)(chunk + s * 64));
                    const __m512i low = _mm512_and_si512(v, nib), high = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
                    for (int r = 0; r < 2; r++) {
                        iacc[s][r] = _mm512_dpbusd_epi32(iacc[s][r], low, xa[r]);
                        iacc[s][r] = _mm512_dpbusd_epi32(iacc[s][r], high, xb[r]);
                    }
                }
            }
            if (mode >= 2) {
                const float *rs = scales + group * 128, *ls = rs + 64;
                for (int s = 0; s < 4; s++) {
                    const __m512 sc = _mm512_loadu_ps(rs + s * 16), mn = _mm512_loadu_ps(ls + s * 16);
                    for (int r = 0; r < 2; r++) {
                        float *a = acc + r * 64 + s * 16;
                        __m512 f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[s][r]), _mm512_mul_ps(sc, _mm512_set1_ps(1e-3f)),
                                                   _mm512_loadu_ps(a));
                        _mm512_storeu_ps(a, _mm512_fmadd_ps(mn, _mm512_set1_ps(2e-3f), f));
                    }
                }
            } else {
                for (int s = 0; s < 4; s++) keep = _mm512_add_epi32(keep, _mm512_add_epi32(iacc[s][0], iacc[s][1]));
            }
        }
        total += _mm512_reduce_add_epi32(keep) + (int64_t)acc[5];
    }
    return total;
}
