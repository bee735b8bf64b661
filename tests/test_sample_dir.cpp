// Sample directories (io/sample_dir.hpp): meta.json -> Recipe + model config for every model the
// comparator writes (benchmarks/torch_rechub/README.md), then a real training epoch and an
// evaluation from the arrays; unsupported or contradictory metas fail with pinned messages.
// The directories are tiny synthetic ones in the comparator's layout (no Python, no MovieLens).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "rechub/eval/evaluate.hpp"
#include "rechub/io/sample_dir.hpp"
#include "rechub/train/match_trainer.hpp"

using namespace rechub;
using nlohmann::json;

namespace {

constexpr std::int32_t kItems = 12;    // ids 1..12, vocab 13
constexpr std::int32_t kUsers = 7;     // ids 1..7, vocab 8
constexpr std::int64_t kLen = 6;       // seq_max_len
constexpr std::int64_t kRows = 40;     // training rows (SASRec: one per user)

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/rechub_test_sample_dir_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

Tensor ids(std::int64_t rows, std::int64_t cols, std::int32_t lo, std::int32_t hi, Rng& rng) {
  Tensor t = Tensor::empty(cols ? Shape{rows, cols} : Shape{rows}, DType::i32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.i32()[i] = lo + static_cast<std::int32_t>(rng.below(hi - lo + 1));
  return t;
}

// Histories of 1..kLen items, left-aligned ('post' padding) or right-aligned ('pre').
Tensor histories(std::int64_t rows, bool post, Rng& rng) {
  Tensor t = Tensor::zeros({rows, kLen}, DType::i32);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t n = 1 + static_cast<std::int64_t>(rng.below(kLen));
    for (std::int64_t j = 0; j < n; ++j)
      t.i32()[r * kLen + (post ? j : kLen - n + j)] = 1 + static_cast<std::int32_t>(rng.below(kItems));
  }
  return t;
}

json sparse(const std::string& name, int vocab, int dim, const char* shared = nullptr) {
  return {{"type", "sparse"}, {"name", name}, {"vocab_size", vocab}, {"embed_dim", dim},
          {"shared_with", shared ? json(shared) : json(nullptr)}};
}
json sequence(const std::string& name, int vocab, int dim, const char* shared = "movie_id") {
  return {{"type", "sequence"}, {"name", name}, {"vocab_size", vocab}, {"embed_dim", dim}, {"pooling", "concat"},
          {"shared_with", shared ? json(shared) : json(nullptr)}};
}

// A sample directory for `model` as compare.py --from-movielens-* lays it out, with the given hyper.
json write_dir(const std::string& dir, const std::string& model, int mode, json hyper, int dim = 8) {
  Rng rng(7);
  const bool sasrec = model == "sasrec", post = model != "sine";
  const bool profile = model == "gru4rec" || model == "mind" || model == "comirec_dr" || model == "comirec_sa";
  const std::int64_t n = sasrec ? kUsers : kRows;
  Dataset train, test, items;
  train.set("user_id", ids(n, 0, 1, kUsers, rng));
  train.set("movie_id", ids(n, 0, 1, kItems, rng));
  train.set("hist_movie_id", histories(n, post, rng));
  if (sasrec) {
    // pos = the history shifted by one with the row's target last, neg = any item, both 0 at padding.
    Tensor h = train["hist_movie_id"], pos = Tensor::zeros({n, kLen}, DType::i32), neg = Tensor::zeros({n, kLen}, DType::i32);
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t j = 0; j < kLen && h.i32()[r * kLen + j] != 0; ++j) {
        const bool last = j + 1 == kLen || h.i32()[r * kLen + j + 1] == 0;
        pos.i32()[r * kLen + j] = last ? train["movie_id"].i32()[r] : h.i32()[r * kLen + j + 1];
        neg.i32()[r * kLen + j] = 1 + static_cast<std::int32_t>(rng.below(kItems));
      }
    train.set("pos_movie_id", pos);
    train.set("neg_movie_id", neg);
  } else {
    train.set("neg_items", ids(n, 3, 1, kItems, rng));
  }
  if (profile) train.set("gender", ids(n, 0, 1, 2, rng));
  test.set("user_id", ids(kUsers, 0, 1, kUsers, rng));
  test.set("hist_movie_id", histories(kUsers, post, rng));
  if (profile) test.set("gender", ids(kUsers, 0, 1, 2, rng));
  Tensor all = Tensor::empty({kItems}, DType::i32);
  for (std::int32_t i = 0; i < kItems; ++i) all.i32()[i] = i + 1;
  items.set("movie_id", all);
  write_dataset_dir(dir + "/train", train);
  write_dataset_dir(dir + "/test", test);
  write_dataset_dir(dir + "/items", items);
  write_npy(dir + "/test_target.npy", ids(kUsers, 0, 1, kItems, rng));

