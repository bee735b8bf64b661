// Normalisation: layer_norm, batch_norm1d (+ fused activation, train / eval) and l2_normalize.
// CPU reference: ops/norm.hpp (same formulas, same saved state).
//
// Row statistics (layer_norm, l2_normalize) take one block per row. Column statistics
// (batch_norm1d, and the gamma / beta gradients) use the deterministic column reduction of
// common.cuh; batch_norm1d's mean and variance are two passes, like the CPU, so the variance
// stays accurate when |mean| >> std.
#include "common.cuh"

namespace rechub::cuda {

namespace {
using detail::cur_stream;
using detail::grid_for;
using detail::kThreads;

__global__ void layer_norm_forward_kernel(float* y, float* stats, const float* x, const float* gamma,
                                          const float* beta, std::int64_t rows, std::int64_t D, float eps) {
  __shared__ float sh[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * D;
    float* yr = y + r * D;
    float s = 0.0f;
    for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) s += xr[k];
    const float m = detail::block_sum(s, sh) / float(D);
    float v = 0.0f;
    for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) v += (xr[k] - m) * (xr[k] - m);
    v = detail::block_sum(v, sh);
    const float rstd = 1.0f / sqrtf(v / float(D) + eps);
    if (threadIdx.x == 0) {
      stats[2 * r] = m;
      stats[2 * r + 1] = rstd;
    }
    for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) {
      const float xh = (xr[k] - m) * rstd;
      yr[k] = (gamma ? gamma[k] * xh : xh) + (beta ? beta[k] : 0.0f);
    }
  }
}

__global__ void layer_norm_dx_kernel(float* dx, const float* g, const float* x, const float* stats,
                                     const float* gamma, std::int64_t rows, std::int64_t D) {
  __shared__ float sh[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * D, *gr = g + r * D;
    const float m = stats[2 * r], rstd = stats[2 * r + 1];
    float s1 = 0.0f, s2 = 0.0f;
    for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) {
      const float xh = (xr[k] - m) * rstd, gh = gamma ? gr[k] * gamma[k] : gr[k];
      s1 += gh;
      s2 += gh * xh;
    }
    s1 = detail::block_sum(s1, sh) / float(D);
    s2 = detail::block_sum(s2, sh) / float(D);
    float* dxr = dx + r * D;
    for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) {
      const float xh = (xr[k] - m) * rstd, gh = gamma ? gr[k] * gamma[k] : gr[k];
      dxr[k] += rstd * (gh - s1 - xh * s2);
    }
  }
}

/// Column sums of g xh (dgamma) and g (dbeta).
struct LayerNormParamGrad {
  const float *g, *x, *stats;
  std::int64_t D;
  __device__ void operator()(std::int64_t r, std::int64_t k, float* acc) const {
    const std::int64_t i = r * D + k;
    const float xh = (x[i] - stats[2 * r]) * stats[2 * r + 1];
    acc[0] += g[i] * xh;
    acc[1] += g[i];
  }
};

// ---- batch_norm1d ------------------------------------------------------------------------------

struct ColValue {  // sum of x
  const float* x;
  std::int64_t C;
  __device__ void operator()(std::int64_t r, std::int64_t c, float* acc) const { acc[0] += x[r * C + c]; }
};
struct ColSquaredDev {  // sum of (x - mean)^2
  const float *x, *mean;
  std::int64_t C;
  __device__ void operator()(std::int64_t r, std::int64_t c, float* acc) const {
    const float d = x[r * C + c] - mean[c];
    acc[0] += d * d;
  }
};

/// Per column: running stats update (training), then I = invstd, M = -mean I, A = gamma I,
/// B = beta - mean A, S = slope. cols = [I | M | A | B | S | mean]; in training I holds the
/// batch variance on entry.
__global__ void bn_columns_kernel(float* cols, float* rm, float* rv, const float* gamma, const float* beta,
                                  const float* slope, std::int64_t na, std::int64_t N, std::int64_t C, bool training,
                                  float momentum, float eps) {
  float *I = cols, *M = cols + C, *A = cols + 2 * C, *B = cols + 3 * C, *S = cols + 4 * C, *mean = cols + 5 * C;
  RECHUB_GRID_STRIDE(c, C) {
    if (training) {
      if (rm) {
        rm[c] = (1.0f - momentum) * rm[c] + momentum * mean[c];
        rv[c] = (1.0f - momentum) * rv[c] + momentum * I[c] * float(N) / float(N - 1);
      }
      I[c] = 1.0f / sqrtf(I[c] + eps);
    } else {
      mean[c] = rm[c];
      I[c] = 1.0f / sqrtf(rv[c] + eps);
    }
    M[c] = -mean[c] * I[c];
    A[c] = gamma ? gamma[c] * I[c] : I[c];
    B[c] = (beta ? beta[c] : 0.0f) - mean[c] * A[c];
    S[c] = slope ? slope[na == 1 ? 0 : c] : 0.0f;
  }
}

