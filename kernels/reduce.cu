// Reductions: sum / mean of everything, over one dim, and masked_mean. CPU reference:
// ops/reduce.hpp. The full sum accumulates in double like the CPU; one block of 1024 threads
// sums in a fixed order (losses and metrics are batch-sized, so one block is enough).
#include "common.cuh"

namespace rechub::cuda {

namespace {
using detail::cur_stream;
using detail::grid_for;
using detail::kThreads;

__global__ void sum_all_kernel(float* y, const float* x, std::int64_t n, float scale) {
  __shared__ double sh[32];
  double s = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
  s = detail::block_sum(s, sh);
  if (threadIdx.x == 0) y[0] = static_cast<float>(s * scale);
}
__global__ void sum_all_backward_kernel(float* dx, const float* dy, std::int64_t n, float scale) {
  const float g = dy[0] * scale;
  RECHUB_GRID_STRIDE(i, n) dx[i] += g;
}

// y[o, i] = scale sum_j x[o, j, i]: one thread per output, j in order (the CPU's order).
__global__ void sum_dim_kernel(float* y, const float* x, std::int64_t outer, std::int64_t len, std::int64_t inner,
                               float scale, bool average) {
  RECHUB_GRID_STRIDE(t, outer * inner) {
    const std::int64_t o = t / inner, i = t % inner;
    const float* p = x + o * len * inner + i;
    float s = 0.0f;
    for (std::int64_t j = 0; j < len; ++j) s += p[j * inner];
    y[t] = average ? s * scale : s;
  }
}
// inner == 1 (a row sum): one block per row.
__global__ void sum_rows_kernel(float* y, const float* x, std::int64_t outer, std::int64_t len, float scale,
                                bool average) {
  __shared__ float sh[32];
  for (std::int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    float s = 0.0f;
    for (std::int64_t j = threadIdx.x; j < len; j += blockDim.x) s += x[o * len + j];
    s = detail::block_sum(s, sh);
    if (threadIdx.x == 0) y[o] = average ? s * scale : s;
  }
}
__global__ void sum_dim_backward_kernel(float* dx, const float* dy, std::int64_t outer, std::int64_t len,
                                        std::int64_t inner, float scale) {
  RECHUB_GRID_STRIDE(t, outer * len * inner) {
    const std::int64_t i = t % inner, o = t / (len * inner);
    dx[t] += dy[o * inner + i] * scale;
  }
}

__global__ void masked_mean_weights_kernel(float* w, const std::int32_t* mask, std::int64_t B, std::int64_t L) {
  RECHUB_GRID_STRIDE(b, B) {
    std::int64_t n = 0;
    for (std::int64_t l = 0; l < L; ++l) n += mask[b * L + l] != 0;
    const float inv = n > 0 ? 1.0f / static_cast<float>(n) : 0.0f;
    for (std::int64_t l = 0; l < L; ++l) w[b * L + l] = mask[b * L + l] != 0 ? inv : 0.0f;
  }
}
__global__ void masked_mean_kernel(float* y, const float* w, const float* x, std::int64_t B, std::int64_t L,
                                   std::int64_t D) {
  RECHUB_GRID_STRIDE(t, B * D) {
    const std::int64_t b = t / D, j = t % D;
    float s = 0.0f;
    for (std::int64_t l = 0; l < L; ++l) {
      const float wl = w[b * L + l];
      if (wl != 0.0f) s += wl * x[(b * L + l) * D + j];
    }
    y[t] = s;
  }
}
__global__ void masked_mean_backward_kernel(float* dx, const float* dy, const float* w, std::int64_t B,
                                            std::int64_t L, std::int64_t D) {
  RECHUB_GRID_STRIDE(t, B * L * D) {
    const std::int64_t bl = t / D, j = t % D, b = bl / L;
    const float wl = w[bl];
    if (wl != 0.0f) dx[t] += wl * dy[b * D + j];
  }
}
}  // namespace

void sum_all_forward(float* y, const float* x, std::int64_t n, float scale) {
  sum_all_kernel<<<1, 1024, 0, cur_stream()>>>(y, x, n, scale);
  RECHUB_CUDA_LAUNCHED("sum_all_kernel");
}

void sum_all_backward(float* dx, const float* dy, std::int64_t n, float scale) {
  if (n <= 0) return;
  sum_all_backward_kernel<<<grid_for(n), kThreads, 0, cur_stream()>>>(dx, dy, n, scale);
  RECHUB_CUDA_LAUNCHED("sum_all_backward_kernel");
}

void sum_dim_forward(float* y, const float* x, std::int64_t outer, std::int64_t len, std::int64_t inner, float scale) {
  if (outer * inner <= 0) return;
  const bool average = scale != 1.0f;
  if (inner == 1 && len >= 64) {
    const int t = detail::row_threads(len);
    sum_rows_kernel<<<detail::grid_rows(outer), t, 0, cur_stream()>>>(y, x, outer, len, scale, average);
    RECHUB_CUDA_LAUNCHED("sum_rows_kernel");
    return;
  }
  sum_dim_kernel<<<grid_for(outer * inner), kThreads, 0, cur_stream()>>>(y, x, outer, len, inner, scale, average);
  RECHUB_CUDA_LAUNCHED("sum_dim_kernel");
}

void sum_dim_backward(float* dx, const float* dy, std::int64_t outer, std::int64_t len, std::int64_t inner,
                      float scale) {
  const std::int64_t n = outer * len * inner;
  if (n <= 0) return;
  sum_dim_backward_kernel<<<grid_for(n), kThreads, 0, cur_stream()>>>(dx, dy, outer, len, inner, scale);
  RECHUB_CUDA_LAUNCHED("sum_dim_backward_kernel");
}

void masked_mean_forward(float* y, float* w, const float* x, const std::int32_t* mask, std::int64_t B,
                         std::int64_t L, std::int64_t D) {
  if (B <= 0) return;
  masked_mean_weights_kernel<<<grid_for(B), kThreads, 0, cur_stream()>>>(w, mask, B, L);
  RECHUB_CUDA_LAUNCHED("masked_mean_weights_kernel");
  if (D <= 0) return;
  masked_mean_kernel<<<grid_for(B * D), kThreads, 0, cur_stream()>>>(y, w, x, B, L, D);
  RECHUB_CUDA_LAUNCHED("masked_mean_kernel");
}

void masked_mean_backward(float* dx, const float* dy, const float* w, std::int64_t B, std::int64_t L,
                          std::int64_t D) {
  const std::int64_t n = B * L * D;
  if (n <= 0) return;
  masked_mean_backward_kernel<<<grid_for(n), kThreads, 0, cur_stream()>>>(dx, dy, w, B, L, D);
  RECHUB_CUDA_LAUNCHED("masked_mean_backward_kernel");
}

}  // namespace rechub::cuda
