// softmax / log_softmax over the last dim with an optional broadcast keep-mask. CPU reference:
// ops/softmax.hpp (the same max-shifted form; masked positions output 0, a fully masked row is
// all zeros with zero gradient). One block per row; its size follows L (32 to 256 threads).
#include "common.cuh"

namespace rechub::cuda {

namespace {
using detail::cur_stream;

__device__ __forceinline__ std::int64_t mask_row(const MaskRows& m, std::int64_t r) {
  const std::int64_t i2 = r % m.e[2], i1 = (r / m.e[2]) % m.e[1], i0 = r / (m.e[2] * m.e[1]);
  return i0 * m.s[0] + i1 * m.s[1] + i2 * m.s[2];
}

__global__ void softmax_forward_kernel(bool log, float* y, const float* x, const std::int32_t* mask, MaskRows mr,
                                       std::int64_t rows, std::int64_t L) {
  __shared__ float sh[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * L;
    float* yr = y + r * L;
    const std::int32_t* mk = mask ? mask + mask_row(mr, r) * L : nullptr;
    float m = -INFINITY;
    for (std::int64_t k = threadIdx.x; k < L; k += blockDim.x)
      if (!mk || mk[k]) m = fmaxf(m, xr[k]);
    m = detail::block_max(m, sh);
    if (m == -INFINITY && mk) {  // fully masked row (uniform across the block)
      for (std::int64_t k = threadIdx.x; k < L; k += blockDim.x) yr[k] = 0.0f;
      continue;
    }
    float s = 0.0f;
    for (std::int64_t k = threadIdx.x; k < L; k += blockDim.x)
      if (!mk || mk[k]) s += expf(xr[k] - m);
    s = detail::block_sum(s, sh);
    if (log) {
      const float lse = m + logf(s);
      for (std::int64_t k = threadIdx.x; k < L; k += blockDim.x) yr[k] = (!mk || mk[k]) ? xr[k] - lse : 0.0f;
    } else {
      const float inv = 1.0f / s;
      for (std::int64_t k = threadIdx.x; k < L; k += blockDim.x) yr[k] = (!mk || mk[k]) ? expf(xr[k] - m) * inv : 0.0f;
    }
  }
}

__global__ void softmax_backward_kernel(bool log, float* dx, const float* g, const float* y, const std::int32_t* mask,
                                        MaskRows mr, std::int64_t rows, std::int64_t L) {
  __shared__ float sh[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *gr = g + r * L, *yr = y + r * L;
    float* dxr = dx + r * L;
    if (!log) {  // masked outputs are 0, so they get 0 without looking at the mask
      float dot = 0.0f;
      for (std::int64_t k = threadIdx.x; k < L; k += blockDim.x) dot += gr[k] * yr[k];
      dot = detail::block_sum(dot, sh);
      for (std::int64_t k = threadIdx.x; k < L; k += blockDim.x) dxr[k] += yr[k] * (gr[k] - dot);
    } else {
      const std::int32_t* mk = mask ? mask + mask_row(mr, r) * L : nullptr;
      float sg = 0.0f;
      for (std::int64_t k = threadIdx.x; k < L; k += blockDim.x)
        if (!mk || mk[k]) sg += gr[k];
      sg = detail::block_sum(sg, sh);
      for (std::int64_t k = threadIdx.x; k < L; k += blockDim.x)
        if (!mk || mk[k]) dxr[k] += gr[k] - expf(yr[k]) * sg;
    }
  }
}
}  // namespace

void softmax_forward(bool log, float* y, const float* x, const std::int32_t* mask, const MaskRows& mr,
                     std::int64_t rows, std::int64_t L) {
  if (rows <= 0 || L <= 0) return;
  softmax_forward_kernel<<<detail::grid_rows(rows), detail::row_threads(L), 0, cur_stream()>>>(log, y, x, mask, mr,
                                                                                              rows, L);
  RECHUB_CUDA_LAUNCHED("softmax_forward_kernel");
}

void softmax_backward(bool log, float* dx, const float* g, const float* y, const std::int32_t* mask,
                      const MaskRows& mr, std::int64_t rows, std::int64_t L) {
  if (rows <= 0 || L <= 0) return;
  softmax_backward_kernel<<<detail::grid_rows(rows), detail::row_threads(L), 0, cur_stream()>>>(log, dx, g, y, mask,
                                                                                               mr, rows, L);
  RECHUB_CUDA_LAUNCHED("softmax_backward_kernel");
}

}  // namespace rechub::cuda
