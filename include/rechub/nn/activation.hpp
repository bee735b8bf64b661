#pragma once
// Activation modules and the factory by name, Dropout, BatchNorm1d.
//
// Names follow Torch-RecHub's activation_layer (case-insensitive): "relu", "prelu" (one slope,
// init 0.25, as torch nn.PReLU()), "sigmoid", "tanh", "dice" (Torch-RecHub's Dice: alpha [1] ~
// randn, eps 1e-3, per-row statistics), plus "dice_bn" (the DIN paper's Dice over batch statistics,
// alpha [C] = 0, running stats as buffers) and "none"/"linear"/"identity".
// Parameter and buffer names mirror torch's state_dict: PReLU "weight", Dice "alpha",
// BatchNorm1d "weight", "bias", "running_mean", "running_var".
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <memory>
#include <string>

#include "rechub/core/rng.hpp"
#include "rechub/nn/module.hpp"
#include "rechub/ops/activation.hpp"
#include "rechub/ops/norm.hpp"

namespace rechub {

/// Base of the activation modules. Elementwise ones report their ActKind (and prelu's slope) so
/// that Linear/BatchNorm1d can fuse them; the others report fusable() == false.
class Activation : public Module {
 public:
  virtual Var forward(const Var& x) = 0;
  virtual bool fusable() const { return true; }
  virtual ActKind kind() const { return ActKind::none; }
  /// prelu's learnable slope; undefined for the other kinds.
  virtual Var slope() const { return Var(); }
};

/// y = x.
class Identity : public Activation {
 public:
  Var forward(const Var& x) override { return x; }
};

class ReLU : public Activation {
 public:
  Var forward(const Var& x) override { return relu(x); }
  ActKind kind() const override { return ActKind::relu; }
};

class Sigmoid : public Activation {
 public:
  Var forward(const Var& x) override { return sigmoid(x); }
  ActKind kind() const override { return ActKind::sigmoid; }
};

class Tanh : public Activation {
 public:
  Var forward(const Var& x) override { return tanh(x); }
  ActKind kind() const override { return ActKind::tanh; }
};

/// torch nn.PReLU(num_parameters, init): slope "weight" [num_parameters] over the last dim.
class PReLU : public Activation {
 public:
  explicit PReLU(std::int64_t num_parameters = 1, float init = 0.25f) {
    RECHUB_CHECK_AS(ConfigError, num_parameters > 0, "PReLU: num_parameters must be positive, got ", num_parameters);
    weight.set(Tensor::full({num_parameters}, init));
    register_parameter("weight", weight);
  }
  Var forward(const Var& x) override { return prelu(x, weight); }
  ActKind kind() const override { return ActKind::prelu; }
  Var slope() const override { return weight.var(); }
  Parameter weight;
};

/// Torch-RecHub's Dice: alpha [1] ~ N(0, 1) from rng, statistics per row (see ops/activation.hpp).
class Dice : public Activation {
 public:
  explicit Dice(float eps = 1e-3f, Rng& rng = global_rng()) : eps_(eps) {
    alpha.set(Tensor::full({1}, rng.normal(0.0f, 1.0f)));
    register_parameter("alpha", alpha);
  }
  Var forward(const Var& x) override { return dice(x, alpha, eps_); }
  bool fusable() const override { return false; }
  Parameter alpha;

 private:
  float eps_;
};

/// The DIN paper's Dice over batch statistics: BatchNorm1d(C, affine=False) inside, alpha [C] = 0.
class DiceBN : public Activation {
 public:
  explicit DiceBN(std::int64_t num_features, float eps = 1e-8f, float momentum = 0.1f)
      : eps_(eps), momentum_(momentum) {
    RECHUB_CHECK_AS(ConfigError, num_features > 0, "DiceBN: num_features must be positive, got ", num_features);
    alpha.set(Tensor::zeros({num_features}));
    running_mean = Tensor::zeros({num_features});
    running_var = Tensor::full({num_features}, 1.0f);
    register_parameter("alpha", alpha);
    register_buffer("bn.running_mean", running_mean);
    register_buffer("bn.running_var", running_var);
  }
  Var forward(const Var& x) override {
    return dice_bn(x, alpha, running_mean, running_var, is_training(), momentum_, eps_);
  }
  bool fusable() const override { return false; }
  Parameter alpha;
  Tensor running_mean, running_var;

 private:
  float eps_, momentum_;
};

/// An activation module by Torch-RecHub name; num_features is needed by "dice_bn" only.
inline std::unique_ptr<Activation> make_activation(const std::string& name, std::int64_t num_features = 0) {
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  if (n == "relu") return std::make_unique<ReLU>();
  if (n == "prelu") return std::make_unique<PReLU>();
  if (n == "sigmoid") return std::make_unique<Sigmoid>();
  if (n == "tanh") return std::make_unique<Tanh>();
  if (n == "dice") return std::make_unique<Dice>();
  if (n == "dice_bn") return std::make_unique<DiceBN>(num_features);
  if (n == "none" || n == "linear" || n == "identity") return std::make_unique<Identity>();
  throw ConfigError("make_activation: unknown activation '" + name +
                    "' (expected relu, prelu, sigmoid, tanh, dice, dice_bn, none, linear)");
}

/// Inverted dropout; active only in training mode. Draws from global_rng() unless given an Rng.
class Dropout : public Module {
 public:
  explicit Dropout(float p = 0.5f, Rng* rng = nullptr) : p_(p), rng_(rng) {
    RECHUB_CHECK_AS(ConfigError, p >= 0.0f && p <= 1.0f, "Dropout: p must be in [0, 1], got ", p);
  }
  Var forward(const Var& x) { return dropout(x, p_, is_training(), rng_ ? *rng_ : global_rng()); }
  float p() const { return p_; }
  void set_rng(Rng* rng) { rng_ = rng; }

 private:
  float p_;
  Rng* rng_;
};

/// torch nn.BatchNorm1d(num_features, eps, momentum, affine) over x [N, C].
class BatchNorm1d : public Module {
 public:
  explicit BatchNorm1d(std::int64_t num_features, float eps = 1e-5f, float momentum = 0.1f, bool affine = true)
      : eps_(eps), momentum_(momentum) {
    RECHUB_CHECK_AS(ConfigError, num_features > 0, "BatchNorm1d: num_features must be positive, got ", num_features);
    if (affine) {
      weight.set(Tensor::full({num_features}, 1.0f));
      bias.set(Tensor::zeros({num_features}));
      register_parameter("weight", weight);
      register_parameter("bias", bias);
    }
    affine_ = affine;
    running_mean = Tensor::zeros({num_features});
    running_var = Tensor::full({num_features}, 1.0f);
    register_buffer("running_mean", running_mean);
    register_buffer("running_var", running_var);
  }
  Var forward(const Var& x) { return forward_act(x, ActKind::none); }
  /// act(batchnorm(x)) in one fused pass; row_weights: see batch_norm1d_act.
  Var forward_act(const Var& x, ActKind act, const Var& slope = Var(), const Tensor& row_weights = Tensor()) {
    return batch_norm1d_act(x, affine_ ? weight.var() : Var(), affine_ ? bias.var() : Var(), running_mean, running_var,
                            is_training(), momentum_, eps_, act, slope, row_weights);
  }
  float eps() const { return eps_; }
  float momentum() const { return momentum_; }

  Parameter weight, bias;  // gamma, beta [C] (no value when affine is false)
  Tensor running_mean, running_var;

 private:
  float eps_, momentum_;
  bool affine_ = true;
};

}  // namespace rechub
