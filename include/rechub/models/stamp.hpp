#pragma once
// STAMP (Liu et al., KDD'18, "STAMP: Short-Term Attention/Memory Priority Model for Session-based
// Recommendation") as Torch-RecHub builds it (torch_rechub/models/matching/stamp.py):
//   x_i = E[id_i] (0 at padding),  x_t = E[last id],  m_s = mean of the valid x_i
//   q_i = w_0^T sigmoid(W_1^T x_i + W_2^T x_t + W_3^T m_s + b_a)    (x W with W stored [D, D])
//   alpha = softmax over the valid i of q          (Torch-RecHub: L1-normalised exp(q) * mask)
//   m_a = sum_i alpha_i x_i + m_s
//   h_s = Linear_s(tanh(m_a)),  h_t = Linear_t(tanh(x_t)),  u = h_s * h_t
//   score(i) = <u, E[i]>                            item vectors are the same table E
// Parameter names as its state_dict: item_emb.weight, w_0 [D, 1], w_1_t, w_2_t, w_3_t [D, D],
// b_a [D], f_s.1.weight, f_s.1.bias, f_t.1.weight, f_t.1.bias (nn.Sequential(Tanh, Linear)).
// Init as there: w_* ~ N(0, weight_std), b_a = 0, E and the Linear weights ~ N(0, emb_std)
// (the whole table, row 0 included), Linear biases 0. Its example (run_sbr.py): D = 100,
// weight_std 0.05, emb_std 0.002, full softmax over every item (loss "full" here).
//
// Where Torch-RecHub departs from the paper (variant "paper" restores each, all cheap):
//  * The paper's attention weights are the raw alpha_i = w_0^T sigmoid(...); Torch-RecHub
//    normalises exp(q) over the valid positions (a softmax).
//  * The paper's attentive memory is m_a = sum_i alpha_i x_i; Torch-RecHub adds m_s.
//  * The paper's MLP cells are h_s = tanh(W_s m_a + b_s), h_t = tanh(W_t x_t + b_t); Torch-RecHub
//    applies tanh BEFORE the linear layer (Sequential(Tanh(), Linear)).
//  * It finds the last item and the mask assuming post-padding (gather at count - 1); a
//    pre-padded history would read padding as the last item. Here the last valid id of either
//    padding is used, and a row without history gives u = h_s * h_t of zero inputs (Torch-RecHub:
//    0 / 0 = NaN in m_s).
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "rechub/models/feature_schema.hpp"
#include "rechub/models/match_model.hpp"
#include "rechub/models/narm.hpp"  // the session models' shared helpers (detail::session_*)
#include "rechub/nn/linear.hpp"
#include "rechub/ops/activation.hpp"
#include "rechub/ops/elementwise.hpp"
#include "rechub/ops/gru.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/matmul.hpp"
#include "rechub/ops/shape.hpp"
#include "rechub/ops/softmax.hpp"

