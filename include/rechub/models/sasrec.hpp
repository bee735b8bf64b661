#pragma once
// SASRec (Kang & McAuley, ICDM 2018) as Torch-RecHub builds it (torch_rechub/models/matching/
// sasrec.py), batch-first. For ids [B, L] (0 = padding), m = (ids != 0), D = embed_dim:
//
//   x = dropout(sqrt(D) E[ids] + P[0..L-1]) * m                 item + learned position embedding
//   per block b = 1..num_blocks:
//     q = LN_attn_b(x)
//     x = q + MHA_b(q, x, x, causal)                              residual on the NORMALISED query
//     y = LN_ffn_b(x)
//     x = (y + dropout(W2 dropout(relu(W1 y + b1)) + b2)) * m     point-wise FFN, residual on y
//   H = LN_last(x)                                                 position states [B, L, D]
//
//   position_states(batch) = H;  user_tower = H at the last valid position (for pre-padded
//   histories the last column; post-padded: the last non-zero id; an empty history: column L-1);
//   item_tower = E[item ids] (the same table); neg_item_tower = E["neg_items"] -> [B, K, D].
// Per-position training (logits <H_t, E[pos_t]>, <H_t, E[neg_t]>) is train/objective.hpp's
// "position_*" losses; every other objective trains user_tower against item_tower.
//
// Computation: by default (skip_padding) the blocks run on the non-padding positions only
// (ops/attention.hpp pack_rows / attention_packed) and H is scattered back to [B, L, D] with
// padded positions = LN_last(0) = its bias, exactly what the padded computation gives there. This
// is the same function: a padded position's input is 0 at every block, so it only ever enters as
// a key / value equal to the attention's projection bias, which attention_packed adds back. With
// skip_padding = false the padded layout is computed as written above (kept as the reference the
// tests compare against). Dropout is parallel_dropout (same distribution as torch's).
//
// Torch-RecHub's quirks, kept (so numbers compare) unless an option says otherwise:
//  * the attention residual adds the layer-normed query Q = LN(x), not x (the official TF code
//    does the same); the FFN is Conv1d(k=1) x2 with its residual added to its (normed) input.
//    residual = "paper" gives the paper's x + Dropout(f(LN(x))) form for both sublayers.
//  * only the causal mask is applied: padded keys are NOT hidden. After the first block the
//    padded positions are zero vectors, so a padded key scores <q, b_k> and contributes b_v.
//    key_padding_mask = true hides them (the official code masks keys whose embedding is 0).
//  * positions are 0..L-1 whatever the padding: in a pre-padded history the newest item is
//    always at position L-1, in a post-padded one at position len-1.
//  * embeddings are multiplied by sqrt(D) ("embed_x_feature *= embed_dim ** 0.5"), then padded
//    positions are zeroed after the embedding dropout and after every block
//    ("embed_x_feature *= ~timeline_mask"); all LayerNorms use eps = 1e-8.
//  * item embeddings start at N(0, 1e-4) (Torch-RecHub's feature default, times sqrt(D) is still
//    tiny), positions at N(0, 1) (torch nn.Embedding); set the item feature's initializer to change it.
//  * Torch-RecHub's user tower takes index (number of non-zero ids) - 1, which for pre-padded
//    histories is a padding position; we take the last valid position. Its in-batch item tower
//    reads a nonexistent attribute (self.item_emb.embedding) and raises; ours is E[item ids].
//  * Torch-RecHub's forward returns (pos_logits, neg_logits) [B, L] at every position, padding
//    included; its MatchTrainer mode 1 BPRLoss then fails to broadcast [B*L, 1] against [B, L].
//    Our per-position losses score valid positions only.
// Parameter names follow Torch-RecHub's state_dict: item_emb.embed_dict.<item>.weight,
// position_emb.weight [max_len, D], attention_layernorms.<b>.{weight,bias},
// attention_layers.<b>.{in_proj_weight,in_proj_bias,out_proj.weight,out_proj.bias},
// forward_layernorms.<b>.*, forward_layers.<b>.conv{1,2}.weight [D, D, 1] / .bias, last_layernorm.*.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rechub/models/feature_schema.hpp"
#include "rechub/models/match_model.hpp"
#include "rechub/nn/attention.hpp"
#include "rechub/nn/layer_norm.hpp"
#include "rechub/nn/mlp.hpp"  // detail::MlpSequence: numbered children, like torch's ModuleList
#include "rechub/ops/activation.hpp"
#include "rechub/ops/attention.hpp"
#include "rechub/ops/index.hpp"

