#pragma once
// GRU4Rec as Torch-RecHub builds it (torch_rechub/models/matching/gru4rec.py):
//   h   = GRU(e(history))                          num_layers (2), hidden = history embed_dim, bias=False
//   u   = normalize(MLP_u([e(user features), h]))  the last valid state of the top layer
//   v   = normalize(e(item)),  V_neg = normalize(e(neg_items))   item vectors are the embedding table
//   list-wise: s = <u, [v+, v-_1..v-_k]> / T, softmax cross-entropy with the positive first.
// Parameter names follow its state_dict: embedding.embed_dict.<table>.weight, gru.weight_ih_l0,
// gru.weight_hh_l0, ..., user_mlp.mlp.<i>.*.
//
// Where Torch-RecHub's code departs from the paper (Hidasi et al., ICLR'16, "Session-based
// recommendations with recurrent neural networks") and from its own intent:
//  * Paper: the session is the only input; a GRU over the items, the hidden state scored against
//    an output layer over all items, trained session-parallel on every step with BPR / TOP1 over
//    in-batch negatives. Torch-RecHub: one sample per (history, next item), user profile
//    features concatenated to the last state, an MLP tower, cosine scores over sampled negatives.
//    `paper_config()` gives the closer form: no user features, no MLP, one GRU layer with bias,
//    hidden = embed dim, an input embedding not tied to the output items; train it with in-batch
//    negatives or loss "full".
//  * Its forward() scores with torch.mul(u, v).sum(dim=1) on u [B, 1, D] and v [B, 1 + k, D]:
//    that sums over the CANDIDATES, giving [B, D], and the cross-entropy then treats the D
//    embedding dims as the classes (label 0 = dim 0); the temperature is never applied. This is
//    why its example collapses on ML-100K: the loss falls toward log(1 + 15 e^-4) by pointing
//    every user vector (ReLU output) at dim 0 and every item at dim 0 too, so all users end up
//    with one vector and one ranking (Hit@100 0.02-0.03, half of a random ranking's 0.059). The
//    level the loss stalls at depends on how many users' dim-0 units died (0.31 and 0.49 in two
//    re-runs, 1.386 in the anchor: not "uniform over 1 + 3 candidates", which are not its
//    classes). With the score fixed to sum(dim=2) / T its own code trains like this one (loss
//    6.1 -> 1.8 in 6 epochs). Here the score is the intended <u, v> / T (the trainer's objective).
//  * It feeds the padded history to nn.GRU without packing and takes h_n[-1]: every padding
//    position (the embedding row of id 0, trainable) runs through the recurrence, and with its
//    example's post-padding the state is read after up to L - n padding steps. Here the GRU runs
//    over each row's valid steps only (pre- or post-padding alike). `mask_padding = false` runs it
//    over every position like Torch-RecHub (with the history feature's padding_idx = -1 the
//    padding positions also embed row 0, exactly as there). That is not what broke its example:
//    both forms train here. What limits the example is truncating = 'post': a history longer
//    than 50 keeps its OLDEST 50 items (ML-100K, 10 epochs: Hit@100 0.11 vs 0.23 with 'pre').
//  * `user_params.get('num_layers', 2)` cannot be changed in practice: the same dict is splatted
//    into MLP(**user_params), which rejects the key. Here `num_layers` is a field of its own.
//
// Serving: user_embedding(batch) packs the batch once and runs the GRU on valid steps only; for a
// growing history, history_state() + append_items() + user_embedding_from_state() advance the
// GRU by one item per call instead of re-reading the history.
#include <algorithm>
#include <array>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "rechub/models/feature_schema.hpp"
#include "rechub/models/match_model.hpp"
#include "rechub/nn/gru.hpp"
#include "rechub/ops/norm.hpp"
#include "rechub/ops/shape.hpp"