namespace rechub {

struct STAMPConfig {
  SequenceFeature history_feature;          // the item history [B, L]; its vocab_size / embed_dim size E
  SparseFeature item_feature;               // the target item column (looked up in E)
  std::vector<Feature> neg_item_features;   // optional: sampled negatives [B, K] (looked up in E)
  float weight_std = 0.05f;
  float emb_std = 0.002f;
  std::string variant = "torch_rechub";     // or "paper"
};

inline nlohmann::json stamp_json(const STAMPConfig& c) {
  nlohmann::json j;
  j["history_feature"] = c.history_feature;
  j["item_feature"] = c.item_feature;
  j["neg_item_features"] = c.neg_item_features;
  j["weight_std"] = c.weight_std;
  j["emb_std"] = c.emb_std;
  j["variant"] = c.variant;
  return j;
}
inline STAMPConfig stamp_from_json(const nlohmann::json& j) {
  RECHUB_CHECK_AS(ConfigError, j.is_object() && j.contains("history_feature") && j.contains("item_feature"),
                  "stamp: config needs \"history_feature\" and \"item_feature\"");
  STAMPConfig c;
  c.history_feature = j.at("history_feature").get<SequenceFeature>();
  c.item_feature = j.at("item_feature").get<SparseFeature>();
  if (j.contains("neg_item_features")) c.neg_item_features = j.at("neg_item_features").get<std::vector<Feature>>();
  c.weight_std = j.value("weight_std", c.weight_std);
  c.emb_std = j.value("emb_std", c.emb_std);
  c.variant = j.value("variant", c.variant);
  return c;
}

namespace detail {
/// nn.Sequential(nn.Tanh(), nn.Linear(D, D)) with the Linear at index 1 (state_dict "<name>.1.*").
class StampTanhLinear : public Module {
 public:
  StampTanhLinear(std::int64_t d, Rng& rng) : linear_(d, d, true, rng) {
    linear_.bias.value().zero_();
    register_module("1", linear_);
  }
  Linear& linear() { return linear_; }

 private:
  Linear linear_;
};
}  // namespace detail

class STAMP : public MatchModel {
 public:
  explicit STAMP(STAMPConfig cfg, Rng& rng = global_rng())
      : cfg_(check(std::move(cfg))), f_s_(dim(), rng), f_t_(dim(), rng) {
    const std::int64_t D = dim();
    // As Torch-RecHub: w_0..w_3 ~ N(0, weight_std), then apply() redraws the Linears and E.
    w_0.set(detail::session_normal_tensor({D, 1}, cfg_.weight_std, rng));
    w_1_t.set(detail::session_normal_tensor({D, D}, cfg_.weight_std, rng));
    w_2_t.set(detail::session_normal_tensor({D, D}, cfg_.weight_std, rng));
    w_3_t.set(detail::session_normal_tensor({D, D}, cfg_.weight_std, rng));
    b_a.set(Tensor::zeros({D}));
    f_s_.linear().weight.value() = detail::session_normal_tensor({D, D}, cfg_.emb_std, rng);
    f_t_.linear().weight.value() = detail::session_normal_tensor({D, D}, cfg_.emb_std, rng);
    item_emb.set(detail::session_normal_tensor({cfg_.history_feature.vocab_size, D}, cfg_.emb_std, rng));
    register_parameter("item_emb.weight", item_emb);
    register_parameter("w_0", w_0);
    register_parameter("w_1_t", w_1_t);
    register_parameter("w_2_t", w_2_t);
    register_parameter("w_3_t", w_3_t);
    register_parameter("b_a", b_a);
    register_module("f_s", f_s_);
    register_module("f_t", f_t_);
  }

  std::string name() const override { return "stamp"; }

  /// Torch-RecHub's run_sbr.py settings: embed 100, weight_std 0.05, emb_std 0.002 (full softmax).
  static STAMPConfig default_config(const FeatureSchema& s, int embed_dim = 100) {
    STAMPConfig c;
    c.history_feature = s.history(embed_dim, "concat");
    c.item_feature = SparseFeature(s.item_col, s.item_vocab, embed_dim);
    c.neg_item_features = {SequenceFeature("neg_items", s.item_vocab, embed_dim, "concat", s.item_col)};
    return c;
  }

