#pragma once
// MultiheadAttention: torch nn.MultiheadAttention(embed_dim, num_heads, dropout, bias) with its
// parameter names: "in_proj_weight" [3D, D] (rows: W_q, W_k, W_v), "in_proj_bias" [3D],
// "out_proj.weight" [D, D], "out_proj.bias" [D]. Init as torch: in_proj_weight Xavier-uniform
// (bound sqrt(6 / (D + 3D))), in_proj_bias 0, out_proj.weight U(+-1/sqrt(D)), out_proj.bias 0.
//
//   forward(query [B, Lq, D], key [B, Lk, D], value [B, Lk, D]) -> [B, Lq, D]
//     q = query W_q^T + b_q, k = key W_k^T + b_k, v = value W_v^T + b_v
//     o = attention(q, k, v) over num_heads heads (ops/attention.hpp), y = o W_o^T + b_o
// Tensors are batch-first (torch's batch_first=True); torch's default layout is [L, B, D].
// Masks: `causal` is torch's attn_mask = ~tril(ones(L, L)) (True = not allowed); `key_mask` is an
// int32 [B, Lk] whose 0 entries hide keys (torch's key_padding_mask with True = padding, i.e.
// key_mask == 0). An id column can be passed directly: padding id 0 hides its key. Dropout
// (p = dropout) applies to the attention weights in training mode only, as in torch.
// When key and value are the same Var, their projections run as one GEMM into a packed [B, L, 2D]
// (all three when query is the same Var too), and attention reads its heads in place.
#include <cmath>
#include <cstdint>

#include "rechub/core/rng.hpp"
#include "rechub/nn/linear.hpp"
#include "rechub/nn/module.hpp"
#include "rechub/ops/attention.hpp"

namespace rechub {

/// Multi-head attention with a packed input projection (torch names and init).
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(std::int64_t embed_dim, int num_heads, float dropout = 0.0f, bool bias = true,
                     Rng& rng = global_rng())
      : out_proj(check_dims(embed_dim, num_heads), embed_dim, bias, rng),
        dim_(embed_dim),
        heads_(num_heads),
        dropout_(dropout),
        has_bias_(bias) {
    RECHUB_CHECK_AS(ConfigError, dropout >= 0.0f && dropout < 1.0f, "MultiheadAttention: dropout must be in [0, 1), got ",
                    dropout);
    const float bound = std::sqrt(6.0f / float(embed_dim + 3 * embed_dim));
    in_proj_weight.set(detail::uniform_tensor({3 * embed_dim, embed_dim}, -bound, bound, rng));
    register_parameter("in_proj_weight", in_proj_weight);
    if (has_bias_) {
      in_proj_bias.set(Tensor::zeros({3 * embed_dim}));
      register_parameter("in_proj_bias", in_proj_bias);
      out_proj.bias.value().zero_();
    }
    register_module("out_proj", out_proj);
  }

