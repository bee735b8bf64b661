#pragma once
// Sample directories: the exchange format of the side-by-side comparator
// (benchmarks/torch_rechub/README.md). A directory holds one model's training rows, test users,
// held-out items, item table, feature specs and hyper-parameters; both Torch-RecHub and rechub
// train on the SAME arrays from it.
//
// Reading maps the Torch-RecHub example configuration in meta.json onto a rechub Recipe and a
// model config, setting for setting. A sequence feature without padding_idx keeps Torch-RecHub's
// semantics: no id is padding, so mean pooling averages all seq_max_len slots (padding_idx -1).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rechub/io/atomic_file.hpp"
#include "rechub/io/npy.hpp"
#include "rechub/train/recipes.hpp"

namespace rechub {

struct SampleDir {
  nlohmann::json meta;
  MatchData data;        // train, test, items, test_targets, item_col, user_col
  Recipe recipe;         // trainer and objective from meta.json
  nlohmann::json model_config;
};

namespace detail {
inline std::vector<Feature> sample_dir_features(const nlohmann::json& meta, const char* key) {
  std::vector<Feature> out;
  if (!meta.contains(key) || meta[key].is_null()) return out;
  for (nlohmann::json f : meta[key]) {
    if (f.value("type", "") == "sequence" && (!f.contains("padding_idx") || f["padding_idx"].is_null()))
      f["padding_idx"] = -1;  // Torch-RecHub: no padding mask unless padding_idx is set
    out.push_back(f.get<Feature>());
  }
  return out;
}
}  // namespace detail

/// Reads DIR (meta.json, train/, test/, test_target.npy, items/) into data + recipe + model config.
inline SampleDir read_sample_dir(const std::string& dir) {
  SampleDir s;
  try {
    s.meta = nlohmann::json::parse(read_file(dir + "/meta.json"));
  } catch (const nlohmann::json::parse_error& e) {
    detail::throw_error<DataError>(dir, "/meta.json: not valid JSON: ", e.what());
  }
  const auto& m = s.meta;
  for (const char* k : {"model", "mode", "hyper", "user_features", "item_features", "item_col", "user_col"})
    RECHUB_CHECK_AS(DataError, m.contains(k), dir, "/meta.json: missing key '", k, "'");
  s.data.train = read_dataset_dir(dir + "/train");
  if (s.data.train.has("label") && s.data.train["label"].dtype() == DType::i32) {  // 0/1 ids -> float labels
    const Tensor& l = s.data.train["label"];
    Tensor f = Tensor::empty(l.shape());
    for (std::int64_t i = 0; i < l.numel(); ++i) f.f32()[i] = static_cast<float>(l.i32()[i]);
    s.data.train.set("label", f);
  }
  s.data.test = read_dataset_dir(dir + "/test");
  s.data.items = read_dataset_dir(dir + "/items");
  Tensor target = read_npy(dir + "/test_target.npy");
  RECHUB_CHECK_AS(DataError, target.numel() == s.data.test.rows(), dir, "/test_target.npy: ", target.numel(),
                  " targets for ", s.data.test.rows(), " test users");
  s.data.test_targets.assign(target.i32(), target.i32() + target.numel());
  s.data.item_col = m["item_col"].get<std::string>();
  s.data.user_col = m["user_col"].get<std::string>();
  s.data.n_train_rows = s.data.train.rows();
  s.data.n_test = s.data.test.rows();
  s.data.mode = m["mode"].get<int>();

  const auto& h = m["hyper"];
  Recipe& r = s.recipe;
  r.model = m["model"].get<std::string>();
  r.name = "torch-rechub";
  r.embed_dim = m.value("embed_dim", 16);
  r.samples.mode = s.data.mode;
  r.samples.seq_max_len = m.value("seq_max_len", 50);
  r.trainer.lr = h.at("lr").get<double>();
  r.trainer.weight_decay = h.at("weight_decay").get<double>();
  r.trainer.batch_size = h.at("batch_size").get<std::int64_t>();
  r.trainer.epochs = h.at("epochs").get<int>();
  Objective& o = r.trainer.objective;
  o.mode = s.data.mode;
  o.item_col = s.data.item_col;

  TwoTowerConfig c;
  c.user_features = detail::sample_dir_features(m, "user_features");
  c.item_features = detail::sample_dir_features(m, "item_features");
  c.neg_item_features = detail::sample_dir_features(m, "neg_item_feature");
  const auto dims = h.value("dims", std::vector<std::int64_t>{});
  const auto item_dims = h.value("item_dims", dims);
  const std::string act = h.value("activation", std::string("relu"));
  const float dropout = h.value("dropout", 0.0f);
  c.user_params = TowerParams{dims, act, dropout, true};
  c.temperature = h.value("temperature", 1.0f);
  c.normalize = true;
  if (r.model == "dssm" || r.model == "facebook_dssm") {
    c.item_params = TowerParams{item_dims, act, dropout, true};
    c.temperature = 1.0f;  // neither Torch-RecHub model applies its temperature
  } else if (r.model == "youtube_sbc") {
    c.item_params = TowerParams{item_dims, act, dropout, true};
    c.normalize = false;
    o.loss = "sbc";
    o.n_neg = h.value("n_neg", 3);
    o.log_q_column = "sample_weight";
  } else if (r.model != "youtube_dnn") {
    detail::throw_error<ConfigError>(dir, "/meta.json: model '", r.model, "' has no rechub port yet");
  }
  s.model_config = two_tower_json(c);
  return s;
}

}  // namespace rechub
