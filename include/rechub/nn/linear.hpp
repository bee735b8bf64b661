#pragma once
// Linear: y = x W^T + b with W [out, in] and b [out] (torch layout and state_dict names
// "weight", "bias"). Init as torch nn.Linear: W and b ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform
// with a = sqrt(5) reduces to that bound), W drawn first, row-major, then b.
#include <cmath>
#include <cstdint>

#include "rechub/core/rng.hpp"
#include "rechub/nn/module.hpp"
#include "rechub/ops/activation.hpp"
#include "rechub/ops/matmul.hpp"

namespace rechub {

namespace detail {
/// An owned tensor of `s` filled with U(lo, hi) draws, in order, from rng.
inline Tensor uniform_tensor(const Shape& s, float lo, float hi, Rng& rng) {
  Tensor t = Tensor::empty(s);
  float* p = t.f32();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(lo, hi);
  return t;
}
}  // namespace detail

/// Fully connected layer over the last dim of its input.
class Linear : public Module {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true, Rng& rng = global_rng())
      : in_(in_features), out_(out_features), has_bias_(bias) {
    RECHUB_CHECK_AS(ConfigError, in_features > 0 && out_features > 0, "Linear: features must be positive, got in ",
                    in_features, ", out ", out_features);
    const float bound = 1.0f / std::sqrt(float(in_features));
    weight.set(detail::uniform_tensor({out_features, in_features}, -bound, bound, rng));
    register_parameter("weight", weight);
    if (has_bias_) {
      this->bias.set(detail::uniform_tensor({out_features}, -bound, bound, rng));
      register_parameter("bias", this->bias);
    }
  }

  /// x [..., in] -> [..., out].
  Var forward(const Var& x) const { return linear(x, weight, bias_var()); }
  /// act(x W^T + b) with the bias and activation fused into the product's epilogue.
  Var forward_act(const Var& x, ActKind act, const Var& slope = Var()) const {
    return linear_act(x, weight, bias_var(), act, slope);
  }

  /// The bias as a Var, undefined when the layer has none.
  Var bias_var() const { return has_bias_ ? bias.var() : Var(); }
  std::int64_t in_features() const { return in_; }
  std::int64_t out_features() const { return out_; }
  bool has_bias() const { return has_bias_; }

  Parameter weight;  // [out, in]
  Parameter bias;    // [out]; holds no value when has_bias() is false

 private:
  std::int64_t in_, out_;
  bool has_bias_;
};

}  // namespace rechub
