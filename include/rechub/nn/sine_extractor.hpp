#pragma once
// SineExtractor: the sparse-interest extraction and interest aggregation of SINE (Tan et al.,
// WSDM'21) as Torch-RecHub's torch_rechub/models/matching/sine.py computes them.
// B rows, L positions, D embedding, H hidden, C concepts, K intentions; the mask is the history
// ids (nonzero = an item); "attn(x; Wa, Wb)" is ops/self_attentive.hpp (padding masked).
//
//   x     = e(hist) + P[:L]                                   [B, L, D]   item + position embeddings
//   z     = attn(x; w_1, w_2) x                               [B, D]      the user's concept vector
//   s     = z C^T,  top-K concepts idx (no gradient through the choice)
//   c_u   = sigmoid(s[idx]) * C[idx]                          [B, K, D]   the user's intentions
//   p     = softmax_k < norm(x_t w_3), norm(c_u_k) >          [B, L, K]   intention assignment P(k|t)
//   a     = attn(x; w_k1, w_k2)                               [B, K, L]   P(t|k), padding masked
//   phi   = (p^T * a) x                                       [B, K, D]   interest embeddings
//   x_hat = p c_u                                             [B, L, D]   intention-aware behaviour
//   c_apt = norm_p( attn(x_hat; w_4, w_5) x_hat )             [B, D]      the next intention
//           (x_hat w_4 computed as p (c_u w_4): rank K, not D)
//   e     = softmax_k( <c_apt, phi_k> / temperature )         [B, K]
//   v     = e phi                                             [B, D]      the aggregated user vector
// norm_p divides by the order-p norm with p = apt_norm_p = -1 by default: Torch-RecHub writes
// F.normalize(..., -1), where -1 lands in torch's `p` argument, not `dim` (ops/lp_normalize.hpp);
// the magnitude of c_apt sets how sharp the aggregation softmax is, so this is kept; p = 2 gives
// the L2 normalisation the paper describes. Every other "norm" above is L2 over the last dim.
// Parameters as Torch-RecHub names them: concept_embedding.weight [C, D] and
// position_embedding.weight [seq_max_len, D] ~ N(0, 1e-4); w_1, w_k1, w_4 [D, H]; w_2, w_5 [H, 1];
// w_k2 [H, K]; w_3 [D, D], all torch.rand: U[0, 1). Torch-RecHub's num_heads must be 1 (its
// reshape(-1, seq_max_len) of the next-intention logits only works then); we take no other.
// Histories shorter than seq_max_len use the first L position embeddings (Torch-RecHub needs
// L == seq_max_len exactly); padding positions never contribute (their attention is 0).
// The (commented-out) covariance regulariser of the concepts is not applied, as in Torch-RecHub.
//
// Speed: the products of x with w_1, w_k1 and w_3 ([B*L, D] x [D, H], ~90% of a training step's
// FLOPs at Torch-RecHub's sizes) are linear in x = e(hist) + P, so when the caller passes the item
// table and the batch has more positions than the table has rows, they are formed as
//   x W = (E W)[hist] + (P W)          (E W: [V, H] once per step; 0 at padding, as e(hist))
// the same numbers up to rounding; ML-100K (V 1,683, B*L 12,800) does 7.6x fewer multiply-adds.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "rechub/core/rng.hpp"
#include "rechub/nn/module.hpp"
#include "rechub/ops/activation.hpp"
#include "rechub/ops/elementwise.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/lp_normalize.hpp"
#include "rechub/ops/matmul.hpp"
#include "rechub/ops/norm.hpp"
#include "rechub/ops/self_attentive.hpp"
#include "rechub/ops/shape.hpp"
#include "rechub/ops/softmax.hpp"
#include "rechub/ops/topk.hpp"

namespace rechub {

/// SINE's sparse-interest extractor and interest aggregation (see the header comment).
class SineExtractor : public Module {
 public:
  struct Options {
    std::int64_t embedding_dim = 128;
    std::int64_t hidden_dim = 512;
    std::int64_t num_concept = 50;
    int num_intention = 4;
    std::int64_t seq_max_len = 20;
    float temperature = 0.1f;
    float apt_norm_p = -1.0f;  // order of the next intention's normalisation (see above)
  };
  struct Output {
    Var interests;  // phi [B, K, D]
    Var user;       // v [B, D]
  };

