#pragma once
// Normalisation ops.
//
//   layer_norm    x [..., D], gamma/beta [D] (either may be undefined = no affine), per row:
//                 xh = (x - mean) * rstd, rstd = 1 / sqrt(var + eps) (biased var), y = gamma xh + beta.
//                 dgamma += sum_rows g xh, dbeta += sum_rows g; with gh = g gamma:
//                 dx += rstd (gh - mean(gh) - xh mean(gh xh)).
//   batch_norm1d  x [N, C], per column c (torch BatchNorm1d):
//                 training: mean/var of the batch (biased var normalises; the running stats move
//                   by momentum towards mean and the UNBIASED var N/(N-1) var);
//                 eval: mean/var = running_mean/running_var.
//                 xh = (x - mean) * invstd, y = act(gamma xh + beta), act fused (ActKind).
//                 with gz = g act'(z): dgamma += sum gz xh, dbeta += sum gz,
//                 training: dx += gamma invstd (gz - mean_N(gz) - xh mean_N(gz xh)),
//                 eval:     dx += gamma invstd gz  (running stats are constants).
//                 Row weights w [N] (optional): row r stands for w_r identical rows of a larger
//                 batch of n = sum w rows (the unique rows of a batch with repeats, w = counts).
//                 Statistics are the weighted ones (mean = sum w x / n, var = sum w (x - mean)^2 / n,
//                 running var scaled by n / (n - 1)); the incoming gradient of row r is the SUM of
//                 its copies' gradients, so the sums above stay unweighted and only the centring
//                 term scales: dx_r += gamma invstd (gz_r - w_r (sum gz + xh_r sum gz xh) / n).
//                 Values and gradients equal those of the expanded batch (tested).
//   l2_normalize  y = x / max(||x||, eps) per row over the last dim (torch F.normalize):
//                 ||x|| > eps: dx += (g - y (g . y)) / ||x||;  otherwise dx += g / eps.
//   dice_bn       the DIN paper's Dice: p = sigmoid(batch_norm1d(x) without affine),
//                 y = x (alpha + (1 - alpha) p); composed from the ops above.
//
// batch_norm1d's sums are taken over fixed chunks of rows and added in chunk order, so results do
// not depend on the thread count (detail, below).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#ifdef __AVX__
#include <immintrin.h>
#endif

#include "rechub/ops/activation.hpp"
#include "rechub/ops/batch_norm_avx2.hpp"
#include "rechub/ops/elementwise.hpp"

