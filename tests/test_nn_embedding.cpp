// Feature specs (defaults, JSON) and EmbeddingLayer (tables, names, shapes, shared-table gradients).
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/nn/embedding.hpp"
#include "rechub/ops/reduce.hpp"

using namespace rechub;
using nlohmann::json;

#include "alloc_counter.hpp"  // counts operator new: steady-state steps must allocate nothing

namespace {
constexpr std::int64_t kB = 3, kL = 4, kK = 2, kD = 4;

// A small MovieLens-like batch: ids follow rechub's label encoding (0 = padding).
Batch make_batch() {
  Batch b;
  const std::int32_t user[kB] = {1, 5, 9}, gender[kB] = {1, 2, 1}, movie[kB] = {3, 7, 3};
  const std::int32_t hist[kB * kL] = {2, 3, 0, 0,  //
                                      0, 0, 0, 0,  //
                                      7, 7, 1, 3};
  const std::int32_t neg[kB * kK] = {4, 5, 6, 1, 2, 2};
  const float age[kB] = {0.5f, -1.0f, 2.0f};
  b.set("user_id", Tensor::from_vector({kB}, user));
  b.set("gender", Tensor::from_vector({kB}, gender));
  b.set("movie_id", Tensor::from_vector({kB}, movie));
  b.set("hist_movie_id", Tensor::from_vector({kB, kL}, hist));
  b.set("neg_items", Tensor::from_vector({kB, kK}, neg));
  b.set("age", Tensor::from_vector({kB}, age));
  return b;
}

std::vector<Feature> user_features() {
  return {SparseFeature("user_id", 10, kD), SparseFeature("gender", 3, kD),
          SequenceFeature("hist_movie_id", 8, kD, "mean", "movie_id"), DenseFeature("age")};
}
std::vector<Feature> item_features() { return {SparseFeature("movie_id", 8, kD)}; }
std::vector<Feature> all_features() {
  auto f = user_features();
  for (auto& x : item_features()) f.push_back(x);
  f.push_back(SequenceFeature("neg_items", 8, kD, "concat", "movie_id"));
  return f;
}

// A model-like module holding the layer as "embedding", as Torch-RecHub's models do.
struct TinyModel : Module {
  EmbeddingLayer embedding;
  explicit TinyModel(const std::vector<Feature>& f) : embedding(f) { register_module("embedding", embedding); }
};
}  // namespace

TEST_CASE("feature specs take Torch-RecHub's defaults") {
  CHECK(get_auto_embedding_dim(16) == 12);
  CHECK(get_auto_embedding_dim(3706) == 46);  // floor(6 * 7.802...)
  CHECK(get_auto_embedding_dim(1) == 6);
  SparseFeature s("movie_id", 3706);
  CHECK(s.embed_dim == 46);
  CHECK(s.shared_with.empty());
  CHECK_FALSE(s.padding_idx.has_value());
  CHECK(s.initializer == RandomNormal(0.0, 1e-4));
  SequenceFeature q("hist_movie_id", 3706, 16, "mean", "movie_id");
  CHECK(q.pooling == "mean");
  CHECK(q.embed_dim == 16);
  CHECK(q.shared_with == "movie_id");
  CHECK(SequenceFeature("h", 10).pooling == "mean");
  CHECK(DenseFeature("age").embed_dim == 1);
  CHECK(feature_name(Feature(q)) == "hist_movie_id");
  CHECK(feature_table_name(Feature(q)) == "movie_id");
  CHECK(sum_embed_dims(user_features()) == 3 * kD + 1);
  CHECK_THROWS_WITH_AS(SequenceFeature("h", 10, 4, "max"),
                       "SequenceFeature 'h': pooling 'max' is not one of mean, sum, concat", ConfigError);
  CHECK_THROWS_WITH_AS(SparseFeature("u", 0), "SparseFeature 'u': vocab_size must be positive, got 0", ConfigError);
}

