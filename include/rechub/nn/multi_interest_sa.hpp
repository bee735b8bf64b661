#pragma once
// MultiInterestSA: Torch-RecHub's self-attentive multi-interest extractor (ComiRec-SA,
// torch_rechub/basic/layers.py):
//
//   A = softmax over positions of tanh(seq W1) W2, padding masked    [B, K, L]
//   interests = A seq                                                 [B, K, D]
//   W1 [D, H] and W2 [H, K] (H = 4 D by default), both torch.rand: U[0, 1).
// The attention is ops/self_attentive.hpp. Torch-RecHub also allocates a W3 [D, D] that its
// forward never reads; we leave it out.
#include <cstdint>

#include "rechub/core/rng.hpp"
#include "rechub/nn/module.hpp"
#include "rechub/ops/matmul.hpp"
#include "rechub/ops/self_attentive.hpp"

namespace rechub {

/// Torch-RecHub's MultiInterestSA: history embeddings [B, L, D] -> K interests [B, K, D].
class MultiInterestSA : public Module {
 public:
  /// hidden_dim 0 means 4 * embedding_dim (Torch-RecHub's default).
  MultiInterestSA(std::int64_t embedding_dim, int interest_num, std::int64_t hidden_dim = 0,
                  Rng& init_rng = global_rng())
      : D_(embedding_dim), K_(interest_num), H_(hidden_dim > 0 ? hidden_dim : 4 * embedding_dim) {
    RECHUB_CHECK_AS(ConfigError, D_ >= 1 && K_ >= 1, "MultiInterestSA: embedding_dim and interest_num must be >= 1, got ",
                    D_, ", ", K_);
    w1_.set(uniform({D_, H_}, init_rng));
    w2_.set(uniform({H_, K_}, init_rng));
    register_parameter("W1", w1_);
    register_parameter("W2", w2_);
  }

  /// Attention weights [B, K, L] of `seq` [B, L, D] under `mask` [B, L] (nonzero = an item).
  Var attention(const Var& seq, const Tensor& mask) const { return self_attentive_weights(seq, w1_, w2_, mask); }
  /// Interests [B, K, D].
  Var forward(const Var& seq, const Tensor& mask) const { return matmul(attention(seq, mask), seq); }

  std::int64_t hidden_dim() const { return H_; }
  int interest_num() const { return static_cast<int>(K_); }

 private:
  static Tensor uniform(const Shape& s, Rng& rng) {
    Tensor t = Tensor::empty(s);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = rng.uniform(0.0f, 1.0f);
    return t;
  }
  std::int64_t D_, K_, H_;
  Parameter w1_, w2_;
};

}  // namespace rechub