  /// query [B, Lq, D], key and value [B, Lk, D] -> [B, Lq, D]; see the header comment for masks.
  Var forward(const Var& query, const Var& key, const Var& value, bool causal = false,
              const Tensor& key_mask = Tensor(), Rng* rng = nullptr) const {
    RECHUB_CHECK_SHAPE(query.ndim() == 3 && query.dim(2) == dim_ && key.ndim() == 3 && key.dim(2) == dim_ &&
                           value.ndim() == 3 && value.dim(2) == dim_,
                       "MultiheadAttention: query ", query.shape().str(), ", key ", key.shape().str(), ", value ",
                       value.shape().str(), " must be [B, L, ", dim_, "]");
    const Var b = has_bias_ ? in_proj_bias.var() : Var();
    const std::int64_t D = dim_;
    AttentionOptions o;
    o.heads = heads_;
    o.causal = causal;
    o.key_mask = key_mask;
    o.dropout = dropout_;
    o.training = is_training();
    o.rng = rng;
    o.dim = D;
    Var attn;
    if (query.node() == key.node() && key.node() == value.node()) {
      Var qkv = in_projection(query, in_proj_weight, b, 0, 3 * D);  // [B, L, 3D]
      o.k_offset = D;
      o.v_offset = 2 * D;
      attn = attention(qkv, qkv, qkv, o);
    } else if (key.node() == value.node()) {
      Var q = in_projection(query, in_proj_weight, b, 0, D);
      Var kv = in_projection(key, in_proj_weight, b, D, 3 * D);  // [B, Lk, 2D]
      o.v_offset = D;
      attn = attention(q, kv, kv, o);
    } else {
      attn = attention(in_projection(query, in_proj_weight, b, 0, D), in_projection(key, in_proj_weight, b, D, 2 * D),
                       in_projection(value, in_proj_weight, b, 2 * D, 3 * D), o);
    }
    return out_proj.forward(attn);
  }
  /// forward() over packed rows (ops/attention.hpp pack_rows): query, key, value [N, D] -> [N, D].
  /// attend_padding: queries also attend to the padded keys of the padded layout, whose inputs
  /// are zero rows, so their key and value are the in-projection biases (Torch-RecHub's SASRec).
  Var forward_packed(const Var& query, const Var& key, const Var& value, const PackedRows& rows, bool causal = false,
                     bool attend_padding = false, Rng* rng = nullptr) const {
    RECHUB_CHECK_SHAPE(query.ndim() == 2 && query.dim(1) == dim_ && key.ndim() == 2 && key.dim(1) == dim_ &&
                           value.ndim() == 2 && value.dim(1) == dim_,
                       "MultiheadAttention: packed query ", query.shape().str(), ", key ", key.shape().str(),
                       ", value ", value.shape().str(), " must be [N, ", dim_, "]");
    const Var b = has_bias_ ? in_proj_bias.var() : Var();
    const std::int64_t D = dim_;
    AttentionOptions o;
    o.heads = heads_;
    o.causal = causal;
    o.dropout = dropout_;
    o.training = is_training();
    o.rng = rng;
    o.dim = D;
    o.attend_padding = attend_padding;
    o.pad_kv = b;
    o.pad_k_offset = D;
    o.pad_v_offset = 2 * D;
    Var attn;
    if (query.node() == key.node() && key.node() == value.node()) {
      Var qkv = in_projection(query, in_proj_weight, b, 0, 3 * D);
      o.k_offset = D;
      o.v_offset = 2 * D;
      attn = attention_packed(qkv, qkv, qkv, rows, o);
    } else if (key.node() == value.node()) {
      Var kv = in_projection(key, in_proj_weight, b, D, 3 * D);
      o.v_offset = D;
      attn = attention_packed(in_projection(query, in_proj_weight, b, 0, D), kv, kv, rows, o);
    } else {
      attn = attention_packed(in_projection(query, in_proj_weight, b, 0, D),
                              in_projection(key, in_proj_weight, b, D, 2 * D),
                              in_projection(value, in_proj_weight, b, 2 * D, 3 * D), rows, o);
    }
    return out_proj.forward(attn);
  }
  /// Self-attention: forward(x, x, x).
  Var forward(const Var& x, bool causal = false, const Tensor& key_mask = Tensor(), Rng* rng = nullptr) const {
    return forward(x, x, x, causal, key_mask, rng);
  }

  std::int64_t embed_dim() const { return dim_; }
  int num_heads() const { return heads_; }
  float dropout() const { return dropout_; }

  Parameter in_proj_weight;  // [3D, D]
  Parameter in_proj_bias;    // [3D]
  Linear out_proj;           // D -> D

 private:
  static std::int64_t check_dims(std::int64_t d, int h) {
    RECHUB_CHECK_AS(ConfigError, d > 0 && h >= 1 && d % h == 0, "MultiheadAttention: embed_dim ", d,
                    " must be a positive multiple of num_heads ", h);
    return d;
  }
  std::int64_t dim_;
  int heads_;
  float dropout_;
  bool has_bias_;
};

}  // namespace rechub
