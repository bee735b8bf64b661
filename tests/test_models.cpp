// Two-tower models: names, shapes, configs, training steps, and learning on synthetic data.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "gradcheck.hpp"
#include "rechub/data/match_columns.hpp"
#include "rechub/data/samples.hpp"
#include "rechub/data/synthetic.hpp"
#include "rechub/eval/evaluate.hpp"
#include "rechub/eval/popularity.hpp"
#include "rechub/models/registry.hpp"
#include "rechub/ops/reduce.hpp"
#include "rechub/io/training_checkpoint.hpp"
#include "rechub/train/match_trainer.hpp"
#include "rechub/train/recipes.hpp"

using namespace rechub;

namespace {
struct Fixture {
  Interactions data;
  MatchData md;
  FeatureSchema schema;
  Fixture(int mode, int neg_ratio, std::int32_t users = 300, std::int32_t items = 200) {
    SyntheticOptions so;
    so.num_users = users;
    so.num_items = items;
    so.min_interactions = 20;
    so.max_interactions = 60;
    data = generate_synthetic(so);
    MatchSampleOptions mo;
    mo.mode = mode;
    mo.neg_ratio = neg_ratio;
    mo.sample_method = 1;
    mo.seq_max_len = 20;
    md = generate_seq_feature_match(data, mo);
    add_negative_attributes(md.train, data);
    schema = FeatureSchema::from(data);
  }
};
}  // namespace

TEST_CASE("parameter names follow Torch-RecHub's state_dict") {
  Fixture f(2, 3);
  auto m = make_model("dssm", default_model_config("dssm", f.schema, 8));
  std::vector<std::string> names;
  for (auto& [n, p] : m->named_parameters()) names.push_back(n);
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  CHECK(has("embedding.embed_dict.user_id.weight"));
  CHECK(has("embedding.embed_dict.movie_id.weight"));
  CHECK_FALSE(has("embedding.embed_dict.hist_movie_id.weight"));  // shared with movie_id
  CHECK(has("user_mlp.mlp.0.weight"));
  CHECK(has("item_mlp.mlp.1.weight"));  // batchnorm gamma
  CHECK(has("user_mlp.mlp.2.weight"));  // prelu slope
}

TEST_CASE("every model builds from its JSON config and produces tower shapes") {
  Fixture f(2, 3);
  BatchIterator it(f.md.train, 16, false);
  const Batch* b = it.next();
  for (const auto& name : model_names()) {
    CAPTURE(name);
    nlohmann::json cfg = default_model_config(name, f.schema, 8);
    auto m = make_model(name, cfg);
    Var u = m->user_tower(*b);
    Var v = m->item_tower(*b);
    CHECK(u.dim(0) == 16);
    if (m->interest_num() > 1) {  // [B, K, D] against [B, D]
      CHECK(u.ndim() == 3);
      CHECK(u.dim(1) == m->interest_num());
      CHECK(u.dim(2) == v.dim(1));
      CHECK(m->train_user_tower(*b, v).shape() == v.shape());
    } else {
      CHECK(u.shape() == v.shape());
    }
    auto again = make_model(name, m->config());
    CHECK(again->num_parameters() == m->num_parameters());
    end_step();
  }
  CHECK_THROWS_WITH_AS(make_model("nope", nlohmann::json::object()),
                       "unknown model 'nope' (known: dssm, facebook_dssm, youtube_dnn, youtube_sbc, mind, comirec_dr, comirec_sa, sine, "
                       "gru4rec, narm, stamp, sasrec)", ConfigError);
}

