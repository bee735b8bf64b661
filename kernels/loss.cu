// Losses, each forward a scalar batch mean: bce_with_logits, bce, bpr, softmax cross-entropy
// (list-wise), in-batch softmax. CPU references: loss/bce.hpp, loss/pairwise.hpp,
// loss/softmax_ce.hpp, loss/inbatch.hpp (same stable forms: softplus, max-shifted logsumexp).
//
// Per-row terms are summed in double by one block of 1024 threads in a fixed order (the CPU sums
// them in double serially): batch-sized inputs, so one block is enough and the result is
// deterministic. Backward kernels read the upstream gradient dloss on the device.
#include <cfloat>

#include "common.cuh"

namespace rechub::cuda {

namespace {
using detail::cur_stream;
using detail::grid_for;
using detail::kThreads;

constexpr int kMeanThreads = 1024;

__device__ __forceinline__ float softplus_(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float loss_sigmoid_(float x) {
  if (x >= 0) return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}

enum class Term : int { bce_logits, bce, bpr, rows };

/// loss[0] = (sum of the per-item terms) / count, summed in double.
__global__ void mean_loss_kernel(Term kind, float* loss, const float* a, const float* b, std::int64_t N,
                                 std::int64_t k, double count) {
  __shared__ double sh[32];
  double s = 0.0;
  const std::int64_t n = kind == Term::bpr ? N * k : N;
  for (std::int64_t t = threadIdx.x; t < n; t += blockDim.x) {
    float term;
    switch (kind) {
      case Term::bce_logits:  // a = x, b = label
        term = softplus_(a[t]) - a[t] * b[t];
        break;
      case Term::bce: {  // a = p, b = label
        const float lp = fmaxf(logf(a[t]), -100.0f), lq = fmaxf(log1pf(-a[t]), -100.0f);
        term = (b[t] - 1.0f) * lq - b[t] * lp;
        break;
      }
      case Term::bpr:  // a = pos [N], b = neg [N, k]
        term = softplus_(b[t] - a[t / k]);
        break;
      default:  // precomputed row terms in a
        term = a[t];
        break;
    }
    s += term;
  }
  s = detail::block_sum(s, sh);
  if (threadIdx.x == 0) loss[0] = static_cast<float>(s / count);
}

void mean_loss(Term kind, float* loss, const float* a, const float* b, std::int64_t N, std::int64_t k, double count) {
  mean_loss_kernel<<<1, kMeanThreads, 0, cur_stream()>>>(kind, loss, a, b, N, k, count);
  RECHUB_CUDA_LAUNCHED("mean_loss_kernel");
}

__global__ void bce_logits_backward_kernel(float* dx, const float* dloss, const float* x, const float* y,
                                           std::int64_t N) {
  const float g = dloss[0] / static_cast<float>(N);
  RECHUB_GRID_STRIDE(i, N) dx[i] += g * (loss_sigmoid_(x[i]) - y[i]);
}
__global__ void bce_backward_kernel(float* dp, const float* dloss, const float* p, const float* y, std::int64_t N) {
  const float g = dloss[0] / static_cast<float>(N);
  RECHUB_GRID_STRIDE(i, N) dp[i] += g * (p[i] - y[i]) / fmaxf((1.0f - p[i]) * p[i], 1e-12f);
}
__global__ void bpr_backward_kernel(float* dpos, float* dneg, const float* dloss, const float* pos, const float* neg,
                                    std::int64_t N, std::int64_t k) {
  const float g = dloss[0] / static_cast<float>(N * k);
  RECHUB_GRID_STRIDE(i, N) {
    float acc = 0.0f;
    for (std::int64_t j = 0; j < k; ++j) {
      const float s = g * loss_sigmoid_(neg[i * k + j] - pos[i]);
      acc += s;
      if (dneg) dneg[i * k + j] += s;
    }
    if (dpos) dpos[i] -= acc;
  }
}

// ---- softmax cross-entropy ---------------------------------------------------------------------

__global__ void softmax_ce_rows_kernel(float* row_loss, float* lse, const float* x, const std::int32_t* target,
                                       std::int64_t N, std::int64_t C, float T) {
  __shared__ float sh[32];
  for (std::int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const float* xi = x + i * C;
    float m = -INFINITY;
    for (std::int64_t j = threadIdx.x; j < C; j += blockDim.x) m = fmaxf(m, xi[j] / T);
    m = detail::block_max(m, sh);
    float s = 0.0f;
    for (std::int64_t j = threadIdx.x; j < C; j += blockDim.x) s += expf(xi[j] / T - m);
    s = detail::block_sum(s, sh);
    if (threadIdx.x == 0) {
      const float l = m + logf(s);
      lse[i] = l;
      row_loss[i] = l - xi[target ? target[i] : 0] / T;
    }
  }
}
__global__ void softmax_ce_backward_kernel(float* dx, const float* dloss, const float* x, const float* lse,
                                           const std::int32_t* target, std::int64_t N, std::int64_t C, float T) {
  const float c = dloss[0] / (static_cast<float>(N) * T);
  RECHUB_GRID_STRIDE(t, N * C) {
    const std::int64_t i = t / C, j = t % C;
    float d = dx[t] + c * expf(x[t] / T - lse[i]);
    if (j == (target ? target[i] : 0)) d -= c;
    dx[t] = d;
  }
}

// ---- in-batch softmax --------------------------------------------------------------------------

/// Row i of P holds <u_i, v_j> / T on entry; applies the correction and the accidental-hit mask,
/// then leaves the row's softmax in P and its loss in row_loss.
__global__ void inbatch_rows_kernel(float* row_loss, float* P, const float* log_q, const std::int32_t* item_ids,
                                    std::int64_t B) {
  __shared__ float sh[32];
  for (std::int64_t i = blockIdx.x; i < B; i += gridDim.x) {
    float* z = P + i * B;
    for (std::int64_t j = threadIdx.x; j < B; j += blockDim.x) {
      float v = z[j];
      if (log_q) v -= log_q[j];
      if (item_ids && j != i && item_ids[j] == item_ids[i]) v = -INFINITY;
      z[j] = v;
    }
    __syncthreads();  // z[i] is read by every thread below
    const float zi = z[i];
    float m = -INFINITY;
    for (std::int64_t j = threadIdx.x; j < B; j += blockDim.x) m = fmaxf(m, z[j]);
    m = detail::block_max(m, sh);  // >= the diagonal, which is never masked: finite
    float s = 0.0f;
    for (std::int64_t j = threadIdx.x; j < B; j += blockDim.x) {
      float e = expf(z[j] - m);
      if (e < FLT_MIN) e = 0.0f;  // as the CPU: masked entries exactly 0, no subnormals
      z[j] = e;
      s += e;
    }
    s = detail::block_sum(s, sh);
    if (threadIdx.x == 0) row_loss[i] = m + logf(s) - zi;
    const float inv = 1.0f / s;
    for (std::int64_t j = threadIdx.x; j < B; j += blockDim.x) z[j] *= inv;
    __syncthreads();  // the next row's first loop must not overtake a read of z[i] (same block)
  }
}

__global__ void inbatch_scale_kernel(float* c, const float* dloss, std::int64_t B, float T) {
  c[0] = dloss[0] / (static_cast<float>(B) * T);
}
__global__ void sub_scaled_kernel(float* d, const float* c, const float* v, std::int64_t n) {
  const float cv = c[0];
  RECHUB_GRID_STRIDE(i, n) d[i] -= cv * v[i];
}
}  // namespace

void bce_with_logits_forward(float* loss, const float* x, const float* label, std::int64_t N) {
  mean_loss(Term::bce_logits, loss, x, label, N, 1, static_cast<double>(N));
}
void bce_with_logits_backward(float* dx, const float* dloss, const float* x, const float* label, std::int64_t N) {
  if (N <= 0) return;
  bce_logits_backward_kernel<<<grid_for(N), kThreads, 0, cur_stream()>>>(dx, dloss, x, label, N);
  RECHUB_CUDA_LAUNCHED("bce_logits_backward_kernel");
}

void bce_forward(float* loss, const float* p, const float* label, std::int64_t N) {
  mean_loss(Term::bce, loss, p, label, N, 1, static_cast<double>(N));
}
void bce_backward(float* dp, const float* dloss, const float* p, const float* label, std::int64_t N) {
  if (N <= 0) return;
  bce_backward_kernel<<<grid_for(N), kThreads, 0, cur_stream()>>>(dp, dloss, p, label, N);
  RECHUB_CUDA_LAUNCHED("bce_backward_kernel");
}

void bpr_forward(float* loss, const float* pos, const float* neg, std::int64_t N, std::int64_t k) {
  RECHUB_CHECK_SHAPE(k >= 1, "cuda::bpr_forward: k must be >= 1, got ", k);
  mean_loss(Term::bpr, loss, pos, neg, N, k, static_cast<double>(N * k));
}
void bpr_backward(float* dpos, float* dneg, const float* dloss, const float* pos, const float* neg, std::int64_t N,
                  std::int64_t k) {
  if (N <= 0 || k <= 0) return;
  bpr_backward_kernel<<<grid_for(N), kThreads, 0, cur_stream()>>>(dpos, dneg, dloss, pos, neg, N, k);
  RECHUB_CUDA_LAUNCHED("bpr_backward_kernel");
}

void softmax_ce_forward(float* loss, float* lse, const float* x, const std::int32_t* target, std::int64_t N,
                        std::int64_t C, float T) {
  RECHUB_CHECK_SHAPE(N >= 1 && C >= 1, "cuda::softmax_ce_forward: logits must be [N, C] with N, C >= 1, got [", N,
                     ", ", C, "]");
  detail::Scratch row_loss(static_cast<std::size_t>(N) * sizeof(float));
  softmax_ce_rows_kernel<<<detail::grid_rows(N), detail::row_threads(C), 0, cur_stream()>>>(row_loss.as<float>(), lse,
                                                                                           x, target, N, C, T);
  RECHUB_CUDA_LAUNCHED("softmax_ce_rows_kernel");
  mean_loss(Term::rows, loss, row_loss.as<float>(), nullptr, N, 1, static_cast<double>(N));
}
void softmax_ce_backward(float* dx, const float* dloss, const float* x, const float* lse, const std::int32_t* target,
                         std::int64_t N, std::int64_t C, float T) {
  if (N * C <= 0) return;
  softmax_ce_backward_kernel<<<grid_for(N * C), kThreads, 0, cur_stream()>>>(dx, dloss, x, lse, target, N, C, T);
  RECHUB_CUDA_LAUNCHED("softmax_ce_backward_kernel");
}

void inbatch_softmax_forward(float* loss, float* P, const float* u, const float* v, const float* log_q,
                             const std::int32_t* item_ids, std::int64_t B, std::int64_t D, float T) {
  RECHUB_CHECK_SHAPE(B >= 1, "cuda::inbatch_softmax_forward: B must be >= 1");
  gemm(false, true, B, B, D, 1.0f / T, u, D, v, D, 0.0f, P, B);
  detail::Scratch row_loss(static_cast<std::size_t>(B) * sizeof(float));
  inbatch_rows_kernel<<<detail::grid_rows(B), detail::row_threads(B), 0, cur_stream()>>>(row_loss.as<float>(), P,
                                                                                        log_q, item_ids, B);
  RECHUB_CUDA_LAUNCHED("inbatch_rows_kernel");
  mean_loss(Term::rows, loss, row_loss.as<float>(), nullptr, B, 1, static_cast<double>(B));
}

void inbatch_softmax_backward(float* du, float* dv, const float* dloss, const float* P, const float* u,
                              const float* v, std::int64_t B, std::int64_t D, float T) {
  if (B <= 0 || D <= 0 || (!du && !dv)) return;
  // dz = c (P - I), c = dloss / (B T): the GEMMs take c as a device alpha, the identity part is
  // one row update each.
  detail::Scratch c(sizeof(float));
  inbatch_scale_kernel<<<1, 1, 0, cur_stream()>>>(c.as<float>(), dloss, B, T);
  RECHUB_CUDA_LAUNCHED("inbatch_scale_kernel");
  if (du) {
    detail::gemm_device_scalars(false, false, B, D, B, c.as<float>(), P, B, v, D, detail::device_one(), du, D);
    sub_scaled_kernel<<<grid_for(B * D), kThreads, 0, cur_stream()>>>(du, c.as<float>(), v, B * D);
    RECHUB_CUDA_LAUNCHED("sub_scaled_kernel");
  }
  if (dv) {
    detail::gemm_device_scalars(true, false, B, D, B, c.as<float>(), P, B, u, D, detail::device_one(), dv, D);
    sub_scaled_kernel<<<grid_for(B * D), kThreads, 0, cur_stream()>>>(dv, c.as<float>(), u, B * D);
    RECHUB_CUDA_LAUNCHED("sub_scaled_kernel");
  }
}

}  // namespace rechub::cuda
