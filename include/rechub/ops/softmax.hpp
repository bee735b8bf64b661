#pragma once
// softmax and log_softmax over the last dim, with an optional keep-mask.
//
//   x [..., L] (up to 4 dims); mask: int32 Tensor (not a Var) [..., L], nonzero = keep, 0 = masked
//   out. The mask's last dim is L; its leading dims are right-aligned with x's and each equals
//   x's or is 1 (so [B, 1, L] serves x [B, H, L], and [L] serves every row).
//   Over the kept positions K of a row, with m = max_K x:
//     softmax      y_k = e^(x_k - m) / sum_K e^(x_j - m)       dx_k += y_k (g_k - sum_K g_j y_j)
//     log_softmax  y_k = x_k - m - log sum_K e^(x_j - m)       dx_k += g_k - e^(y_k) sum_K g_j
//   Masked positions output 0 and get zero gradient: they carry no probability (softmax) and the
//   log-probability -inf is not written because 0 * -inf would turn later sums into NaN
//   (log_softmax). A fully masked row is all zeros with zero gradient in both, never NaN.
#include <cmath>
#include <cstdint>
#include <limits>

#include "rechub/core/parallel.hpp"
#include "rechub/ops/dispatch.hpp"

namespace rechub {

namespace detail {

/// How rows of x map to rows of a broadcast mask: x's leading dims padded to 3, with the mask's
/// row stride per leading dim (0 where the mask has size 1).
struct MaskRows {
  std::int64_t e[3] = {1, 1, 1};
  std::int64_t s[3] = {0, 0, 0};
  std::int64_t row(std::int64_t r) const {
    const std::int64_t i2 = r % e[2], i1 = (r / e[2]) % e[1], i0 = r / (e[2] * e[1]);
    return i0 * s[0] + i1 * s[1] + i2 * s[2];
  }
};

inline MaskRows plan_mask(const char* op, const Tensor& x, const Tensor& mask) {
  check_cpu(op, mask);
  check_i32(op, mask, "mask");
  const int nx = x.ndim(), nm = mask.ndim();
  bool ok = nm >= 1 && nm <= nx && mask.dim(-1) == x.dim(-1);
  MaskRows m;
  std::int64_t stride = 1;              // in mask rows
  for (int k = 1; ok && k < nx; ++k) {  // k-th leading dim from the right
    const std::int64_t xd = x.dim(nx - 1 - k);
    const std::int64_t md = k < nm ? mask.dim(nm - 1 - k) : 1;
    if (md != xd && md != 1) ok = false;
    m.e[3 - k] = xd;
    m.s[3 - k] = md == 1 ? 0 : stride;
    stride *= md;
  }
  RECHUB_CHECK_SHAPE(ok, op, ": mask ", mask.shape().str(), " does not broadcast to input ", x.shape().str());
  return m;
}

template <bool Log>
Var softmax_impl(const char* op, const Var& x, const Tensor& mask) {
  const Tensor& X = x.value();
  check_cpu(op, X);
  check_f32(op, X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() >= 1, op, ": input must have at least 1 dim, got ", X.shape().str());
  const std::int64_t L = X.dim(-1), rows = L ? X.numel() / L : 0;
  const bool masked = mask.defined();
  MaskRows mr;
  if (masked) mr = plan_mask(op, X, mask);
  Var out = make_output(op, X.shape(), DType::f32, x);
  // log_softmax's backward must tell masked positions apart; keep a byte copy of the expanded
  // mask (softmax's backward needs none: masked outputs are 0, so their gradient is 0 anyway).
  std::uint8_t* keep = (Log && masked && out.requires_grad())
                           ? static_cast<std::uint8_t*>(step_arena().allocate(static_cast<std::size_t>(rows * L)))
                           : nullptr;
  {
    const float* px = X.f32();
    const std::int32_t* pm = masked ? mask.i32() : nullptr;
    float* py = out.value().f32();
    parallel_for(rows, 24 * L, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t r = b; r < e; ++r) {
        const float* xr = px + r * L;
        float* yr = py + r * L;
        const std::int32_t* mk = pm ? pm + mr.row(r) * L : nullptr;
        if (keep)
          for (std::int64_t k = 0; k < L; ++k) keep[r * L + k] = mk[k] != 0;
        float m = -std::numeric_limits<float>::infinity();
        for (std::int64_t k = 0; k < L; ++k)
          if (!mk || mk[k]) m = xr[k] > m ? xr[k] : m;
        if (m == -std::numeric_limits<float>::infinity() && mk) {  // fully masked row
          for (std::int64_t k = 0; k < L; ++k) yr[k] = 0.0f;
          continue;
        }
        float s = 0.0f;
        for (std::int64_t k = 0; k < L; ++k) {
          const float ek = (!mk || mk[k]) ? std::exp(xr[k] - m) : 0.0f;
          if (!Log) yr[k] = ek;
          s += ek;
        }
        if (Log) {
          const float lse = m + std::log(s);
          for (std::int64_t k = 0; k < L; ++k) yr[k] = (!mk || mk[k]) ? xr[k] - lse : 0.0f;
        } else {
          const float inv = 1.0f / s;
          for (std::int64_t k = 0; k < L; ++k) yr[k] *= inv;
        }
      }
    });
  }
  record(out, [x, out, rows, L, keep] {
    float* dx = x.grad_acc().f32();
    const float *g = out.grad().f32(), *y = out.value().f32();
    parallel_for(rows, 8 * L, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t r = b; r < e; ++r) {
        const float *gr = g + r * L, *yr = y + r * L;
        float* dxr = dx + r * L;
        const std::uint8_t* kr = keep ? keep + r * L : nullptr;
        if (!Log) {
          float dot = 0.0f;
          for (std::int64_t k = 0; k < L; ++k) dot += gr[k] * yr[k];
          for (std::int64_t k = 0; k < L; ++k) dxr[k] += yr[k] * (gr[k] - dot);
        } else {
          float sg = 0.0f;
          for (std::int64_t k = 0; k < L; ++k)
            if (!kr || kr[k]) sg += gr[k];
          for (std::int64_t k = 0; k < L; ++k)
            if (!kr || kr[k]) dxr[k] += gr[k] - std::exp(yr[k]) * sg;
        }
      }
    });
  });
  return out;
}

}  // namespace detail

/// Softmax over the last dim; masked positions (mask == 0) get 0, a fully masked row all zeros.
inline Var softmax(const Var& x, const Tensor& mask = Tensor()) {
  return detail::softmax_impl<false>("softmax", x, mask);
}

/// Log-softmax over the last dim; masked positions and fully masked rows read 0 (not -inf).
inline Var log_softmax(const Var& x, const Tensor& mask = Tensor()) {
  return detail::softmax_impl<true>("log_softmax", x, mask);
}

}  // namespace rechub