namespace rechub {

/// Layer normalisation over the last dim; gamma and beta [D] may be undefined Vars (no affine).
inline Var layer_norm(const Var& x, const Var& gamma, const Var& beta, float eps = 1e-5f) {
  const Tensor& X = x.value();
  detail::check_cpu("layer_norm", X);
  detail::check_f32("layer_norm", X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() >= 1 && X.dim(-1) > 0, "layer_norm: input ", X.shape().str(), " has no features");
  const std::int64_t D = X.dim(-1), rows = X.numel() / D;
  for (const Var* p : {&gamma, &beta})
    if (p->defined()) {
      detail::check_cpu("layer_norm", p->value());
      RECHUB_CHECK_SHAPE(p->value().numel() == D, "layer_norm: ", p == &gamma ? "gamma " : "beta ", p->shape().str(),
                         " does not match input ", X.shape().str());
    }
  Var out = detail::make_output_opt("layer_norm", X.shape(), x, gamma, beta);
  float* stats = step_arena().tensor({rows, 2}).f32();  // per row: mean, rstd
  {
    const float *px = X.f32(), *pg = gamma.defined() ? gamma.value().f32() : nullptr,
                *pb = beta.defined() ? beta.value().f32() : nullptr;
    float* py = out.value().f32();
    parallel_for(rows, 6 * D, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t r = b; r < e; ++r) {
        const float* xr = px + r * D;
        float* yr = py + r * D;
        float m = 0.0f;
        for (std::int64_t k = 0; k < D; ++k) m += xr[k];
        m /= float(D);
        float v = 0.0f;
        for (std::int64_t k = 0; k < D; ++k) v += (xr[k] - m) * (xr[k] - m);
        const float rstd = 1.0f / std::sqrt(v / float(D) + eps);
        stats[2 * r] = m;
        stats[2 * r + 1] = rstd;
        for (std::int64_t k = 0; k < D; ++k) {
          const float xh = (xr[k] - m) * rstd;
          yr[k] = (pg ? pg[k] * xh : xh) + (pb ? pb[k] : 0.0f);
        }
      }
    });
  }
  detail::record(out, [x, gamma, beta, out, rows, D, stats] {
    const float *g = out.grad().f32(), *px = x.value().f32();
    const float* pg = gamma.defined() ? gamma.value().f32() : nullptr;
    float* dx = x.requires_grad() ? x.grad_acc().f32() : nullptr;
    const bool want_g = detail::needs_grad(gamma), want_b = detail::needs_grad(beta);
    Tensor red = step_arena().zeros({2 * D});  // [dgamma | dbeta]
    detail::reduce_rows(rows, 2 * D, 10 * D, red.f32(), [&](std::int64_t r0, std::int64_t r1, float* acc) {
      for (std::int64_t r = r0; r < r1; ++r) {
        const float *xr = px + r * D, *gr = g + r * D;
        const float m = stats[2 * r], rstd = stats[2 * r + 1];
        float s1 = 0.0f, s2 = 0.0f;  // sums of gh and gh * xh
        for (std::int64_t k = 0; k < D; ++k) {
          const float xh = (xr[k] - m) * rstd, gh = pg ? gr[k] * pg[k] : gr[k];
          if (want_g) acc[k] += gr[k] * xh;
          if (want_b) acc[D + k] += gr[k];
          s1 += gh;
          s2 += gh * xh;
        }
        if (!dx) continue;
        s1 /= float(D);
        s2 /= float(D);
        float* dxr = dx + r * D;
        for (std::int64_t k = 0; k < D; ++k) {
          const float xh = (xr[k] - m) * rstd, gh = pg ? gr[k] * pg[k] : gr[k];
          dxr[k] += rstd * (gh - s1 - xh * s2);
        }
      }
    });
    if (want_g) {
      float* dg = gamma.grad_acc().f32();
      for (std::int64_t k = 0; k < D; ++k) dg[k] += red.f32()[k];
    }
    if (want_b) {
      float* db = beta.grad_acc().f32();
      for (std::int64_t k = 0; k < D; ++k) db[k] += red.f32()[D + k];
    }
  });
  return out;
}

