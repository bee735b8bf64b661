// Two-tower models: names, shapes, configs, training steps, and learning on synthetic data.
#include <doctest/doctest.h>

#include "rechub/data/match_columns.hpp"
#include "rechub/data/samples.hpp"
#include "rechub/data/synthetic.hpp"
#include "rechub/eval/evaluate.hpp"
#include "rechub/eval/popularity.hpp"
#include "rechub/models/registry.hpp"
#include "rechub/train/match_trainer.hpp"

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
    CHECK(u.shape() == v.shape());
    auto again = make_model(name, m->config());
    CHECK(again->num_parameters() == m->num_parameters());
    end_step();
  }
  CHECK_THROWS_WITH_AS(make_model("nope", nlohmann::json::object()),
                       "unknown model 'nope' (known: dssm, facebook_dssm, youtube_dnn, youtube_sbc)", ConfigError);
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