  Var user_tower(const Batch& batch) override {
    const Tensor& ids = batch[cfg_.history_feature.name];
    detail::check_i32("stamp", ids, cfg_.history_feature.name.c_str());
    RECHUB_CHECK_SHAPE(ids.ndim() == 2, "stamp: history column '", cfg_.history_feature.name, "' ",
                       ids.shape().str(), " must be [B, L]");
    const std::int64_t B = ids.dim(0), L = ids.dim(1), D = dim();
    const bool paper = cfg_.variant == "paper";
    SeqPack p = seq_pack_ids(ids);
    Var x = embedding_bag(item_emb, ids, BagMode::concat);                                // [B, L, D], 0 at padding
    Var x_t = reshape(embedding_bag(item_emb, last_ids(ids, p).reshape({B, 1}), BagMode::concat), Shape{B, D});
    Var m_s = embedding_bag(item_emb, ids, BagMode::mean);                                // [B, D]
    Var ctx = add(add(matmul(x_t, w_2_t), matmul(m_s, w_3_t)), b_a);                      // [B, D]
    // x_i W_1 = (E W_1)[id_i]: through the projected table when it has fewer rows than the batch
    // has positions (ML-100K at batch 512: 1,683 vs 25,600), the same numbers up to rounding.
    const std::int64_t V = item_emb.value().dim(0);
    Var xw = V < B * L ? embedding_bag(matmul(item_emb.var(), w_1_t.var()), ids, BagMode::concat)
                       : reshape(matmul(reshape(x, Shape{B * L, D}), w_1_t), Shape{B, L, D});
    Var s = sigmoid(add(xw, unsqueeze(ctx, 1)));
    Var q = reshape(matmul(reshape(s, Shape{B * L, D}), w_0), Shape{B, 1, L});
    Tensor mask = pack_mask(p).reshape({B, 1, L});
    Var alpha = paper ? mul(q, constant(detail::session_mask_f32(mask))) : softmax(q, mask);             // [B, 1, L]
    Var m_a = reshape(matmul(alpha, x), Shape{B, D});
    if (!paper) m_a = add(m_a, m_s);
    Linear &ls = f_s_.linear(), &lt = f_t_.linear();
    Var h_s = paper ? tanh(ls.forward(m_a)) : ls.forward(tanh(m_a));
    Var h_t = paper ? tanh(lt.forward(x_t)) : lt.forward(tanh(x_t));
    return mul(h_s, h_t);
  }
  Var item_tower(const Batch& batch) override {
    const Tensor& ids = batch[cfg_.item_feature.name];
    detail::check_i32("stamp", ids, cfg_.item_feature.name.c_str());
    return gather_rows(item_emb, ids.ndim() == 2 ? ids.reshape({ids.dim(0)}) : ids);
  }
  Var neg_item_tower(const Batch& batch) override {
    return detail::session_negatives(item_emb, batch, cfg_.neg_item_features, name());
  }

  const std::vector<Feature>& user_features() const override { return user_feats_; }
  const std::vector<Feature>& item_features() const override { return item_feats_; }
  const STAMPConfig& stamp_config() const { return cfg_; }
  nlohmann::json config() const override {
    nlohmann::json j = stamp_json(cfg_);
    j["model"] = name();
    return j;
  }

  Parameter item_emb, w_0, w_1_t, w_2_t, w_3_t, b_a;

 private:
  static STAMPConfig check(STAMPConfig c) {
    RECHUB_CHECK_AS(ConfigError, c.variant == "torch_rechub" || c.variant == "paper", "stamp: variant '", c.variant,
                    "' is not one of torch_rechub, paper");
    RECHUB_CHECK_AS(ConfigError, c.weight_std >= 0 && c.emb_std >= 0, "stamp: weight_std and emb_std must be >= 0");
    RECHUB_CHECK_AS(ConfigError, c.item_feature.embed_dim == c.history_feature.embed_dim &&
                                     c.item_feature.vocab_size <= c.history_feature.vocab_size,
                    "stamp: item feature '", c.item_feature.name, "' must share the history's table (embed_dim ",
                    c.history_feature.embed_dim, ", vocab_size <= ", c.history_feature.vocab_size, ")");
    return c;
  }
  std::int64_t dim() const { return cfg_.history_feature.embed_dim; }

  STAMPConfig cfg_;
  std::vector<Feature> user_feats_{cfg_.history_feature};
  std::vector<Feature> item_feats_{cfg_.item_feature};
  detail::StampTanhLinear f_s_, f_t_;
};

}  // namespace rechub