namespace detail {
// batch_norm1d's passes. Every pass hands threads contiguous blocks of rows, so each streams its
// own part of memory: splitting columns instead (each thread half of every row) made the forward
// ~2x slower on 2 threads than on 1 on this 2-core Zen 2 machine, and the backward no faster.
// The two reductions (the batch statistics; the gradient sums) are cut into chunks of kBnChunk
// rows whose partial sums are added in chunk order, so results do not depend on the thread count.
// Inside a chunk a reduction runs tile by tile, kBnChunk rows x kBnLanes columns (one cache line
// per row), each column's parameters and running sums in registers (ops/batch_norm_avx2.hpp for
// none / relu / prelu; the generic tile kernels below otherwise). The statistics are each chunk's
// sum and squared deviations about its own mean (the second pass reads the tile from L1),
// combined as Chan et al.'s pairwise variance: M2 = sum_k [M2_k + n_k (mean_k - mean)^2]; against
// a double-precision reference they came out 3-10x closer than two passes over all rows.
constexpr std::int64_t kBnChunk = 64;
constexpr std::int64_t kBnLanes = 16;

/// How many chunks of kBnChunk rows N rows make (the last may be shorter).
inline std::int64_t bn_chunks(std::int64_t N) { return (N + kBnChunk - 1) / kBnChunk; }

/// Runs fn(k, r0, rows, c0, width, whole) for every tile: chunk k = rows [r0, r0 + rows), columns
/// [c0, c0 + width); whole is std::true_type for a tile of kBnLanes columns. Chunks are shared
/// out over threads; cost_per_element is the scalar work of one element.
template <class Fn>
void for_each_bn_tile(std::int64_t N, std::int64_t C, std::int64_t cost_per_element, Fn&& fn) {
  parallel_for(bn_chunks(N), kBnChunk * C * cost_per_element, [&](std::int64_t k0, std::int64_t k1) {
    for (std::int64_t k = k0; k < k1; ++k) {
      const std::int64_t r0 = k * kBnChunk, rows = std::min(kBnChunk, N - r0);
      for (std::int64_t c0 = 0; c0 < C; c0 += kBnLanes) {
        const std::int64_t width = std::min(kBnLanes, C - c0);
        if (width == kBnLanes) fn(k, r0, rows, c0, width, std::true_type());
        else fn(k, r0, rows, c0, width, std::false_type());
      }
    }
  });
}

/// out[c] = 1 / sqrt(var[c] + eps), bit for bit the scalar expression. Compilers keep std::sqrt
/// scalar (errno), and eval mode redoes this for every column on every call: it was the largest
/// part of a one-row BatchNorm (serving). AVX's sqrt and div are the same IEEE operations.
inline void bn_inv_std(float* __restrict out, const float* __restrict var, float eps, std::int64_t n) {
  std::int64_t c = 0;
#ifdef __AVX__
  const __m256 e = _mm256_set1_ps(eps), one = _mm256_set1_ps(1.0f);
  for (; c + 8 <= n; c += 8)
    _mm256_storeu_ps(out + c, _mm256_div_ps(one, _mm256_sqrt_ps(_mm256_add_ps(_mm256_loadu_ps(var + c), e))));
#endif
  for (; c < n; ++c) out[c] = 1.0f / std::sqrt(var[c] + eps);
}

// Tile kernels (see the top of this namespace): R rows of w <= kBnLanes columns, rows C apart.

/// Per column: sum = sum_r w_r x and m2 = sum_r w_r (x - sum / n)^2, n = sum_r w_r > 0.
template <bool kWhole>
inline void bn_tile_moments(const float* __restrict x, std::int64_t R, std::int64_t C, std::int64_t w,
                            const float* __restrict rw, float n, float* __restrict sum, float* __restrict m2) {
#ifdef RECHUB_AVX2_BATCH_NORM
  if constexpr (kWhole) {
    avx2::bn_tile_moments(x, R, C, rw, n, sum, m2);
    return;
  }
#endif
  float s[kBnLanes] = {}, v[kBnLanes] = {}, mean[kBnLanes];
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t c = 0; c < w; ++c) s[c] += (rw ? rw[r] : 1.0f) * x[r * C + c];
  for (std::int64_t c = 0; c < w; ++c) mean[c] = s[c] / n;
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t c = 0; c < w; ++c) {
      const float d = x[r * C + c] - mean[c];
      v[c] += (rw ? rw[r] : 1.0f) * d * d;
    }
  for (std::int64_t c = 0; c < w; ++c) {
    sum[c] = s[c];
    m2[c] = v[c];
  }
}

/// Per column: sum gz, sum gz xh and prelu's sum g min(z, 0); gz = g act'(z), xh = x I + M,
/// z = x A + B (y = act(z) for the activations whose derivative reads it).
template <ActKind K, bool kWhole>
inline void bn_tile_grad_sums(const float* __restrict x, const float* __restrict y, const float* __restrict g,
                              std::int64_t R, std::int64_t C, std::int64_t w, const float* __restrict I,
                              const float* __restrict M, const float* __restrict A, const float* __restrict B,
                              const float* __restrict S, float* __restrict s_g, float* __restrict s_gx,
                              float* __restrict s_a) {
#ifdef RECHUB_AVX2_BATCH_NORM
  if constexpr (kWhole && avx2::bn_tile_fits<K>()) {
    avx2::bn_tile_grad_sums<K>(x, g, R, C, I, M, A, B, S, s_g, s_gx, s_a);
    return;
  }
#endif
  float sg[kBnLanes] = {}, sx[kBnLanes] = {}, sa[kBnLanes] = {};
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t c = 0; c < w; ++c) {
      const std::int64_t i = r * C + c;
      const float xh = x[i] * I[c] + M[c], z = x[i] * A[c] + B[c];
      const float gz = act_grad<K>(g[i], z, y[i], S[c]);
      sg[c] += gz;
      sx[c] += gz * xh;
      if constexpr (K == ActKind::prelu) sa[c] += g[i] * std::min(z, 0.0f);
    }
  for (std::int64_t c = 0; c < w; ++c) {
    s_g[c] = sg[c];
    s_gx[c] = sx[c];
    s_a[c] = sa[c];
  }
}

