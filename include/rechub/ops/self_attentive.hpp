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
// self_attentive_weights_table(T, Q, ids, W2) is the case x = E[ids] + positions with T = E W1,
// Q = positions W1: each row's pre-activation T[id] + Q[l] is formed in place, and the backward
// scatters dP into dT and sums it into dQ (SINE's projected item table, nn/sine_extractor.hpp).
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
#include "rechub/ops/index.hpp"

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

/// Heads up to this many take the fused per-row loops below; wider ones the GEMMs. With K in
/// {1, 2, 4} (SINE, ComiRec-SA) the products Hh W2, Hh^T dS and dS W2^T have an inner or outer
/// dimension of K, where a blocked GEMM spends its time packing; one pass over each row of Hh
/// does the tanh, the K dot products and (backward) the K rank-1 updates while the row is in cache.
constexpr std::int64_t kFusedAttentionHeads = 8;
/// dW2 partial sums: a fixed chunking of the rows (not the thread count), summed in chunk order.
constexpr std::int64_t kAttentionChunks = 16;

/// W2 [H, K] transposed into the arena, [K, H]: each head's weights contiguous.
inline float* transposed_w2(const float* w2, std::int64_t H, std::int64_t K) {
  float* t = step_arena().tensor({K, H}).f32();
  for (std::int64_t h = 0; h < H; ++h)
    for (std::int64_t k = 0; k < K; ++k) t[k * H + h] = w2[h * K + k];
  return t;
}

/// A[b, k, :] = softmax over the unmasked positions of S[b, :, k] (zeros for a row without items).
inline void attention_softmax(const float* s, float* A, const std::int32_t* pm, std::int64_t B, std::int64_t L,
                              std::int64_t K) {
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

/// Hh = tanh(Hh) in place, then S = Hh W2 and A = masked softmax over positions (S read with stride K).
/// Masked rows are skipped (Hh and S left as they are: nothing reads them).
inline void attention_forward(float* hh, float* s, float* A, const float* w2, const std::int32_t* pm, std::int64_t B,
                              std::int64_t L, std::int64_t H, std::int64_t K) {
  const std::int64_t BL = B * L;
  if (K <= kFusedAttentionHeads) {
    const float* w2t = transposed_w2(w2, H, K);
    parallel_for(BL, 10 * H * (K + 1), [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) {
        if (pm && !pm[r]) continue;
        Eigen::Map<Eigen::ArrayXf> h(hh + r * H, H);
        h = h.tanh();
        for (std::int64_t k = 0; k < K; ++k)
          s[r * K + k] = h.matrix().dot(Eigen::Map<const Eigen::VectorXf>(w2t + k * H, H));
      }
    });
  } else {
    parallel_for(BL, 8 * H, [&](std::int64_t b, std::int64_t e) {
      Eigen::Map<Eigen::ArrayXf> a(hh + b * H, (e - b) * H);
      a = a.tanh();
    });
    gemm(false, false, BL, K, H, 1.0f, hh, H, w2, K, 0.0f, s, K);
  }
  attention_softmax(s, A, pm, B, L, K);
}

