#pragma once
// Adam with torch.optim.Adam semantics (amsgrad off), plus a lazy path for embedding tables.
//
// Per element, at this parameter's step t (1, 2, ...), all in float32 like torch's CPU kernel:
//   g  = grad + weight_decay * p                 (L2 added to the gradient; not AdamW)
//   m  = m + (1 - b1) (g - m)                    (torch's lerp form of b1 m + (1 - b1) g)
//   v  = b2 v + (1 - b2) g g
//   p  = p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The step scalars are computed in double (Python floats in torch) and rounded once.
//
// Lazy path (like torch.optim.SparseAdam / TF LazyAdam): a parameter that tracks rows
// (Parameter::track_rows(true), set by embedding tables) is updated ONLY on the rows marked since
// the last zero_grad(); other rows keep value, m and v bit for bit. t still counts every step()
// (so bias correction follows the global step, as in both references); weight decay, which
// SparseAdam lacks, is applied to the touched rows only. This relies on the embedding ops
// marking every row they send gradient to: gradient written to an unmarked row is ignored.
//
// Usage per batch, as in torch: zero_grad(); forward; backward; step(). zero_grad() zeroes only
// the touched rows of a lazy parameter and then clears its row set, so it must be this
// optimiser's zero_grad() (Module::zero_grad() zeroes whole tables but keeps the row sets).
//
// Parameters with requires_grad() == false are skipped (torch skips params whose grad is None).
// Difference from torch >= 2.0: torch's default zero_grad(set_to_none=True) also skips a
// parameter that got NO gradient in a step; here every parameter holds a (possibly zero)
// gradient, so such a parameter still takes a step (decay and momentum keep moving it).
//
// State: exp_avg, exp_avg_sq (shape of the parameter) and step (int32 [1]) per parameter,
// allocated in the constructor; named_state() exposes them as "<param>.exp_avg",
// "<param>.exp_avg_sq", "<param>.step" for checkpoints. step() allocates nothing.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "rechub/autograd/tape.hpp"
#include "rechub/core/parallel.hpp"

namespace rechub {

/// torch.optim.Adam hyper-parameters (doubles, like torch's Python floats).
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

/// Per-parameter Adam state, torch's names.
struct AdamState {
  Tensor exp_avg;
  Tensor exp_avg_sq;
  Tensor step;  // int32 [1]
};

class Adam {
 public:
  /// Parameters are named "0", "1", ... (torch's state_dict indexing).
  explicit Adam(const std::vector<Parameter*>& params, AdamOptions opt = {}) : opt_(opt) {
    check_options();
    for (std::size_t i = 0; i < params.size(); ++i) add(std::to_string(i), params[i]);
  }
  /// Same from a braced list; also keeps `Adam({&a, &b})` from reading as a vector's iterator pair.
  explicit Adam(std::initializer_list<Parameter*> params, AdamOptions opt = {})
      : Adam(std::vector<Parameter*>(params), opt) {}
  /// Parameters keyed by their module names (Module::named_parameters()).
  explicit Adam(const std::vector<std::pair<std::string, Parameter*>>& named, AdamOptions opt = {}) : opt_(opt) {
    check_options();
    for (const auto& kv : named) add(kv.first, kv.second);
  }

  // Tensor copies share storage, so a copied optimiser would silently share its moments.
  Adam(const Adam&) = delete;
  Adam& operator=(const Adam&) = delete;
  Adam(Adam&&) = default;
  Adam& operator=(Adam&&) = default;

  /// One update of every trainable parameter (dense, or lazy on touched rows).
  void step() {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      Parameter& p = *params_[i];
      if (!p.requires_grad()) continue;
      AdamState& st = state_[i];
      const std::int32_t t = ++st.step.i32()[0];
      const Scalars c = scalars(t);
      float *w = p.value().f32(), *g = p.grad().f32(), *m = st.exp_avg.f32(), *v = st.exp_avg_sq.f32();
      if (const detail::RowSet* rs = p.touched_rows()) {
        const std::int64_t cols = p.value().dim(0) == 0 ? 0 : p.numel() / p.value().dim(0);
        const std::int32_t* rows = rs->rows.data();
        parallel_for(static_cast<std::int64_t>(rs->rows.size()), 12 * cols, [&](std::int64_t a, std::int64_t b) {
          for (std::int64_t r = a; r < b; ++r) {
            const std::int64_t off = static_cast<std::int64_t>(rows[r]) * cols;
            update(c, w + off, g + off, m + off, v + off, cols);
          }
        });
      } else {
        parallel_for(p.numel(), 12, [&](std::int64_t a, std::int64_t b) {
          update(c, w + a, g + a, m + a, v + a, b - a);
        });
      }
    }
  }

  /// Zeroes gradients: whole tensors, or only the touched rows of lazy parameters (then clears them).
  void zero_grad() {
    for (Parameter* p : params_) {
      detail::RowSet* rs = p->touched_rows();
      if (!rs) {
        p->zero_grad();
        continue;
      }
      const std::int64_t cols = p->value().dim(0) == 0 ? 0 : p->numel() / p->value().dim(0);
      float* g = p->grad().f32();
      for (std::int32_t r : rs->rows) std::fill(g + r * cols, g + (r + 1) * cols, 0.0f);
      rs->clear();
    }
  }