// Elementwise passes over rows [0, R) of all C columns (pointers offset to the first row): the
// inner loops are contiguous and vectorise; __restrict: the arena buffers do not overlap.

/// y = act(x A + B).
template <ActKind K>
inline void bn_act_forward(const float* __restrict x, float* __restrict y, std::int64_t R, std::int64_t C,
                           const float* __restrict A, const float* __restrict B, const float* __restrict S) {
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t c = 0; c < C; ++c) y[r * C + c] = act_value<K>(x[r * C + c] * A[c] + B[c], S[c]);
}

/// dx (+)= A (gz - w_r (x P + Q)), w_r = rw[r] (1 without row weights). In training
/// x P + Q = (s_g + xh s_gx) / n, the centring term (see the top of the file); in eval P = Q = 0.
/// kStore: dx holds no gradient yet, store instead of adding (Var::grad_for_write).
template <ActKind K, bool kStore>
inline void bn_act_backward_dx(const float* __restrict x, const float* __restrict y, const float* __restrict g,
                               float* __restrict dx, std::int64_t R, std::int64_t C, const float* __restrict A,
                               const float* __restrict B, const float* __restrict S, const float* __restrict P,
                               const float* __restrict Q, const float* __restrict rw) {
  for (std::int64_t r = 0; r < R; ++r) {
    const float wr = rw ? rw[r] : 1.0f;
    for (std::int64_t c = 0; c < C; ++c) {
      const std::int64_t i = r * C + c;
      const float z = x[i] * A[c] + B[c];
      const float d = A[c] * (act_grad<K>(g[i], z, y[i], S[c]) - wr * (x[i] * P[c] + Q[c]));
      if constexpr (kStore) dx[i] = d;
      else dx[i] += d;
    }
  }
}
}  // namespace detail