  explicit SineExtractor(Options o, Rng& init_rng = global_rng()) : o_(o) {
    RECHUB_CHECK_AS(ConfigError,
                    o.embedding_dim >= 1 && o.hidden_dim >= 1 && o.num_concept >= 1 && o.num_intention >= 1 &&
                        o.seq_max_len >= 1,
                    "SineExtractor: embedding_dim, hidden_dim, num_concept, num_intention and seq_max_len must be "
                    ">= 1");
    RECHUB_CHECK_AS(ConfigError, o.num_intention <= o.num_concept, "SineExtractor: num_intention ", o.num_intention,
                    " exceeds num_concept ", o.num_concept, " (it picks the top num_intention concepts)");
    RECHUB_CHECK_AS(ConfigError, o.temperature > 0, "SineExtractor: temperature must be > 0, got ", o.temperature);
    const std::int64_t D = o.embedding_dim, H = o.hidden_dim, K = o.num_intention;
    concept_.set(normal({o.num_concept, D}, init_rng));
    position_.set(normal({o.seq_max_len, D}, init_rng));
    w_1_.set(uniform({D, H}, init_rng));
    w_2_.set(uniform({H, 1}, init_rng));
    w_3_.set(uniform({D, D}, init_rng));
    w_k1_.set(uniform({D, H}, init_rng));
    w_k2_.set(uniform({H, K}, init_rng));
    w_4_.set(uniform({D, H}, init_rng));
    w_5_.set(uniform({H, 1}, init_rng));
    register_parameter("concept_embedding.weight", concept_);
    register_parameter("position_embedding.weight", position_);
    register_parameter("w_1", w_1_);
    register_parameter("w_2", w_2_);
    register_parameter("w_3", w_3_);
    register_parameter("w_k1", w_k1_);
    register_parameter("w_k2", w_k2_);
    register_parameter("w_4", w_4_);
    register_parameter("w_5", w_5_);
  }

  /// The parameters as Vars (compute() takes any, so gradient checks can pass their own).
  struct Weights {
    Var concept, position, w_1, w_2, w_3, w_k1, w_k2, w_4, w_5;
  };
  Weights weights() const {
    return {concept_.var(), position_.var(), w_1_.var(), w_2_.var(), w_3_.var(),
            w_k1_.var(),    w_k2_.var(),     w_4_.var(), w_5_.var()};
  }

  /// Interests and aggregated user vector from the history item embeddings `items` [B, L, D]
  /// (zero or anything at padding) and `mask` [B, L] (nonzero = an item). With `table` [V, D]
  /// given, `items` must be its rows at the ids `mask` (0 at id 0): the products with x go
  /// through the projected table when that is cheaper (header comment).
  Output forward(const Var& items, const Tensor& mask, const Var& table = Var()) const {
    return compute(items, mask, weights(), o_, table);
  }

