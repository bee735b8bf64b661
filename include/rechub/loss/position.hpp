#pragma once
// Per-position losses for sequence models trained on every position (SASRec-style). The caller
// gathers the N valid positions first (valid_positions + gather_rows on the [B*L, D] states), so
// padding never reaches a loss and no [B, L, ...] score tensor is built. Every loss scores
// position states h [N, D] against rows of an item matrix V [M, D] (for rechub's models the item
// tower over all items, row r = item id r + 1) and returns the mean, a scalar [1]:
//
//   position_bce(h, V, pos [N], neg [N, k])         Kang & McAuley's loss (k = 1), k >= 1:
//       L = mean_i softplus(-s_i+) + mean_ij softplus(s_ij-),   s_i+ = <h_i, V[pos_i]>,
//                                                             s_ij- = <h_i, V[neg_ij]>
//   position_bpr(h, V, pos, neg)                    Torch-RecHub's BPRLoss on (pos, neg) scores:
//       L = mean_ij softplus(-(s_i+ - s_ij-))       (= mean of -log sigmoid(s+ - s-))
//   position_sampled_softmax(h, V, pos, neg, T, mask_hits)
//       z_i = [s_i+, s_i1-, .., s_ik-] / T;  L = mean_i (logsumexp(z_i) - z_i0);
//       with mask_hits a negative equal to the row's positive is left out of the softmax.
//   position_full_softmax(h, V, target [N], T)      cross-entropy over all M rows of V at every
//       position (Klenitskiy & Vasilev, RecSys 2023): z_i = h_i V^T / T, L = mean_i (lse(z_i) - z_i,t_i).
//
// Gradients, with G_ij = dL/ds_ij computed in the forward (the loss is the end of the graph, so
// its only upstream gradient is a scalar g):
//   dh_i += g sum_j G_ij V[id_ij],   dV[id_ij] += g G_ij h_i.
// The sampled losses store G ([N, 1 + k] floats); the full softmax never materialises the
// [N, M] logits: it walks the positions in chunks, and per chunk computes the logits (one GEMM),
// turns them into G = (softmax - onehot) / (N T) in place, and accumulates dh = G V and
// dV += G^T h_chunk (two GEMMs) into step-arena buffers that the backward scales by g. So a step
// costs three [N, M, D] GEMMs and O(chunk * M) memory (the composed matmul + cross-entropy
// would hold two [N, M] tensors: 570 MB for 19k positions x 3.7k items).
// The table gradient of the sampled losses is a deterministic scatter (threads own row ranges
// of V, as in ops/index.hpp): results are bit-identical for a given thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include <Eigen/Core>

#include "rechub/loss/bce.hpp"
#include "rechub/ops/gemm.hpp"
#include "rechub/ops/index.hpp"

namespace rechub {

/// Flat indices b * L + t (int32 [N], step arena) of the positions of `targets` [B, L] that are not 0.
inline Tensor valid_positions(const Tensor& targets) {
  detail::check_cpu("valid_positions", targets);
  detail::check_i32("valid_positions", targets, "targets");
  RECHUB_CHECK_SHAPE(targets.ndim() == 2, "valid_positions: targets must be [B, L], got ", targets.shape().str());
  const std::int64_t n = targets.numel();
  const std::int32_t* t = targets.i32();
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < n; ++i) count += t[i] != 0;
  Tensor idx = step_arena().tensor({count}, DType::i32);
  std::int32_t* p = idx.i32();
  for (std::int64_t i = 0; i < n; ++i)
    if (t[i] != 0) *p++ = static_cast<std::int32_t>(i);
  return idx;
}