/// act(batch_norm1d(x)) as one op on x [N, C]; torch BatchNorm1d semantics (see top). gamma,
/// beta may be undefined (affine=False); running stats may be undefined in training
/// (track_running_stats=False). slope is prelu's [1] or [C] slope. row_weights (f32 [N], each >= 0,
/// optional): row r counts rw[r] times (see the top).
inline Var batch_norm1d_act(const Var& x, const Var& gamma, const Var& beta, Tensor& running_mean, Tensor& running_var,
                            bool training, float momentum, float eps, ActKind act, const Var& slope = Var(),
                            const Tensor& row_weights = Tensor()) {
  const Tensor& X = x.value();
  detail::check_cpu("batch_norm1d", X);
  detail::check_f32("batch_norm1d", X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() == 2, "batch_norm1d: input must be [N, C], got ", X.shape().str());
  const std::int64_t N = X.dim(0), C = X.dim(1);
  const float* rw = nullptr;
  double n_rows = double(N);
  if (row_weights.defined()) {
    detail::check_cpu("batch_norm1d", row_weights);
    detail::check_f32("batch_norm1d", row_weights, "row_weights");
    RECHUB_CHECK_SHAPE(row_weights.numel() == N, "batch_norm1d: row_weights ", row_weights.shape().str(),
                       " do not match input ", X.shape().str());
    rw = row_weights.f32();
    n_rows = 0.0;
    for (std::int64_t r = 0; r < N; ++r) {
      RECHUB_CHECK_SHAPE(rw[r] >= 0.0f && std::isfinite(rw[r]), "batch_norm1d: row weight ", rw[r], " at row ", r,
                         " is not a finite count >= 0");
      n_rows += rw[r];
    }
  }
  const float n = float(n_rows);
  for (const Var* p : {&gamma, &beta})
    if (p->defined()) {
      detail::check_cpu("batch_norm1d", p->value());
      RECHUB_CHECK_SHAPE(p->value().numel() == C, "batch_norm1d: ", p == &gamma ? "gamma " : "beta ", p->shape().str(),
                         " does not match input ", X.shape().str());
    }
  const bool have_running = running_mean.defined() && running_var.defined();
  if (have_running) {
    detail::check_cpu("batch_norm1d", running_mean, running_var);
    RECHUB_CHECK_SHAPE(running_mean.numel() == C && running_var.numel() == C, "batch_norm1d: running stats ",
                       running_mean.shape().str(), " / ", running_var.shape().str(), " do not match input ",
                       X.shape().str());
  }
  RECHUB_CHECK_SHAPE(training || have_running, "batch_norm1d: eval mode needs running_mean and running_var");
  RECHUB_CHECK_SHAPE(!training || n > 1.0f,
                     "batch_norm1d: expected more than 1 value per channel when training, got input ", X.shape().str(),
                     rw ? " (row weights summing to " + std::to_string(n) + ")" : std::string());
  const bool use_slope = act == ActKind::prelu;
  if (use_slope) detail::check_slope("batch_norm1d", X.shape(), slope, "slope");
  const Var sl = use_slope ? slope : Var();
  Var out = detail::make_output_opt("batch_norm1d", X.shape(), x, gamma, beta, sl);
  // Per column, kept for the backward: xh = x I + M (I = invstd, M = -mean invstd) and the
  // folded affine z = x A + B (A = gamma invstd, B = beta - mean A); S = prelu slope per column.
  float* cols = step_arena().tensor({6, C}).f32();
  float *I = cols, *M = cols + C, *A = cols + 2 * C, *B = cols + 3 * C, *S = cols + 4 * C, *mean = cols + 5 * C;
  const float *pg = gamma.defined() ? gamma.value().f32() : nullptr,
              *pb = beta.defined() ? beta.value().f32() : nullptr;
  const float* pa = use_slope ? sl.value().f32() : nullptr;
  const std::int64_t na = use_slope ? sl.value().numel() : 0;
  for (std::int64_t c = 0; c < C; ++c) S[c] = use_slope ? pa[na == 1 ? 0 : c] : 0.0f;
  float *rm = have_running ? running_mean.f32() : nullptr, *rv = have_running ? running_var.f32() : nullptr;
  const float* px = X.f32();
  float* py = out.value().f32();
  const std::int64_t chunks = detail::bn_chunks(N);
  if (training) {
    // Each chunk's weight, sums and squared deviations (see detail), then combined in chunk order.
    float* part = step_arena().tensor({2 * chunks * C + chunks}).f32();
    float *p_sum = part, *p_m2 = part + chunks * C, *p_n = part + 2 * chunks * C;
    for (std::int64_t k = 0; k < chunks; ++k) {
      const std::int64_t r0 = k * detail::kBnChunk, r1 = std::min(N, r0 + detail::kBnChunk);
      float nk = float(r1 - r0);
      if (rw) {
        nk = 0.0f;
        for (std::int64_t r = r0; r < r1; ++r) nk += rw[r];
      }
      p_n[k] = nk;
    }
    detail::for_each_bn_tile(N, C, 4, [&](std::int64_t k, std::int64_t r0, std::int64_t rows, std::int64_t c0,
                                          std::int64_t w, auto whole) {
      float *sum = p_sum + k * C + c0, *m2 = p_m2 + k * C + c0;
      if (p_n[k] > 0.0f) {
        detail::bn_tile_moments<decltype(whole)::value>(px + r0 * C + c0, rows, C, w, rw ? rw + r0 : nullptr, p_n[k],
                                                         sum, m2);
      } else {
        std::fill(sum, sum + w, 0.0f);
        std::fill(m2, m2 + w, 0.0f);
      }
    });
    for (std::int64_t c = 0; c < C; ++c) {
      float s = 0.0f;
      for (std::int64_t k = 0; k < chunks; ++k) s += p_sum[k * C + c];
      const float m = s / n;
      float m2 = 0.0f;
      for (std::int64_t k = 0; k < chunks; ++k) {
        if (p_n[k] <= 0.0f) continue;
        const float d = p_sum[k * C + c] / p_n[k] - m;
        m2 += p_m2[k * C + c] + p_n[k] * d * d;
      }
      const float var = m2 / n;
      if (rm) {
        rm[c] = (1.0f - momentum) * rm[c] + momentum * m;
        rv[c] = (1.0f - momentum) * rv[c] + momentum * var * n / (n - 1.0f);
      }
      mean[c] = m;
      I[c] = 1.0f / std::sqrt(var + eps);
    }
  } else {
    std::copy(rm, rm + C, mean);
    detail::bn_inv_std(I, rv, eps, C);
  }
  for (std::int64_t c = 0; c < C; ++c) {
    M[c] = -mean[c] * I[c];
    A[c] = pg ? pg[c] * I[c] : I[c];
    B[c] = (pb ? pb[c] : 0.0f) - mean[c] * A[c];
  }
  detail::dispatch_act(act, [&](auto kind) {
    constexpr ActKind K = decltype(kind)::value;
    parallel_for(N, C * (2 + detail::act_cost<K>()), [&](std::int64_t r0, std::int64_t r1) {
      detail::bn_act_forward<K>(px + r0 * C, py + r0 * C, r1 - r0, C, A, B, S);
    });
  });
  const float* saved_rw = rw ? detail::arena_copy(rw, N) : nullptr;
  detail::record(out, [x, gamma, beta, sl, out, N, C, na, cols, training, act, saved_rw, n, chunks] {
    const float *g = out.grad().f32(), *y = out.value().f32(), *px = x.value().f32();
    const float *I = cols, *M = cols + C, *A = cols + 2 * C, *B = cols + 3 * C, *S = cols + 4 * C;
    bool store = false;
    float* dx = x.requires_grad() ? x.grad_for_write(store).f32() : nullptr;
    // Per chunk and column: sum gz, sum gz xh, and prelu's sum g z over z <= 0; then their totals
    // in chunk order, and the centring term's coefficients P, Q (bn_act_backward_dx).
    float* part = step_arena().tensor({3 * chunks * C + 5 * C}).f32();
    float *sums = part + 3 * chunks * C, *s_g = sums, *s_gx = sums + C, *s_a = sums + 2 * C, *P = sums + 3 * C,
          *Q = sums + 4 * C;
    detail::dispatch_act(act, [&](auto kind) {
      constexpr ActKind K = decltype(kind)::value;
      detail::for_each_bn_tile(N, C, 6 + detail::act_cost<K>(), [&](std::int64_t k, std::int64_t r0, std::int64_t rows,
                                                                    std::int64_t c0, std::int64_t w, auto whole) {
        const std::int64_t o = r0 * C + c0;
        float* pk = part + 3 * k * C + c0;
        detail::bn_tile_grad_sums<K, decltype(whole)::value>(px + o, y + o, g + o, rows, C, w, I + c0, M + c0, A + c0,
                                                             B + c0, S + c0, pk, pk + C, pk + 2 * C);
      });
      for (std::int64_t c = 0; c < C; ++c) {
        float a = 0.0f, b = 0.0f, d = 0.0f;
        for (std::int64_t k = 0; k < chunks; ++k) {
          const float* pk = part + 3 * k * C + c;
          a += pk[0];
          b += pk[C];
          d += pk[2 * C];
        }
        s_g[c] = a;
        s_gx[c] = b;
        s_a[c] = d;
        P[c] = training ? I[c] * b / n : 0.0f;
        Q[c] = training ? (a + M[c] * b) / n : 0.0f;
      }
      if (!dx) return;
      parallel_for(N, C * (6 + detail::act_cost<K>()), [&](std::int64_t r0, std::int64_t r1) {
        const std::int64_t o = r0 * C;
        const float* w = saved_rw ? saved_rw + r0 : nullptr;
        if (store) detail::bn_act_backward_dx<K, true>(px + o, y + o, g + o, dx + o, r1 - r0, C, A, B, S, P, Q, w);
        else detail::bn_act_backward_dx<K, false>(px + o, y + o, g + o, dx + o, r1 - r0, C, A, B, S, P, Q, w);
      });
    });
    if (detail::needs_grad(gamma)) {
      float* dg = gamma.grad_acc().f32();
      for (std::int64_t c = 0; c < C; ++c) dg[c] += s_gx[c];
    }
    if (detail::needs_grad(beta)) {
      float* db = beta.grad_acc().f32();
      for (std::int64_t c = 0; c < C; ++c) db[c] += s_g[c];
    }
    if (detail::needs_grad(sl)) {
      float* da = sl.grad_acc().f32();
      if (na == 1) {
        float s = 0.0f;
        for (std::int64_t c = 0; c < C; ++c) s += s_a[c];
        da[0] += s;
      } else {
        for (std::int64_t c = 0; c < C; ++c) da[c] += s_a[c];
      }
    }
  });
  return out;
}

