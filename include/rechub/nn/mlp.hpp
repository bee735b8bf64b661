#pragma once
// MLP with Torch-RecHub's semantics (torch_rechub.basic.layers.MLP): for each hidden dim,
// Linear -> BatchNorm1d -> activation -> Dropout; then, with output_layer, a final Linear(.., 1).
// The layers sit in a child named "mlp" with torch Sequential indices, so names match torch's
// state_dict: "mlp.0.weight", "mlp.0.bias", "mlp.1.weight" (BN gamma), "mlp.1.bias",
// "mlp.1.running_mean", "mlp.1.running_var", "mlp.2.weight" (PReLU), "mlp.4.weight", ...
// With batchnorm off each block is Linear -> activation -> Dropout and the indices step by 3.
//
// Fusion: BatchNorm1d and an elementwise activation run as one pass (batch_norm1d_act); with
// batchnorm off, the bias and activation fold into the linear's epilogue (linear_act). Dropout
// with p = 0 or in eval mode adds no op. Dice activations run unfused.
//
// Input [N, in] -> [N, out]; any [..., in] is accepted: its leading dims are flattened into rows
// (batch statistics are then taken over all rows, like BatchNorm1d on x.view(-1, in)).
//
// Row weights: forward(x, w) treats row r as w[r] identical rows (x = the distinct rows of a
// larger batch, w = their counts; ops/unique_rows.hpp). Every layer but BatchNorm is per row, and
// BatchNorm takes the weights, so the outputs and gradients are those of the larger batch; this
// holds while no dropout mask is drawn and every activation is elementwise (exact_on_distinct_rows).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rechub/nn/activation.hpp"
#include "rechub/nn/linear.hpp"
#include "rechub/nn/module.hpp"

namespace rechub {

namespace detail {
/// A torch-Sequential-like holder: registers children under "0", "1", ... names.
class MlpSequence : public Module {
 public:
  void add(std::int64_t index, Module& m) { register_module(std::to_string(index), m); }
};
}  // namespace detail

class MLP : public Module {
 public:
  struct Options {
    std::vector<std::int64_t> dims;  // hidden layer sizes
    std::string activation = "relu";
    float dropout = 0.0f;
    bool output_layer = true;  // append Linear(dims.back(), 1)
    bool batchnorm = true;     // Torch-RecHub always has it; off gives Linear -> act -> Dropout
  };

  MLP(std::int64_t input_dim, Options opt) : input_dim_(input_dim), opt_(std::move(opt)) { build(); }
  MLP(std::int64_t input_dim, std::vector<std::int64_t> dims, const std::string& activation = "relu",
      float dropout = 0.0f, bool output_layer = true, bool batchnorm = true)
      : input_dim_(input_dim) {
    opt_.dims = std::move(dims);
    opt_.activation = activation;
    opt_.dropout = dropout;
    opt_.output_layer = output_layer;
    opt_.batchnorm = batchnorm;
    build();
  }

  /// x [..., input_dim] -> [..., output_dim()]; row_weights f32 [rows of x] (see the top).
  Var forward(const Var& x, const Tensor& row_weights = Tensor()) {
    const Shape& s = x.shape();
    RECHUB_CHECK_SHAPE(s.ndim() >= 1 && s[-1] == input_dim_, "mlp: input ", s.str(), " has ", s.ndim() ? s[-1] : 0,
                       " features, MLP expects ", input_dim_);
    RECHUB_CHECK_AS(ConfigError, !row_weights.defined() || exact_on_distinct_rows(),
                    "mlp: row weights need elementwise activations and no dropout while training (activation '",
                    opt_.activation, "', dropout ", opt_.dropout, ")");
    const bool flatten = opt_.batchnorm && !blocks_.empty() && s.ndim() != 2;
    Var h = flatten ? detail::view(x, {x.value().rows(), input_dim_}) : x;
    h = run_blocks(h, false, row_weights);
    if (flatten) {
      Shape os = s;
      os[-1] = output_dim();
      h = detail::view(h, os);
    }
    return h;
  }