namespace detail {

enum class PositionLoss : std::uint8_t { bce, bpr, sampled };

inline void position_check(const char* op, const Tensor& H, const Tensor& V, const Tensor& pos) {
  check_cpu(op, H, V, pos);
  check_f32(op, H, "h");
  check_f32(op, V, "items");
  check_i32(op, pos, "pos");
  RECHUB_CHECK_SHAPE(H.ndim() == 2 && V.ndim() == 2 && H.dim(1) == V.dim(1), op, ": h ", H.shape().str(),
                     " and items ", V.shape().str(), " must be [N, D] and [M, D]");
  RECHUB_CHECK_SHAPE(pos.ndim() == 1 && pos.dim(0) == H.dim(0), op, ": pos ", pos.shape().str(), " does not match h ",
                     H.shape().str(), " (expects [", H.dim(0), "])");
  RECHUB_CHECK_SHAPE(H.dim(0) >= 1, op, ": no positions to score (h ", H.shape().str(), ")");
  check_ids(op, pos.i32(), pos.numel(), V);
}

/// dh_i += g sum_j G_ij V[id_ij] and dV[id_ij] += g G_ij h_i over ids/G [N, C].
inline void position_scatter(const Var& h, const Var& items, const std::int32_t* ids, const float* G, std::int64_t N,
                             std::int64_t C, float g) {
  const std::int64_t D = h.value().dim(1), M = items.value().dim(0);
  const float *ph = h.value().f32(), *pv = items.value().f32();
  if (h.requires_grad()) {
    float* dh = h.grad_acc().f32();
    parallel_for(N, C * D, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t i = s; i < e; ++i)
        for (std::int64_t j = 0; j < C; ++j) {
          const float w = g * G[i * C + j];
          if (w == 0.0f) continue;
          const float* v = pv + std::int64_t(ids[i * C + j]) * D;
          for (std::int64_t d = 0; d < D; ++d) dh[i * D + d] += w * v[d];
        }
    });
  }
  if (items.requires_grad()) {
    float* dv = items.grad_acc().f32();
    parallel_for(M, (N * C * D) / (M > 0 ? M : 1) + 1, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t x = 0; x < N * C; ++x) {
        const std::int32_t id = ids[x];
        if (id < r0 || id >= r1 || G[x] == 0.0f) continue;
        const float w = g * G[x];
        const float* hr = ph + (x / C) * D;
        float* t = dv + std::int64_t(id) * D;
        for (std::int64_t d = 0; d < D; ++d) t[d] += w * hr[d];
      }
    });
    mark_rows(items, ids, N * C, -1);
  }
}