/// Batch normalisation of x [N, C] over the batch, torch BatchNorm1d semantics (see top).
inline Var batch_norm1d(const Var& x, const Var& gamma, const Var& beta, Tensor& running_mean, Tensor& running_var,
                        bool training, float momentum = 0.1f, float eps = 1e-5f) {
  return batch_norm1d_act(x, gamma, beta, running_mean, running_var, training, momentum, eps, ActKind::none);
}

/// x / max(||x||_2, eps) over the last dim (torch F.normalize).
inline Var l2_normalize(const Var& x, float eps = 1e-12f) {
  const Tensor& X = x.value();
  detail::check_cpu("l2_normalize", X);
  detail::check_f32("l2_normalize", X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() >= 1, "l2_normalize: input must have at least 1 dim, got ", X.shape().str());
  const std::int64_t D = X.dim(-1), rows = D ? X.numel() / D : 0;
  Var out = detail::make_output("l2_normalize", X.shape(), DType::f32, x);
  float* denom = step_arena().tensor({rows}).f32();  // max(||x||, eps) per row
  {
    const float* px = X.f32();
    float* py = out.value().f32();
    parallel_for(rows, 3 * D, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t r = b; r < e; ++r) {
        const float* xr = px + r * D;
        float s = 0.0f;
        for (std::int64_t k = 0; k < D; ++k) s += xr[k] * xr[k];
        const float d = std::max(std::sqrt(s), eps), inv = 1.0f / d;
        denom[r] = d;
        for (std::int64_t k = 0; k < D; ++k) py[r * D + k] = xr[k] * inv;
      }
    });
  }
  detail::record(out, [x, out, rows, D, eps, denom] {
    bool store = false;  // a first gradient is stored (Var::grad_for_write)
    float* dx = x.grad_for_write(store).f32();
    const float *g = out.grad().f32(), *y = out.value().f32();
    parallel_for(rows, 4 * D, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t r = b; r < e; ++r) {
        const float *gr = g + r * D, *yr = y + r * D;
        float* dxr = dx + r * D;
        const float inv = 1.0f / denom[r];
        // Below eps the denominator is the constant eps, so the norm contributes no gradient.
        float dot = 0.0f;
        if (denom[r] > eps)
          for (std::int64_t k = 0; k < D; ++k) dot += gr[k] * yr[k];
        if (store)
          for (std::int64_t k = 0; k < D; ++k) dxr[k] = (gr[k] - yr[k] * dot) * inv;
        else
          for (std::int64_t k = 0; k < D; ++k) dxr[k] += (gr[k] - yr[k] * dot) * inv;
      }
    });
  });
  return out;
}

/// The DIN paper's Dice with batch statistics: p = sigmoid(BatchNorm1d(x, affine=False)),
/// y = x (alpha + (1 - alpha) p), x [N, C], alpha [1] or [C]. Torch-RecHub's own Dice is dice().
inline Var dice_bn(const Var& x, const Var& alpha, Tensor& running_mean, Tensor& running_var, bool training,
                   float momentum = 0.1f, float eps = 1e-8f) {
  detail::check_slope("dice_bn", x.shape(), alpha, "alpha");
  const Var p = batch_norm1d_act(x, Var(), Var(), running_mean, running_var, training, momentum, eps, ActKind::sigmoid);
  // alpha + (1 - alpha) p = p + alpha (1 - p)
  return mul(x, add(p, mul(alpha, add_scalar(neg(p), 1.0f))));
}

}  // namespace rechub
