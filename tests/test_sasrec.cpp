// SASRec: Torch-RecHub parity, shapes and configs, padding and causality, per-position samples,
// per-position losses (gradient checks), and learning on synthetic data.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/data/position_samples.hpp"
#include "rechub/data/samples.hpp"
#include "rechub/data/synthetic.hpp"
#include "rechub/eval/evaluate.hpp"
#include "rechub/eval/popularity.hpp"
#include "rechub/loss/position.hpp"
#include "rechub/models/registry.hpp"
#include "rechub/models/sasrec.hpp"
#include "rechub/train/match_trainer.hpp"

using namespace rechub;
using testing::check_gradients;
using testing::random_tensor;

namespace {
Tensor ints(const Shape& s, std::vector<std::int32_t> v) {
  REQUIRE(static_cast<std::int64_t>(v.size()) == s.numel());
  return Tensor::from_vector(s, v.data());
}
std::vector<std::int32_t> values(const Tensor& t) { return std::vector<std::int32_t>(t.i32(), t.i32() + t.numel()); }

/// A small SASRec over items 1..vocab-1 with item column "seq" and history "hist_seq".
SASRecConfig tiny_config(std::int64_t vocab, int dim, int max_len, int blocks, int heads, float dropout) {
  SASRecConfig c;
  c.item_feature = SparseFeature("seq", vocab, dim);
  c.history_feature = SequenceFeature("hist_seq", vocab, dim, "concat", "seq");
  c.max_len = max_len;
  c.num_blocks = blocks;
  c.num_heads = heads;
  c.dropout = dropout;
  return c;
}

// Torch-RecHub 0.8.0 SASRec(features=[seq, pos, neg] (vocab 17, embed 8, concat), max_len=5,
// dropout_rate=0.3, num_blocks=2, num_heads=2) in eval mode, every state_dict entry `name` set to
// 0.5 sin(0.013 h(name) + 0.7 i) (h below, i the flat index); forward on the ids of the test
// below. Its state_dict keys, in order:
const char* const kTrhNames[] = {
    "item_emb.embed_dict.seq.weight", "position_emb.weight", "attention_layernorms.0.weight",
    "attention_layernorms.0.bias", "attention_layernorms.1.weight", "attention_layernorms.1.bias",
    "attention_layers.0.in_proj_weight", "attention_layers.0.in_proj_bias", "attention_layers.0.out_proj.weight",
    "attention_layers.0.out_proj.bias", "attention_layers.1.in_proj_weight", "attention_layers.1.in_proj_bias",
    "attention_layers.1.out_proj.weight", "attention_layers.1.out_proj.bias", "forward_layernorms.0.weight",
    "forward_layernorms.0.bias", "forward_layernorms.1.weight", "forward_layernorms.1.bias",
    "forward_layers.0.conv1.weight", "forward_layers.0.conv1.bias", "forward_layers.0.conv2.weight",
    "forward_layers.0.conv2.bias", "forward_layers.1.conv1.weight", "forward_layers.1.conv1.bias",
    "forward_layers.1.conv2.weight", "forward_layers.1.conv2.bias", "last_layernorm.weight", "last_layernorm.bias"};
const float kTrhPosLogits[] = {-6.93061352e-01f, -6.93061352e-01f, 7.63839662e-01f, -1.07822347e+00f, -1.17807698e+00f, -6.33187115e-01f, -1.22749293e+00f, -6.44817591e-01f, -6.93061352e-01f, -6.93061352e-01f, 1.24018383e+00f, 9.10488605e-01f, 1.60177216e-01f, -6.65484548e-01f, -1.19194245e+00f};
const float kTrhNegLogits[] = {-6.93061352e-01f, -6.93061352e-01f, 4.09755737e-01f, 1.04590058e+00f, 1.29582465e+00f, 1.00891376e+00f, -4.94671762e-01f, -1.11102653e+00f, -6.93061352e-01f, -6.93061352e-01f, -1.21656775e+00f, -1.10910630e+00f, -4.92080599e-01f, 3.50861788e-01f, 1.03648448e+00f};

std::int64_t name_hash(const std::string& n) {
  std::int64_t s = 0;
  for (unsigned char ch : n) s = (s * 131 + ch) % 1000003;
  return s;
}

/// <H[b, t], E[ids[b, t]]> for every position.
std::vector<float> logits(const Tensor& H, const Tensor& E, const Tensor& ids) {
  const std::int64_t D = H.dim(2);
  std::vector<float> out;
  for (std::int64_t r = 0; r < ids.numel(); ++r) {
    double s = 0;
    for (std::int64_t d = 0; d < D; ++d) s += double(H.f32()[r * D + d]) * E.f32()[ids.i32()[r] * D + d];
    out.push_back(float(s));
  }
  return out;
}
}  // namespace