  double lr() const { return opt_.lr; }
  /// For schedulers: the learning rate of the next step().
  void set_lr(double lr) {
    RECHUB_CHECK_AS(ConfigError, lr >= 0.0, "Adam: invalid learning rate ", lr, " (must be >= 0)");
    opt_.lr = lr;
  }
  const AdamOptions& options() const { return opt_; }
  std::size_t size() const { return params_.size(); }
  const std::string& name(std::size_t i) const { return names_[i]; }
  Parameter& param(std::size_t i) const { return *params_[i]; }
  const AdamState& state(std::size_t i) const { return state_[i]; }
  AdamState& state(std::size_t i) { return state_[i]; }
  std::int64_t step_count(std::size_t i) const { return state_[i].step.i32()[0]; }

  /// Every state tensor keyed "<param>.exp_avg" / ".exp_avg_sq" / ".step"; load by copy_from into them.
  std::vector<std::pair<std::string, Tensor*>> named_state() {
    std::vector<std::pair<std::string, Tensor*>> out;
    out.reserve(3 * params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      out.emplace_back(names_[i] + ".exp_avg", &state_[i].exp_avg);
      out.emplace_back(names_[i] + ".exp_avg_sq", &state_[i].exp_avg_sq);
      out.emplace_back(names_[i] + ".step", &state_[i].step);
    }
    return out;
  }

 private:
  struct Scalars {
    float step_size, bc2_sqrt, w1, b2, w2, eps, wd;
  };
  Scalars scalars(std::int32_t t) const {
    const double bc1 = 1.0 - std::pow(opt_.beta1, t), bc2 = 1.0 - std::pow(opt_.beta2, t);
    return {static_cast<float>(opt_.lr / bc1), static_cast<float>(std::sqrt(bc2)),
            static_cast<float>(1.0 - opt_.beta1), static_cast<float>(opt_.beta2),
            static_cast<float>(1.0 - opt_.beta2), static_cast<float>(opt_.eps),
            static_cast<float>(opt_.weight_decay)};
  }
  // The fused update of n contiguous elements. Eigen arrays over L1-sized blocks: the three
  // statements re-read a block that is still in L1, so memory sees one pass over p, g, m, v,
  // and the sqrt vectorises (a plain std::sqrt loop does not: errno makes it a branch).
  // Operation order mirrors torch's lerp_ / mul_().addcmul_() / addcdiv_() kernels.
  static void update(const Scalars& c, float* w, const float* g, float* m, float* v, std::int64_t n) {
    using Arr = Eigen::Array<float, Eigen::Dynamic, 1>;
    constexpr std::int64_t kBlock = 512;
    alignas(64) float decayed[kBlock];
    const float neg_step = -c.step_size;
    for (std::int64_t b = 0; b < n; b += kBlock) {
      const std::int64_t len = std::min(kBlock, n - b);
      Eigen::Map<Arr> W(w + b, len), M(m + b, len), V(v + b, len);
      const float* gp = g + b;
      if (c.wd != 0.0f) {  // torch adds the decay only when weight_decay != 0
        Eigen::Map<Arr>(decayed, len) = Eigen::Map<const Arr>(gp, len) + c.wd * W;
        gp = decayed;
      }
      Eigen::Map<const Arr> G(gp, len);
      M += c.w1 * (G - M);
      V = V * c.b2 + c.w2 * G * G;
      W += (neg_step * M) / (V.sqrt() / c.bc2_sqrt + c.eps);
    }
  }
  void check_options() const {
    RECHUB_CHECK_AS(ConfigError, opt_.lr >= 0.0, "Adam: invalid learning rate ", opt_.lr, " (must be >= 0)");
    RECHUB_CHECK_AS(ConfigError, opt_.eps >= 0.0, "Adam: invalid eps ", opt_.eps, " (must be >= 0)");
    RECHUB_CHECK_AS(ConfigError, opt_.beta1 >= 0.0 && opt_.beta1 < 1.0, "Adam: invalid beta1 ", opt_.beta1,
                    " (must be in [0, 1))");
    RECHUB_CHECK_AS(ConfigError, opt_.beta2 >= 0.0 && opt_.beta2 < 1.0, "Adam: invalid beta2 ", opt_.beta2,
                    " (must be in [0, 1))");
    RECHUB_CHECK_AS(ConfigError, opt_.weight_decay >= 0.0, "Adam: invalid weight_decay ", opt_.weight_decay,
                    " (must be >= 0)");
  }
  void add(const std::string& name, Parameter* p) {
    RECHUB_CHECK(p != nullptr, "Adam: parameter '", name, "' is null");
    for (Parameter* q : params_)
      if (q == p) return;  // a table shared by two modules is updated once, under its first name
    params_.push_back(p);
    names_.push_back(name);
    state_.push_back({Tensor::zeros(p->shape()), Tensor::zeros(p->shape()), Tensor::zeros({1}, DType::i32)});
  }

  AdamOptions opt_;
  std::vector<Parameter*> params_;
  std::vector<std::string> names_;
  std::vector<AdamState> state_;
};

}  // namespace rechub