TEST_CASE("distinct-id shortcuts: the same tower values, gradients and BatchNorm statistics as the direct path") {
  // 40 items in 256 rows: each batch repeats items many times, so both item towers take the
  // distinct-row path, and the user tower's first layer takes gender/age/occupation by id; a twin
  // with the shortcuts switched off takes the direct path.
  Fixture f(1, 1, 300, 40);
  BatchIterator it(f.md.train, 256, true, 3);
  const Batch& b = *it.next();
  for (const char* col : {"movie_id", "neg_items"}) {  // enough repeats for the distinct-row path
    const Tensor* c = &b[col];
    REQUIRE(unique_rows(&c, 1).unique * 4 <= b.rows() * 3);
  }
  for (const char* name : {"facebook_dssm", "dssm"}) {
    CAPTURE(name);
    // tanh, not the default relu / prelu: the two paths round differently, and a pre-activation
    // within rounding of a kink switches that element's gradient between g and 0 (or a g): a
    // real O(g) difference that shows in every gradient upstream, whichever path is right.
    nlohmann::json cfg = default_model_config(name, f.schema, 8, 1);
    cfg["user_params"]["activation"] = cfg["item_params"]["activation"] = "tanh";
    auto fast = make_model(name, cfg), direct = make_model(name, cfg);
    auto pf = fast->named_parameters(), pd = direct->named_parameters();
    REQUIRE(pf.size() == pd.size());
    Rng rng(9);
    for (std::size_t i = 0; i < pf.size(); ++i) {
      // Embeddings of O(1), not the initial 1e-4: BatchNorm then compares signal, not rounding
      // (at 1e-4 the first layer's output is its bias plus a 1e-4 ripple, and centring it cancels
      // all but a few bits, differently in the two summation orders).
      if (pf[i].first.rfind("embedding.", 0) == 0)
        pf[i].second->value().copy_from(testing::random_tensor(pf[i].second->shape(), rng, -1.0f, 1.0f));
      pd[i].second->value().copy_from(pf[i].second->value());
    }
    dynamic_cast<TwoTower&>(*direct).use_distinct_ids(false);
    Tensor r_user, r_pos, r_neg;
    std::vector<Tensor> outs[2];
    for (MatchModel* m : {fast.get(), direct.get()}) {
      m->train();
      Var u = m->user_tower(b), v = m->item_tower(b), vn = m->neg_item_tower(b);
      if (!r_pos.defined()) {
        r_user = testing::random_tensor(u.shape(), rng);
        r_pos = testing::random_tensor(v.shape(), rng);
        r_neg = testing::random_tensor(vn.shape(), rng);
      }
      backward(add(sum(mul(u, constant(r_user))),
                   add(sum(mul(v, constant(r_pos))), sum(mul(vn, constant(r_neg))))));
      auto& o = outs[m == fast.get() ? 0 : 1];
      o.push_back(u.value().clone());
      o.push_back(v.value().clone());
      o.push_back(vn.value().clone());
      for (auto& [n, p] : m->named_parameters()) o.push_back(p->grad().defined() ? p->grad().clone() : Tensor());
      for (auto& [n, t] : m->named_buffers()) o.push_back(t->clone());
      end_step();
    }
    REQUIRE(outs[0].size() == outs[1].size());
    for (std::size_t i = 0; i < outs[0].size(); ++i) {
      CAPTURE(i);
      REQUIRE(outs[0][i].defined() == outs[1][i].defined());
      if (!outs[0][i].defined()) continue;
      REQUIRE(outs[0][i].shape() == outs[1][i].shape());
      float diff = 0.0f, size = 0.0f;  // max |fast - direct| against max |direct| of each tensor
      for (std::int64_t k = 0; k < outs[0][i].numel(); ++k) {
        diff = std::max(diff, std::fabs(outs[0][i].f32()[k] - outs[1][i].f32()[k]));
        size = std::max(size, std::fabs(outs[1][i].f32()[k]));
      }
      // max(size, 1): a Linear bias before BatchNorm has gradient 0 in exact arithmetic, so both
      // paths give rounding noise there (~1e-5 beside weight gradients of ~10).
      CHECK(diff <= 1e-4f * std::max(size, 1.0f));
    }
  }
}

