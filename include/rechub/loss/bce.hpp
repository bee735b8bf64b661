#pragma once
// Binary cross-entropy, each a single fused op returning a scalar [1] = the mean over N.
//
//   bce(p [N] or [N,1], y [N]):        torch.nn.BCELoss (what Torch-RecHub's MatchTrainer uses in mode 0)
//       l_i = -(y_i * max(log p_i, -100) + (1 - y_i) * max(log(1 - p_i), -100))
//       dL/dp_i = g * (p_i - y_i) / max(p_i (1 - p_i), 1e-12) / N
//     The -100 clamp keeps the loss finite at p = 0 or 1; the gradient is torch's rule, the
//     derivative of the UNclamped loss with its denominator floored at 1e-12, so it stays finite
//     (at most 1e12 / N) rather than dropping to zero where the clamp is active.
//   bce_with_logits(x [N] or [N,1], y [N]):   torch.nn.BCEWithLogitsLoss
//       l_i = max(x_i, 0) - x_i y_i + log(1 + exp(-|x_i|))      (no exp of a positive number)
//       dL/dx_i = g * (sigmoid(x_i) - y_i) / N
//
// Fragility in Torch-RecHub: its models emit sigmoid(score) and train BCELoss on it. In float32
// sigmoid(s) rounds to exactly 1 once s > ~17, so log(1 - p) hits the -100 clamp and the loss
// saturates. bce is kept faithful so numbers compare; bce_with_logits on the raw score is the
// robust equivalent (the same value wherever both are finite).
//
// Labels are float32 constants (no gradient), any shape holding N values. They are copied into
// the step arena, so the caller's label buffer may die before backward.
//
// This header also holds the small helpers every loss in loss/ shares.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "rechub/ops/dispatch.hpp"

namespace rechub {

namespace detail {
/// N when `t` is [N] or [N, 1], else -1 (a loss input that is one value per row).
inline std::int64_t loss_column_len(const Tensor& t) {
  if (t.ndim() == 1) return t.dim(0);
  if (t.ndim() == 2 && t.dim(1) == 1) return t.dim(0);
  return -1;
}
/// Copies `n` 4-byte values into the step arena so a backward closure can hold them by pointer.
template <class T>
T* loss_arena_copy(const T* src, std::int64_t n) {
  static_assert(sizeof(T) == 4, "loss_arena_copy: 4-byte values only");
  T* dst = static_cast<T*>(step_arena().allocate(static_cast<std::size_t>(n) * sizeof(T)));
  if (n > 0) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
  return dst;
}
/// log(1 + exp(x)) without overflow; float accuracy for every x.
inline float loss_softplus(float x) { return std::fmax(x, 0.0f) + std::log1p(std::exp(-std::fabs(x))); }
/// 1 / (1 + exp(-x)) without overflow.
inline float loss_sigmoid(float x) {
  if (x >= 0) return 1.0f / (1.0f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.0f + e);
}
/// Scalar [1] output of a mean-reduced loss.
template <class... Vars>
Var loss_output(const char* op, const Vars&... inputs) {
  return make_output(op, Shape{1}, DType::f32, inputs...);
}
/// Shared input checks of the two BCE flavours; returns N.
inline std::int64_t bce_check(const char* op, const Tensor& x, const Tensor& label, const char* xname) {
  check_cpu(op, x, label);
  check_f32(op, x, xname);
  check_f32(op, label, "label");
  const std::int64_t n = loss_column_len(x);
  RECHUB_CHECK_SHAPE(n >= 1 && label.numel() == n && loss_column_len(label) == n, op, ": ", xname, " ",
                     x.shape().str(), " and label ", label.shape().str(), " must both hold N >= 1 values ([N] or [N, 1])");
  return n;
}
}  // namespace detail

/// torch.nn.BCELoss on probabilities: mean of -(y log p + (1-y) log(1-p)), logs clamped at -100.
inline Var bce(const Var& prob, const Tensor& label) {
  const Tensor& P = prob.value();
  const std::int64_t N = detail::bce_check("bce", P, label, "prob");
  const float* p = P.f32();
  const float* y = label.f32();
  for (std::int64_t i = 0; i < N; ++i) {
    // Negated comparisons also reject NaN.
    RECHUB_CHECK(p[i] >= 0.0f && p[i] <= 1.0f, "bce: prob[", i, "] = ", p[i], " is outside [0, 1]");
    RECHUB_CHECK(y[i] >= 0.0f && y[i] <= 1.0f, "bce: label[", i, "] = ", y[i], " is outside [0, 1]");
  }
  Var out = detail::loss_output("bce", prob);
  double sum = 0;
  for (std::int64_t i = 0; i < N; ++i) {
    const float lp = std::fmax(std::log(p[i]), -100.0f), lq = std::fmax(std::log1p(-p[i]), -100.0f);
    sum += (y[i] - 1.0f) * lq - y[i] * lp;
  }
  out.value().f32()[0] = static_cast<float>(sum / N);
  const float* ys = out.requires_grad() ? detail::loss_arena_copy(y, N) : nullptr;
  detail::record(out, [prob, out, ys, N] {
    const float g = out.grad().f32()[0] / static_cast<float>(N);
    const float* pr = prob.value().f32();
    float* dp = prob.grad_acc().f32();
    for (std::int64_t i = 0; i < N; ++i)
      dp[i] += g * (pr[i] - ys[i]) / std::fmax((1.0f - pr[i]) * pr[i], 1e-12f);
  });
  return out;
}

/// torch.nn.BCEWithLogitsLoss: mean of max(x,0) - x y + log(1 + exp(-|x|)); stable for any x.
inline Var bce_with_logits(const Var& logits, const Tensor& label) {
  const Tensor& X = logits.value();
  const std::int64_t N = detail::bce_check("bce_with_logits", X, label, "logits");
  const float *x = X.f32(), *y = label.f32();
  Var out = detail::loss_output("bce_with_logits", logits);
  double sum = 0;
  for (std::int64_t i = 0; i < N; ++i) sum += detail::loss_softplus(x[i]) - x[i] * y[i];
  out.value().f32()[0] = static_cast<float>(sum / N);
  const float* ys = out.requires_grad() ? detail::loss_arena_copy(y, N) : nullptr;
  detail::record(out, [logits, out, ys, N] {
    const float g = out.grad().f32()[0] / static_cast<float>(N);
    const float* xv = logits.value().f32();
    float* dx = logits.grad_acc().f32();
    for (std::int64_t i = 0; i < N; ++i) dx[i] += g * (detail::loss_sigmoid(xv[i]) - ys[i]);
  });
  return out;
}

}  // namespace rechub
