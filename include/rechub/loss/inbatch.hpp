#pragma once
// In-batch softmax losses: row i's positive is item i, the other items of the batch are its
// negatives. Each is one fused op (scores, softmax, cross-entropy, both gradients) -> scalar [1].
//
// Shapes: user u [B, D], item v [B, D] (row i of each is one training pair); log_q [B] and
// item_ids [B] are optional per-row host arrays (only read in forward).
//
// inbatch_softmax(u, v, T, log_q, item_ids): the full B x B version.
//     z_ij = <u_i, v_j> / T - log_q[j]                        (log_q: log-Q sampling-bias correction)
//     z_ij = -inf  where j != i and item_ids[j] == item_ids[i] (accidental hits: the row's own
//                                                              positive seen again as a "negative")
//     L = mean_i (logsumexp_j z_ij - z_ii);   P = softmax rows of z
//     dz = g / B (P - I);  du = dz V / T;  dv = dz^T U / T   (two GEMMs on P, alpha = g / (B T),
//     then the identity part: du_i -= g/(B T) v_i, dv_i -= g/(B T) u_i)
//   The correction is applied to the tempered logits, as in the sampling-bias-correction paper
//   (Yi et al., RecSys'19) and TF-Recommenders: log Q is a shift of the softmax's own logits.
//   Forward keeps P (B x B floats in the step arena) for backward; nothing else is stored.
//
// inbatch_cyclic_softmax(u, v, n_neg, T, log_q, cosine): Torch-RecHub's YoutubeSBC loss.
//   YoutubeSBC scores every user against every item of the batch (cosine), subtracts
//   log(sample_weight) of the ITEM (column), then keeps for row i only the columns
//   j_ik = (i + k) mod B, k = 0..n_neg (k = 0 the positive, then the next n_neg rows' items,
//   wrapping around), divides by the temperature and trains CrossEntropyLoss with target 0:
//     s_ik = cos(u_i, v_j) (or <u_i, v_j> with cosine = false),  j = j_ik
//     z_ik = (s_ik - log_q[j]) / T;    L = mean_i (logsumexp_k z_ik - z_i0)
//     dz_ik = g / B (softmax(z_i)_k - [k == 0]);   ds = dz / T
//     cos = <u, v> / (max(|u|, eps) max(|v|, eps)), eps = 1e-8 (torch.cosine_similarity);
//     with û = u / max(|u|, eps): du_i = (sum_k ds_ik v̂_j - û_i sum_k ds_ik s_ik) / max(|u_i|, eps)
//     (the projection term only when |u_i| > eps), and the same for v_j over the pairs using j.
//   log_q[j] is log(sample_weight) of row j's item: in Torch-RecHub's example a constant dense
//   feature, count^0.75 / sum of count^0.75 over the training items (no gradient flows to it).
//   Note the ORDER differs from inbatch_softmax: here the correction is subtracted before dividing
//   by T, exactly as Torch-RecHub does ((cos - log w) / T).
//   Differences from Torch-RecHub, all deliberate:
//     * only the B (n_neg + 1) scores that are used are computed, not the B x B matrix;
//     * the window is always (i + k) mod B of the current batch. Torch-RecHub precomputes the
//       indices for the configured batch size and, for a smaller last batch, subtracts the batch
//       size once through a numpy VIEW of its cached index array: that agrees with (i + k) mod b
//       when n_neg <= b, fails (index out of range) for smaller last batches, and silently
//       rewrites the cached indices, so from the second epoch a few rows near position b of
//       every full batch take their negatives from the start of the batch. We do not mimic that;
//     * n_neg >= B is allowed: the window wraps onto the row itself (its positive also appears
//       as a negative), which is what the modular index means.
#include <cmath>
#include <cstdint>
#include <limits>

#include <Eigen/Core>

#include "rechub/loss/bce.hpp"
#include "rechub/ops/gemm.hpp"

