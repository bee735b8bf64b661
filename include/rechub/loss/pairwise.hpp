#pragma once
// Pair-wise ranking losses on a positive score per row and k negative scores per row, each one
// fused op returning a scalar [1].
//
// Shapes: pos [N] or [N, 1]; neg [N] (k = 1, one negative per row), [N, 1] or [N, k].
//
//   bpr (Torch-RecHub BPRLoss, MatchTrainer mode 1):
//       d_ij = pos_i - neg_ij;   L = mean over all N*k pairs of -log sigmoid(d_ij) = softplus(-d_ij)
//       dpos_i = -g/(N k) sum_j sigmoid(-d_ij),   dneg_ij = +g/(N k) sigmoid(-d_ij)
//     Torch-RecHub evaluates -sigmoid(d).log(): once d < ~-88 the float32 sigmoid underflows to 0,
//     the loss becomes inf and the gradient NaN. softplus(-d) is the same function without the
//     underflow (identical values up to rounding wherever Torch-RecHub's is finite).
//
//   hinge (Torch-RecHub HingeLoss, default margin 2, num_items None):
//       l_i = max(max_j neg_ij - pos_i + margin, 0);   L = mean_i l_i
//       where l_i > 0:  dpos_i = -g w_i / N,  dneg_i,j* = +g w_i / N  (j* = first argmax)
//     Optional rank weighting (num_items > 0, Torch-RecHub's `num_items`):
//       w_i = log(rank_i + 1),  rank_i = num_items * (#j with neg_ij - pos_i + margin > 0) / k,
//       loss l_i * w_i; rank is a count, so it carries no gradient (w_i = 1 without it).
//     Two deliberate differences from Torch-RecHub:
//       * a 1-d neg [N] means one negative PER ROW here. Torch-RecHub calls
//         torch.max(neg, dim=-1) on it, which for 1-d input is the max over the whole BATCH,
//         so every row is compared with the batch's hardest negative (a broadcasting accident;
//         FaceBookDSSM returns exactly such a 1-d neg).
//       * with num_items, Torch-RecHub takes torch.mean of a bool tensor, which torch rejects;
//         we use the float fraction the formula intends.
//     Note FaceBookDSSM is documented as hinge-trained, but MatchTrainer mode 1 always builds
//     BPRLoss, so Torch-RecHub's own FaceBookDSSM numbers come from bpr.
#include <cmath>
#include <cstdint>

#include "rechub/loss/bce.hpp"

namespace rechub {

namespace detail {
/// Checks pos/neg of a pair-wise loss; sets N and k.
inline void pairwise_check(const char* op, const Tensor& pos, const Tensor& neg, std::int64_t& N, std::int64_t& k) {
  check_cpu(op, pos, neg);
  check_f32(op, pos, "pos_score");
  check_f32(op, neg, "neg_score");
  N = loss_column_len(pos);
  const bool neg_ok = (neg.ndim() == 1 && neg.dim(0) == N) || (neg.ndim() == 2 && neg.dim(0) == N && neg.dim(1) >= 1);
  RECHUB_CHECK_SHAPE(N >= 1 && neg_ok, op, ": pos_score ", pos.shape().str(), " and neg_score ", neg.shape().str(),
                     " do not match (expects pos [N] or [N, 1] and neg [N] or [N, k] with N >= 1)");
  k = neg.ndim() == 1 ? 1 : neg.dim(1);
}
}  // namespace detail

/// Torch-RecHub BPRLoss: mean over all (row, negative) pairs of -log sigmoid(pos - neg).
inline Var bpr(const Var& pos_score, const Var& neg_score) {
  std::int64_t N = 0, k = 0;
  detail::pairwise_check("bpr", pos_score.value(), neg_score.value(), N, k);
  const float *pos = pos_score.value().f32(), *neg = neg_score.value().f32();
  Var out = detail::loss_output("bpr", pos_score, neg_score);
  double sum = 0;
  for (std::int64_t i = 0; i < N; ++i)
    for (std::int64_t j = 0; j < k; ++j) sum += detail::loss_softplus(neg[i * k + j] - pos[i]);
  out.value().f32()[0] = static_cast<float>(sum / static_cast<double>(N * k));
  detail::record(out, [pos_score, neg_score, out, N, k] {
    const float g = out.grad().f32()[0] / static_cast<float>(N * k);
    const float *pos = pos_score.value().f32(), *neg = neg_score.value().f32();
    float* dpos = pos_score.requires_grad() ? pos_score.grad_acc().f32() : nullptr;
    float* dneg = neg_score.requires_grad() ? neg_score.grad_acc().f32() : nullptr;
    for (std::int64_t i = 0; i < N; ++i) {
      float acc = 0;
      for (std::int64_t j = 0; j < k; ++j) {
        const float s = g * detail::loss_sigmoid(neg[i * k + j] - pos[i]);  // d/d(neg) of softplus(neg - pos)
        acc += s;
        if (dneg) dneg[i * k + j] += s;
      }
      if (dpos) dpos[i] -= acc;
    }
  });
  return out;
}

/// Torch-RecHub HingeLoss: mean of max(max_j neg_ij - pos_i + margin, 0); optional rank weights.
inline Var hinge(const Var& pos_score, const Var& neg_score, float margin = 2.0f, std::int64_t num_items = 0) {
  std::int64_t N = 0, k = 0;
  detail::pairwise_check("hinge", pos_score.value(), neg_score.value(), N, k);
  RECHUB_CHECK_AS(ConfigError, num_items >= 0, "hinge: num_items must be >= 0 (0 = no rank weighting), got ",
                  num_items);
  const float *pos = pos_score.value().f32(), *neg = neg_score.value().f32();
  // One row's hinge value, its rank weight and the negative it takes its gradient from.
  auto row = [k, margin, num_items](const float* negs, float p, float& weight, std::int64_t& arg) {
    arg = 0;
    std::int64_t impostors = 0;
    for (std::int64_t j = 0; j < k; ++j) {
      if (negs[j] > negs[arg]) arg = j;
      impostors += (negs[j] - p + margin > 0.0f);
    }
    weight = num_items > 0 ? std::log(static_cast<float>(impostors) / static_cast<float>(k) *
                                          static_cast<float>(num_items) + 1.0f)
                           : 1.0f;
    return std::fmax(negs[arg] - p + margin, 0.0f);
  };
  Var out = detail::loss_output("hinge", pos_score, neg_score);
  double sum = 0;
  for (std::int64_t i = 0; i < N; ++i) {
    float w;
    std::int64_t arg;
    const float l = row(neg + i * k, pos[i], w, arg);
    sum += l * w;
  }
  out.value().f32()[0] = static_cast<float>(sum / N);
  detail::record(out, [pos_score, neg_score, out, N, k, row] {
    const float g = out.grad().f32()[0] / static_cast<float>(N);
    const float *pos = pos_score.value().f32(), *neg = neg_score.value().f32();
    float* dpos = pos_score.requires_grad() ? pos_score.grad_acc().f32() : nullptr;
    float* dneg = neg_score.requires_grad() ? neg_score.grad_acc().f32() : nullptr;
    for (std::int64_t i = 0; i < N; ++i) {
      float w;
      std::int64_t arg;
      if (!(row(neg + i * k, pos[i], w, arg) > 0.0f)) continue;  // flat side of the hinge (and its kink)
      if (dpos) dpos[i] -= g * w;
      if (dneg) dneg[i * k + arg] += g * w;
    }
  });
  return out;
}

}  // namespace rechub
