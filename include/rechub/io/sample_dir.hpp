#pragma once
// Sample directories: the exchange format of the side-by-side comparator
// (benchmarks/torch_rechub/README.md). A directory holds one model's training rows, test users,
// held-out items, item table, feature specs and hyper-parameters; both Torch-RecHub and rechub
// train on the SAME arrays from it.
//
// Reading maps the Torch-RecHub example configuration in meta.json onto a rechub Recipe and a
// model config, setting for setting. A sequence feature without padding_idx keeps Torch-RecHub's
// semantics: no id is padding, so mean pooling averages all seq_max_len slots (padding_idx -1).
//
// Per model (meta.json "model" -> config; "hyper" keys in quotes):
//   dssm, facebook_dssm, youtube_dnn, youtube_sbc   TwoTowerConfig ("dims", "item_dims", "activation",
//                                                   "dropout", "temperature"; SBC: loss "sbc", "n_neg")
//   gru4rec                GRU4RecConfig: user MLP "dims", "num_layers" (2), GRU without bias, padding run
//                          through the GRU (mask_padding false, as Torch-RecHub), T = "temperature"
//   mind, comirec_dr/_sa   MultiInterestConfig: "interest_num", "routing_times", "hidden_dim",
//                          max_length = seq_max_len, T = 1 (Torch-RecHub never applies its temperature)
//   sine                   SINEConfig: embed_dim, "hidden_dim", "num_concept", "num_intention",
//                          "num_heads", seq_max_len, "temperature" (the aggregation's)
//   narm, stamp            NARMConfig / STAMPConfig: "hidden_dim", "emb_dropout",
//                          "session_rep_dropout" / "weight_std", "emb_std"; "loss": "full" (softmax over
//                          every item, the target's id is the class)
//   sasrec                 SASRecConfig: "max_len", "num_blocks", "num_heads", "dropout"; mode 1 trains
//                          loss "position_bpr" on the position features pos_<item> / neg_<item>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "rechub/io/atomic_file.hpp"
#include "rechub/io/npy.hpp"
#include "rechub/models/registry.hpp"
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
// The one feature of meta[key] (history_features of the sequence models), as type T.
template <class T>
T sample_dir_single(const nlohmann::json& meta, const char* key, const std::string& dir) {
  std::vector<Feature> fs = sample_dir_features(meta, key);
  RECHUB_CHECK_AS(ConfigError, fs.size() == 1 && std::holds_alternative<T>(fs[0]), dir, "/meta.json: model '",
                  meta.value("model", std::string()), "' needs exactly one ",
                  std::is_same<T, SparseFeature>::value ? "sparse" : "sequence", " feature in ", key, ", got ",
                  meta.contains(key) ? meta[key].dump() : std::string("none"));
  return std::get<T>(fs[0]);
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

  const auto dims = h.value("dims", std::vector<std::int64_t>{});
  const auto item_dims = h.value("item_dims", dims);
  const std::string act = h.value("activation", std::string("relu"));
  const float dropout = h.value("dropout", 0.0f);
  const std::string loss = h.value("loss", std::string());
  RECHUB_CHECK_AS(ConfigError, loss.empty() || loss == "full", dir, "/meta.json: hyper.loss '", loss,
                  "' is not understood (only \"full\")");
  if (!loss.empty()) o.loss = loss;
  const std::int64_t seq_max_len = r.samples.seq_max_len;

  if (r.model == "gru4rec") {
    GRU4RecConfig g;
    g.user_features = detail::sample_dir_features(m, "user_features");
    g.history_features = detail::sample_dir_features(m, "history_features");
    g.item_features = detail::sample_dir_features(m, "item_features");
    g.neg_item_features = detail::sample_dir_features(m, "neg_item_feature");
    g.user_params = TowerParams{dims, act, dropout, true};
    g.num_layers = h.value("num_layers", 2);
    g.gru_bias = false;
    g.mask_padding = false;  // Torch-RecHub feeds the padded history to nn.GRU unpacked
    g.temperature = h.value("temperature", 1.0f);
    s.model_config = gru4rec_json(g);
    return s;
  }
  if (r.model == "mind" || r.model == "comirec_dr" || r.model == "comirec_sa") {
    MultiInterestConfig mi;
    mi.user_features = detail::sample_dir_features(m, "user_features");
    mi.history_features = detail::sample_dir_features(m, "history_features");
    mi.item_features = detail::sample_dir_features(m, "item_features");
    mi.neg_item_features = detail::sample_dir_features(m, "neg_item_feature");
    mi.interest_num = h.value("interest_num", 4);
    mi.max_length = seq_max_len;
    mi.routing_times = h.value("routing_times", 3);
    mi.hidden_dim = h.value("hidden_dim", std::int64_t{0});
    mi.temperature = 1.0f;  // the examples pass 0.02; the models' forward never divides by it
    if (r.model == "comirec_dr") mi.dr_init_std = 0.0f;  // torch.Tensor(...): zeros in practice (nn/capsule.hpp)
    s.model_config = mi;
    return s;
  }
  if (r.model == "sine") {
    const auto hist = detail::sample_dir_single<SequenceFeature>(m, "history_features", dir);
    const auto item = detail::sample_dir_single<SparseFeature>(m, "item_features", dir);
    const auto neg = detail::sample_dir_features(m, "neg_item_feature");
    SINEConfig c;
    c.history_feature = hist.name;
    c.item_feature = item.name;
    c.neg_item_feature = neg.empty() ? std::string() : feature_name(neg[0]);
    c.num_items = item.vocab_size;
    c.embedding_dim = item.embed_dim;
    c.hidden_dim = h.value("hidden_dim", c.hidden_dim);
    c.num_concept = h.value("num_concept", c.num_concept);
    c.num_intention = h.value("num_intention", c.num_intention);
    c.seq_max_len = seq_max_len;
    c.num_heads = h.value("num_heads", 1);
    c.temperature = h.value("temperature", c.temperature);
    c.score_temperature = 1.0f;
    s.model_config = c;
    return s;
  }
  if (r.model == "narm" || r.model == "stamp") {
    const auto hist = detail::sample_dir_single<SequenceFeature>(m, "history_features", dir);
    const auto item = detail::sample_dir_single<SparseFeature>(m, "item_features", dir);
    const auto neg = detail::sample_dir_features(m, "neg_item_feature");
    if (r.model == "narm") {
      NARMConfig c;
      c.history_feature = hist;
      c.item_feature = item;
      c.neg_item_features = neg;
      c.hidden_dim = h.value("hidden_dim", c.hidden_dim);
      c.emb_dropout = h.value("emb_dropout", c.emb_dropout);
      c.session_rep_dropout = h.value("session_rep_dropout", c.session_rep_dropout);
      s.model_config = narm_json(c);
    } else {
      STAMPConfig c;
      c.history_feature = hist;
      c.item_feature = item;
      c.neg_item_features = neg;
      c.weight_std = h.value("weight_std", c.weight_std);
      c.emb_std = h.value("emb_std", c.emb_std);
      s.model_config = stamp_json(c);
    }
    return s;
  }
  if (r.model == "sasrec") {
    SASRecConfig c;
    c.item_feature = detail::sample_dir_single<SparseFeature>(m, "item_features", dir);
    c.history_feature = detail::sample_dir_single<SequenceFeature>(m, "history_features", dir);
    c.max_len = h.value("max_len", static_cast<int>(seq_max_len));
    c.num_blocks = h.value("num_blocks", c.num_blocks);
    c.num_heads = h.value("num_heads", c.num_heads);
    c.dropout = h.value("dropout", c.dropout);
    // Per-position BPR (Torch-RecHub's mode-1 loss on SASRec's per-position logits) over the
    // position features, which the objective reads as pos_<item> / neg_<item>.
    std::vector<std::string> pf;
    for (const Feature& f : detail::sample_dir_features(m, "position_features")) pf.push_back(feature_name(f));
    const std::vector<std::string> want{"pos_" + o.item_col, "neg_" + o.item_col};
    RECHUB_CHECK_AS(ConfigError, pf == want, dir, "/meta.json: sasrec needs position_features [pos_", o.item_col,
                    ", neg_", o.item_col, "]");
    RECHUB_CHECK_AS(ConfigError, s.data.mode == 1, dir, "/meta.json: sasrec trains pair-wise per position (mode 1), got mode ",
                    s.data.mode);
    o.loss = "position_bpr";
    s.model_config = sasrec_json(c);
    return s;
  }

  TwoTowerConfig c;
  c.user_features = detail::sample_dir_features(m, "user_features");
  c.item_features = detail::sample_dir_features(m, "item_features");
  c.neg_item_features = detail::sample_dir_features(m, "neg_item_feature");
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
    detail::throw_error<ConfigError>(dir, "/meta.json: sample dir: model '", r.model, "' not supported (known: ",
                                     "dssm, facebook_dssm, youtube_dnn, youtube_sbc, gru4rec, mind, comirec_dr, ",
                                     "comirec_sa, sine, narm, stamp, sasrec)");
  }
  s.model_config = two_tower_json(c);
  return s;
}

}  // namespace rechub