TEST_CASE("SASRec reproduces Torch-RecHub's forward (pos/neg logits) and state_dict names") {
  SASRec m(tiny_config(17, 8, 5, 2, 2, 0.3f));
  auto params = m.named_parameters();
  REQUIRE(params.size() == sizeof(kTrhNames) / sizeof(kTrhNames[0]));
  for (std::size_t p = 0; p < params.size(); ++p) {
    CHECK(params[p].first == kTrhNames[p]);
    Tensor& v = params[p].second->value();
    const double s = double(name_hash(params[p].first));
    for (std::int64_t i = 0; i < v.numel(); ++i) v.f32()[i] = float(0.5 * std::sin(0.013 * s + 0.7 * double(i)));
  }
  CHECK(m.named_parameters()[18].second->shape() == Shape{8, 8, 1});  // Conv1d weight layout
  m.eval();
  Batch b;
  // Pre-padded, post-padded and full rows: Torch-RecHub attends to padded keys (no key mask).
  b.set("hist_seq", ints({3, 5}, {0, 0, 3, 7, 2, 4, 9, 1, 0, 0, 5, 6, 7, 8, 9}));
  const Tensor pos = ints({3, 5}, {0, 0, 7, 2, 11, 9, 1, 12, 0, 0, 6, 7, 8, 9, 10});
  const Tensor neg = ints({3, 5}, {0, 0, 13, 14, 15, 16, 3, 2, 0, 0, 1, 2, 3, 4, 5});
  Var H = m.position_states(b);
  CHECK(H.shape() == Shape{3, 5, 8});
  const Tensor& E = m.embedding().table("seq").value();
  auto pl = logits(H.value(), E, pos), nl = logits(H.value(), E, neg);
  for (int i = 0; i < 15; ++i) {
    CAPTURE(i);
    CHECK(pl[static_cast<std::size_t>(i)] == doctest::Approx(kTrhPosLogits[i]).epsilon(2e-5));
    CHECK(nl[static_cast<std::size_t>(i)] == doctest::Approx(kTrhNegLogits[i]).epsilon(2e-5));
  }
  // The user vector is the state at the last valid position: column 4 (pre), 2 (post), 4 (full).
  Var u = m.user_tower(b);
  const std::int64_t last[] = {4, 2, 4};
  for (std::int64_t r = 0; r < 3; ++r)
    for (std::int64_t d = 0; d < 8; ++d) CHECK(u.value().f32()[r * 8 + d] == H.value().f32()[(r * 5 + last[r]) * 8 + d]);
  end_step();
}