TEST_CASE("features round-trip through JSON and parse with defaults") {
  std::vector<Feature> fs = all_features();
  fs.push_back(SparseFeature("zip", 100, std::nullopt, "", 0, XavierUniform(2.0)));
  fs.push_back(SequenceFeature("tags", 50, 8, "sum", "", -1, RandomUniform(-0.5, 0.5)));
  fs.push_back(DenseFeature("price_vec", 3));
  fs.push_back(SparseFeature("city", 20, 5, "", std::nullopt, XavierNormal()));
  json j = fs;
  std::vector<Feature> back = j.get<std::vector<Feature>>();
  CHECK(back == fs);
  CHECK(json(back).dump() == j.dump());
  CHECK(j[0]["type"] == "sparse");
  CHECK(j[0]["shared_with"].is_null());
  CHECK(j[2]["shared_with"] == "movie_id");
  CHECK(j[0]["initializer"] == json({{"type", "RandomNormal"}, {"mean", 0.0}, {"std", 1e-4}}));

  // Minimal configs: missing keys take the defaults.
  auto minimal = json::parse(R"([{"type": "sparse", "name": "movie_id", "vocab_size": 3706},
                                 {"type": "sequence", "name": "hist", "vocab_size": 16, "embed_dim": null},
                                 {"type": "dense", "name": "age"}])")
                     .get<std::vector<Feature>>();
  CHECK(minimal[0] == Feature(SparseFeature("movie_id", 3706)));
  CHECK(std::get<SequenceFeature>(minimal[1]).embed_dim == 12);
  CHECK(std::get<SequenceFeature>(minimal[1]).pooling == "mean");
  CHECK(minimal[2] == Feature(DenseFeature("age")));

  CHECK_THROWS_WITH_AS(json::parse(R"({"type": "sparce", "name": "x"})").get<Feature>(),
                       "feature 'x': type 'sparce' is not one of sparse, sequence, dense", ConfigError);
  CHECK_THROWS_WITH_AS(json::parse(R"({"type": "sparse", "name": "x"})").get<Feature>(),
                       "SparseFeature 'x': missing 'vocab_size'", ConfigError);
  CHECK_THROWS_WITH_AS(json::parse(R"({"type": "sparse", "name": "x", "vocab_size": "ten"})").get<Feature>(),
                       "SparseFeature 'x': 'vocab_size' has the wrong type (\"ten\")", ConfigError);
  CHECK_THROWS_WITH_AS(
      json::parse(R"({"type": "sequence", "name": "h", "vocab_size": 5, "pooling": "max"})").get<Feature>(),
      "SequenceFeature 'h': pooling 'max' is not one of mean, sum, concat", ConfigError);
  CHECK_THROWS_WITH_AS(
      json::parse(R"({"type": "sparse", "name": "x", "vocab_size": 5, "initializer": {"type": "Zeros"}})")
          .get<Feature>(),
      "SparseFeature 'x': initializer: type 'Zeros' is not one of RandomNormal, RandomUniform, XavierNormal, "
      "XavierUniform",
      ConfigError);
}

TEST_CASE("initializers draw from the documented distributions") {
  Rng rng(11);
  Tensor t = Tensor::empty({400, 50});
  RandomNormal(0.0, 1e-4).fill(t, rng);
  double sq = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) sq += double(t.f32()[i]) * t.f32()[i];
  CHECK(std::sqrt(sq / double(t.numel())) == doctest::Approx(1e-4).epsilon(0.03));
  XavierUniform(2.0).fill(t, rng);
  const double bound = 2.0 * std::sqrt(6.0 / 450.0);
  float mx = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) mx = std::max(mx, std::fabs(t.f32()[i]));
  CHECK(mx <= bound);
  CHECK(mx > 0.95 * bound);
}