namespace rechub {

struct SASRecConfig {
  SparseFeature item_feature;        // item ids; owns the table the history shares
  SequenceFeature history_feature;   // "hist_<item>", shared_with the item feature
  int max_len = 50;                  // position table rows; histories may not be longer
  int num_blocks = 2;
  int num_heads = 1;
  float dropout = 0.5f;              // embedding, attention weights and FFN (Torch-RecHub's dropout_rate)
  float layer_norm_eps = 1e-8f;
  bool key_padding_mask = false;     // hide padded keys (paper / official code); Torch-RecHub: no
  bool paper_residual = false;       // x + f(LN(x)) for both sublayers instead of Torch-RecHub's LN(x) + f(LN(x))
  float temperature = 1.0f;          // score scale used by the objectives
  bool skip_padding = true;          // compute the non-padding positions only (same result, less work)
};

inline nlohmann::json sasrec_json(const SASRecConfig& c) {
  return nlohmann::json{{"item_feature", c.item_feature},       {"history_feature", c.history_feature},
                        {"max_len", c.max_len},                 {"num_blocks", c.num_blocks},
                        {"num_heads", c.num_heads},             {"dropout", c.dropout},
                        {"layer_norm_eps", c.layer_norm_eps},   {"key_padding_mask", c.key_padding_mask},
                        {"residual", c.paper_residual ? "paper" : "torch_rechub"},
                        {"temperature", c.temperature},         {"skip_padding", c.skip_padding}};
}
inline SASRecConfig sasrec_from_json(const nlohmann::json& j) {
  RECHUB_CHECK_AS(ConfigError, j.is_object() && j.contains("item_feature") && j.contains("history_feature"),
                  "sasrec: config needs \"item_feature\" and \"history_feature\"");
  SASRecConfig c;
  c.item_feature = j.at("item_feature").get<SparseFeature>();
  c.history_feature = j.at("history_feature").get<SequenceFeature>();
  c.max_len = j.value("max_len", c.max_len);
  c.num_blocks = j.value("num_blocks", c.num_blocks);
  c.num_heads = j.value("num_heads", c.num_heads);
  c.dropout = j.value("dropout", c.dropout);
  c.layer_norm_eps = j.value("layer_norm_eps", c.layer_norm_eps);
  c.key_padding_mask = j.value("key_padding_mask", c.key_padding_mask);
  const std::string residual = j.value("residual", std::string("torch_rechub"));
  RECHUB_CHECK_AS(ConfigError, residual == "torch_rechub" || residual == "paper", "sasrec: residual '", residual,
                  "' (expects 'torch_rechub' or 'paper')");
  c.paper_residual = residual == "paper";
  c.temperature = j.value("temperature", c.temperature);
  c.skip_padding = j.value("skip_padding", c.skip_padding);
  return c;
}

/// Torch-RecHub's PointWiseFeedForward: Conv1d(D, D, 1) -> dropout -> relu -> Conv1d -> dropout.
class PointWiseFeedForward : public Module {
 public:
  PointWiseFeedForward(std::int64_t dim, float dropout, Rng& rng = global_rng()) : dim_(dim), p_(dropout) {
    // torch Conv1d init: weight and bias U(+-1/sqrt(in_channels * kernel_size)).
    const float bound = 1.0f / std::sqrt(float(dim));
    conv1_weight.set(detail::uniform_tensor({dim, dim, 1}, -bound, bound, rng));
    conv1_bias.set(detail::uniform_tensor({dim}, -bound, bound, rng));
    conv2_weight.set(detail::uniform_tensor({dim, dim, 1}, -bound, bound, rng));
    conv2_bias.set(detail::uniform_tensor({dim}, -bound, bound, rng));
    register_parameter("conv1.weight", conv1_weight);
    register_parameter("conv1.bias", conv1_bias);
    register_parameter("conv2.weight", conv2_weight);
    register_parameter("conv2.bias", conv2_bias);
  }
  /// The branch only: dropout(W2 relu(dropout(W1 x + b1)) + b2) (relu and dropout commute).
  Var branch(const Var& x) {
    const Shape w{dim_, dim_};
    Var h = parallel_dropout(linear_act(x, reshape(conv1_weight, w), conv1_bias, ActKind::relu), p_, is_training(),
                             global_rng());
    return parallel_dropout(linear(h, reshape(conv2_weight, w), conv2_bias), p_, is_training(), global_rng());
  }
  /// Torch-RecHub's forward: x + branch(x).
  Var forward(const Var& x) { return add(x, branch(x)); }

  Parameter conv1_weight, conv1_bias, conv2_weight, conv2_bias;