TEST_CASE("every objective trains: the loss falls over a few epochs") {
  struct Case { std::string model; int mode; int neg; std::string loss; };
  std::vector<Case> cases{{"dssm", 0, 3, ""}, {"facebook_dssm", 1, 1, ""}, {"facebook_dssm", 1, 1, "hinge"},
                          {"youtube_dnn", 2, 3, ""}, {"youtube_sbc", 0, 0, "sbc"}, {"dssm", 2, 3, "inbatch"}};
  for (const auto& c : cases) {
    CAPTURE(c.model);
    CAPTURE(c.loss);
    Fixture f(c.mode, c.neg, 120, 80);
    manual_seed(1);
    auto m = make_model(c.model, default_model_config(c.model, f.schema, 8, c.mode));
    TrainerOptions o;
    o.objective.mode = c.mode;
    o.objective.loss = c.loss;
    o.objective.temperature = 0.1f;
    o.objective.log_q = log_of(item_sample_weight(f.md.item_counts));
    o.lr = 3e-3;
    o.epochs = 4;
    o.batch_size = 128;
    o.progress = 0;
    MatchTrainer t(*m, o);
    auto h = t.fit(f.md.train);
    REQUIRE(h.size() == 4);
    CHECK(h.back().loss < h.front().loss);
  }
}

TEST_CASE("a trained DSSM beats the popularity baseline on synthetic data by a clear margin") {
  Fixture f(2, 3, 400, 300);
  manual_seed(3);
  auto m = make_model("dssm", default_model_config("dssm", f.schema, 16));
  TrainerOptions o;
  o.objective.in_batch_neg = true;
  o.objective.temperature = 0.05f;
  o.lr = 3e-3;
  o.epochs = 6;
  o.batch_size = 256;
  o.progress = 0;
  MatchTrainer t(*m, o);
  t.fit(f.md.train);
  MetricMap model = evaluate_retrieval(*m, f.md.test, f.md.test_targets, f.md.items, f.md.item_col);
  MetricMap pop = popularity_metrics(f.md.item_counts, f.md.test_targets);
  MESSAGE("DSSM Hit@10 " << model["Hit@10"] << " vs popularity " << pop["Hit@10"] << "; Hit@50 " << model["Hit@50"]
                         << " vs " << pop["Hit@50"]);
  CHECK(model["Hit@10"] > 1.5 * pop["Hit@10"]);
  CHECK(model["Hit@50"] > 1.2 * pop["Hit@50"]);
}

namespace {
std::vector<Tensor> weights(const MatchModel& m) {
  std::vector<Tensor> w;
  for (auto& [n, p] : m.named_parameters()) w.push_back(p->value().clone());
  return w;
}
bool same(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].nbytes() != b[i].nbytes() || std::memcmp(a[i].raw(), b[i].raw(), a[i].nbytes()) != 0) return false;
  return true;
}
TrainerOptions quick_options(int epochs) {
  TrainerOptions o;
  o.objective.in_batch_neg = true;
  o.objective.in_batch_neg_ratio = 5;
  o.objective.temperature = 0.1f;
  o.lr = 3e-3;
  o.epochs = epochs;
  o.batch_size = 64;
  o.progress = 0;
  return o;
}
}  // namespace