TEST_CASE("SASRec builds from JSON through the registry; tower shapes; config errors") {
  FeatureSchema s;
  s.item_vocab = 30;
  s.user_vocab = 10;
  auto m = make_model("sasrec", default_model_config("sasrec", s, 16));
  CHECK(m->name() == "sasrec");
  nlohmann::json cfg = m->config();
  CHECK(cfg["model"] == "sasrec");
  CHECK(cfg["max_len"] == 50);
  CHECK(cfg["num_blocks"] == 2);
  CHECK(cfg["num_heads"] == 1);
  CHECK(cfg["dropout"].get<float>() == 0.5f);
  CHECK(cfg["residual"] == "torch_rechub");
  auto again = make_model("sasrec", cfg);
  CHECK(again->num_parameters() == m->num_parameters());
  CHECK(again->config() == cfg);
  // 30 x 16 table + 50 x 16 positions + 2 blocks x (2 LN + MHA 4 x 16 x 16 + 4 x 16 + FFN 2 x (16 x 16 + 16)) + last LN
  CHECK(m->num_parameters() == 30 * 16 + 50 * 16 + 2 * (2 * 32 + 4 * 256 + 64 + 2 * 272) + 32);

  Batch b;
  b.set("hist_movie_id", ints({2, 4}, {0, 0, 3, 5, 1, 2, 3, 4}));
  b.set("movie_id", ints({2}, {7, 8}));
  b.set("neg_items", ints({2, 3}, {1, 2, 3, 4, 5, 6}));
  CHECK(m->position_states(b).shape() == Shape{2, 4, 16});
  CHECK(m->user_tower(b).shape() == Shape{2, 16});
  CHECK(m->item_tower(b).shape() == Shape{2, 16});
  CHECK(m->neg_item_tower(b).shape() == Shape{2, 3, 16});
  b.set("neg_items", ints({2}, {1, 2}));
  CHECK(m->neg_item_tower(b).shape() == Shape{2, 1, 16});
  // Serving: eval mode (no dropout, dropout is 0.5 here), no tape, the training mode restored.
  Tensor emb = m->user_embedding(b);
  CHECK(emb.shape() == Shape{2, 16});
  CHECK(m->is_training());
  Tensor emb2 = m->user_embedding(b);
  for (std::int64_t i = 0; i < emb.numel(); ++i) CHECK(emb.f32()[i] == emb2.f32()[i]);
  Batch one;  // one request: the newest item is the last column
  one.set("hist_movie_id", ints({1, 4}, {1, 2, 3, 4}));
  Tensor single = m->user_embedding(one);
  for (std::int64_t d = 0; d < 16; ++d) CHECK(single.f32()[d] == doctest::Approx(emb.f32()[16 + d]).epsilon(1e-6));
  end_step();

  SASRecConfig c = SASRec::default_config(s, 16, 3);
  SASRec short_model(c);
  CHECK_THROWS_WITH_AS(short_model.position_states(b),
                       "SASRec: history 'hist_movie_id' [2, 4] is longer than max_len 3", ConfigError);
  c.num_heads = 3;
  CHECK_THROWS_WITH_AS(SASRec{c}, "SASRec: embed_dim 16 is not a multiple of num_heads 3", ConfigError);
  c = SASRec::default_config(s, 16);
  c.history_feature.shared_with = "";
  CHECK_THROWS_WITH_AS(SASRec{c}, "SASRec: history feature 'hist_movie_id' must be shared_with the item feature "
                                  "'movie_id', got ''",
                       ConfigError);
  nlohmann::json bad = cfg;
  bad["residual"] = "post_norm";
  CHECK_THROWS_WITH_AS(make_model("sasrec", bad), "sasrec: residual 'post_norm' (expects 'torch_rechub' or 'paper')",
                       ConfigError);
  end_step();
}

TEST_CASE("SASRec: padding ids are inert, states are causal, trailing padding changes nothing") {
  for (bool key_mask : {false, true})
    for (bool paper : {false, true}) {
      CAPTURE(key_mask);
      CAPTURE(paper);
      manual_seed(5);
      SASRecConfig c = tiny_config(12, 8, 8, 2, 2, 0.0f);
      c.key_padding_mask = key_mask;
      c.paper_residual = paper;
      c.item_feature.initializer = RandomNormal(0.0, 0.5);
      SASRec m(c);
      m.eval();
      auto states = [&](std::vector<std::int32_t> ids, std::int64_t L) {
        Batch b;
        b.set("hist_seq", ints({1, L}, std::move(ids)));
        Tensor h = m.position_states(b).value().clone();
        end_step();
        return h;
      };
      const Tensor base = states({0, 0, 3, 5, 7, 2}, 6);
      // The padding row of the table never matters (padded positions are zeroed).
      Tensor& table = m.embedding().table("seq").value();
      for (std::int64_t d = 0; d < 8; ++d) table.f32()[d] += 10.0f;
      const Tensor moved = states({0, 0, 3, 5, 7, 2}, 6);
      for (std::int64_t i = 0; i < base.numel(); ++i) CHECK(base.f32()[i] == moved.f32()[i]);
      // Causal: changing the item at position 4 leaves positions 0..3 untouched.
      const Tensor later = states({0, 0, 3, 5, 9, 2}, 6);
      for (std::int64_t i = 0; i < 4 * 8; ++i) CHECK(base.f32()[i] == later.f32()[i]);
      CHECK(base.f32()[4 * 8] != later.f32()[4 * 8]);
      // Post-padded: more trailing padding leaves the valid positions' states unchanged.
      const Tensor p4 = states({3, 5, 7, 0}, 4), p8 = states({3, 5, 7, 0, 0, 0, 0, 0}, 8);
      for (std::int64_t i = 0; i < 3 * 8; ++i) CHECK(p4.f32()[i] == doctest::Approx(p8.f32()[i]).epsilon(1e-6));
    }
  // With the key mask, pre-padded keys carry no weight: a query's state does not change when the
  // padded positions' projections would (their inputs are zero either way), but it does differ
  // from Torch-RecHub's unmasked attention.
  manual_seed(6);
  SASRecConfig c = tiny_config(12, 8, 6, 1, 1, 0.0f);
  c.item_feature.initializer = RandomNormal(0.0, 0.5);
  SASRec plain(c);
  c.key_padding_mask = true;
  manual_seed(6);
  SASRec masked(c);
  plain.eval();
  masked.eval();
  Batch b;
  b.set("hist_seq", ints({1, 6}, {0, 0, 0, 4, 6, 1}));
  Tensor hp = plain.position_states(b).value().clone(), hm = masked.position_states(b).value().clone();
  CHECK(hp.f32()[5 * 8] != hm.f32()[5 * 8]);
  end_step();
}