/// The three sampled losses: scores of [pos, neg_1..k] per position, loss and G in one pass.
inline Var position_sampled_impl(const char* op, PositionLoss kind, const Var& h, const Var& items, const Tensor& pos,
                                 const Tensor& neg, float T, bool mask_hits) {
  const Tensor &H = h.value(), &V = items.value();
  position_check(op, H, V, pos);
  check_cpu(op, neg);
  check_i32(op, neg, "neg");
  const std::int64_t N = H.dim(0), D = H.dim(1);
  RECHUB_CHECK_SHAPE(neg.ndim() == 2 && neg.dim(0) == N && neg.dim(1) >= 1, op, ": neg ", neg.shape().str(),
                     " must be [", N, ", k] with k >= 1");
  check_ids(op, neg.i32(), neg.numel(), V);
  RECHUB_CHECK_AS(ConfigError, T > 0.0f, op, ": temperature must be > 0, got ", T);
  const std::int64_t k = neg.dim(1), C = k + 1;
  Var out = loss_output(op, h, items);
  const bool grad = out.requires_grad();
  // ids [N, C]: the positive first, then the negatives.
  auto* ids = static_cast<std::int32_t*>(step_arena().allocate(static_cast<std::size_t>(N * C) * sizeof(std::int32_t)));
  float* G = grad ? step_arena().tensor({N * C}).f32() : nullptr;
  float* row_loss = step_arena().tensor({N}).f32();
  const float *ph = H.f32(), *pv = V.f32();
  const std::int32_t *pp = pos.i32(), *pn = neg.i32();
  const float inv_nk = 1.0f / float(N * k), inv_n = 1.0f / float(N);
  parallel_for(N, C * (2 * D + 8), [&](std::int64_t s, std::int64_t e) {
    float stack_scores[256];
    for (std::int64_t i = s; i < e; ++i) {
      std::int32_t* id = ids + i * C;
      id[0] = pp[i];
      std::copy(pn + i * k, pn + (i + 1) * k, id + 1);
      const float* hi = ph + i * D;
      // Scores are kept for the softmax's second pass: on the stack, in the row of G (each entry
      // is read before it is overwritten by its gradient), or, without either, recomputed.
      float* srow = C <= 256 ? stack_scores : (G ? G + i * C : nullptr);
      double l = 0.0;
      if (kind == PositionLoss::sampled) {
        // Two passes over the negatives (max, then sum) keep memory at O(1) per row when k is large.
        auto score = [&](std::int64_t j) {
          const float* v = pv + std::int64_t(id[j]) * D;
          float d = 0.0f;
          for (std::int64_t c = 0; c < D; ++c) d += hi[c] * v[c];
          return d / T;
        };
        auto hidden = [&](std::int64_t j) { return j > 0 && mask_hits && id[j] == id[0]; };
        float m = -std::numeric_limits<float>::infinity();
        for (std::int64_t j = 0; j < C; ++j) {
          const float zj = score(j);
          if (srow) srow[j] = zj;
          if (!hidden(j)) m = std::max(m, zj);
        }
        double sum = 0.0;
        for (std::int64_t j = 0; j < C; ++j)
          if (!hidden(j)) sum += std::exp(double((srow ? srow[j] : score(j)) - m));
        const double lse = double(m) + std::log(sum);
        const float z0 = srow ? srow[0] : score(0);
        l = lse - double(z0);
        if (G) {
          float* gi = G + i * C;
          for (std::int64_t j = 0; j < C; ++j) {
            const float zj = srow ? srow[j] : score(j);
            const float p = hidden(j) ? 0.0f : float(std::exp(double(zj) - lse));
            gi[j] = (p - (j == 0 ? 1.0f : 0.0f)) * inv_n / T;
          }
        }
      } else {
        auto dot = [&](std::int64_t j) {
          const float* v = pv + std::int64_t(id[j]) * D;
          float d = 0.0f;
          for (std::int64_t c = 0; c < D; ++c) d += hi[c] * v[c];
          return d;
        };
        // Row value: BCE softplus(-s+) + mean_j softplus(s_j-), BPR mean_j softplus(s_j- - s+);
        // the loss is the mean of the rows, so G carries the 1/N (and 1/k) factors.
        const float sp = dot(0);
        float* gi = G ? G + i * C : nullptr;
        if (kind == PositionLoss::bce) {
          l = loss_softplus(-sp);
          if (gi) gi[0] = (loss_sigmoid(sp) - 1.0f) * inv_n;
        } else if (gi) {
          gi[0] = 0.0f;
        }
        for (std::int64_t j = 1; j < C; ++j) {
          const float sn = dot(j);
          if (kind == PositionLoss::bce) {
            l += loss_softplus(sn) / double(k);
            if (gi) gi[j] = loss_sigmoid(sn) * inv_nk;
          } else {
            l += loss_softplus(sn - sp) / double(k);
            if (gi) {
              const float w = loss_sigmoid(sn - sp) * inv_nk;
              gi[0] -= w;
              gi[j] = w;
            }
          }
        }
      }
      row_loss[i] = float(l);
    }
  });
  double sum = 0.0;  // serial: independent of the thread count
  for (std::int64_t i = 0; i < N; ++i) sum += row_loss[i];
  out.value().f32()[0] = float(sum / double(N));
  if (!grad) return out;
  record(out, [h, items, out, ids, G, N, C] {
    position_scatter(h, items, ids, G, N, C, out.grad().f32()[0]);
  });
  return out;
}

/// Positions per chunk of the full softmax: about 2^22 logits (16 MB) at a time.
inline std::int64_t full_softmax_chunk(std::int64_t M) {
  return std::max<std::int64_t>(16, std::min<std::int64_t>(1024, (std::int64_t(1) << 22) / std::max<std::int64_t>(M, 1)));
}

}  // namespace detail

/// Kang & McAuley's per-position BCE: mean softplus(-s+) + mean softplus(s-) (see top).
inline Var position_bce(const Var& h, const Var& items, const Tensor& pos, const Tensor& neg) {
  return detail::position_sampled_impl("position_bce", detail::PositionLoss::bce, h, items, pos, neg, 1.0f, false);
}

