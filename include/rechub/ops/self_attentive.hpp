#pragma once
// Self-attentive weights (Lin et al.'s structured self-attention), the attention of ComiRec-SA's
// MultiInterestSA and of SINE's three attention modules:
//
//   A = softmax_l( tanh(x W1) W2 )^T      x [B, L, D], W1 [D, H], W2 [H, K] -> A [B, K, L]
//   mask int32 [B, L] (nonzero = a real item; undefined = no mask): the softmax runs over the
//   positions of each row and head k, padding excluded (weight 0). Torch-RecHub adds -1e9 to the
//   padding logits instead: the same numbers, except for a row without any item, where it
//   spreads 1/L over the padding and we return zeros (no history, no attention).
// The pooled vectors are then matmul(A, x) [B, K, D] (ComiRec-SA's interests, SINE's z_u).
// self_attentive_weights_pre(P, W2, mask) takes the pre-activations P = x W1 [B, L, H] instead,
// for callers that can form them more cheaply (SINE: x_hat W4 = p (c_u W4), rank K instead of D).
//
// Backward, with P = x W1 [B*L, H], Hh = tanh(P), S = Hh W2 [B*L, K]:
//   dS_lk = A_kl (dA_kl - sum_l' A_kl' dA_kl'),
//   dW2 += Hh^T dS,  dP = (dS W2^T) * (1 - Hh^2),  dW1 += x^T dP,  dx += dP W1^T.
// Every product is one GEMM over all B*L rows (what a per-row loop would do in 4*B tiny GEMMs),
// tanh is Eigen's vectorised one (the op's only transcendental over B*L*H elements; std::tanh
// would cost more than all the GEMMs together). Hh is kept in the step arena for the backward.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "rechub/ops/dispatch.hpp"
#include "rechub/ops/gemm.hpp"