TEST_CASE("EmbeddingLayer builds one table per unshared feature with Torch-RecHub names") {
  TinyModel m(all_features());
  auto named = m.named_parameters();
  REQUIRE(named.size() == 3);
  CHECK(named[0].first == "embedding.embed_dict.user_id.weight");
  CHECK(named[1].first == "embedding.embed_dict.gender.weight");
  CHECK(named[2].first == "embedding.embed_dict.movie_id.weight");
  CHECK(named[0].second->shape() == Shape{10, kD});
  CHECK(named[2].second->shape() == Shape{8, kD});
  const EmbeddingLayer& e = m.embedding;
  CHECK(&e.table("hist_movie_id") == &e.table("movie_id"));
  CHECK(&e.table("neg_items") == named[2].second);
  CHECK(e.n_dense() == 1);
  CHECK_FALSE(e.has_table("hist_movie_id"));
  CHECK_THROWS_WITH_AS(e.table("age"),
                       "EmbeddingLayer: no embedding table for feature 'age' (tables: user_id, gender, movie_id)",
                       ConfigError);
  CHECK_THROWS_WITH_AS(EmbeddingLayer({SequenceFeature("hist", 8, kD, "mean", "movie_id")}),
                       "EmbeddingLayer: feature 'hist' is shared_with 'movie_id', which has no embedding table (not "
                       "among the features, or itself shared)",
                       ConfigError);
  CHECK_THROWS_WITH_AS(
      EmbeddingLayer({SparseFeature("movie_id", 8, kD), SequenceFeature("hist", 8, 6, "mean", "movie_id")}),
      "EmbeddingLayer: feature 'hist' has embed_dim 6 but is shared_with 'movie_id' with embed_dim 4", ConfigError);
}

TEST_CASE("EmbeddingLayer forward: shapes, values and layout") {
  EmbeddingLayer e(all_features());
  Batch b = make_batch();
  const float* U = e.table("user_id").value().f32();
  const float* G = e.table("gender").value().f32();
  const float* M = e.table("movie_id").value().f32();

  Var flat = e.forward(b, user_features(), true);
  REQUIRE(flat.shape() == Shape{kB, 3 * kD + 1});
  const float* y = flat.value().f32();
  const std::int64_t W = 3 * kD + 1;
  for (std::int64_t r = 0; r < kB; ++r) {
    for (std::int64_t d = 0; d < kD; ++d) {
      CHECK(y[r * W + d] == U[b["user_id"].i32()[r] * kD + d]);
      CHECK(y[r * W + kD + d] == G[b["gender"].i32()[r] * kD + d]);
    }
    CHECK(y[r * W + 3 * kD] == b["age"].f32()[r]);  // dense columns come last
  }
  // Mean pooling skips padding: row 0 averages ids 2, 3; row 1 (all padding) is zero.
  for (std::int64_t d = 0; d < kD; ++d) {
    CHECK(y[0 * W + 2 * kD + d] == doctest::Approx((M[2 * kD + d] + M[3 * kD + d]) / 2).epsilon(1e-6));
    CHECK(y[1 * W + 2 * kD + d] == 0.0f);
  }

  std::vector<Feature> pooled = {user_features()[0], user_features()[1], user_features()[2]};
  CHECK(e.forward(b, pooled, false).shape() == Shape{kB, 3, kD});
  CHECK(e.forward(b, item_features(), false).shape() == Shape{kB, 1, kD});
  CHECK(e.forward(b, item_features(), true).shape() == Shape{kB, kD});
  const Feature neg = all_features().back();
  CHECK(e.embed(b, neg).shape() == Shape{kB, kK, kD});
  CHECK(e.forward(b, {neg}, false).shape() == Shape{kB, 1, kK, kD});
  CHECK(e.forward(b, {neg, item_features()[0]}, true).shape() == Shape{kB, kK * kD + kD});
  CHECK(e.forward(b, {DenseFeature("age")}, true).shape() == Shape{kB, 1});

  CHECK_THROWS_WITH_AS(e.forward(b, user_features(), false),
                       "EmbeddingLayer: dense feature 'age' needs squeeze_dim = true", ConfigError);
  CHECK_THROWS_WITH_AS(e.forward(b, {neg, item_features()[0]}, false),
                       "EmbeddingLayer: with squeeze_dim = false every feature must embed to the same shape; "
                       "'neg_items' gives [3, 2, 4], 'movie_id' gives [3, 4]",
                       ShapeError);
  CHECK_THROWS_WITH_AS(e.forward(b, {}, true), "EmbeddingLayer: the input features can not be empty", ConfigError);
  CHECK_THROWS_WITH_AS(e.forward(b, {SparseFeature("item_id", 8, kD)}, true),
                       "Dataset: no column 'item_id' (have: user_id, gender, movie_id, hist_movie_id, neg_items, age)",
                       ConfigError);
  CHECK_THROWS_WITH_AS(e.forward(b, {DenseFeature("age", 2)}, true),
                       "EmbeddingLayer: dense feature 'age' column [3] does not match embed_dim 2", ShapeError);
  end_step();
}