/// Per-position BPR (Torch-RecHub's BPRLoss): mean over positions and negatives of -log sigmoid(s+ - s-).
inline Var position_bpr(const Var& h, const Var& items, const Tensor& pos, const Tensor& neg) {
  return detail::position_sampled_impl("position_bpr", detail::PositionLoss::bpr, h, items, pos, neg, 1.0f, false);
}

/// Sampled softmax over [positive, k negatives] per position / T; mask_hits drops negatives equal to the positive.
inline Var position_sampled_softmax(const Var& h, const Var& items, const Tensor& pos, const Tensor& neg,
                                    float temperature = 1.0f, bool mask_hits = true) {
  return detail::position_sampled_impl("position_sampled_softmax", detail::PositionLoss::sampled, h, items, pos, neg,
                                       temperature, mask_hits);
}

/// Cross-entropy over every row of `items` at every position (full softmax / T), chunked (see top).
inline Var position_full_softmax(const Var& h, const Var& items, const Tensor& target, float temperature = 1.0f) {
  const char* op = "position_full_softmax";
  const Tensor &H = h.value(), &V = items.value();
  detail::position_check(op, H, V, target);
  RECHUB_CHECK_AS(ConfigError, temperature > 0.0f, op, ": temperature must be > 0, got ", temperature);
  const std::int64_t N = H.dim(0), D = H.dim(1), M = V.dim(0);
  Var out = detail::loss_output(op, h, items);
  const bool grad = out.requires_grad();
  const bool want_h = grad && h.requires_grad(), want_v = grad && items.requires_grad();
  const std::int64_t R = std::min(N, detail::full_softmax_chunk(M));
  float* Z = step_arena().tensor({R * M}).f32();
  float* row_loss = step_arena().tensor({N}).f32();
  float* dH = want_h ? step_arena().tensor({N * D}).f32() : nullptr;
  float* dV = want_v ? step_arena().zeros({M * D}).f32() : nullptr;
  const float *ph = H.f32(), *pv = V.f32();
  const std::int32_t* t = target.i32();
  const float invT = 1.0f / temperature, c = 1.0f / (float(N) * temperature);
  for (std::int64_t r0 = 0; r0 < N; r0 += R) {
    const std::int64_t rb = std::min(R, N - r0);
    detail::gemm(false, true, rb, M, D, invT, ph + r0 * D, D, pv, D, 0.0f, Z, M);
    parallel_for(rb, 4 * M, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t i = s; i < e; ++i) {
        Eigen::Map<Eigen::ArrayXf> z(Z + i * M, M);
        const float m = z.maxCoeff();
        const float zt = z[t[r0 + i]];
        if (!grad) {
          row_loss[r0 + i] = m + std::log((z - m).exp().sum()) - zt;
          continue;
        }
        z = (z - m).exp();
        const float sum = z.sum();
        row_loss[r0 + i] = m + std::log(sum) - zt;
        z *= c / sum;  // G = (softmax - onehot) / (N T)
        z[t[r0 + i]] -= c;
      }
    });
    if (want_h) detail::gemm(false, false, rb, D, M, 1.0f, Z, M, pv, D, 0.0f, dH + r0 * D, D);
    if (want_v) detail::gemm(true, false, M, D, rb, 1.0f, Z, M, ph + r0 * D, D, 1.0f, dV, D);
  }
  double sum = 0.0;
  for (std::int64_t i = 0; i < N; ++i) sum += row_loss[i];
  out.value().f32()[0] = float(sum / double(N));
  if (!grad) return out;
  detail::record(out, [h, items, out, dH, dV, N, D, M] {
    const float g = out.grad().f32()[0];
    if (dH) {
      float* d = h.grad_acc().f32();
      for (std::int64_t i = 0; i < N * D; ++i) d[i] += g * dH[i];
    }
    if (dV) {
      float* d = items.grad_acc().f32();
      for (std::int64_t i = 0; i < M * D; ++i) d[i] += g * dV[i];
      if (items.node()->touched)
        for (std::int64_t r = 0; r < M; ++r) items.mark_row(static_cast<std::int32_t>(r));
    }
  });
  return out;
}

}  // namespace rechub