namespace rechub {

namespace detail {

inline const std::int32_t* check_attention_mask(const char* op, const Tensor& mask, std::int64_t B, std::int64_t L,
                                                const Tensor& x) {
  if (!mask.defined()) return nullptr;
  check_cpu(op, mask);
  check_i32(op, mask, "mask");
  RECHUB_CHECK_SHAPE(mask.ndim() == 2 && mask.dim(0) == B && mask.dim(1) == L, op, ": mask ", mask.shape().str(),
                     " does not match x ", x.shape().str(), " (expects [B, L])");
  return mask.i32();
}

/// Hh = tanh(Hh) in place, then S = Hh W2 and A = masked softmax over positions (S read with stride K).
inline void attention_forward(float* hh, float* s, float* A, const float* w2, const std::int32_t* pm, std::int64_t B,
                              std::int64_t L, std::int64_t H, std::int64_t K) {
  const std::int64_t BL = B * L;
  parallel_for(BL, 8 * H, [&](std::int64_t b, std::int64_t e) {
    Eigen::Map<Eigen::ArrayXf> a(hh + b * H, (e - b) * H);
    a = a.tanh();
  });
  gemm(false, false, BL, K, H, 1.0f, hh, H, w2, K, 0.0f, s, K);
  parallel_for(B, 4 * K * L, [&](std::int64_t b0, std::int64_t e0) {
    for (std::int64_t b = b0; b < e0; ++b) {
      const std::int32_t* mk = pm ? pm + b * L : nullptr;
      for (std::int64_t k = 0; k < K; ++k) {
        float* a = A + (b * K + k) * L;
        const float* sk = s + b * L * K + k;  // S[b, l, k] at sk[l * K]
        float m = -std::numeric_limits<float>::infinity();
        for (std::int64_t l = 0; l < L; ++l)
          if (!mk || mk[l]) m = sk[l * K] > m ? sk[l * K] : m;
        if (m == -std::numeric_limits<float>::infinity()) {  // no item in the row
          for (std::int64_t l = 0; l < L; ++l) a[l] = 0.0f;
          continue;
        }
        float sum = 0.0f;
        for (std::int64_t l = 0; l < L; ++l) {
          a[l] = (!mk || mk[l]) ? std::exp(sk[l * K] - m) : 0.0f;
          sum += a[l];
        }
        const float inv = 1.0f / sum;
        for (std::int64_t l = 0; l < L; ++l) a[l] *= inv;
      }
    }
  });
}

/// From dA: dW2 += Hh^T dS (when dw2), and returns dP [B*L, H] in the arena (when want_dp).
inline float* attention_backward(const float* A, const float* dA, const float* hh, const float* w2, float* dw2,
                                 bool want_dp, std::int64_t B, std::int64_t L, std::int64_t H, std::int64_t K) {
  const std::int64_t BL = B * L;
  Arena& arena = step_arena();
  float* ds = arena.tensor({BL, K}).f32();
  parallel_for(B, 4 * K * L, [&](std::int64_t b0, std::int64_t e0) {
    for (std::int64_t b = b0; b < e0; ++b)
      for (std::int64_t k = 0; k < K; ++k) {
        const float *a = A + (b * K + k) * L, *g = dA + (b * K + k) * L;
        float dot = 0.0f;
        for (std::int64_t l = 0; l < L; ++l) dot += a[l] * g[l];
        float* dsk = ds + b * L * K + k;
        for (std::int64_t l = 0; l < L; ++l) dsk[l * K] = a[l] * (g[l] - dot);
      }
  });
  if (dw2) gemm(true, false, H, K, BL, 1.0f, hh, H, ds, K, 1.0f, dw2, K);
  if (!want_dp) return nullptr;
  float* dp = arena.tensor({BL, H}).f32();
  gemm(false, true, BL, H, K, 1.0f, ds, K, w2, K, 0.0f, dp, H);
  parallel_for(BL, 2 * H, [&](std::int64_t b, std::int64_t e) {
    Eigen::Map<Eigen::ArrayXf> g(dp + b * H, (e - b) * H);
    Eigen::Map<const Eigen::ArrayXf> t(hh + b * H, (e - b) * H);
    g *= 1.0f - t.square();
  });
  return dp;
}

}  // namespace detail

/// softmax over positions of tanh(x W1) W2 with padding masked out: [B, L, D] -> weights [B, K, L].
inline Var self_attentive_weights(const Var& x, const Var& w1, const Var& w2, const Tensor& mask = Tensor()) {
  const char* op = "self_attentive_weights";
  const Tensor &X = x.value(), &W1 = w1.value(), &W2 = w2.value();
  detail::check_cpu(op, X, W1, W2);
  detail::check_f32(op, X, "x");
  detail::check_f32(op, W1, "w1");
  detail::check_f32(op, W2, "w2");
  RECHUB_CHECK_SHAPE(X.ndim() == 3 && W1.ndim() == 2 && W2.ndim() == 2 && W1.dim(0) == X.dim(2) &&
                         W2.dim(0) == W1.dim(1),
                     op, ": x ", X.shape().str(), ", w1 ", W1.shape().str(), " and w2 ", W2.shape().str(),
                     " do not chain (expects [B, L, D], [D, H], [H, K])");
  const std::int64_t B = X.dim(0), L = X.dim(1), D = X.dim(2), H = W1.dim(1), K = W2.dim(1), BL = B * L;
  const std::int32_t* pm = detail::check_attention_mask(op, mask, B, L, X);
  Var out = detail::make_output(op, Shape{B, K, L}, DType::f32, x, w1, w2);
  Arena& arena = step_arena();
  float* hh = arena.tensor({BL, H}).f32();
  float* s = arena.tensor({BL, K}).f32();
  detail::gemm(false, false, BL, H, D, 1.0f, X.f32(), D, W1.f32(), H, 0.0f, hh, H);
  detail::attention_forward(hh, s, out.value().f32(), W2.f32(), pm, B, L, H, K);
  detail::record(out, [x, w1, w2, out, hh, B, L, D, H, K] {
    const bool want_dp = x.requires_grad() || w1.requires_grad();
    float* dp = detail::attention_backward(out.value().f32(), out.grad().f32(), hh, w2.value().f32(),
                                           w2.requires_grad() ? w2.grad_acc().f32() : nullptr, want_dp, B, L, H, K);
    const std::int64_t BL = B * L;
    if (w1.requires_grad())
      detail::gemm(true, false, D, H, BL, 1.0f, x.value().f32(), D, dp, H, 1.0f, w1.grad_acc().f32(), H);
    if (x.requires_grad())
      detail::gemm(false, true, BL, D, H, 1.0f, dp, H, w1.value().f32(), H, 1.0f, x.grad_acc().f32(), D);
  });
  return out;
}

/// The same weights from pre-activations `pre` = x W1 [B, L, H]: softmax_l(tanh(pre) W2)^T -> [B, K, L].
inline Var self_attentive_weights_pre(const Var& pre, const Var& w2, const Tensor& mask = Tensor()) {
  const char* op = "self_attentive_weights_pre";
  const Tensor &P = pre.value(), &W2 = w2.value();
  detail::check_cpu(op, P, W2);
  detail::check_f32(op, P, "pre");
  detail::check_f32(op, W2, "w2");
  RECHUB_CHECK_SHAPE(P.ndim() == 3 && W2.ndim() == 2 && W2.dim(0) == P.dim(2), op, ": pre ", P.shape().str(),
                     " and w2 ", W2.shape().str(), " do not chain (expects [B, L, H], [H, K])");
  const std::int64_t B = P.dim(0), L = P.dim(1), H = P.dim(2), K = W2.dim(1), BL = B * L;
  const std::int32_t* pm = detail::check_attention_mask(op, mask, B, L, P);
  Var out = detail::make_output(op, Shape{B, K, L}, DType::f32, pre, w2);
  Arena& arena = step_arena();
  float* hh = arena.tensor({BL, H}).f32();
  float* s = arena.tensor({BL, K}).f32();
  std::copy(P.f32(), P.f32() + BL * H, hh);
  detail::attention_forward(hh, s, out.value().f32(), W2.f32(), pm, B, L, H, K);
  detail::record(out, [pre, w2, out, hh, B, L, H, K] {
    float* dp = detail::attention_backward(out.value().f32(), out.grad().f32(), hh, w2.value().f32(),
                                           w2.requires_grad() ? w2.grad_acc().f32() : nullptr, pre.requires_grad(),
                                           B, L, H, K);
    if (!dp) return;
    float* g = pre.grad_acc().f32();
    for (std::int64_t i = 0; i < B * L * H; ++i) g[i] += dp[i];
  });
  return out;
}

}  // namespace rechub