TEST_CASE("a shared table receives the sum of both uses' gradients (checked numerically)") {
  EmbeddingLayer e(all_features());
  e.track_rows(true);
  Batch b = make_batch();
  const std::vector<Feature> used = {item_features()[0], user_features()[2], all_features().back()};
  Parameter& table = e.table("movie_id");
  Rng rng(12);
  const std::int64_t W = kD + kD + kK * kD;
  Tensor R = testing::random_tensor({kB, W}, rng, 0.5f, 1.5f);

  tape().backward(e.forward(b, used, true), R);
  end_step();
  Tensor analytic = table.grad().clone();

  // Finite differences of sum(R * forward) over every table entry (the map is linear in the table).
  auto objective = [&] {
    NoGrad ng;
    Var y = e.forward(b, used, true);
    double s = 0;
    for (std::int64_t i = 0; i < y.value().numel(); ++i) s += double(y.value().f32()[i]) * R.f32()[i];
    end_step();
    return s;
  };
  float* w = table.value().f32();
  for (std::int64_t i = 0; i < table.numel(); ++i) {
    const float orig = w[i];
    w[i] = orig + 0.01f;
    const double fp = objective();
    w[i] = orig - 0.01f;
    const double fm = objective();
    w[i] = orig;
    const double numeric = (fp - fm) / (double(orig + 0.01f) - double(orig - 0.01f));
    CHECK(analytic.f32()[i] == doctest::Approx(numeric).epsilon(1e-3).scale(1e-4));
  }
  // Row 0 (padding) is used by no one here: exactly zero gradient. Row 3 gets gradient from
  // movie_id (rows 0, 2), from the histories (1/2 of row 0, 1/4 of row 2) and no negatives.
  for (std::int64_t d = 0; d < kD; ++d) CHECK(analytic.f32()[d] == 0.0f);
  for (std::int64_t d = 0; d < kD; ++d) {
    const double want =
        R.f32()[0 * W + d] + R.f32()[2 * W + d] + 0.5 * R.f32()[0 * W + kD + d] + 0.25 * R.f32()[2 * W + kD + d];
    CHECK(analytic.f32()[3 * kD + d] == doctest::Approx(want).epsilon(1e-6));
  }
  std::vector<std::int32_t> touched = table.touched_rows()->rows;
  std::sort(touched.begin(), touched.end());
  CHECK(touched == std::vector<std::int32_t>{1, 2, 3, 4, 5, 6, 7});
  CHECK(e.table("user_id").touched_rows()->rows.empty());
}

TEST_CASE("a steady-state forward + backward through EmbeddingLayer allocates nothing") {
  // Large enough for the parallel paths (embedding_bag over B rows, scatter over table rows).
  const std::int64_t B = 512, L = 50, V = 2000, D = 16;
  std::vector<Feature> fs = {SparseFeature("user_id", V, D), SparseFeature("movie_id", V, D),
                             SequenceFeature("hist_movie_id", V, D, "mean", "movie_id"),
                             SequenceFeature("neg_items", V, D, "concat", "movie_id"), DenseFeature("age")};
  EmbeddingLayer e(fs);
  e.track_rows(true);
  Rng rng(13);
  auto ids = [&](const Shape& s) {
    Tensor t = Tensor::empty(s, DType::i32);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.i32()[i] = static_cast<std::int32_t>(rng.below(V));
    return t;
  };
  Batch b;
  b.set("user_id", ids({B}));
  b.set("movie_id", ids({B}));
  b.set("hist_movie_id", ids({B, L}));
  b.set("neg_items", ids({B, 4}));
  b.set("age", testing::random_tensor({B}, rng));
  const std::vector<Parameter*> params = e.parameters();  // the optimiser's list, built once
  auto step = [&] {
    Var y = e.forward(b, fs, true);
    backward(sum(y));
    end_step();
    for (auto* p : params) {
      p->zero_grad();
      p->touched_rows()->clear();
    }
  };
  step();
  step();
  const long before = rechub::testing::allocations();
  step();
  step();
  CHECK(rechub::testing::allocations() - before == 0);
}
