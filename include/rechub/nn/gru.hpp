#pragma once
// GRU: torch.nn.GRU(input_size, hidden_size, num_layers, bias, batch_first=True) over padded
// batches, with torch's parameter names per layer k: weight_ih_l{k} [3H, I_k], weight_hh_l{k}
// [3H, H], bias_ih_l{k} [3H], bias_hh_l{k} [3H] (I_0 = input_size, I_k = H above), gate order
// r, z, n, and torch's init: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), drawn layer by layer in
// that order. Equations and the packed layout: ops/gru.hpp.
//
// forward(x [B, L, I], pack) runs the layers on the packed steps (padding never enters a state;
// layers hand packed states to each other without unpacking) and returns the top layer's states
// [B, L, H] (zeros at padding) and each row's last valid state [B, H] (torch's h_n[-1] for a
// packed batch). No dropout between layers (torch's default dropout = 0).
//
// step(state, x) is the serving path: one new item per row, no tape, O(layers * H * (I + H)) per
// row; stepping a history item by item gives the same last state as forward().
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rechub/core/rng.hpp"
#include "rechub/nn/linear.hpp"
#include "rechub/nn/module.hpp"
#include "rechub/ops/gru.hpp"

namespace rechub {

class GRU : public Module {
 public:
  /// States of a forward pass: `states` [B, L, H] (zeros at padding; undefined unless asked for)
  /// and `last` [B, H], each row's state after its last valid step.
  struct Output {
    Var states;
    Var last;
  };

  GRU(std::int64_t input_size, std::int64_t hidden_size, std::int64_t num_layers = 1, bool bias = true,
      Rng& rng = global_rng())
      : input_(input_size), hidden_(hidden_size), bias_(bias) {
    RECHUB_CHECK_AS(ConfigError, input_size > 0 && hidden_size > 0 && num_layers > 0,
                    "GRU: input_size, hidden_size and num_layers must be positive, got ", input_size, ", ",
                    hidden_size, ", ", num_layers);
    const float bound = 1.0f / std::sqrt(float(hidden_size));
    for (std::int64_t k = 0; k < num_layers; ++k) {
      auto l = std::make_unique<Layer>();
      const std::int64_t in = k == 0 ? input_size : hidden_size;
      const std::string s = std::to_string(k);
      l->w_ih.set(detail::uniform_tensor({3 * hidden_size, in}, -bound, bound, rng));
      l->w_hh.set(detail::uniform_tensor({3 * hidden_size, hidden_size}, -bound, bound, rng));
      register_parameter("weight_ih_l" + s, l->w_ih);
      register_parameter("weight_hh_l" + s, l->w_hh);
      if (bias) {
        l->b_ih.set(detail::uniform_tensor({3 * hidden_size}, -bound, bound, rng));
        l->b_hh.set(detail::uniform_tensor({3 * hidden_size}, -bound, bound, rng));
        register_parameter("bias_ih_l" + s, l->b_ih);
        register_parameter("bias_hh_l" + s, l->b_hh);
      }
      layers_.push_back(std::move(l));
    }
  }

  /// x [B, L, input_size] with the pack of its valid steps -> top-layer states and last states.
  Output forward(const Var& x, const SeqPack& pack, bool want_states = true) const {
    RECHUB_CHECK_SHAPE(x.ndim() == 3 && x.dim(2) == input_, "GRU: input ", x.shape().str(), " must be [B, L, ",
                       input_, "]");
    Var h = forward_packed(pack_sequence(x, pack), pack);
    Output o;
    if (want_states) o.states = unpack_sequence(h, pack);
    o.last = packed_last(h, pack);
    return o;
  }
  /// Packed steps [T, input_size] -> the top layer's packed states [T, H].
  Var forward_packed(const Var& xp, const SeqPack& pack) const {
    Var h = xp;
    for (const auto& l : layers_) h = gru_packed(h, pack, l->w_ih, l->w_hh, bias_var(l->b_ih), bias_var(l->b_hh));
    return h;
  }

  /// Every layer's last state after packed inputs xp [T, input_size] (no tape): owned
  /// [num_layers, B, H], the state step() continues from.
  Tensor final_states(const Var& xp, const SeqPack& pack) const {
    NoGrad ng;
    Tensor out = Tensor::empty({num_layers(), pack.B, hidden_});
    Var h = xp;
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const Layer& l = *layers_[k];
      h = gru_packed(h, pack, l.w_ih, l.w_hh, bias_var(l.b_ih), bias_var(l.b_hh));
      Tensor last = packed_last(h, pack).value();
      std::copy(last.f32(), last.f32() + last.numel(), out.f32() + static_cast<std::int64_t>(k) * pack.B * hidden_);
    }
    return out;
  }