__global__ void bn_apply_kernel(Act act, float* y, const float* x, const float* cols, std::int64_t N, std::int64_t C) {
  const float *A = cols + 2 * C, *B = cols + 3 * C, *S = cols + 4 * C;
  RECHUB_GRID_STRIDE(i, N * C) {
    const std::int64_t c = i % C;
    y[i] = detail::act_value(act, x[i] * A[c] + B[c], S[c]);
  }
}

/// Column sums of gz, gz xh and (prelu) g min(z, 0), with gz = g act'(z).
struct BnBackwardSums {
  Act act;
  const float *x, *y, *g, *cols;
  std::int64_t C;
  __device__ void operator()(std::int64_t r, std::int64_t c, float* acc) const {
    const float *I = cols, *M = cols + C, *A = cols + 2 * C, *B = cols + 3 * C, *S = cols + 4 * C;
    const std::int64_t i = r * C + c;
    const float xh = x[i] * I[c] + M[c], z = x[i] * A[c] + B[c];
    const float gz = detail::act_grad(act, g[i], z, y[i], S[c]);
    acc[0] += gz;
    acc[1] += gz * xh;
    acc[2] += g[i] * fminf(z, 0.0f);
  }
};

__global__ void bn_dx_kernel(Act act, float* dx, const float* g, const float* x, const float* y, const float* cols,
                             const float* sums, std::int64_t N, std::int64_t C, bool training) {
  const float *I = cols, *M = cols + C, *A = cols + 2 * C, *B = cols + 3 * C, *S = cols + 4 * C;
  const float *s_g = sums, *s_gx = sums + C;
  const float inv_n = training ? 1.0f / float(N) : 0.0f;
  RECHUB_GRID_STRIDE(i, N * C) {
    const std::int64_t c = i % C;
    const float xh = x[i] * I[c] + M[c], z = x[i] * A[c] + B[c];
    const float gz = detail::act_grad(act, g[i], z, y[i], S[c]);
    dx[i] += A[c] * (gz - (s_g[c] + xh * s_gx[c]) * inv_n);
  }
}

// ---- l2_normalize ------------------------------------------------------------------------------

__global__ void l2_forward_kernel(float* y, float* denom, const float* x, std::int64_t rows, std::int64_t D,
                                  float eps) {
  __shared__ float sh[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * D;
    float s = 0.0f;
    for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) s += xr[k] * xr[k];
    s = detail::block_sum(s, sh);
    const float d = fmaxf(sqrtf(s), eps), inv = 1.0f / d;
    if (threadIdx.x == 0) denom[r] = d;
    for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) y[r * D + k] = xr[k] * inv;
  }
}
__global__ void l2_backward_kernel(float* dx, const float* g, const float* y, const float* denom, std::int64_t rows,
                                   std::int64_t D, float eps) {
  __shared__ float sh[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *gr = g + r * D, *yr = y + r * D;
    const float d = denom[r], inv = 1.0f / d;
    float dot = 0.0f;
    if (d > eps) {  // below eps the denominator is the constant eps: no gradient through the norm
      for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) dot += gr[k] * yr[k];
      dot = detail::block_sum(dot, sh);
    }
    for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) dx[r * D + k] += (gr[k] - yr[k] * dot) * inv;
  }
}
}  // namespace

void layer_norm_forward(float* y, float* stats, const float* x, const float* gamma, const float* beta,
                        std::int64_t rows, std::int64_t D, float eps) {
  if (rows <= 0 || D <= 0) return;
  layer_norm_forward_kernel<<<detail::grid_rows(rows), detail::row_threads(D), 0, cur_stream()>>>(y, stats, x, gamma,
                                                                                                 beta, rows, D, eps);
  RECHUB_CUDA_LAUNCHED("layer_norm_forward_kernel");
}

