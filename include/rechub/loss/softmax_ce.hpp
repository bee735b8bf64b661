#pragma once
// Softmax cross-entropy (torch.nn.CrossEntropyLoss, mean reduction), one fused op -> scalar [1].
//
//   softmax_cross_entropy(x [N, C], t int32 [N], T = 1):
//       z_i = x_i / T;   l_i = logsumexp(z_i) - z_i[t_i];   L = mean_i l_i
//       dx_ij = g / (N T) * (softmax(z_i)_j - [j == t_i])
//     logsumexp subtracts the row max first, so any finite logits give a finite loss.
//   listwise_softmax_ce(s [N, 1+k], T = 1): the same with t_i = 0 for every row. This is
//     Torch-RecHub's list-wise mode (MatchTrainer mode 2: CrossEntropyLoss on [pos, neg_1..neg_k]
//     scores with all-zero labels).
//
// The temperature divides the logits inside the op so callers need no extra scaling op; T = 1
// is plain CrossEntropyLoss. Targets must lie in [0, C) (torch raises too; no ignore_index).
// Backward recomputes the softmax from the per-row logsumexp saved in forward (N floats) rather
// than storing the N x C probabilities.
#include <cmath>
#include <cstdint>
#include <limits>

#include "rechub/loss/bce.hpp"

namespace rechub {

namespace detail {
/// Row-wise cross-entropy over [N, C]; `target` null means class 0 for every row.
inline Var softmax_ce_impl(const char* op, const Var& logits, const std::int32_t* target, float temperature) {
  const Tensor& X = logits.value();
  const std::int64_t N = X.dim(0), C = X.dim(1);
  Var out = loss_output(op, logits);
  float* lse = static_cast<float*>(step_arena().allocate(static_cast<std::size_t>(N) * sizeof(float)));
  float* row_loss = static_cast<float*>(step_arena().allocate(static_cast<std::size_t>(N) * sizeof(float)));
  const float* x = X.f32();
  parallel_for(N, 4 * C, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t i = r0; i < r1; ++i) {
      const float* xi = x + i * C;
      float m = -std::numeric_limits<float>::infinity();
      for (std::int64_t j = 0; j < C; ++j) m = std::fmax(m, xi[j] / temperature);
      float s = 0;
      for (std::int64_t j = 0; j < C; ++j) s += std::exp(xi[j] / temperature - m);
      lse[i] = m + std::log(s);
      row_loss[i] = lse[i] - xi[target ? target[i] : 0] / temperature;
    }
  });
  double sum = 0;  // serial so the result does not depend on the thread count
  for (std::int64_t i = 0; i < N; ++i) sum += row_loss[i];
  out.value().f32()[0] = static_cast<float>(sum / N);
  const std::int32_t* tgt = (target && out.requires_grad()) ? loss_arena_copy(target, N) : nullptr;
  record(out, [logits, out, lse, tgt, N, C, temperature] {
    const float c = out.grad().f32()[0] / (static_cast<float>(N) * temperature);
    const float* x = logits.value().f32();
    float* dx = logits.grad_acc().f32();
    parallel_for(N, 4 * C, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t i = r0; i < r1; ++i) {
        const float* xi = x + i * C;
        float* di = dx + i * C;
        for (std::int64_t j = 0; j < C; ++j) di[j] += c * std::exp(xi[j] / temperature - lse[i]);
        di[tgt ? tgt[i] : 0] -= c;
      }
    });
  });
  return out;
}

inline void softmax_ce_check(const char* op, const Tensor& X, float temperature) {
  check_cpu(op, X);
  check_f32(op, X, "logits");
  RECHUB_CHECK_SHAPE(X.ndim() == 2 && X.dim(0) >= 1 && X.dim(1) >= 1, op, ": logits must be [N, C] with N, C >= 1, got ",
                     X.shape().str());
  RECHUB_CHECK_AS(ConfigError, temperature > 0.0f, op, ": temperature must be > 0, got ", temperature);
}
}  // namespace detail

/// torch.nn.CrossEntropyLoss (mean) on logits [N, C] / temperature with int32 class targets [N].
inline Var softmax_cross_entropy(const Var& logits, const Tensor& target, float temperature = 1.0f) {
  const Tensor& X = logits.value();
  detail::softmax_ce_check("softmax_cross_entropy", X, temperature);
  detail::check_cpu("softmax_cross_entropy", target);
  detail::check_i32("softmax_cross_entropy", target, "target");
  const std::int64_t N = X.dim(0), C = X.dim(1);
  RECHUB_CHECK_SHAPE(detail::loss_column_len(target) == N, "softmax_cross_entropy: target ", target.shape().str(),
                     " does not match logits ", X.shape().str(), " (expects [", N, "])");
  const std::int32_t* t = target.i32();
  for (std::int64_t i = 0; i < N; ++i)
    RECHUB_CHECK_AS(DataError, t[i] >= 0 && t[i] < C, "softmax_cross_entropy: target[", i, "] = ", t[i],
                    " is outside [0, ", C, ")");
  return detail::softmax_ce_impl("softmax_cross_entropy", logits, t, temperature);
}

/// List-wise softmax loss: scores [N, 1+k] with the positive in column 0 (Torch-RecHub mode 2).
inline Var listwise_softmax_ce(const Var& scores, float temperature = 1.0f) {
  detail::softmax_ce_check("listwise_softmax_ce", scores.value(), temperature);
  return detail::softmax_ce_impl("listwise_softmax_ce", scores, nullptr, temperature);
}

}  // namespace rechub