/// From dA: dW2 += Hh^T dS (when dw2), and dP = (dS W2^T) * (1 - Hh^2) written to `dp` [B*L, H]
/// (when given; added to it when `accumulate`; `dp` may be `hh` itself, overwritten row by row).
/// Masked rows (pm[r] == 0) have dS = 0: they are skipped (0 in `dp` when written, untouched when added to).
inline void attention_backward(const float* A, const float* dA, const float* hh, const float* w2, float* dw2,
                               float* dp, bool accumulate, const std::int32_t* pm, std::int64_t B, std::int64_t L,
                               std::int64_t H, std::int64_t K) {
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
  if (K > kFusedAttentionHeads) {
    if (dw2) gemm(true, false, H, K, BL, 1.0f, hh, H, ds, K, 1.0f, dw2, K);
    if (!dp) return;
    float* t = arena.tensor({BL, H}).f32();  // not dp: dp may be hh
    gemm(false, true, BL, H, K, 1.0f, ds, K, w2, K, 0.0f, t, H);
    parallel_for(BL, 3 * H, [&](std::int64_t r0, std::int64_t r1) {
      Eigen::Map<const Eigen::ArrayXf> g(t + r0 * H, (r1 - r0) * H), th(hh + r0 * H, (r1 - r0) * H);
      Eigen::Map<Eigen::ArrayXf> out(dp + r0 * H, (r1 - r0) * H);
      if (accumulate) out += g * (1.0f - th.square());
      else out = g * (1.0f - th.square());
    });
    return;
  }
  // Fused: per row, dW2's K rank-1 updates (into the chunk's partial sums) and then dP.
  const float* w2t = transposed_w2(w2, H, K);
  const std::int64_t chunks = std::min<std::int64_t>(kAttentionChunks, BL);
  float* part = dw2 ? arena.zeros({chunks, K, H}).f32() : nullptr;
  parallel_for(chunks, (BL / chunks + 1) * H * (2 * K + 3), [&](std::int64_t c0, std::int64_t c1) {
    Eigen::ArrayXf g(H);
    for (std::int64_t c = c0; c < c1; ++c) {
      const std::int64_t r0 = c * BL / chunks, r1 = (c + 1) * BL / chunks;
      for (std::int64_t r = r0; r < r1; ++r) {
        if (pm && !pm[r]) {
          if (dp && !accumulate) std::fill(dp + r * H, dp + (r + 1) * H, 0.0f);
          continue;
        }
        const float* dsr = ds + r * K;
        Eigen::Map<const Eigen::ArrayXf> th(hh + r * H, H);
        if (part)
          for (std::int64_t k = 0; k < K; ++k) Eigen::Map<Eigen::ArrayXf>(part + (c * K + k) * H, H) += dsr[k] * th;
        if (!dp) continue;
        g = dsr[0] * Eigen::Map<const Eigen::ArrayXf>(w2t, H);
        for (std::int64_t k = 1; k < K; ++k) g += dsr[k] * Eigen::Map<const Eigen::ArrayXf>(w2t + k * H, H);
        Eigen::Map<Eigen::ArrayXf> out(dp + r * H, H);
        if (accumulate) out += g * (1.0f - th.square());
        else out = g * (1.0f - th.square());  // may alias th: g is read first, elementwise
      }
    }
  });
  if (part)
    for (std::int64_t c = 0; c < chunks; ++c)
      for (std::int64_t k = 0; k < K; ++k) {
        const float* pk = part + (c * K + k) * H;
        for (std::int64_t h = 0; h < H; ++h) dw2[h * K + k] += pk[h];
      }
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
  if (pm) pm = detail::arena_copy(pm, BL);  // the backward skips masked rows
  detail::record(out, [x, w1, w2, out, hh, pm, B, L, D, H, K] {
    const bool want_dp = x.requires_grad() || w1.requires_grad();
    const std::int64_t BL = B * L;
    float* dp = want_dp ? hh : nullptr;  // dP overwrites Hh (each row is read before it is written)
    detail::attention_backward(out.value().f32(), out.grad().f32(), hh, w2.value().f32(),
                               w2.requires_grad() ? w2.grad_acc().f32() : nullptr, dp, false, pm, B, L, H, K);
    if (!dp) return;
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
  if (pm) pm = detail::arena_copy(pm, BL);
  detail::record(out, [pre, w2, out, hh, pm, B, L, H, K] {
    detail::attention_backward(out.value().f32(), out.grad().f32(), hh, w2.value().f32(),
                               w2.requires_grad() ? w2.grad_acc().f32() : nullptr,
                               pre.requires_grad() ? pre.grad_acc().f32() : nullptr, true, pm, B, L, H, K);
  });
  return out;
}

/// The weights for pre-activations proj[ids] + pos (proj = E W1 [V, H], pos = P W1 [>= L, H], its first
/// L rows used), formed row by row: softmax_l(tanh(proj[ids] + pos) W2)^T -> [B, K, L]. ids int32
/// [B, L] are the mask too: id 0 is padding (weight 0, no gradient into proj or pos).
inline Var self_attentive_weights_table(const Var& proj, const Var& pos, const Tensor& ids, const Var& w2) {
  const char* op = "self_attentive_weights_table";
  const Tensor &T = proj.value(), &Q = pos.value(), &W2 = w2.value();
  detail::check_cpu(op, T, Q, W2, ids);
  detail::check_f32(op, T, "proj");
  detail::check_f32(op, Q, "pos");
  detail::check_f32(op, W2, "w2");
  detail::check_i32(op, ids, "ids");
  RECHUB_CHECK_SHAPE(T.ndim() == 2 && Q.ndim() == 2 && W2.ndim() == 2 && ids.ndim() == 2 && Q.dim(1) == T.dim(1) &&
                         W2.dim(0) == T.dim(1) && Q.dim(0) >= ids.dim(1),
                     op, ": proj ", T.shape().str(), ", pos ", Q.shape().str(), ", ids ", ids.shape().str(),
                     " and w2 ", W2.shape().str(), " do not fit (expects [V, H], [>= L, H], [B, L], [H, K])");
  const std::int64_t B = ids.dim(0), L = ids.dim(1), V = T.dim(0), H = T.dim(1), K = W2.dim(1), BL = B * L;
  detail::check_ids(op, ids.i32(), BL, T);
  Var out = detail::make_output(op, Shape{B, K, L}, DType::f32, proj, pos, w2);
  Arena& arena = step_arena();
  float* hh = arena.tensor({BL, H}).f32();
  float* s = arena.tensor({BL, K}).f32();
  const std::int32_t* id = detail::arena_copy(ids.i32(), BL);
  const float *pt = T.f32(), *pq = Q.f32();
  parallel_for(BL, 2 * H, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      Eigen::Map<Eigen::ArrayXf> h(hh + r * H, H);
      if (id[r] == 0) h.setZero();  // padding: never read, but kept finite for the GEMM path
      else h = Eigen::Map<const Eigen::ArrayXf>(pt + id[r] * H, H) + Eigen::Map<const Eigen::ArrayXf>(pq + (r % L) * H, H);
    }
  });
  detail::attention_forward(hh, s, out.value().f32(), W2.f32(), id, B, L, H, K);
  detail::record(out, [proj, pos, w2, out, hh, id, B, L, V, H, K] {
    const bool want_dp = proj.requires_grad() || pos.requires_grad();
    float* dp = want_dp ? hh : nullptr;  // dP overwrites Hh row by row; padding rows become 0
    detail::attention_backward(out.value().f32(), out.grad().f32(), hh, w2.value().f32(),
                               w2.requires_grad() ? w2.grad_acc().f32() : nullptr, dp, false, id, B, L, H, K);
    if (!dp) return;
    if (proj.requires_grad()) detail::scatter_add_rows(proj.grad_acc().f32(), V, H, id, B * L, dp, 1, nullptr, 0);
    if (pos.requires_grad()) {
      float* gq = pos.grad_acc().f32();
      parallel_for(L, B * H, [&](std::int64_t l0, std::int64_t l1) {
        for (std::int64_t l = l0; l < l1; ++l) {
          Eigen::Map<Eigen::ArrayXf> g(gq + l * H, H);
          for (std::int64_t b = 0; b < B; ++b)
            if (id[b * L + l]) g += Eigen::Map<const Eigen::ArrayXf>(dp + (b * L + l) * H, H);
        }
      });
    }
  });
  return out;
}

}  // namespace rechub
