#pragma once
// Reductions.
//
//   sum(x)                  y = sum_i x_i, shape [1];                       dx_i += dy.
//   sum(x, d, keepdim)      y[o, i] = sum_j x[o, j, i] over dim d;            dx[o, j, i] += dy[o, i].
//   mean(x), mean(x, d, k)  the same divided by the number of summed elements.
//   masked_mean(x, mask)    x [B, L, D], mask int32 [B, L] (nonzero = valid):
//                           y[b] = sum_l m[b,l] x[b,l] / n_b with n_b = sum_l m[b,l];  y[b] = 0 when n_b = 0.
//                           dx[b,l] += m[b,l] / n_b * dy[b]   (rows with n_b = 0 get nothing: no NaN).
// A reduction that would leave no dims (sum over the only dim without keepdim) returns shape [1].
// Sums accumulate in float per output element in a fixed order, so results are bit-identical
// for a given thread count; the full sum() accumulates in double.
#include <cstdint>

#include "rechub/ops/dispatch.hpp"
#include "rechub/ops/shape.hpp"

namespace rechub {

namespace detail {
inline Var sum_all_impl(const char* op, const Var& x, float scale) {
  const Tensor& X = x.value();
  check_cpu(op, X);
  check_f32(op, X, "input");
  Var out = make_output(op, Shape{1}, DType::f32, x);
  const float* px = X.f32();
  double s = 0;
  const std::int64_t n = X.numel();
  for (std::int64_t i = 0; i < n; ++i) s += px[i];
  out.value().f32()[0] = static_cast<float>(s * scale);
  record(out, [x, out, scale] {
    float* dx = x.grad_acc().f32();
    const float g = out.grad().f32()[0] * scale;
    const std::int64_t n = x.value().numel();
    for (std::int64_t i = 0; i < n; ++i) dx[i] += g;
  });
  return out;
}

inline Var sum_dim_impl(const char* op, const Var& x, int dim, bool keepdim, bool average) {
  const Tensor& X = x.value();
  check_cpu(op, X);
  check_f32(op, X, "input");
  const int d = norm_dim(op, dim, X.ndim(), X.shape());
  std::int64_t outer, inner;
  outer_inner(X.shape(), d, outer, inner);
  const std::int64_t len = X.dim(d);
  RECHUB_CHECK_SHAPE(!average || len > 0, op, ": cannot average over empty dim ", d, " of ", X.shape().str());
  Shape ys;
  for (int k = 0; k < X.ndim(); ++k) {
    if (k != d) ys.push(X.dim(k));
    else if (keepdim) ys.push(1);
  }
  if (ys.ndim() == 0) ys.push(1);
  const float scale = average ? 1.0f / static_cast<float>(len) : 1.0f;
  Var out = make_output(op, ys, DType::f32, x);
  float* Y = out.value().f32();
  const float* px = X.f32();
  parallel_for(outer, len * inner, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t o = s; o < e; ++o) {
      float* y = Y + o * inner;
      for (std::int64_t i = 0; i < inner; ++i) y[i] = 0.0f;
      for (std::int64_t j = 0; j < len; ++j) {
        const float* xr = px + (o * len + j) * inner;
        for (std::int64_t i = 0; i < inner; ++i) y[i] += xr[i];
      }
      if (average)
        for (std::int64_t i = 0; i < inner; ++i) y[i] *= scale;
    }
  });
  record(out, [x, out, outer, len, inner, scale] {
    float* dx = x.grad_acc().f32();
    const float* dy = out.grad().f32();
    parallel_for(outer, len * inner, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t o = s; o < e; ++o)
        for (std::int64_t j = 0; j < len; ++j) {
          float* dr = dx + (o * len + j) * inner;
          const float* g = dy + o * inner;
          for (std::int64_t i = 0; i < inner; ++i) dr[i] += g[i] * scale;
        }
    });
  });
  return out;
}
}  // namespace detail

/// Sum of every element, shape [1].
inline Var sum(const Var& x) { return detail::sum_all_impl("sum", x, 1.0f); }
/// Sum over `dim`; keepdim leaves it as size 1.
inline Var sum(const Var& x, int dim, bool keepdim = false) {
  return detail::sum_dim_impl("sum", x, dim, keepdim, false);
}
/// Mean of every element, shape [1].
inline Var mean(const Var& x) {
  RECHUB_CHECK_SHAPE(x.value().numel() > 0, "mean: empty input ", x.shape().str());
  return detail::sum_all_impl("mean", x, 1.0f / static_cast<float>(x.value().numel()));
}
/// Mean over `dim`; keepdim leaves it as size 1.
inline Var mean(const Var& x, int dim, bool keepdim = false) {
  return detail::sum_dim_impl("mean", x, dim, keepdim, true);
}

/// Mean of x [B, L, D] over the positions where mask [B, L] (int32) is nonzero -> [B, D];
/// a row with no valid position gives zeros.
inline Var masked_mean(const Var& x, const Tensor& mask) {
  const Tensor& X = x.value();
  detail::check_cpu("masked_mean", X, mask);
  detail::check_f32("masked_mean", X, "x");
  detail::check_i32("masked_mean", mask, "mask");
  RECHUB_CHECK_SHAPE(X.ndim() == 3 && mask.ndim() == 2 && mask.dim(0) == X.dim(0) && mask.dim(1) == X.dim(1),
                     "masked_mean: x ", X.shape().str(), " and mask ", mask.shape().str(),
                     " do not match (expects x [B, L, D] and mask [B, L])");
  const std::int64_t B = X.dim(0), L = X.dim(1), D = X.dim(2);
  Var out = detail::make_output("masked_mean", Shape{B, D}, DType::f32, x);
  // Per-position weights m / n_b, kept in the step arena for the backward (the mask may not outlive the step).
  float* w = static_cast<float*>(step_arena().allocate(static_cast<std::size_t>(B * L) * sizeof(float)));
  const std::int32_t* m = mask.i32();
  for (std::int64_t b = 0; b < B; ++b) {
    std::int64_t n = 0;
    for (std::int64_t l = 0; l < L; ++l) n += m[b * L + l] != 0;
    const float inv = n > 0 ? 1.0f / static_cast<float>(n) : 0.0f;
    for (std::int64_t l = 0; l < L; ++l) w[b * L + l] = m[b * L + l] != 0 ? inv : 0.0f;
  }
  float* Y = out.value().f32();
  const float* px = X.f32();
  parallel_for(B, L * D, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t b = s; b < e; ++b) {
      float* y = Y + b * D;
      for (std::int64_t j = 0; j < D; ++j) y[j] = 0.0f;
      for (std::int64_t l = 0; l < L; ++l) {
        const float wl = w[b * L + l];
        if (wl == 0.0f) continue;
        const float* xr = px + (b * L + l) * D;
        for (std::int64_t j = 0; j < D; ++j) y[j] += wl * xr[j];
      }
    }
  });
  const float* wc = w;
  detail::record(out, [x, out, wc, B, L, D] {
    float* dx = x.grad_acc().f32();
    const float* dy = out.grad().f32();
    parallel_for(B, L * D, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t b = s; b < e; ++b)
        for (std::int64_t l = 0; l < L; ++l) {
          const float wl = wc[b * L + l];
          if (wl == 0.0f) continue;
          float* dr = dx + (b * L + l) * D;
          for (std::int64_t j = 0; j < D; ++j) dr[j] += wl * dy[b * D + j];
        }
    });
  });
  return out;
}

}  // namespace rechub
