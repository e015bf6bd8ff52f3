/* Attention for one query a row over a key/value cache, for dia-bench's static engine on the CPU.

   A decode step's attention reads each layer's cache once: at 20 s of dia-1.6b in fp32 that is 256 MB
   a step beside 712 MB of int4 weights, and torch's batched matmuls for 4 query rows read it at a
   third of the bus. Here each (row, key/value head) streams its keys once for all the query heads of
   its group, then its values once, so the cache is read at the rate one core streams memory.

   query  (rows, kv_heads, groups, dim), contiguous
   key    (rows, kv_heads, length, dim) at key_row and key_head strides; positions `dim` apart
   value  the same at its own strides
   mask   (rows or 1, length), additive, contiguous; mask_row = length or 0
   out    (rows, kv_heads, groups, dim), contiguous
   Returns 0, or 1 when a scratch buffer could not be allocated. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* e^x for x <= 0: 2^(x log2 e) split into an integer power and a fraction in [-0.5, 0.5], whose 2^f
   is its Taylor series to degree 6 (relative error about 1e-7, fp32's own). Branch-free, so the loop
   over positions vectorizes; below -87 (and for masked positions) it is exactly 0. */
static inline float exp_nonpositive(float x) {
    float t = x * 1.44269504088896341f;
    float n = __builtin_floorf(t + 0.5f);
    float f = t - n;
    float p = 1.5403530393381609e-4f;
    p = p * f + 1.3333558146428443e-3f;
    p = p * f + 9.6181291076284772e-3f;
    p = p * f + 5.5504108664821580e-2f;
    p = p * f + 2.4022650695910071e-1f;
    p = p * f + 6.9314718055994531e-1f;
    p = p * f + 1.0f;
    int32_t e = ((int32_t)(x < -87.0f ? 0.0f : n) + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

int decode_attention(const float *query, const float *key, int64_t key_row, int64_t key_head,
                     const float *value, int64_t value_row, int64_t value_head,
                     const float *mask, int64_t mask_row, float *out,
                     int64_t rows, int64_t kv_heads, int64_t groups, int64_t dim, int64_t length, float scale) {
    int failed = 0;
#pragma omp parallel for collapse(2) schedule(static) reduction(| : failed)
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t h = 0; h < kv_heads; h++) {
            const float *k = key + r * key_row + h * key_head;
            const float *v = value + r * value_row + h * value_head;
            const float *q = query + (r * kv_heads + h) * groups * dim;
            const float *m = mask + r * mask_row;
            float *o = out + (r * kv_heads + h) * groups * dim;
            float *s = malloc(sizeof(float) * (size_t)(groups * length));
            if (!s) {
                failed = 1;
                continue;
            }
            for (int64_t t = 0; t < length; t++) {
                const float *kt = k + t * dim;
                for (int64_t g = 0; g < groups; g++) {
                    const float *qg = q + g * dim;
                    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                    for (int64_t d = 0; d < dim; d++) acc += qg[d] * kt[d];
                    s[g * length + t] = acc * scale + m[t];
                }
            }
            for (int64_t g = 0; g < groups; g++) {
                float *sg = s + g * length, top = sg[0], sum = 0.0f;
                for (int64_t t = 1; t < length; t++) top = sg[t] > top ? sg[t] : top;
#pragma omp simd reduction(+ : sum)
                for (int64_t t = 0; t < length; t++) {
                    sg[t] = exp_nonpositive(sg[t] - top);
                    sum += sg[t];
                }
                float inv = 1.0f / sum;
#pragma omp simd
                for (int64_t t = 0; t < length; t++) sg[t] *= inv;
            }
            memset(o, 0, sizeof(float) * (size_t)(groups * dim));
            for (int64_t t = 0; t < length; t++) {
                const float *vt = v + t * dim;
                for (int64_t g = 0; g < groups; g++) {
                    float p = s[g * length + t], *og = o + g * dim;
#pragma omp simd
                    for (int64_t d = 0; d < dim; d++) og[d] += p * vt[d];
                }
            }
            free(s);
        }
    }
    return failed;
}