 private:
  std::int64_t dim_;
  float p_;
};

namespace detail {
/// torch nn.Embedding(max_len, D) used as a plain table: one parameter "weight".
class PositionTable : public Module {
 public:
  PositionTable() { register_parameter("weight", weight); }
  Parameter weight;
};
}  // namespace detail

/// Self-attentive sequential recommendation (see the header comment).
class SASRec : public MatchModel {
 public:
  explicit SASRec(SASRecConfig cfg, Rng& rng = global_rng())
      : cfg_(std::move(cfg)),
        user_features_{cfg_.history_feature},
        item_features_{cfg_.item_feature},
        item_emb_(checked_features(cfg_), rng),
        last_layernorm_(cfg_.item_feature.embed_dim, cfg_.layer_norm_eps) {
    const std::int64_t D = cfg_.item_feature.embed_dim;
    register_module("item_emb", item_emb_);
    Tensor pos = Tensor::empty({cfg_.max_len, D});
    RandomNormal(0.0, 1.0).fill(pos, rng);
    position_emb_.weight.set(std::move(pos));
    register_module("position_emb", position_emb_);
    for (int b = 0; b < cfg_.num_blocks; ++b) {
      attn_ln_.push_back(std::make_unique<LayerNorm>(D, cfg_.layer_norm_eps));
      attn_.push_back(std::make_unique<MultiheadAttention>(D, cfg_.num_heads, cfg_.dropout, true, rng));
      ffn_ln_.push_back(std::make_unique<LayerNorm>(D, cfg_.layer_norm_eps));
      ffn_.push_back(std::make_unique<PointWiseFeedForward>(D, cfg_.dropout, rng));
      attn_ln_list_.add(b, *attn_ln_.back());
      attn_list_.add(b, *attn_.back());
      ffn_ln_list_.add(b, *ffn_ln_.back());
      ffn_list_.add(b, *ffn_.back());
    }
    register_module("attention_layernorms", attn_ln_list_);
    register_module("attention_layers", attn_list_);
    register_module("forward_layernorms", ffn_ln_list_);
    register_module("forward_layers", ffn_list_);
    register_module("last_layernorm", last_layernorm_);
  }

  std::string name() const override { return "sasrec"; }
  nlohmann::json config() const override {
    nlohmann::json j = sasrec_json(cfg_);
    j["model"] = name();
    return j;
  }

  /// H [B, L, D] for the history column [B, L] (see the header comment).
  Var position_states(const Batch& batch) override {
    const Tensor& ids = history(batch);
    if (!cfg_.skip_padding) return padded_states(ids);
    const PackedRows rows = pack_rows(ids);
    if (rows.N == 0) return padded_states(ids);
    // Padded positions end as LN_last(0) = its bias, as in the padded computation.
    return unpack_rows(packed_states(ids, rows), rows, last_layernorm_.bias);
  }
  /// [B, D]: the state at each row's last valid position (column L-1 for an empty history).
  Var user_tower(const Batch& batch) override {
    const Tensor& ids = history(batch);
    if (cfg_.skip_padding) {
      const PackedRows rows = pack_rows(ids);
      const Tensor last = last_packed_rows(rows);
      if (std::find(last.i32(), last.i32() + last.numel(), -1) == last.i32() + last.numel())
        return gather_rows(packed_states(ids, rows), last);
    }
    return select_rows(position_states(batch), last_valid_positions(ids));
  }
  /// [B, D]: the item embeddings of the batch's item column.
  Var item_tower(const Batch& batch) override {
    return gather_rows(item_emb_.table(cfg_.item_feature.name), batch[cfg_.item_feature.name]);
  }
  /// [B, K, D]: the embeddings of "neg_items" ([B] or [B, K]).
  Var neg_item_tower(const Batch& batch) override {
    const Tensor& neg = batch["neg_items"];
    Var e = gather_rows(item_emb_.table(cfg_.item_feature.name), neg);
    return neg.ndim() == 1 ? unsqueeze(e, 1) : e;
  }
  float temperature() const override { return cfg_.temperature; }
  const std::vector<Feature>& user_features() const override { return user_features_; }
  const std::vector<Feature>& item_features() const override { return item_features_; }
  const SASRecConfig& sasrec_config() const { return cfg_; }
  EmbeddingLayer& embedding() { return item_emb_; }

  /// Torch-RecHub's constructor defaults (max_len 50, 2 blocks, 1 head, dropout 0.5) on a schema.
  static SASRecConfig default_config(const FeatureSchema& s, int embed_dim = 50, int max_len = 50) {
    SASRecConfig c;
    c.item_feature = SparseFeature(s.item_col, s.item_vocab, embed_dim);
    c.history_feature = SequenceFeature(s.hist_col(), s.item_vocab, embed_dim, "concat", s.item_col);
    c.max_len = max_len;
    return c;
  }

