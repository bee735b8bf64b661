#pragma once
// lp_normalize: torch's F.normalize(x, p, dim = -1, eps) for any order p != 0, per row of the last dim:
//
//   n = (sum_i |x_i|^p)^(1/p),   y = x / max(n, eps)
//   n > eps:  dx_i += g_i / n - <g, x> / n^2 * dn/dx_i,   dn/dx_i = n^(1-p) |x_i|^(p-1) sign(x_i)
//   n <= eps: dx += g / eps  (the denominator is the constant eps)
// l2_normalize (ops/norm.hpp) is the p = 2 case. SINE needs p = -1: Torch-RecHub writes
// F.normalize(x, -1), where the -1 lands in the `p` argument (dim keeps its default, the last dim
// of a 2-d input), so its next-intention vector is divided by (sum_i 1/|x_i|)^-1, which is at most
// min_i |x_i|. As in torch, a zero entry makes a negative-order norm 0 (then y = x / eps).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "rechub/ops/dispatch.hpp"

namespace rechub {

/// x / max(||x||_p, eps) over the last dim (torch F.normalize with order p).
inline Var lp_normalize(const Var& x, float p, float eps = 1e-12f) {
  const char* op = "lp_normalize";
  const Tensor& X = x.value();
  detail::check_cpu(op, X);
  detail::check_f32(op, X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() >= 1, op, ": input must have at least 1 dim, got ", X.shape().str());
  RECHUB_CHECK(p != 0.0f, op, ": order p must not be 0");
  const std::int64_t D = X.dim(-1), rows = D ? X.numel() / D : 0;
  Var out = detail::make_output(op, X.shape(), DType::f32, x);
  float* norm = step_arena().tensor({rows}).f32();  // ||x||_p per row
  const float* px = X.f32();
  float* py = out.value().f32();
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = px + r * D;
    double s = 0;
    for (std::int64_t i = 0; i < D; ++i) s += std::pow(std::fabs(double(xr[i])), double(p));
    const float n = static_cast<float>(std::pow(s, 1.0 / p));  // s = inf (a zero entry, p < 0) gives 0
    norm[r] = n;
    const float inv = 1.0f / std::max(n, eps);
    for (std::int64_t i = 0; i < D; ++i) py[r * D + i] = xr[i] * inv;
  }
  detail::record(out, [x, out, rows, D, p, eps, norm] {
    float* dx = x.grad_acc().f32();
    const float *g = out.grad().f32(), *px = x.value().f32();
    for (std::int64_t r = 0; r < rows; ++r) {
      const float *gr = g + r * D, *xr = px + r * D;
      float* dr = dx + r * D;
      const float n = norm[r];
      if (!(n > eps)) {
        for (std::int64_t i = 0; i < D; ++i) dr[i] += gr[i] / eps;
        continue;
      }
      double gx = 0;
      for (std::int64_t i = 0; i < D; ++i) gx += double(gr[i]) * xr[i];
      const double c = gx / (double(n) * n), np = std::pow(double(n), 1.0 - p);
      for (std::int64_t i = 0; i < D; ++i) {
        const double a = std::fabs(double(xr[i]));
        const double dn = a > 0 ? np * std::pow(a, double(p) - 1.0) * (xr[i] > 0 ? 1.0 : -1.0) : 0.0;
        dr[i] += static_cast<float>(gr[i] / double(n) - c * dn);
      }
    }
  });
  return out;
}

}  // namespace rechub
