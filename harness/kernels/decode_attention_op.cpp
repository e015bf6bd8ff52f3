/* dia_bench::decode_attention's CPU implementation: the attention kernel (decode_attention.c) called from
 * torch's dispatcher without Python in between (ops.py says why). Built by builder.build_operator against
 * torch's stable ABI; decode_attention.py hands it the kernel's entry point. */
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <atomic>
#include <cstdint>

namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;
using Attend = int (*)(const float *, const void *, int64_t, int64_t, const void *, int64_t, int64_t, const float *,
                       int64_t, float *, int64_t, int64_t, int64_t, int64_t, int64_t, float, int64_t);

std::atomic<Attend> kernel{nullptr};

bool positions_contiguous(const Tensor &t, int64_t dim) {
    return t.dim() == 4 && t.stride(3) == 1 && t.stride(2) == dim;
}

Tensor decode_attention(Tensor query, Tensor key, Tensor value, Tensor mask, double scale) {
    const Attend attend = kernel.load();
    STD_TORCH_CHECK(attend != nullptr, "the decode attention kernel was not handed to its operator");
    STD_TORCH_CHECK(query.scalar_type() == ScalarType::Float && query.is_contiguous() && query.dim() == 4,
                    "decode_attention takes contiguous fp32 queries (rows, key/value heads, groups, dim)");
    STD_TORCH_CHECK(mask.scalar_type() == ScalarType::Float && mask.is_contiguous() && mask.dim() == 2,
                    "decode_attention takes a contiguous fp32 mask (rows or 1, keys)");
    const int64_t rows = query.size(0), kv_heads = query.size(1), groups = query.size(2), dim = query.size(3);
    const ScalarType kv = key.scalar_type();
    STD_TORCH_CHECK((kv == ScalarType::Float || kv == ScalarType::BFloat16) && value.scalar_type() == kv &&
                        positions_contiguous(key, dim) && positions_contiguous(value, dim),
                    "decode_attention takes fp32 or bf16 keys and values, one dtype, positions contiguous");
    const int64_t length = key.size(2);
    Tensor out = torch::stable::empty_like(query);
    if (attend(static_cast<const float *>(query.data_ptr()), key.data_ptr(), key.stride(0), key.stride(1),
               value.data_ptr(), value.stride(0), value.stride(1), static_cast<const float *>(mask.data_ptr()),
               mask.size(0) > 1 ? length : 0, static_cast<float *>(out.data_ptr()), rows, kv_heads, groups, dim,
               length, static_cast<float>(scale), kv == ScalarType::BFloat16))
        STD_TORCH_CHECK(false, "the decode attention kernel could not allocate its scores");
    return out;
}

}  // namespace

extern "C" void decode_attention_set_kernel(void *entry) { kernel.store(reinterpret_cast<Attend>(entry)); }

STABLE_TORCH_LIBRARY_IMPL(dia_bench, CPU, m) { m.impl("decode_attention", TORCH_BOX(&decode_attention)); }
