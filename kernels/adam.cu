// Fused Adam (torch.optim.Adam semantics) on the device: dense, and lazy over touched rows.
// CPU reference: optim/adam.hpp. One thread per element does the whole update with the CPU's
// operation order (lerp-form first moment, then the second moment, then the step), so one read
// and one write of w, m, v per element and step.
#include <cmath>

#include "common.cuh"

namespace rechub::cuda {

namespace {
using detail::cur_stream;
using detail::grid_for;
using detail::kThreads;

__device__ __forceinline__ void adam_update(const AdamScalars& c, float& w, float g, float& m, float& v) {
  if (c.wd != 0.0f) g = g + c.wd * w;  // torch adds the decay only when weight_decay != 0
  m += c.w1 * (g - m);
  v = v * c.b2 + c.w2 * g * g;
  w += (-c.step_size * m) / (sqrtf(v) / c.bc2_sqrt + c.eps);
}

__global__ void adam_kernel(float* w, const float* g, float* m, float* v, std::int64_t n, AdamScalars c) {
  RECHUB_GRID_STRIDE(i, n) {
    float wi = w[i], mi = m[i], vi = v[i];
    adam_update(c, wi, g[i], mi, vi);
    w[i] = wi;
    m[i] = mi;
    v[i] = vi;
  }
}
__global__ void adam_rows_kernel(float* w, const float* g, float* m, float* v, const std::int32_t* rows,
                                 std::int64_t n_rows, std::int64_t cols, AdamScalars c) {
  RECHUB_GRID_STRIDE(t, n_rows * cols) {
    const std::int64_t i = static_cast<std::int64_t>(rows[t / cols]) * cols + t % cols;
    float wi = w[i], mi = m[i], vi = v[i];
    adam_update(c, wi, g[i], mi, vi);
    w[i] = wi;
    m[i] = mi;
    v[i] = vi;
  }
}
__global__ void adam_flagged_kernel(float* w, const float* g, float* m, float* v, const std::uint8_t* touched,
                                    std::int64_t V, std::int64_t cols, AdamScalars c) {
  RECHUB_GRID_STRIDE(i, V * cols) {
    if (!touched[i / cols]) continue;
    float wi = w[i], mi = m[i], vi = v[i];
    adam_update(c, wi, g[i], mi, vi);
    w[i] = wi;
    m[i] = mi;
    v[i] = vi;
  }
}
__global__ void zero_flagged_kernel(float* g, const std::uint8_t* touched, std::int64_t V, std::int64_t cols) {
  RECHUB_GRID_STRIDE(i, V * cols) {
    if (touched[i / cols]) g[i] = 0.0f;
  }
}
}  // namespace

AdamScalars adam_scalars(double lr, double beta1, double beta2, double eps, double weight_decay, std::int32_t step) {
  const double bc1 = 1.0 - std::pow(beta1, step), bc2 = 1.0 - std::pow(beta2, step);
  return {static_cast<float>(lr / bc1),     static_cast<float>(std::sqrt(bc2)), static_cast<float>(1.0 - beta1),
          static_cast<float>(beta2),        static_cast<float>(1.0 - beta2),    static_cast<float>(eps),
          static_cast<float>(weight_decay)};
}

void adam_step(float* w, const float* g, float* m, float* v, std::int64_t n, const AdamScalars& c) {
  if (n <= 0) return;
  adam_kernel<<<grid_for(n), kThreads, 0, cur_stream()>>>(w, g, m, v, n, c);
  RECHUB_CUDA_LAUNCHED("adam_kernel");
}

void adam_step_rows(float* w, const float* g, float* m, float* v, const std::int32_t* rows, std::int64_t n_rows,
                    std::int64_t cols, const AdamScalars& c) {
  if (n_rows * cols <= 0) return;
  adam_rows_kernel<<<grid_for(n_rows * cols), kThreads, 0, cur_stream()>>>(w, g, m, v, rows, n_rows, cols, c);
  RECHUB_CUDA_LAUNCHED("adam_rows_kernel");
}

void adam_step_flagged(float* w, const float* g, float* m, float* v, const std::uint8_t* touched, std::int64_t V,
                       std::int64_t cols, const AdamScalars& c) {
  if (V * cols <= 0) return;
  adam_flagged_kernel<<<grid_for(V * cols), kThreads, 0, cur_stream()>>>(w, g, m, v, touched, V, cols, c);
  RECHUB_CUDA_LAUNCHED("adam_flagged_kernel");
}

void zero_flagged_rows(float* g, std::uint8_t* touched, std::int64_t V, std::int64_t cols) {
  if (V <= 0) return;
  if (cols > 0) {
    zero_flagged_kernel<<<grid_for(V * cols), kThreads, 0, cur_stream()>>>(g, touched, V, cols);
    RECHUB_CUDA_LAUNCHED("zero_flagged_kernel");
  }
  memset_zero(touched, static_cast<std::size_t>(V));
}

}  // namespace rechub::cuda
