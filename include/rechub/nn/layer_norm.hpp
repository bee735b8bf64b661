#pragma once
// LayerNorm: torch nn.LayerNorm(normalized_shape = D, eps, elementwise_affine) over the last dim.
// Parameters "weight" (gamma, init 1) and "bias" (beta, init 0), torch's state_dict names.
// SASRec builds every LayerNorm with eps = 1e-8 (torch's default is 1e-5).
#include <cstdint>

#include "rechub/nn/module.hpp"
#include "rechub/ops/norm.hpp"

namespace rechub {

/// Layer normalisation over the last dim with a learnable affine.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(std::int64_t dim, float eps = 1e-5f, bool elementwise_affine = true)
      : dim_(dim), eps_(eps), affine_(elementwise_affine) {
    RECHUB_CHECK_AS(ConfigError, dim > 0, "LayerNorm: dim must be positive, got ", dim);
    RECHUB_CHECK_AS(ConfigError, eps > 0.0f, "LayerNorm: eps must be positive, got ", eps);
    if (affine_) {
      weight.set(Tensor::full({dim}, 1.0f));
      bias.set(Tensor::zeros({dim}));
      register_parameter("weight", weight);
      register_parameter("bias", bias);
    }
  }

  /// x [..., dim] -> same shape.
  Var forward(const Var& x) const {
    return affine_ ? layer_norm(x, weight, bias, eps_) : layer_norm(x, Var(), Var(), eps_);
  }

  std::int64_t dim() const { return dim_; }
  float eps() const { return eps_; }

  Parameter weight;  // [dim]; no value without elementwise_affine
  Parameter bias;    // [dim]

 private:
  std::int64_t dim_;
  float eps_;
  bool affine_;
};

}  // namespace rechub