namespace rechub {

struct GRU4RecConfig {
  std::vector<Feature> user_features;      // sparse user profile features (may be empty)
  std::vector<Feature> history_features;   // exactly one SequenceFeature: the item history
  std::vector<Feature> item_features;      // the positive item: its table gives the item vectors
  std::vector<Feature> neg_item_features;  // sampled negatives [B, K] (concat pooling)
  std::optional<TowerParams> user_params;  // MLP over [user features, h]; none: u = [user features, h]
  std::int64_t hidden_size = 0;            // 0: the history's embed_dim (Torch-RecHub)
  std::int64_t num_layers = 2;
  bool gru_bias = false;                   // Torch-RecHub: nn.GRU(..., bias=False)
  bool mask_padding = true;                // false: padding runs through the GRU (Torch-RecHub)
  bool normalize = true;                   // L2-normalise user and item vectors
  float temperature = 1.0f;
};

inline nlohmann::json gru4rec_json(const GRU4RecConfig& c) {
  nlohmann::json j;
  j["user_features"] = c.user_features;
  j["history_features"] = c.history_features;
  j["item_features"] = c.item_features;
  j["neg_item_features"] = c.neg_item_features;
  j["user_params"] = c.user_params ? nlohmann::json(*c.user_params) : nlohmann::json(nullptr);
  j["hidden_size"] = c.hidden_size;
  j["num_layers"] = c.num_layers;
  j["gru_bias"] = c.gru_bias;
  j["mask_padding"] = c.mask_padding;
  j["normalize"] = c.normalize;
  j["temperature"] = c.temperature;
  return j;
}
inline GRU4RecConfig gru4rec_from_json(const nlohmann::json& j) {
  RECHUB_CHECK_AS(ConfigError, j.is_object() && j.contains("history_features") && j.contains("item_features"),
                  "gru4rec: config needs \"history_features\" and \"item_features\"");
  GRU4RecConfig c;
  if (j.contains("user_features")) c.user_features = j.at("user_features").get<std::vector<Feature>>();
  c.history_features = j.at("history_features").get<std::vector<Feature>>();
  c.item_features = j.at("item_features").get<std::vector<Feature>>();
  if (j.contains("neg_item_features")) c.neg_item_features = j.at("neg_item_features").get<std::vector<Feature>>();
  if (j.contains("user_params") && !j["user_params"].is_null()) c.user_params = j["user_params"].get<TowerParams>();
  c.hidden_size = j.value("hidden_size", c.hidden_size);
  c.num_layers = j.value("num_layers", c.num_layers);
  c.gru_bias = j.value("gru_bias", c.gru_bias);
  c.mask_padding = j.value("mask_padding", c.mask_padding);
  c.normalize = j.value("normalize", c.normalize);
  c.temperature = j.value("temperature", c.temperature);
  return c;
}

class GRU4Rec : public MatchModel {
 public:
  explicit GRU4Rec(GRU4RecConfig cfg)
      : cfg_(check(std::move(cfg))),
        embedding_(all_features(cfg_)),
        gru_(feature_embed_dim(cfg_.history_features[0]), hidden(cfg_), cfg_.num_layers, cfg_.gru_bias) {
    register_module("embedding", embedding_);
    register_module("gru", gru_);
    const std::int64_t in = sum_embed_dims(cfg_.user_features) + hidden(cfg_);
    std::int64_t out = in;
    if (cfg_.user_params) {
      MLP::Options o;
      o.dims = cfg_.user_params->dims;
      o.activation = cfg_.user_params->activation;
      o.dropout = cfg_.user_params->dropout;
      o.batchnorm = cfg_.user_params->batchnorm;
      o.output_layer = false;
      user_mlp_ = std::make_unique<MLP>(in, o);
      register_module("user_mlp", *user_mlp_);
      out = user_mlp_->output_dim();
    }
    const std::int64_t item_dim = sum_embed_dims(cfg_.item_features);
    RECHUB_CHECK_AS(ConfigError, out == item_dim, "gru4rec: the user tower gives ", out,
                    "-d vectors but the item features give ", item_dim, "-d ones");
  }

  std::string name() const override { return "gru4rec"; }

  /// Torch-RecHub's run_ml_gru4rec.py: user profile + history embed 16 (its example uses post
  /// padding), 2-layer GRU without bias, user MLP [128, 64, 16], T = 0.02, 3 list-wise negatives.
  /// `pairwise`: one negative id per row (mode 1 samples) instead of a [B, K] list.
  static GRU4RecConfig default_config(const FeatureSchema& s, int embed_dim = 16, bool pairwise = false) {
    GRU4RecConfig c;
    c.user_features = s.user_sparse(embed_dim);
    c.history_features = {s.history(embed_dim, "concat")};
    c.item_features = {SparseFeature(s.item_col, s.item_vocab, embed_dim)};
    if (pairwise) c.neg_item_features = {SparseFeature("neg_items", s.item_vocab, embed_dim, s.item_col)};
    else c.neg_item_features = {SequenceFeature("neg_items", s.item_vocab, embed_dim, "concat", s.item_col)};
    c.user_params = TowerParams{{128, 64, static_cast<std::int64_t>(embed_dim)}, "relu", 0.0f, true};
    c.num_layers = 2;
    c.gru_bias = false;
    c.temperature = 0.02f;
    return c;
  }
  /// Closer to the paper: the session alone, one GRU layer with bias, u = the last state, an input
  /// embedding of its own (not tied to the item vectors), inner-product scores.
  static GRU4RecConfig paper_config(const FeatureSchema& s, int embed_dim = 64) {
    GRU4RecConfig c;
    c.history_features = {SequenceFeature(s.hist_col(), s.item_vocab, embed_dim, "concat")};
    c.item_features = {SparseFeature(s.item_col, s.item_vocab, embed_dim)};
    c.neg_item_features = {SequenceFeature("neg_items", s.item_vocab, embed_dim, "concat", s.item_col)};
    c.num_layers = 1;
    c.gru_bias = true;
    c.normalize = false;
    c.temperature = 1.0f;
    return c;
  }