  /// A zero state for N rows: [num_layers, N, H].
  Tensor initial_state(std::int64_t N) const { return Tensor::zeros({num_layers(), N, hidden_}); }
  /// Advances `state` [num_layers, N, H] by one step with inputs x [N, input_size] (no tape).
  void step(Tensor& state, const Tensor& x) const {
    const std::int64_t N = x.ndim() == 2 ? x.dim(0) : 0;
    RECHUB_CHECK_SHAPE(x.ndim() == 2 && x.dim(1) == input_ && x.dtype() == DType::f32, "GRU::step: input ",
                       x.shape().str(), " must be float32 [N, ", input_, "]");
    RECHUB_CHECK_SHAPE(state.ndim() == 3 && state.dim(0) == num_layers() && state.dim(1) == N &&
                           state.dim(2) == hidden_ && state.dtype() == DType::f32,
                       "GRU::step: state ", state.shape().str(), " must be [", num_layers(), ", ", N, ", ", hidden_,
                       "] for ", N, " input rows");
    const std::int64_t H = hidden_, H3 = 3 * H;
    Tensor scratch = Tensor::empty({2, std::max<std::int64_t>(N, 1), H3});
    float* gi = scratch.f32();
    float* gh = gi + std::max<std::int64_t>(N, 1) * H3;
    const float* in = x.f32();
    std::int64_t in_dim = input_;
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const Layer& l = *layers_[k];
      float* h = state.f32() + static_cast<std::int64_t>(k) * N * H;
      detail::gemm_serial(false, true, N, H3, in_dim, 1.0f, in, in_dim, l.w_ih.value().f32(), in_dim, 0.0f, gi, H3);
      detail::gemm_serial(false, true, N, H3, H, 1.0f, h, H, l.w_hh.value().f32(), H, 0.0f, gh, H3);
      const float* bi = bias_ ? l.b_ih.value().f32() : nullptr;
      const float* bh = bias_ ? l.b_hh.value().f32() : nullptr;
      for (std::int64_t i = 0; i < N; ++i)
        for (std::int64_t j = 0; j < H; ++j) {
          const float* a = gi + i * H3;
          const float* c = gh + i * H3;
          const float br = bi ? bi[j] + bh[j] : 0.0f, bz = bi ? bi[H + j] + bh[H + j] : 0.0f;
          const float r = 1.0f / (1.0f + std::exp(-(a[j] + c[j] + br)));
          const float z = 1.0f / (1.0f + std::exp(-(a[H + j] + c[H + j] + bz)));
          const float n = std::tanh(a[2 * H + j] + (bi ? bi[2 * H + j] : 0.0f) +
                                    r * (c[2 * H + j] + (bh ? bh[2 * H + j] : 0.0f)));
          float& hv = h[i * H + j];
          hv = (1.0f - z) * n + z * hv;
        }
      in = h;
      in_dim = H;
    }
  }

  std::int64_t input_size() const { return input_; }
  std::int64_t hidden_size() const { return hidden_; }
  std::int64_t num_layers() const { return static_cast<std::int64_t>(layers_.size()); }
  bool has_bias() const { return bias_; }
  Parameter& weight_ih(std::int64_t k) { return layers_.at(static_cast<std::size_t>(k))->w_ih; }
  Parameter& weight_hh(std::int64_t k) { return layers_.at(static_cast<std::size_t>(k))->w_hh; }
  Parameter& bias_ih(std::int64_t k) { return layers_.at(static_cast<std::size_t>(k))->b_ih; }
  Parameter& bias_hh(std::int64_t k) { return layers_.at(static_cast<std::size_t>(k))->b_hh; }

 private:
  struct Layer {
    Parameter w_ih, w_hh, b_ih, b_hh;  // the biases hold no value without bias
  };
  Var bias_var(const Parameter& b) const { return bias_ ? b.var() : Var(); }

  std::int64_t input_, hidden_;
  bool bias_;
  std::vector<std::unique_ptr<Layer>> layers_;  // by pointer: parameters are registered by address
};

}  // namespace rechub