TEST_CASE("same seed, same threads: bit-identical training; resuming from a checkpoint continues exactly") {
  Fixture f(0, 0, 80, 60);
  auto run = [&](int epochs) {
    manual_seed(9);
    auto m = make_model("youtube_dnn", default_model_config("youtube_dnn", f.schema, 8));
    MatchTrainer t(*m, quick_options(epochs));
    t.fit(f.md.train);
    return weights(*m);
  };
  auto a = run(4), b = run(4);
  CHECK(same(a, b));

  manual_seed(9);
  auto m = make_model("youtube_dnn", default_model_config("youtube_dnn", f.schema, 8));
  {
    MatchTrainer t(*m, quick_options(2));
    t.fit(f.md.train);
    save_training_checkpoint("test_models_resume.safetensors", *m, t);
  }
  manual_seed(123);  // a different initialisation, overwritten by the checkpoint
  auto m2 = make_model("youtube_dnn", default_model_config("youtube_dnn", f.schema, 8));
  MatchTrainer t2(*m2, quick_options(4));
  load_training_checkpoint("test_models_resume.safetensors", *m2, t2);
  CHECK(t2.start_epoch() == 2);
  t2.fit(f.md.train);
  CHECK(t2.history().size() == 2);
  CHECK(same(weights(*m2), a));
  std::remove("test_models_resume.safetensors");
}

TEST_CASE("early stopping keeps the best epoch's weights") {
  Fixture f(0, 0, 80, 60);
  manual_seed(4);
  auto m = make_model("youtube_dnn", default_model_config("youtube_dnn", f.schema, 8));
  TrainerOptions o = quick_options(8);
  o.patience = 2;
  o.monitor = "score";
  int calls = 0;
  std::vector<Tensor> at_best;
  // A validation score that peaks at epoch 1 (0-based), then falls: training must stop after
  // epoch 3 and restore epoch 1's weights.
  MatchTrainer t(*m, o);
  t.fit(f.md.train, [&]() {
    const double score = calls == 1 ? 1.0 : 0.5 - 0.01 * calls;
    if (calls == 1) at_best = weights(*m);
    ++calls;
    return MetricMap{{"score", score}};
  });
  CHECK(calls == 4);
  CHECK(t.best_epoch() == 1);
  CHECK(t.history().size() == 4);
  CHECK(same(weights(*m), at_best));
}

TEST_CASE("hard in-batch negatives and the full softmax train") {
  Fixture f(0, 0, 100, 60);
  for (std::string loss : {"inbatch_hard", "full"}) {
    CAPTURE(loss);
    manual_seed(5);
    auto m = make_model("dssm", default_model_config("dssm", f.schema, 8));
    TrainerOptions o = quick_options(3);
    if (loss == "full") {
      o.objective.loss = "full";
      o.objective.all_items = &f.md.items;
    } else {
      o.objective.hard_negatives = true;
    }
    MatchTrainer t(*m, o);
    auto h = t.fit(f.md.train);
    CHECK(h.back().loss < h.front().loss);
  }
}

TEST_CASE("both recipes of every model prepare samples and train a step on them") {
  SyntheticOptions so;
  so.num_users = 60;
  so.num_items = 80;
  so.min_interactions = 5;
  so.max_interactions = 30;
  const Interactions data = generate_synthetic(so);
  const FeatureSchema schema = FeatureSchema::from(data);
  for (const auto& name : model_names()) {
    for (const std::string recipe : {"rechub", "torch-rechub"}) {
      CAPTURE(name);
      CAPTURE(recipe);
      Recipe r = make_recipe(name, recipe);
      r.samples.seq_max_len = 12;  // small and fast; models with position tables must follow it
      r.embed_dim = 8;
      MatchData md = prepare_samples(data, r);
      r.trainer.objective.all_items = &md.items;
      r.trainer.epochs = 1;
      r.trainer.batch_size = 32;
      r.trainer.progress = 0;
      const nlohmann::json cfg = recipe_model_config(r, schema);
      auto m = make_model(name, cfg);
      MatchTrainer t(*m, r.trainer);
      const auto& hist = t.fit(md.train);
      REQUIRE(hist.size() == 1);
      CHECK(std::isfinite(hist[0].loss));
      EvalOptions eo;
      eo.metric = parse_metric(r.metric);
      eo.ks = {10, 50};
      const MetricMap met = evaluate_retrieval(*m, md.test, md.test_targets, md.items, md.item_col, eo);
      CHECK(met.at("Hit@50") >= met.at("Hit@10"));
    }
  }
}