  /// The first hidden layer's Linear (null without hidden layers).
  const Linear* first_linear() const { return blocks_.empty() ? nullptr : blocks_[0].linear.get(); }
  /// forward(x) for [N, input_dim] x, given z = x W^T + b of the first Linear instead of x: for
  /// callers that assemble z more cheaply than the product (TwoTower's distinct-id first layer).
  Var forward_from_first_linear(const Var& z, const Tensor& row_weights = Tensor()) {
    RECHUB_CHECK_AS(ConfigError, !blocks_.empty(), "mlp: forward_from_first_linear needs a hidden layer");
    RECHUB_CHECK_SHAPE(z.ndim() == 2 && z.dim(1) == opt_.dims[0], "mlp: first-layer output ", z.shape().str(),
                       " is not [N, ", opt_.dims[0], "]");
    return run_blocks(z, true, row_weights);
  }

  /// Whether forward(x, row_weights) equals the expanded batch's forward (see the top).
  bool exact_on_distinct_rows() const {
    if (opt_.dropout > 0.0f && is_training()) return false;
    for (const auto& b : blocks_)
      if (!b.act->fusable()) return false;
    return true;
  }
  std::int64_t input_dim() const { return input_dim_; }
  std::int64_t output_dim() const {
    if (opt_.output_layer) return 1;
    return opt_.dims.empty() ? input_dim_ : opt_.dims.back();
  }
  const Options& options() const { return opt_; }

 private:
  struct Block {
    std::unique_ptr<Linear> linear;
    std::unique_ptr<BatchNorm1d> bn;  // null when batchnorm is off
    std::unique_ptr<Activation> act;
    std::unique_ptr<Dropout> dropout;
  };

  /// Every block on h, then the output layer; z_given: h is already block 0's Linear output.
  Var run_blocks(Var h, bool z_given, const Tensor& row_weights) {
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      Block& b = blocks_[i];
      Activation& act = *b.act;
      const bool have_z = i == 0 && z_given;
      if (b.bn) {
        Var z = have_z ? h : b.linear->forward(h);
        h = act.fusable() ? b.bn->forward_act(z, act.kind(), act.slope(), row_weights) : act.forward(b.bn->forward(z));
      } else if (have_z) {
        h = act.forward(h);
      } else {
        h = act.fusable() ? b.linear->forward_act(h, act.kind(), act.slope()) : act.forward(b.linear->forward(h));
      }
      h = b.dropout->forward(h);
    }
    if (out_) h = out_->forward(h);
    return h;
  }

  void build() {
    RECHUB_CHECK_AS(ConfigError, input_dim_ > 0, "MLP: input_dim must be positive, got ", input_dim_);
    RECHUB_CHECK_AS(ConfigError, opt_.dropout >= 0.0f && opt_.dropout <= 1.0f, "MLP: dropout must be in [0, 1], got ",
                    opt_.dropout);
    std::int64_t in = input_dim_, index = 0;
    for (std::int64_t d : opt_.dims) {
      RECHUB_CHECK_AS(ConfigError, d > 0, "MLP: hidden dims must be positive, got ", d);
      Block b;
      b.linear = std::make_unique<Linear>(in, d);
      seq_.add(index++, *b.linear);
      if (opt_.batchnorm) {
        b.bn = std::make_unique<BatchNorm1d>(d);
        seq_.add(index++, *b.bn);
      }
      b.act = make_activation(opt_.activation, d);
      seq_.add(index++, *b.act);
      b.dropout = std::make_unique<Dropout>(opt_.dropout);
      seq_.add(index++, *b.dropout);
      blocks_.push_back(std::move(b));
      in = d;
    }
    if (opt_.output_layer) {
      out_ = std::make_unique<Linear>(in, 1);
      seq_.add(index++, *out_);
    }
    register_module("mlp", seq_);
  }

  std::int64_t input_dim_;
  Options opt_;
  detail::MlpSequence seq_;
  std::vector<Block> blocks_;
  std::unique_ptr<Linear> out_;
};

}  // namespace rechub