  Var user_tower(const Batch& batch) override { return user_from_state(batch, history_last(batch)); }
  Var item_tower(const Batch& batch) override {
    return finish(embedding_.forward(batch, cfg_.item_features, true));
  }
  /// [B, K, D]: each negative feature embedded per position, concatenated over features.
  Var neg_item_tower(const Batch& batch) override {
    RECHUB_CHECK_AS(ConfigError, !cfg_.neg_item_features.empty(), name(),
                    ": no neg_item_features configured (train it with in-batch negatives or loss \"full\")");
    std::array<Var, EmbeddingLayer::kMaxFeatures> parts;
    int n = 0;
    for (const auto& f : cfg_.neg_item_features) {
      Var e = embedding_.embed(batch, f);
      if (e.ndim() == 2) e = unsqueeze(e, 1);
      parts[static_cast<std::size_t>(n++)] = e;
    }
    return finish(n == 1 ? parts[0] : concat(parts.data(), n, 2));
  }

  /// The GRU state of every layer after each row's history (no tape): [num_layers, B, H].
  Tensor history_state(const Batch& batch) {
    RECHUB_CHECK_AS(ConfigError, cfg_.mask_padding,
                    "gru4rec: history_state needs mask_padding = true (with padding in the recurrence, "
                    "appending an item is not the same as a longer history)");
    NoGrad ng;
    Tensor s = gru_.final_states(packed_history(batch), pack_);
    end_step();
    return s;
  }
  /// Appends one item per row (ids int32 [B]) to a history_state(); padding id 0 leaves a row as is.
  void append_items(Tensor& state, const Tensor& item_ids) {
    detail::check_i32("gru4rec: append_items", item_ids, "item_ids");
    const std::int64_t B = item_ids.numel(), H = gru_.hidden_size(), D = gru_.input_size();
    const Parameter& table = embedding_.table(feature_name(cfg_.history_features[0]));
    Tensor x = Tensor::empty({B, D});
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int32_t id = item_ids.i32()[b];
      RECHUB_CHECK_AS(DataError, id >= 0 && id < table.shape()[0], "gru4rec: append_items: item id ", id,
                      " outside the table of ", table.shape()[0], " rows");
      std::copy(table.value().f32() + std::int64_t(id) * D, table.value().f32() + std::int64_t(id + 1) * D,
                x.f32() + b * D);
    }
    Tensor before = state.clone();
    gru_.step(state, x);
    for (std::int64_t b = 0; b < B; ++b)  // padding appends nothing
      if (item_ids.i32()[b] == padding_id())
        for (std::int64_t k = 0; k < gru_.num_layers(); ++k)
          std::copy(before.f32() + (k * B + b) * H, before.f32() + (k * B + b + 1) * H, state.f32() + (k * B + b) * H);
  }
  /// User vectors [B, D] from the user features of `batch` and a GRU `state` [num_layers, B, H].
  Tensor user_embedding_from_state(const Batch& batch, const Tensor& state) {
    RECHUB_CHECK_SHAPE(state.ndim() == 3 && state.dim(0) == gru_.num_layers() && state.dim(2) == gru_.hidden_size(),
                       "gru4rec: state ", state.shape().str(), " is not [", gru_.num_layers(), ", B, ",
                       gru_.hidden_size(), "]");
    const std::int64_t B = state.dim(1);
    Tensor top = state.reshape({state.dim(0) * B, state.dim(2)}).slice((state.dim(0) - 1) * B, state.dim(0) * B);
    const bool was_training = is_training();
    eval();
    Tensor out;
    {
      NoGrad ng;
      out = user_from_state(batch, constant(top)).value().clone();
    }
    end_step();
    train(was_training);
    return out;
  }