  const int vocab = kItems + 1;
  json meta = {{"format_version", 1}, {"model", model}, {"mode", mode}, {"seq_max_len", kLen}, {"embed_dim", dim},
               {"hyper", hyper}, {"item_col", "movie_id"}, {"user_col", "user_id"}, {"n_train", n},
               {"n_test_users", kUsers}, {"n_items", kItems}};
  meta["user_features"] = json::array();
  if (profile) meta["user_features"] = {sparse("user_id", kUsers + 1, dim), sparse("gender", 3, dim)};
  meta["history_features"] = {sequence("hist_movie_id", vocab, dim)};
  meta["item_features"] = {sparse("movie_id", vocab, dim)};
  if (sasrec)
    meta["position_features"] = {sequence("pos_movie_id", vocab, dim), sequence("neg_movie_id", vocab, dim)};
  else if (model != "narm" && model != "stamp")
    meta["neg_item_feature"] = {sequence("neg_items", vocab, dim)};
  write_file_atomic(dir + "/meta.json", meta.dump(1));
  return meta;
}

json base_hyper(int batch = 16) {
  return {{"lr", 0.01}, {"weight_decay", 1e-6}, {"batch_size", batch}, {"epochs", 3}, {"neg_ratio", 3}};
}

// Trains one epoch from the directory the way `rechub train --samples` does and evaluates.
void train_and_evaluate(SampleDir& sd) {
  auto model = make_model(sd.recipe.model, sd.model_config);
  TrainerOptions topt = sd.recipe.trainer;
  topt.epochs = 1;
  topt.progress = 0;
  topt.objective.all_items = &sd.data.items;
  MatchTrainer trainer(*model, topt);
  const auto& hist = trainer.fit(sd.data.train);
  REQUIRE(hist.size() == 1);
  CHECK(std::isfinite(hist[0].loss));
  CHECK(hist[0].samples == sd.data.train.rows());
  EvalOptions eo;
  eo.ks = {5, 10};
  MetricMap m = evaluate_retrieval(*model, sd.data.test, sd.data.test_targets, sd.data.items, sd.data.item_col, eo);
  CHECK(m.at("Hit@10") >= m.at("Hit@5"));
  CHECK(m.at("Hit@10") <= 1.0);
  end_step();
}

}  // namespace

TEST_CASE("sample dir: sequence and multi-interest models map meta.json and train") {
  SUBCASE("gru4rec: user MLP, two GRU layers without bias, padding through the GRU, temperature") {
    TempDir d;
    json h = base_hyper();
    h["temperature"] = 0.02;
    h["dims"] = {16, 8};
    h["num_layers"] = 2;
    write_dir(d.path, "gru4rec", 2, h);
    SampleDir sd = read_sample_dir(d.path);
    CHECK(sd.recipe.model == "gru4rec");
    CHECK(sd.recipe.trainer.lr == doctest::Approx(0.01));
    CHECK(sd.recipe.trainer.batch_size == 16);
    CHECK(sd.recipe.trainer.objective.effective_loss() == "softmax");
    const GRU4RecConfig c = gru4rec_from_json(sd.model_config);
    CHECK(c.num_layers == 2);
    CHECK_FALSE(c.gru_bias);
    CHECK_FALSE(c.mask_padding);
    CHECK(c.temperature == doctest::Approx(0.02f));
    REQUIRE(c.user_params.has_value());
    CHECK(c.user_params->dims == std::vector<std::int64_t>{16, 8});
    CHECK(c.user_features.size() == 2);
    train_and_evaluate(sd);
  }
  SUBCASE("mind / comirec_dr / comirec_sa: interests, routing, attention width; temperature never applied") {
    for (const char* name : {"mind", "comirec_dr", "comirec_sa"}) {
      CAPTURE(name);
      TempDir d;
      json h = base_hyper();
      h["temperature"] = 0.02;
      h["interest_num"] = 3;
      h["routing_times"] = 2;
      h["hidden_dim"] = 12;
      write_dir(d.path, name, 2, h);
      SampleDir sd = read_sample_dir(d.path);
      const auto c = sd.model_config.get<MultiInterestConfig>();
      CHECK(c.interest_num == 3);
      CHECK(c.routing_times == 2);
      CHECK(c.hidden_dim == 12);
      CHECK(c.max_length == kLen);
      CHECK(c.temperature == 1.0f);
      CHECK(c.user_features.size() == 2);
      auto model = make_model(name, sd.model_config);
      CHECK(model->interest_num() == 3);
      train_and_evaluate(sd);
    }
  }
  SUBCASE("sine: concepts, intentions, aggregation temperature, pre-padded histories") {
    TempDir d;
    json h = base_hyper();
    h["temperature"] = 0.1;
    h["hidden_dim"] = 16;
    h["num_concept"] = 5;
    h["num_intention"] = 2;
    h["num_heads"] = 1;
    write_dir(d.path, "sine", 2, h);
    SampleDir sd = read_sample_dir(d.path);
    const auto c = sd.model_config.get<SINEConfig>();
    CHECK(c.num_items == kItems + 1);
    CHECK(c.embedding_dim == 8);
    CHECK(c.hidden_dim == 16);
    CHECK(c.num_concept == 5);
    CHECK(c.num_intention == 2);
    CHECK(c.seq_max_len == kLen);
    CHECK(c.temperature == doctest::Approx(0.1f));
    CHECK(c.score_temperature == 1.0f);
    CHECK(c.neg_item_feature == "neg_items");
    train_and_evaluate(sd);
  }
  SUBCASE("narm / stamp: full softmax over every item, their dropouts and initialisation") {
    for (const char* name : {"narm", "stamp"}) {
      CAPTURE(name);
      TempDir d;
      json h = base_hyper();
      h["loss"] = "full";
      h["hidden_dim"] = 6;
      h["emb_dropout"] = 0.25;
      h["session_rep_dropout"] = 0.5;
      h["weight_std"] = 0.05;
      h["emb_std"] = 0.002;
      write_dir(d.path, name, 2, h);
      SampleDir sd = read_sample_dir(d.path);
      CHECK(sd.recipe.trainer.objective.effective_loss() == "full");
      if (std::string(name) == "narm") {
        const NARMConfig c = narm_from_json(sd.model_config);
        CHECK(c.hidden_dim == 6);
        CHECK(c.emb_dropout == doctest::Approx(0.25f));
        CHECK(c.session_rep_dropout == doctest::Approx(0.5f));
        CHECK(c.neg_item_features.empty());
      } else {
        const STAMPConfig c = stamp_from_json(sd.model_config);
        CHECK(c.weight_std == doctest::Approx(0.05f));
        CHECK(c.emb_std == doctest::Approx(0.002f));
      }
      train_and_evaluate(sd);
    }
  }
  SUBCASE("sasrec: per-position BPR on pos_/neg_ columns, blocks, heads, dropout") {
    TempDir d;
    json h = base_hyper(4);
    h["max_len"] = kLen;
    h["num_blocks"] = 2;
    h["num_heads"] = 2;
    h["dropout"] = 0.2;
    write_dir(d.path, "sasrec", 1, h);
    SampleDir sd = read_sample_dir(d.path);
    CHECK(sd.recipe.trainer.objective.effective_loss() == "position_bpr");
    const SASRecConfig c = sasrec_from_json(sd.model_config);
    CHECK(c.max_len == kLen);
    CHECK(c.num_blocks == 2);
    CHECK(c.num_heads == 2);
    CHECK(c.dropout == doctest::Approx(0.2f));
    CHECK(c.history_feature.shared_with == "movie_id");
    CHECK(c.item_feature.name == "movie_id");
    train_and_evaluate(sd);
  }
}