 private:
  static std::vector<Feature> checked_features(const SASRecConfig& c) {
    const auto& item = c.item_feature;
    const auto& hist = c.history_feature;
    RECHUB_CHECK_AS(ConfigError, item.shared_with.empty(), "SASRec: item feature '", item.name,
                    "' must own its table (shared_with is '", item.shared_with, "')");
    RECHUB_CHECK_AS(ConfigError, hist.shared_with == item.name, "SASRec: history feature '", hist.name,
                    "' must be shared_with the item feature '", item.name, "', got '", hist.shared_with, "'");
    RECHUB_CHECK_AS(ConfigError, hist.embed_dim == item.embed_dim, "SASRec: history embed_dim ", hist.embed_dim,
                    " differs from the item feature's ", item.embed_dim);
    RECHUB_CHECK_AS(ConfigError, c.max_len >= 1 && c.num_blocks >= 0 && c.num_heads >= 1,
                    "SASRec: needs max_len >= 1, num_blocks >= 0, num_heads >= 1, got ", c.max_len, ", ", c.num_blocks,
                    ", ", c.num_heads);
    RECHUB_CHECK_AS(ConfigError, item.embed_dim % c.num_heads == 0, "SASRec: embed_dim ", item.embed_dim,
                    " is not a multiple of num_heads ", c.num_heads);
    RECHUB_CHECK_AS(ConfigError, c.dropout >= 0.0f && c.dropout < 1.0f, "SASRec: dropout must be in [0, 1), got ",
                    c.dropout);
    RECHUB_CHECK_AS(ConfigError, c.temperature > 0.0f, "SASRec: temperature must be > 0, got ", c.temperature);
    return {item, hist};
  }
  /// The blocks over every position of the padded layout, masking padding after each block.
  Var padded_states(const Tensor& ids) {
    const Var table = item_emb_.table(cfg_.item_feature.name).var();
    const float scale = std::sqrt(float(cfg_.item_feature.embed_dim));
    Var x = parallel_dropout(sequence_embedding(table, ids, position_emb_.weight, scale), cfg_.dropout, is_training(),
                             global_rng());
    const Tensor key_mask = cfg_.key_padding_mask ? ids : Tensor();
    for (std::size_t b = 0; b < attn_.size(); ++b) {
      Var q = attn_ln_[b]->forward(x);
      Var a = attn_[b]->forward(q, x, x, true, key_mask);
      x = add(cfg_.paper_residual ? x : q, a);
      Var y = ffn_ln_[b]->forward(x);
      x = mask_positions(add(cfg_.paper_residual ? x : y, ffn_[b]->branch(y)), ids);
    }
    return last_layernorm_.forward(x);
  }
  /// The same at the non-padding positions only ([N, D]). Exact: a padded position's input is 0
  /// at every block, so it only ever acts as a key / value equal to the projection bias, which
  /// attention_packed adds back (attend_padding) unless padded keys are masked.
  Var packed_states(const Tensor& ids, const PackedRows& rows) {
    const Var table = item_emb_.table(cfg_.item_feature.name).var();
    const float scale = std::sqrt(float(cfg_.item_feature.embed_dim));
    Var x = parallel_dropout(packed_embedding(table, ids, position_emb_.weight, scale, rows), cfg_.dropout,
                             is_training(), global_rng());
    for (std::size_t b = 0; b < attn_.size(); ++b) {
      Var q = attn_ln_[b]->forward(x);
      Var a = attn_[b]->forward_packed(q, x, x, rows, true, !cfg_.key_padding_mask);
      x = add(cfg_.paper_residual ? x : q, a);
      Var y = ffn_ln_[b]->forward(x);
      x = add(cfg_.paper_residual ? x : y, ffn_[b]->branch(y));
    }
    return last_layernorm_.forward(x);
  }
  const Tensor& history(const Batch& batch) const {
    const Tensor& ids = batch[cfg_.history_feature.name];
    detail::check_i32("SASRec", ids, cfg_.history_feature.name.c_str());
    RECHUB_CHECK_SHAPE(ids.ndim() == 2 && ids.dim(1) >= 1, "SASRec: history '", cfg_.history_feature.name, "' ",
                       ids.shape().str(), " must be [B, L]");
    RECHUB_CHECK_AS(ConfigError, ids.dim(1) <= cfg_.max_len, "SASRec: history '", cfg_.history_feature.name, "' ",
                    ids.shape().str(), " is longer than max_len ", cfg_.max_len);
    return ids;
  }

  SASRecConfig cfg_;
  std::vector<Feature> user_features_, item_features_;
  EmbeddingLayer item_emb_;
  detail::PositionTable position_emb_;
  std::vector<std::unique_ptr<LayerNorm>> attn_ln_, ffn_ln_;
  std::vector<std::unique_ptr<MultiheadAttention>> attn_;
  std::vector<std::unique_ptr<PointWiseFeedForward>> ffn_;
  detail::MlpSequence attn_ln_list_, attn_list_, ffn_ln_list_, ffn_list_;
  LayerNorm last_layernorm_;
};

}  // namespace rechub