  float temperature() const override { return cfg_.temperature; }
  const std::vector<Feature>& user_features() const override { return user_inputs_; }
  const std::vector<Feature>& item_features() const override { return cfg_.item_features; }
  const GRU4RecConfig& gru4rec_config() const { return cfg_; }
  EmbeddingLayer& embedding() { return embedding_; }
  GRU& gru() { return gru_; }
  nlohmann::json config() const override {
    nlohmann::json j = gru4rec_json(cfg_);
    j["model"] = name();
    return j;
  }

 private:
  static GRU4RecConfig check(GRU4RecConfig c) {
    RECHUB_CHECK_AS(ConfigError, c.history_features.size() == 1 &&
                                     std::holds_alternative<SequenceFeature>(c.history_features[0]),
                    "gru4rec: history_features must be exactly one sequence feature, got ", c.history_features.size(),
                    " features");
    RECHUB_CHECK_AS(ConfigError, !c.item_features.empty(), "gru4rec: item_features must not be empty");
    RECHUB_CHECK_AS(ConfigError, c.num_layers >= 1 && c.hidden_size >= 0, "gru4rec: num_layers must be >= 1 and ",
                    "hidden_size >= 0, got ", c.num_layers, " and ", c.hidden_size);
    RECHUB_CHECK_AS(ConfigError, c.temperature > 0, "gru4rec: temperature must be > 0, got ", c.temperature);
    for (const auto& f : c.user_features)
      RECHUB_CHECK_AS(ConfigError, !std::holds_alternative<SequenceFeature>(f) ||
                                       std::get<SequenceFeature>(f).pooling != "concat",
                      "gru4rec: user feature '", feature_name(f), "' must be pooled (not concat)");
    return c;
  }
  static std::int64_t hidden(const GRU4RecConfig& c) {
    return c.hidden_size > 0 ? c.hidden_size : feature_embed_dim(c.history_features[0]);
  }
  static std::vector<Feature> all_features(const GRU4RecConfig& c) {
    std::vector<Feature> all = c.user_features;
    all.insert(all.end(), c.item_features.begin(), c.item_features.end());
    all.insert(all.end(), c.history_features.begin(), c.history_features.end());
    all.insert(all.end(), c.neg_item_features.begin(), c.neg_item_features.end());
    return all;
  }
  std::int32_t padding_id() const { return std::get<SequenceFeature>(cfg_.history_features[0]).padding_idx.value_or(0); }

  /// Packs the batch's history (into pack_) and embeds its valid steps: [T, D].
  Var packed_history(const Batch& batch) {
    const auto& f = std::get<SequenceFeature>(cfg_.history_features[0]);
    const Tensor& ids = batch[f.name];
    detail::check_i32("gru4rec", ids, f.name.c_str());
    RECHUB_CHECK_SHAPE(ids.ndim() == 2, "gru4rec: history column '", f.name, "' ", ids.shape().str(),
                       " must be [B, L]");
    // The run of a row is first to last non-padding id; rechub's ids reserve 0 for padding even
    // when the feature embeds id 0 (padding_idx = -1).
    const std::int32_t pad = padding_id() >= 0 ? padding_id() : 0;
    pack_ = cfg_.mask_padding ? seq_pack_ids(ids, pad) : seq_pack_full(ids.dim(0), ids.dim(1));
    Var e = embedding_bag(embedding_.table(f.name).var(), pack_ids(ids, pack_), BagMode::concat, padding_id());
    return reshape(e, Shape{pack_.T, e.dim(2)});
  }
  Var history_last(const Batch& batch) {
    Var xp = packed_history(batch);
    return packed_last(gru_.forward_packed(xp, pack_), pack_);
  }
  Var user_from_state(const Batch& batch, const Var& h) {
    Var x = h;
    if (!cfg_.user_features.empty()) x = concat({embedding_.forward(batch, cfg_.user_features, true), h}, 1);
    if (user_mlp_) x = user_mlp_->forward(x);
    return cfg_.normalize ? l2_normalize(x) : x;
  }
  Var finish(const Var& x) const { return cfg_.normalize ? l2_normalize(x) : x; }

  GRU4RecConfig cfg_;
  std::vector<Feature> user_inputs_ = [this] {
    std::vector<Feature> f = cfg_.user_features;
    f.insert(f.end(), cfg_.history_features.begin(), cfg_.history_features.end());
    return f;
  }();
  EmbeddingLayer embedding_;
  GRU gru_;
  std::unique_ptr<MLP> user_mlp_;
  SeqPack pack_;  // the current batch's pack (arena-backed: valid until end_step)
};

}  // namespace rechub