TEST_CASE("sample dir: unsupported or contradictory metas are refused") {
  TempDir d;
  SUBCASE("unknown model") {
    write_dir(d.path, "bert4rec", 2, base_hyper());
    CHECK_THROWS_WITH_AS(read_sample_dir(d.path),
                         (d.path + "/meta.json: sample dir: model 'bert4rec' not supported (known: dssm, "
                                   "facebook_dssm, youtube_dnn, youtube_sbc, gru4rec, mind, comirec_dr, comirec_sa, "
                                   "sine, narm, stamp, sasrec)")
                             .c_str(),
                         ConfigError);
  }
  SUBCASE("sasrec trained list-wise") {
    write_dir(d.path, "sasrec", 2, base_hyper());
    CHECK_THROWS_WITH_AS(read_sample_dir(d.path),
                         (d.path + "/meta.json: sasrec trains pair-wise per position (mode 1), got mode 2").c_str(),
                         ConfigError);
  }
  SUBCASE("sasrec without its position features") {
    json meta = write_dir(d.path, "sasrec", 1, base_hyper());
    meta.erase("position_features");
    write_file_atomic(d.path + "/meta.json", meta.dump());
    CHECK_THROWS_WITH_AS(read_sample_dir(d.path),
                         (d.path + "/meta.json: sasrec needs position_features [pos_movie_id, neg_movie_id]").c_str(),
                         ConfigError);
  }
  SUBCASE("an unknown loss") {
    json h = base_hyper();
    h["loss"] = "sampled";
    write_dir(d.path, "narm", 2, h);
    CHECK_THROWS_WITH_AS(read_sample_dir(d.path),
                         (d.path + "/meta.json: hyper.loss 'sampled' is not understood (only \"full\")").c_str(),
                         ConfigError);
  }
  SUBCASE("sine with two history features") {
    json meta = write_dir(d.path, "sine", 2, base_hyper());
    meta["history_features"].push_back(sequence("hist_cate_id", 4, 8, nullptr));
    write_file_atomic(d.path + "/meta.json", meta.dump());
    CHECK_THROWS_WITH_AS(read_sample_dir(d.path),
                         (d.path + "/meta.json: model 'sine' needs exactly one sequence feature in history_features, "
                                   "got " + meta["history_features"].dump())
                             .c_str(),
                         ConfigError);
  }
}
