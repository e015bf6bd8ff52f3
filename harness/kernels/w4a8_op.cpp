/* dia_bench::w4a8_linear's CPU implementation: the int4=8da4w kernel (w4a8.c) called from torch's
 * dispatcher without Python in between (ops.py says why). Built by builder.build_operator against torch's
 * stable ABI; w4a8.py hands it the kernel's entry point and each packed layer's buffers, by the index the
 * operator is called with. The layers' tensors stay alive in Python (W4A8Linear) while the table points
 * at them. */
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <mutex>
#include <vector>

namespace {

using torch::stable::Tensor;
using Linear = int (*)(const float *, int64_t, int64_t, int64_t, const void *, const void *, const void *, int64_t,
                       int64_t, const float *, float *);

struct Layer {
    int64_t k = 0, group = 0;
    const void *codes = nullptr;  // null: no such layer, or one joined into another
    const void *scales = nullptr, *lows = nullptr;  // fp16
    int64_t n_pad = 0, n_out = 0;
    const float *bias = nullptr;
};

Linear kernel = nullptr;
std::vector<Layer> layers;
std::mutex guard;  // layers may be packed in one thread while another runs a step

Layer layer_at(int64_t index) {
    std::lock_guard<std::mutex> hold(guard);
    STD_TORCH_CHECK(kernel != nullptr, "the 8da4w kernel was not handed to its operator");
    STD_TORCH_CHECK(index >= 0 && index < (int64_t)layers.size() && layers[index].codes != nullptr,
                    "no packed 8da4w layer ", index, " (a layer joined into another is called through its view)");
    return layers[index];
}

Tensor w4a8_linear(Tensor x, int64_t index, int64_t out_features) {
    const Layer l = layer_at(index);
    STD_TORCH_CHECK(x.scalar_type() == torch::headeronly::ScalarType::Float && x.is_contiguous() && x.dim() >= 1 &&
                        x.size(x.dim() - 1) == l.k && out_features == l.n_out,
                    "w4a8_linear takes contiguous fp32 rows of the layer's inputs");
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = out_features;
    Tensor y = torch::stable::new_empty(x, shape);
    if (kernel(static_cast<const float *>(x.data_ptr()), x.numel() / l.k, l.k, l.group, l.codes, l.scales, l.lows,
               l.n_pad, l.n_out, l.bias, static_cast<float *>(y.data_ptr())))
        STD_TORCH_CHECK(false, "the 8da4w kernel could not allocate its activation buffers");
    return y;
}

}  // namespace

extern "C" void w4a8_linear_set_kernel(void *entry) {
    std::lock_guard<std::mutex> hold(guard);
    kernel = reinterpret_cast<Linear>(entry);
}

/* Layer `index` as the kernel's arguments; codes null withdraws it. */
extern "C" void w4a8_op_set_layer(int64_t index, int64_t k, int64_t group, const void *codes, const void *scales,
                                  const void *lows, int64_t n_pad, int64_t n_out, const float *bias) {
    std::lock_guard<std::mutex> hold(guard);
    if ((int64_t)layers.size() <= index) layers.resize(index + 1);
    layers[index] = Layer{k, group, codes, scales, lows, n_pad, n_out, bias};
}

STABLE_TORCH_LIBRARY_IMPL(dia_bench, CPU, m) { m.impl("w4a8_linear", TORCH_BOX(&w4a8_linear)); }