void layer_norm_backward(float* dx, float* dgamma, float* dbeta, const float* g, const float* x, const float* stats,
                         const float* gamma, std::int64_t rows, std::int64_t D) {
  if (rows <= 0 || D <= 0) return;
  if (dx) {
    layer_norm_dx_kernel<<<detail::grid_rows(rows), detail::row_threads(D), 0, cur_stream()>>>(dx, g, x, stats, gamma,
                                                                                              rows, D);
    RECHUB_CUDA_LAUNCHED("layer_norm_dx_kernel");
  }
  if (dgamma || dbeta)
    detail::col_reduce<2>(LayerNormParamGrad{g, x, stats, D}, rows, D, detail::ColDst{{dgamma, dbeta, nullptr, nullptr}},
                          /*accumulate=*/true);
}

void batch_norm1d_forward(Act act, float* y, float* cols, float* running_mean, float* running_var, const float* x,
                          const float* gamma, const float* beta, const float* slope, std::int64_t na, std::int64_t N,
                          std::int64_t C, bool training, float momentum, float eps) {
  RECHUB_CHECK_SHAPE(training || (running_mean && running_var),
                     "cuda::batch_norm1d_forward: eval mode needs running_mean and running_var");
  RECHUB_CHECK_SHAPE(!training || N > 1, "cuda::batch_norm1d_forward: expected more than 1 value per channel when "
                                         "training, got N = ", N);
  RECHUB_CHECK_SHAPE(act != Act::prelu || (slope && (na == 1 || na == C)),
                     "cuda::batch_norm1d_forward: prelu needs a [1] or [", C, "] slope");
  if (C <= 0) return;
  const bool have_running = running_mean && running_var;
  if (training) {
    float *var = cols, *mean = cols + 5 * C;
    detail::col_reduce<1>(ColValue{x, C}, N, C, detail::ColDst{{mean, nullptr, nullptr, nullptr}}, false, float(N));
    detail::col_reduce<1>(ColSquaredDev{x, mean, C}, N, C, detail::ColDst{{var, nullptr, nullptr, nullptr}}, false,
                          float(N));
  }
  bn_columns_kernel<<<grid_for(C), kThreads, 0, cur_stream()>>>(cols, have_running ? running_mean : nullptr,
                                                                 have_running ? running_var : nullptr, gamma, beta,
                                                                 act == Act::prelu ? slope : nullptr, na, N, C,
                                                                 training, momentum, eps);
  RECHUB_CUDA_LAUNCHED("bn_columns_kernel");
  if (N <= 0) return;
  bn_apply_kernel<<<grid_for(N * C), kThreads, 0, cur_stream()>>>(act, y, x, cols, N, C);
  RECHUB_CUDA_LAUNCHED("bn_apply_kernel");
}

void batch_norm1d_backward(Act act, float* dx, float* dgamma, float* dbeta, float* dslope, const float* g,
                           const float* x, const float* y, const float* cols, std::int64_t na, std::int64_t N,
                           std::int64_t C, bool training) {
  if (N <= 0 || C <= 0) return;
  detail::Scratch sums(static_cast<std::size_t>(3 * C) * sizeof(float));
  float* s = sums.as<float>();
  detail::col_reduce<3>(BnBackwardSums{act, x, y, g, cols, C}, N, C, detail::ColDst{{s, s + C, s + 2 * C, nullptr}},
                        /*accumulate=*/false);
  if (dx) {
    bn_dx_kernel<<<grid_for(N * C), kThreads, 0, cur_stream()>>>(act, dx, g, x, y, cols, s, N, C, training);
    RECHUB_CUDA_LAUNCHED("bn_dx_kernel");
  }
  if (dgamma) detail::add_vector(dgamma, s + C, C);
  if (dbeta) detail::add_vector(dbeta, s, C);
  if (dslope && act == Act::prelu) {
    if (na == 1) detail::add_total(dslope, s + 2 * C, C);
    else detail::add_vector(dslope, s + 2 * C, C);
  }
}

void l2_normalize_forward(float* y, float* denom, const float* x, std::int64_t rows, std::int64_t D, float eps) {
  if (rows <= 0 || D <= 0) return;
  l2_forward_kernel<<<detail::grid_rows(rows), detail::row_threads(D), 0, cur_stream()>>>(y, denom, x, rows, D, eps);
  RECHUB_CUDA_LAUNCHED("l2_forward_kernel");
}

void l2_normalize_backward(float* dx, const float* g, const float* y, const float* denom, std::int64_t rows,
                           std::int64_t D, float eps) {
  if (rows <= 0 || D <= 0) return;
  l2_backward_kernel<<<detail::grid_rows(rows), detail::row_threads(D), 0, cur_stream()>>>(dx, g, y, denom, rows, D,
                                                                                          eps);
  RECHUB_CUDA_LAUNCHED("l2_backward_kernel");
}

}  // namespace rechub::cuda