TEST_CASE("SASRec: skipping padding gives the padded computation's states and gradients") {
  Batch b;
  // Pre-padded, post-padded, middle padding, empty and full rows.
  b.set("hist_seq", ints({5, 6}, {0, 0, 3, 5, 7, 2, 4, 9, 1, 0, 0, 0, 0, 5, 0, 6, 7, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6}));
  b.set("pos_seq", ints({5, 6}, {0, 0, 5, 7, 2, 8, 9, 1, 3, 0, 0, 0, 0, 6, 0, 7, 1, 2, 0, 0, 0, 0, 0, 0, 2, 3, 4, 5, 6, 7}));
  Dataset items;
  items.set("seq", ints({11}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  for (bool key_mask : {false, true})
    for (bool paper : {false, true}) {
      CAPTURE(key_mask);
      CAPTURE(paper);
      std::vector<std::vector<Tensor>> grads;
      std::vector<Tensor> states, users;
      for (bool skip : {false, true}) {
        manual_seed(8);
        SASRecConfig c = tiny_config(12, 8, 6, 2, 2, 0.0f);
        c.item_feature.initializer = RandomNormal(0.0, 0.5);
        c.key_padding_mask = key_mask;
        c.paper_residual = paper;
        c.skip_padding = skip;
        SASRec m(c);
        states.push_back(m.position_states(b).value().clone());
        users.push_back(m.user_tower(b).value().clone());
        end_step();
        Objective o;
        o.loss = "position_full";
        o.item_col = "seq";
        o.all_items = &items;
        Rng rng(1);
        m.zero_grad();
        backward(match_loss(m, b, o, rng));
        end_step();
        std::vector<Tensor> g;
        for (auto& [n, p] : m.named_parameters()) g.push_back(p->grad().clone());
        grads.push_back(g);
      }
      for (std::int64_t i = 0; i < states[0].numel(); ++i)
        CHECK(states[1].f32()[i] == doctest::Approx(states[0].f32()[i]).epsilon(1e-5));
      for (std::int64_t i = 0; i < users[0].numel(); ++i)
        CHECK(users[1].f32()[i] == doctest::Approx(users[0].f32()[i]).epsilon(1e-5));
      for (std::size_t p = 0; p < grads[0].size(); ++p)
        for (std::int64_t i = 0; i < grads[0][p].numel(); ++i)
          CHECK(grads[1][p].f32()[i] == doctest::Approx(grads[0][p].f32()[i]).epsilon(1e-4).scale(1e-3));
    }
}

namespace {
Interactions tiny_interactions() {
  // user 1: one item; user 2: two; user 3: three; user 4: seven (rows out of time order);
  // user 5: three (items 8, 9 only occur here).
  Interactions d;
  auto add = [&](std::int32_t u, std::int32_t i, std::int64_t t) {
    d.user.push_back(u);
    d.item.push_back(i);
    d.timestamp.push_back(t);
  };
  add(1, 1, 10);
  add(2, 2, 10);
  add(2, 3, 11);
  add(3, 4, 10);
  add(3, 5, 11);
  add(3, 6, 12);
  const std::int32_t order[] = {3, 1, 7, 2, 6, 5, 4};
  for (std::int32_t i : order) add(4, i, 100 + i);
  add(5, 8, 1);
  add(5, 9, 2);
  add(5, 1, 3);
  return d;
}
}  // namespace

TEST_CASE("position samples: columns, padding, truncation, windows, negatives") {
  const Interactions d = tiny_interactions();
  PositionSampleOptions o;
  o.seq_max_len = 3;
  o.neg_ratio = 2;
  PositionData p = generate_position_samples(d, o);
  CHECK(p.n_rows == 3);
  CHECK(p.n_users == 3);
  CHECK(p.n_short_users == 2);
  CHECK(p.n_positions == 1 + 3 + 1);
  CHECK(p.n_dropped_positions == 2);
  CHECK(values(p.train["user_id"]) == std::vector<std::int32_t>{3, 4, 5});
  CHECK(values(p.train["hist_movie_id"]) == std::vector<std::int32_t>{0, 0, 4, 3, 4, 5, 0, 0, 8});
  CHECK(values(p.train["pos_movie_id"]) == std::vector<std::int32_t>{0, 0, 5, 4, 5, 6, 0, 0, 9});
  CHECK(values(p.train["histlen_movie_id"]) == std::vector<std::int32_t>{1, 3, 1});
  const Tensor& neg = p.train["neg_movie_id"];
  CHECK(neg.shape() == Shape{3, 3, 2});
  const Tensor& hist = p.train["hist_movie_id"];
  for (std::int64_t r = 0; r < 9; ++r)
    for (std::int64_t j = 0; j < 2; ++j) {
      const std::int32_t v = neg.i32()[r * 2 + j];
      if (hist.i32()[r] == 0) CHECK(v == 0);
      else CHECK((v >= 1 && v <= 9));
    }
  // The held-out test item (each user's last) is in no training row.
  const auto targets = values(p.train["pos_movie_id"]);
  CHECK(std::count(targets.begin(), targets.end(), 7) == 0);

  // Same pairs as generate_seq_feature_match's training samples (long enough L, no truncation).
  o.seq_max_len = 10;
  PositionData full = generate_position_samples(d, o);
  MatchSampleOptions mo;
  mo.mode = 1;
  mo.seq_max_len = 10;
  mo.shuffle = false;
  MatchData md = generate_seq_feature_match(d, mo);
  CHECK(full.n_positions == md.n_train_samples);
  std::set<std::vector<std::int32_t>> pairs_pos, pairs_md;  // (history..., target)
  for (std::int64_t r = 0; r < full.n_rows; ++r) {
    const std::int32_t *h = full.train["hist_movie_id"].i32() + r * 10, *t = full.train["pos_movie_id"].i32() + r * 10;
    std::vector<std::int32_t> prefix;
    for (int c = 0; c < 10; ++c) {
      if (h[c] == 0) continue;
      prefix.push_back(h[c]);
      std::vector<std::int32_t> key = prefix;
      key.push_back(t[c]);
      pairs_pos.insert(key);
    }
  }
  for (std::int64_t r = 0; r < md.train.rows(); ++r) {
    std::vector<std::int32_t> key;
    for (int c = 0; c < 10; ++c)
      if (md.train["hist_movie_id"].i32()[r * 10 + c]) key.push_back(md.train["hist_movie_id"].i32()[r * 10 + c]);
    key.push_back(md.train["movie_id"].i32()[r]);
    pairs_md.insert(key);
  }
  CHECK(pairs_pos == pairs_md);

  // Windows: user 4's five positions become an older row [_, 1, 2] and the newest [3, 4, 5].
  o.seq_max_len = 3;
  o.split_windows = true;
  PositionData w = generate_position_samples(d, o);
  CHECK(w.n_rows == 4);
  CHECK(w.n_positions == 1 + 5 + 1);
  CHECK(w.n_dropped_positions == 0);
  CHECK(values(w.train["hist_movie_id"]) == std::vector<std::int32_t>{0, 0, 4, 0, 1, 2, 3, 4, 5, 0, 0, 8});
  CHECK(values(w.train["pos_movie_id"]) == std::vector<std::int32_t>{0, 0, 5, 0, 2, 3, 4, 5, 6, 0, 0, 9});
  // Post padding.
  o.split_windows = false;
  o.padding = PadSide::post;
  PositionData post = generate_position_samples(d, o);
  CHECK(values(post.train["hist_movie_id"]) == std::vector<std::int32_t>{4, 0, 0, 3, 4, 5, 8, 0, 0});
  CHECK(values(post.train["pos_movie_id"]) == std::vector<std::int32_t>{5, 0, 0, 4, 5, 6, 9, 0, 0});
  CHECK(post.train["neg_movie_id"].i32()[1 * 2] == 0);  // row 0, position 1 is padding
  // Deterministic per seed; exclude_seen keeps user 4 (items 1..7) on items 8, 9.
  o.padding = PadSide::pre;
  CHECK(values(generate_position_samples(d, o).train["neg_movie_id"]) == values(p.train["neg_movie_id"]));
  o.seed = 7;
  CHECK(values(generate_position_samples(d, o).train["neg_movie_id"]) != values(p.train["neg_movie_id"]));
  o.exclude_seen = true;
  o.neg_ratio = 4;
  PositionData ex = generate_position_samples(d, o);
  for (std::int64_t j = 0; j < 3 * 4; ++j) {
    const std::int32_t v = ex.train["neg_movie_id"].i32()[1 * 12 + j];
    CHECK((v == 8 || v == 9));
  }
  o.neg_ratio = 0;
  CHECK_FALSE(generate_position_samples(d, o).train.has("neg_movie_id"));
  o.seq_max_len = 0;
  CHECK_THROWS_WITH_AS(generate_position_samples(d, o), "generate_position_samples: seq_max_len 0 must be >= 1",
                       ConfigError);
}

TEST_CASE("position losses: values and gradients") {
  Rng rng(21);
  const std::int64_t N = 5, M = 7, D = 4, k = 3;
  Tensor h = random_tensor({N, D}, rng), V = random_tensor({M, D}, rng);
  const Tensor pos = ints({N}, {0, 3, 6, 2, 3});
  const Tensor neg = ints({N, k}, {1, 2, 4, 3, 3, 5, 0, 1, 2, 6, 6, 6, 4, 5, 0});  // row 1 hits its positive
  auto dot = [&](std::int64_t i, std::int32_t r) {
    double s = 0;
    for (std::int64_t d = 0; d < D; ++d) s += double(h.f32()[i * D + d]) * V.f32()[r * D + d];
    return s;
  };
  auto softplus = [](double x) { return std::log1p(std::exp(x)); };
  double bce = 0, bpr = 0, sampled = 0, full = 0;
  const float T = 0.5f;
  for (std::int64_t i = 0; i < N; ++i) {
    const double sp = dot(i, pos.i32()[i]);
    bce += softplus(-sp) / N;
    double z = std::exp(sp / T), zall = 0;
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int32_t r = neg.i32()[i * k + j];
      const double sn = dot(i, r);
      bce += softplus(sn) / double(N * k);
      bpr += softplus(sn - sp) / double(N * k);
      if (r != pos.i32()[i]) z += std::exp(sn / T);
    }
    sampled += (std::log(z) - sp / T) / N;
    for (std::int32_t r = 0; r < M; ++r) zall += std::exp(dot(i, r) / T);
    full += (std::log(zall) - sp / T) / N;
  }
  Var vh = constant(h), vv = constant(V);
  CHECK(position_bce(vh, vv, pos, neg).item() == doctest::Approx(bce).epsilon(1e-5));
  CHECK(position_bpr(vh, vv, pos, neg).item() == doctest::Approx(bpr).epsilon(1e-5));
  CHECK(position_sampled_softmax(vh, vv, pos, neg, T).item() == doctest::Approx(sampled).epsilon(1e-5));
  CHECK(position_full_softmax(vh, vv, pos, T).item() == doctest::Approx(full).epsilon(1e-5));
  end_step();

  const std::vector<Tensor> in{random_tensor({N, D}, rng), random_tensor({M, D}, rng)};
  check_gradients([&](const std::vector<Var>& v) { return position_bce(v[0], v[1], pos, neg); }, in);
  check_gradients([&](const std::vector<Var>& v) { return position_bpr(v[0], v[1], pos, neg); }, in);
  check_gradients([&](const std::vector<Var>& v) { return position_sampled_softmax(v[0], v[1], pos, neg, T); }, in);
  check_gradients([&](const std::vector<Var>& v) { return position_sampled_softmax(v[0], v[1], pos, neg, 1.0f, false); },
                  in);
  check_gradients([&](const std::vector<Var>& v) { return position_full_softmax(v[0], v[1], pos, T); }, in);
  // More negatives than fit on the stack (k = 300: scores kept in the gradient buffer).
  Tensor many = Tensor::empty({2, 300}, DType::i32);
  for (std::int64_t i = 0; i < many.numel(); ++i) many.i32()[i] = static_cast<std::int32_t>(i % M);
  const Tensor pos2 = ints({2}, {1, 4});
  const std::vector<Tensor> in2{random_tensor({2, D}, rng), random_tensor({M, D}, rng)};
  Tensor loss_big = position_sampled_softmax(constant(in2[0]), constant(in2[1]), pos2, many).value().clone();
  end_step();
  {
    NoGrad ng;  // the loss-only path recomputes scores: same value
    CHECK(position_sampled_softmax(constant(in2[0]), constant(in2[1]), pos2, many).item() ==
          doctest::Approx(loss_big.f32()[0]).epsilon(1e-6));
    end_step();
  }
  check_gradients([&](const std::vector<Var>& v) { return position_sampled_softmax(v[0], v[1], pos2, many); }, in2);
  // The full softmax in several chunks (N > chunk) equals one chunk.
  CHECK(detail::full_softmax_chunk(1 << 20) == 16);
  Tensor hb = random_tensor({40, 3}, rng), Vb = random_tensor({1 << 12, 3}, rng);
  Tensor tb = Tensor::empty({40}, DType::i32);
  for (int i = 0; i < 40; ++i) tb.i32()[i] = i * 97;
  double want = 0;
  for (std::int64_t i = 0; i < 40; ++i) {
    double z = 0;
    for (std::int64_t r = 0; r < (1 << 12); ++r) {
      double s = 0;
      for (int d = 0; d < 3; ++d) s += double(hb.f32()[i * 3 + d]) * Vb.f32()[r * 3 + d];
      z += std::exp(s);
      if (r == tb.i32()[i]) want -= s / 40;
    }
    want += std::log(z) / 40;
  }
  CHECK(position_full_softmax(constant(hb), constant(Vb), tb).item() == doctest::Approx(want).epsilon(1e-5));
  end_step();

  // valid_positions and errors.
  vh = constant(h);
  vv = constant(V);
  Tensor idx = valid_positions(ints({2, 3}, {0, 4, 5, 0, 0, 1}));
  CHECK(values(idx) == std::vector<std::int32_t>{1, 2, 5});
  CHECK_THROWS_WITH_AS(position_bce(vh, vv, ints({N}, {0, 1, 2, 3, 9}), neg),
                       "position_bce: id 9 at position 4 is out of range for table [7, 4]", DataError);
  CHECK_THROWS_WITH_AS(position_bpr(vh, vv, pos, ints({N}, {1, 1, 1, 1, 1})),
                       "position_bpr: neg [5] must be [5, k] with k >= 1", ShapeError);
  end_step();
}

TEST_CASE("SASRec: whole-model gradients of the per-position objectives match finite differences") {
  // Tiny model, dropout 0, every parameter element checked through match_loss.
  manual_seed(13);
  SASRecConfig c = tiny_config(6, 4, 4, 1, 2, 0.0f);
  c.item_feature.initializer = RandomNormal(0.0, 0.5);
  for (std::string loss : {"position_full", "position_sampled", "position_bpr", "position_bce"}) {
    CAPTURE(loss);
    SASRec m(c);
    Batch b;
    b.set("hist_seq", ints({2, 4}, {0, 1, 2, 3, 4, 5, 1, 0}));
    b.set("pos_seq", ints({2, 4}, {0, 2, 3, 4, 5, 1, 2, 0}));
    b.set("neg_seq", ints({2, 4, 2}, {0, 0, 5, 1, 4, 4, 2, 3, 1, 3, 2, 4, 3, 5, 0, 0}));
    Dataset items;
    items.set("seq", ints({5}, {1, 2, 3, 4, 5}));
    Objective o;
    o.loss = loss;
    o.item_col = "seq";
    o.all_items = &items;
    o.temperature = 0.7f;
    Rng rng(1);
    auto eval_loss = [&] {
      NoGrad ng;
      const double l = match_loss(m, b, o, rng).item();
      end_step();
      return l;
    };
    m.zero_grad();
    backward(match_loss(m, b, o, rng));
    end_step();
    // Central differences at two step sizes: a ReLU kink within one step spoils one of them.
    auto numeric = [&](Tensor& x, std::int64_t i, double rel) {
      const float orig = x.f32()[i];
      const double step = rel * std::max(1.0, std::fabs(double(orig)));
      x.f32()[i] = float(orig + step);
      const double fp = eval_loss();
      x.f32()[i] = float(orig - step);
      const double fm = eval_loss();
      x.f32()[i] = orig;
      return (fp - fm) / (2 * step);
    };
    auto close = [](double a, double n) { return std::fabs(a - n) <= 2e-3 + 3e-2 * std::fabs(n); };
    int bad = 0, checked = 0;
    for (auto& [name, p] : m.named_parameters()) {
      Tensor& x = p->value();
      for (std::int64_t i = 0; i < x.numel(); ++i) {
        const double analytic = p->grad().f32()[i];
        ++checked;
        if (close(analytic, numeric(x, i, 1e-2)) || close(analytic, numeric(x, i, 1e-3))) continue;
        if (bad++ < 5) MESSAGE(name << "[" << i << "]: analytic " << analytic << " numeric " << numeric(x, i, 1e-2));
      }
    }
    CHECK(checked > 150);
    CHECK(bad == 0);
  }
}

TEST_CASE("SASRec trains under the existing objectives too (in-batch, list-wise, full)") {
  SyntheticOptions so;
  so.num_users = 60;
  so.num_items = 50;
  so.min_interactions = 8;
  so.max_interactions = 20;
  const Interactions data = generate_synthetic(so);
  MatchSampleOptions mo;
  mo.mode = 2;
  mo.neg_ratio = 3;
  mo.seq_max_len = 10;
  MatchData md = generate_seq_feature_match(data, mo);
  const FeatureSchema s = FeatureSchema::from(data);
  for (std::string loss : {"inbatch", "softmax", "full"}) {
    CAPTURE(loss);
    manual_seed(2);
    nlohmann::json cfg = default_model_config("sasrec", s, 16);
    cfg["dropout"] = 0.1;
    auto m = make_model("sasrec", cfg);
    TrainerOptions o;
    o.objective.mode = 2;
    o.objective.loss = loss;
    o.objective.all_items = &md.items;
    o.objective.temperature = 0.1f;
    o.lr = 1e-2;
    o.epochs = 3;
    o.batch_size = 64;
    o.progress = 0;
    MatchTrainer t(*m, o);
    auto h = t.fit(md.train);
    CHECK(std::isfinite(h.back().loss));
    CHECK(h.back().loss < h.front().loss);
  }
}

TEST_CASE("SASRec with position_full beats popularity clearly on synthetic data") {
  SyntheticOptions so;
  so.num_users = 500;
  so.num_items = 300;
  so.min_interactions = 20;
  so.max_interactions = 60;
  const Interactions data = generate_synthetic(so);
  const std::int64_t L = 30;
  MatchSampleOptions mo;
  mo.seq_max_len = L;
  MatchData md = generate_seq_feature_match(data, mo);  // test users and all items
  PositionSampleOptions po;
  po.seq_max_len = L;
  po.neg_ratio = 0;
  PositionData pd = generate_position_samples(data, po);
  manual_seed(4);
  SASRecConfig c = SASRec::default_config(FeatureSchema::from(data), 32, int(L));
  c.dropout = 0.2f;
  SASRec m(c);
  TrainerOptions o;
  o.objective.loss = "position_full";
  o.objective.all_items = &md.items;
  o.lr = 5e-3;
  o.weight_decay = 0.0;
  o.epochs = 25;
  o.batch_size = 64;
  o.progress = 0;
  MatchTrainer t(m, o);
  const auto t0 = std::chrono::steady_clock::now();
  auto h = t.fit(pd.train);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MetricMap model = evaluate_retrieval(m, md.test, md.test_targets, md.items, md.item_col);
  MetricMap pop = popularity_metrics(md.item_counts, md.test_targets);
  MESSAGE("SASRec position_full: loss " << h.front().loss << " -> " << h.back().loss << " in " << secs << " s; Hit@10 "
                                        << model["Hit@10"] << " vs popularity " << pop["Hit@10"] << ", Hit@50 "
                                        << model["Hit@50"] << " vs " << pop["Hit@50"]);
  CHECK(model["Hit@10"] > 2.0 * pop["Hit@10"]);
  CHECK(model["Hit@50"] > 1.3 * pop["Hit@50"]);
}