  /// forward() on explicit weights (see the header comment for the equations).
  static Output compute(const Var& items, const Tensor& mask, const Weights& w, const Options& o,
                        const Var& table = Var()) {
    const std::int64_t D = o.embedding_dim, K = o.num_intention;
    RECHUB_CHECK_SHAPE(items.ndim() == 3 && items.dim(2) == D, "SineExtractor: input ", items.shape().str(),
                       " must be [B, L, ", D, "]");
    const std::int64_t B = items.dim(0), L = items.dim(1);
    RECHUB_CHECK_SHAPE(L <= o.seq_max_len, "SineExtractor: history length ", L, " exceeds seq_max_len ",
                       o.seq_max_len);
    RECHUB_CHECK_SHAPE(mask.ndim() == 2 && mask.dim(0) == B && mask.dim(1) == L, "SineExtractor: mask ",
                       mask.shape().str(), " does not match input ", items.shape().str());
    Var pos = L == o.seq_max_len ? w.position : slice(w.position, 0, 0, L);
    Var x = add(items, pos);  // [B, L, D]
    const bool projected = table.defined() && table.dim(0) < B * L;
    if (projected)
      RECHUB_CHECK_SHAPE(table.ndim() == 2 && table.dim(1) == D, "SineExtractor: item table ", table.shape().str(),
                         " must be [V, ", D, "]");
    // x W [B, L, H] (header comment: through the projected table when that is cheaper).
    auto times = [&](const Var& W) {
      if (projected) return add(embedding_bag(matmul(table, W), mask, BagMode::concat, 0), matmul(pos, W));
      return reshape(matmul(reshape(x, Shape{B * L, D}), W), Shape{B, L, W.dim(1)});
    };
    auto attention = [&](const Var& W1, const Var& W2) {
      return projected ? self_attentive_weights_table(matmul(table, W1), matmul(pos, W1), mask, W2)
                       : self_attentive_weights(x, W1, W2, mask);
    };

    // Sparse interests: the user's concept vector picks K of the C prototypes.
    Var z = reshape(matmul(attention(w.w_1, w.w_2), x), Shape{B, D});
    Var s = matmul(z, w.concept, false, true);  // [B, C]
    Tensor idx = top_concepts(s.value(), K);     // [B, K]
    Var c_u = mul(reshape(sigmoid(gather_last(s, idx)), Shape{B, K, 1}), gather_rows(w.concept, idx));

    // Intention assignment P(k|t) and attention P(t|k) give the interest embeddings.
    Var xw = l2_normalize(times(w.w_3));
    Var p = softmax(matmul(xw, l2_normalize(c_u), false, true));  // [B, L, K]
    Var a = attention(w.w_k1, w.w_k2);                            // [B, K, L]
    Var phi = matmul(mul(transpose(p, 1, 2), a), x);                // [B, K, D]

    // Adaptive aggregation: the next intention weighs the interests.
    // x_hat W_4 = p (c_u W_4): rank K, so the [B*L, D] x [D, H] product is never formed.
    Var x_hat = matmul(p, c_u);  // [B, L, D]
    Var cw4 = reshape(matmul(reshape(c_u, Shape{B * K, D}), w.w_4), Shape{B, K, w.w_4.dim(1)});
    Var pooled = matmul(self_attentive_weights_pre(matmul(p, cw4), w.w_5, mask), x_hat);  // [B, 1, D]
    Var c_apt = o.apt_norm_p == 2.0f ? l2_normalize(pooled) : lp_normalize(pooled, o.apt_norm_p);
    Var e = softmax(scale(matmul(c_apt, phi, false, true), 1.0f / o.temperature));              // [B, 1, K]
    Var v = reshape(matmul(e, phi), Shape{B, D});
    return {phi, v};
  }

  const Options& options() const { return o_; }

 private:
  /// Indices [B, K] of each row's K largest concept scores (ties to the lower index), in the arena.
  static Tensor top_concepts(const Tensor& s, std::int64_t K) {
    const std::int64_t B = s.dim(0), C = s.dim(1);
    Tensor idx = step_arena().tensor({B, K}, DType::i32);
    float* vals = step_arena().tensor({B, K}).f32();
    const float* ps = s.f32();
    std::int32_t* pi = idx.i32();
    for (std::int64_t b = 0; b < B; ++b) detail::topk_row(ps + b * C, C, K, vals + b * K, pi + b * K);
    return idx;
  }
  static Tensor normal(const Shape& sh, Rng& rng) {
    Tensor t = Tensor::empty(sh);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = rng.normal(0.0f, 1e-4f);
    return t;
  }
  static Tensor uniform(const Shape& sh, Rng& rng) {
    Tensor t = Tensor::empty(sh);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = rng.uniform(0.0f, 1.0f);
    return t;
  }

  Options o_;
  Parameter concept_, position_, w_1_, w_2_, w_3_, w_k1_, w_k2_, w_4_, w_5_;
};

}  // namespace rechub