namespace rechub {

namespace detail {
inline void inbatch_check(const char* op, const Tensor& U, const Tensor& V, float temperature) {
  check_cpu(op, U, V);
  check_f32(op, U, "user");
  check_f32(op, V, "item");
  RECHUB_CHECK_SHAPE(U.ndim() == 2 && U.shape() == V.shape() && U.dim(0) >= 1, op, ": user ", U.shape().str(),
                     " and item ", V.shape().str(), " must both be [B, D] with B >= 1");
  RECHUB_CHECK_AS(ConfigError, temperature > 0.0f, op, ": temperature must be > 0, got ", temperature);
}
inline float* inbatch_alloc(std::int64_t n) {
  return static_cast<float*>(step_arena().allocate(static_cast<std::size_t>(n) * sizeof(float)));
}
}  // namespace detail

/// In-batch softmax over the B x B score matrix, diagonal positives; optional log-Q correction
/// (log_q[j] of row j's item) and accidental-hit masking (item_ids[j] == item_ids[i], j != i).
inline Var inbatch_softmax(const Var& user, const Var& item, float temperature = 1.0f,
                           const float* log_q = nullptr, const std::int32_t* item_ids = nullptr) {
  const Tensor &U = user.value(), &V = item.value();
  detail::inbatch_check("inbatch_softmax", U, V, temperature);
  const std::int64_t B = U.dim(0), D = U.dim(1);
  Var out = detail::loss_output("inbatch_softmax", user, item);
  float* P = detail::inbatch_alloc(B * B);
  float* row_loss = detail::inbatch_alloc(B);
  detail::gemm(false, true, B, B, D, 1.0f / temperature, U.f32(), D, V.f32(), D, 0.0f, P, B);
  const float neg_inf = -std::numeric_limits<float>::infinity(), tiny = std::numeric_limits<float>::min();
  parallel_for(B, 8 * B, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t i = r0; i < r1; ++i) {
      float* z = P + i * B;
      Eigen::Map<Eigen::ArrayXf> Z(z, B);
      if (log_q) Z -= Eigen::Map<const Eigen::ArrayXf>(log_q, B);
      if (item_ids)
        for (std::int64_t j = 0; j < B; ++j)
          if (j != i && item_ids[j] == item_ids[i]) z[j] = neg_inf;
      const float zi = z[i];
      const float m = Z.maxCoeff();  // >= the diagonal, which is never masked: finite
      // Vectorised exp. Eigen's floors at a subnormal ~3e-39 (also for -inf); anything below
      // FLT_MIN is negligible next to the max's 1, so flush it: masked entries become exactly 0
      // and no subnormal reaches the backward GEMMs.
      Z = (Z - m).exp();
      Z = (Z < tiny).select(0.0f, Z);
      const float s = Z.sum();
      row_loss[i] = m + std::log(s) - zi;
      Z *= 1.0f / s;
    }
  });
  double sum = 0;
  for (std::int64_t i = 0; i < B; ++i) sum += row_loss[i];
  out.value().f32()[0] = static_cast<float>(sum / B);
  detail::record(out, [user, item, out, P, B, D, temperature] {
    // dz = c (P - I): the GEMMs take c as alpha and the identity part is one row update.
    const float c = out.grad().f32()[0] / (static_cast<float>(B) * temperature);
    const float *pu = user.value().f32(), *pv = item.value().f32();
    if (user.requires_grad()) {
      float* du = user.grad_acc().f32();
      detail::gemm(false, false, B, D, B, c, P, B, pv, D, 1.0f, du, D);
      for (std::int64_t e = 0; e < B * D; ++e) du[e] -= c * pv[e];
    }
    if (item.requires_grad()) {
      float* dv = item.grad_acc().f32();
      detail::gemm(true, false, B, D, B, c, P, B, pu, D, 1.0f, dv, D);
      for (std::int64_t e = 0; e < B * D; ++e) dv[e] -= c * pu[e];
    }
  });
  return out;
}

/// Torch-RecHub YoutubeSBC's loss: row i against items (i + k) mod B, k = 0..n_neg (k = 0 the
/// positive), scores (cos or dot - log_q[item]) / T, cross-entropy with target 0, batch mean.
inline Var inbatch_cyclic_softmax(const Var& user, const Var& item, std::int64_t n_neg, float temperature = 1.0f,
                                  const float* log_q = nullptr, bool cosine = true) {
  const Tensor &U = user.value(), &V = item.value();
  detail::inbatch_check("inbatch_cyclic_softmax", U, V, temperature);
  RECHUB_CHECK_AS(ConfigError, n_neg >= 0, "inbatch_cyclic_softmax: n_neg must be >= 0, got ", n_neg);
  const std::int64_t B = U.dim(0), D = U.dim(1), K = n_neg + 1;
  constexpr float kEps = 1e-8f;
  Var out = detail::loss_output("inbatch_cyclic_softmax", user, item);
  float* S = detail::inbatch_alloc(B * K);  // raw similarity s_ik (before correction / temperature)
  float* P = detail::inbatch_alloc(B * K);  // softmax over the row's window
  float* nu = cosine ? detail::inbatch_alloc(B) : nullptr;  // max(|u_i|, eps)
  float* nv = cosine ? detail::inbatch_alloc(B) : nullptr;
  float* row_loss = detail::inbatch_alloc(B);
  const float *pu = U.f32(), *pv = V.f32();
  if (cosine) {
    parallel_for(B, 2 * D, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t i = r0; i < r1; ++i) {
        float a = 0, b = 0;
        for (std::int64_t d = 0; d < D; ++d) {
          a += pu[i * D + d] * pu[i * D + d];
          b += pv[i * D + d] * pv[i * D + d];
        }
        nu[i] = std::fmax(std::sqrt(a), kEps);
        nv[i] = std::fmax(std::sqrt(b), kEps);
      }
    });
  }
  parallel_for(B, K * (D + 4), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t i = r0; i < r1; ++i) {
      float* s = S + i * K;
      float* z = P + i * K;
      for (std::int64_t k = 0; k < K; ++k) {
        const std::int64_t j = (i + k) % B;
        float dot = 0;
        for (std::int64_t d = 0; d < D; ++d) dot += pu[i * D + d] * pv[j * D + d];
        s[k] = cosine ? dot / (nu[i] * nv[j]) : dot;
        z[k] = (log_q ? s[k] - log_q[j] : s[k]) / temperature;
      }
      float m = z[0];
      for (std::int64_t k = 1; k < K; ++k) m = std::fmax(m, z[k]);
      const float z0 = z[0];
      float sum = 0;
      for (std::int64_t k = 0; k < K; ++k) {
        z[k] = std::exp(z[k] - m);
        sum += z[k];
      }
      row_loss[i] = m + std::log(sum) - z0;
      const float inv = 1.0f / sum;
      for (std::int64_t k = 0; k < K; ++k) z[k] *= inv;
    }
  });
  double total = 0;
  for (std::int64_t i = 0; i < B; ++i) total += row_loss[i];
  out.value().f32()[0] = static_cast<float>(total / B);
  detail::record(out, [user, item, out, S, P, nu, nv, B, D, K, temperature] {
    const float c = out.grad().f32()[0] / (static_cast<float>(B) * temperature);
    // ds_ik, the gradient of the raw similarity s_ik.
    auto ds = [P, K, c](std::int64_t i, std::int64_t k) { return c * (k == 0 ? P[i * K] - 1.0f : P[i * K + k]); };
    const float *pu = user.value().f32(), *pv = item.value().f32();
    const bool cosine = nu != nullptr;
    constexpr float kEps = 1e-8f;
    if (user.requires_grad()) {
      float* du = user.grad_acc().f32();
      parallel_for(B, K * D, [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t i = r0; i < r1; ++i) {
          float proj = 0;  // û_i . (sum_k ds_ik v̂_j) = sum_k ds_ik s_ik
          if (cosine && nu[i] > kEps)
            for (std::int64_t k = 0; k < K; ++k) proj += ds(i, k) * S[i * K + k];
          const float inv = cosine ? 1.0f / nu[i] : 1.0f;
          for (std::int64_t k = 0; k < K; ++k) {
            const std::int64_t j = (i + k) % B;
            const float w = ds(i, k) * (cosine ? inv / nv[j] : 1.0f);
            for (std::int64_t d = 0; d < D; ++d) du[i * D + d] += w * pv[j * D + d];
          }
          if (proj != 0.0f) {
            const float w = proj * inv * inv;
            for (std::int64_t d = 0; d < D; ++d) du[i * D + d] -= w * pu[i * D + d];
          }
        }
      });
    }
    if (item.requires_grad()) {
      // Gather per item j over the rows whose window holds it (i = (j - k) mod B): no races.
      float* dv = item.grad_acc().f32();
      parallel_for(B, K * D, [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t j = r0; j < r1; ++j) {
          float proj = 0;
          const float inv = cosine ? 1.0f / nv[j] : 1.0f;
          for (std::int64_t k = 0; k < K; ++k) {
            const std::int64_t i = ((j - k) % B + B) % B;
            const float g = ds(i, k);
            if (cosine && nv[j] > kEps) proj += g * S[i * K + k];
            const float w = g * (cosine ? inv / nu[i] : 1.0f);
            for (std::int64_t d = 0; d < D; ++d) dv[j * D + d] += w * pu[i * D + d];
          }
          if (proj != 0.0f) {
            const float w = proj * inv * inv;
            for (std::int64_t d = 0; d < D; ++d) dv[j * D + d] -= w * pv[j * D + d];
          }
        }
      });
    }
  });
  return out;
}

}  // namespace rechub
