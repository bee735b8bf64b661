#pragma once
// Recipes: everything that turns interactions into a trained model, per model name.
//
//  * "torch-rechub": Torch-RecHub's own examples (examples/matching/run_ml_*.py), reproduced
//    setting for setting, so the two libraries can be compared on the same samples.
//  * "rechub": our defaults, tuned on a validation split (each user's second-to-last item) of
//    MovieLens-100K, never on the test items. See README "Recipes" for the figures.
// A recipe is plain data: JSON in, JSON out, so `rechub train --config f.json` overrides any field.
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "rechub/data/match_columns.hpp"
#include "rechub/data/position_samples.hpp"
#include "rechub/data/samples.hpp"
#include "rechub/models/registry.hpp"
#include "rechub/train/match_trainer.hpp"

namespace rechub {

struct Recipe {
  std::string model;
  std::string name;                 // "rechub" or "torch-rechub"
  MatchSampleOptions samples;
  TrainerOptions trainer;
  int embed_dim = 16;
  nlohmann::json model_overrides = nlohmann::json::object();  // merged into the model's default config
  // Mean-pool histories over real items only (rechub), or over all seq_max_len slots with the
  // padding id's embedding included, as Torch-RecHub's examples do (they leave padding_idx unset).
  bool mask_history_padding = true;
  // How evaluation and retrieval rank items: Torch-RecHub's examples all use cosine (Annoy
  // "angular"); models trained on raw dot products (SASRec & co. under a full softmax) rank by
  // the inner product they were trained on.
  std::string metric = "cosine";
};

inline nlohmann::json sample_options_json(const MatchSampleOptions& s) {
  return {{"mode", s.mode}, {"neg_ratio", s.neg_ratio}, {"sample_method", s.sample_method},
          {"min_item", s.min_item}, {"seq_max_len", s.seq_max_len},
          {"padding", s.padding == PadSide::pre ? "pre" : "post"},
          {"truncating", s.truncating == PadSide::pre ? "pre" : "post"}, {"seed", s.seed}};
}
inline void apply_sample_options(const nlohmann::json& j, MatchSampleOptions& s) {
  s.mode = j.value("mode", s.mode);
  s.neg_ratio = j.value("neg_ratio", s.neg_ratio);
  s.sample_method = j.value("sample_method", s.sample_method);
  s.min_item = j.value("min_item", s.min_item);
  s.seq_max_len = j.value("seq_max_len", s.seq_max_len);
  if (j.contains("padding")) s.padding = parse_pad_side(j["padding"].get<std::string>(), "padding");
  if (j.contains("truncating")) s.truncating = parse_pad_side(j["truncating"].get<std::string>(), "truncating");
  s.seed = j.value("seed", s.seed);
}

inline nlohmann::json recipe_json(const Recipe& r) {
  return {{"model", r.model}, {"recipe", r.name}, {"samples", sample_options_json(r.samples)},
          {"trainer", r.trainer}, {"embed_dim", r.embed_dim}, {"model_overrides", r.model_overrides},
          {"mask_history_padding", r.mask_history_padding}, {"metric", r.metric}};
}
/// Overrides fields of `r` from a JSON config ({"samples": {...}, "trainer": {...}, "embed_dim": 32, "model": {...}}).
inline void apply_recipe_json(const nlohmann::json& j, Recipe& r) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k == "samples") apply_sample_options(*it, r.samples);
    else if (k == "trainer") {
      nlohmann::json t = r.trainer;
      t.merge_patch(*it);
      r.trainer = t.get<TrainerOptions>();
    } else if (k == "embed_dim") r.embed_dim = it->get<int>();
    else if (k == "model_overrides" || k == "model_config") r.model_overrides.merge_patch(*it);
    else if (k == "mask_history_padding") r.mask_history_padding = it->get<bool>();
    else if (k == "metric") {
      r.metric = it->get<std::string>();
      RECHUB_CHECK_AS(ConfigError, r.metric == "cosine" || r.metric == "inner_product", "config: metric '", r.metric,
                      "' (cosine, inner_product)");
    }
    else if (k == "model" || k == "recipe") continue;
    else detail::throw_error<ConfigError>("config: unknown field '", k, "' (samples, trainer, embed_dim, model_overrides, metric)");
  }
}

/// Torch-RecHub's example settings for `model` (examples/matching/run_ml_<model>.py).
inline Recipe torch_rechub_recipe(const std::string& model) {
  Recipe r;
  r.model = model;
  r.name = "torch-rechub";
  r.samples.sample_method = 1;
  r.samples.neg_ratio = 3;
  r.samples.seq_max_len = 50;
  r.trainer.weight_decay = 1e-6;
  r.trainer.epochs = 10;
  r.mask_history_padding = false;
  if (model == "dssm") {
    r.samples.mode = 0;
    r.trainer.objective.mode = 0;
    r.trainer.lr = 1e-4;
    r.trainer.batch_size = 4096;
    r.model_overrides = {{"temperature", 1.0}};  // Torch-RecHub's DSSM never applies its 0.02
  } else if (model == "youtube_dnn") {
    r.samples.mode = 2;
    r.trainer.objective.mode = 2;
    r.trainer.lr = 1e-4;
    r.trainer.batch_size = 2048;
  } else if (model == "youtube_sbc") {
    r.samples.mode = 0;
    r.samples.neg_ratio = 0;
    r.trainer.objective.mode = 2;
    r.trainer.objective.loss = "sbc";
    r.trainer.objective.n_neg = 3;
    r.trainer.lr = 1e-3;
    r.trainer.batch_size = 512;
    r.trainer.epochs = 8;
  } else if (model == "facebook_dssm") {
    r.samples.mode = 1;
    r.trainer.objective.mode = 1;
    r.trainer.lr = 1e-4;
    r.trainer.batch_size = 2048;
    r.model_overrides = {{"shared_negatives", false}};
  } else if (model == "gru4rec" || model == "mind" || model == "comirec_dr" || model == "comirec_sa" ||
             model == "sine") {
    // run_ml_gru4rec.py, run_ml_mind.py, run_ml_comirec.py, run_ml_sine.py: list-wise over 3 sampled
    // negatives, batch 256, lr 1e-3; post padding except SINE (pre), SINE with embed 128.
    r.samples.mode = 2;
    r.trainer.objective.mode = 2;
    r.trainer.lr = 1e-3;
    r.trainer.batch_size = 256;
    if (model == "sine") r.embed_dim = 128;
    else r.samples.padding = r.samples.truncating = PadSide::post;
    // ComiRec-DR's maps are torch.Tensor(...), in practice zeros (nn/capsule.hpp): reproduce that.
    if (model == "comirec_dr") r.model_overrides = {{"dr_init_std", 0.0}};
  } else if (model == "narm" || model == "stamp") {
    // No MovieLens example: run_sbr.py's settings (session data) on MovieLens histories. Its model
    // scores every item (full softmax), embed 100, batch 512, lr 1e-3, no weight decay, 30 epochs.
    r.samples.mode = 2;
    r.trainer.objective.mode = 2;
    r.trainer.objective.loss = "full";
    r.trainer.lr = 1e-3;
    r.trainer.weight_decay = 0;
    r.trainer.batch_size = 512;
    r.trainer.epochs = 30;
    r.embed_dim = 100;
    r.samples.padding = r.samples.truncating = PadSide::post;
  } else if (model == "sasrec") {
    // No example in Torch-RecHub: its SASRec returns per-position (pos, neg) logits, which only
    // MatchTrainer mode 1 (BPR) consumes; one row per user, one negative per position, the
    // paper's trainer (lr 1e-3, batch 128, 200 epochs, no weight decay), dropout 0.2, embed 50.
    r.samples.mode = 0;
    r.samples.neg_ratio = 1;
    r.samples.padding = PadSide::post;
    r.trainer.objective.mode = 1;
    r.trainer.objective.loss = "position_bpr";
    r.trainer.lr = 1e-3;
    r.trainer.weight_decay = 0;
    r.trainer.batch_size = 128;
    r.trainer.epochs = 200;
    r.embed_dim = 50;
    r.model_overrides = {{"dropout", 0.2}};
  } else {
    unknown_model(model);
  }
  return r;
}

/// Recipes whose training rows are one per user with a target at every position (SASRec-style).
inline bool trains_on_positions(const Recipe& r) {
  return r.trainer.objective.effective_loss().rfind("position_", 0) == 0;
}

/// rechub's default recipe for `model`: the same towers trained with a full softmax over the
/// whole catalogue (exact, no sampled negatives), temperature 0.05, embed 32, 20 epochs.
/// Tuned on the validation split of MovieLens-100K (README "Recipes").
inline Recipe rechub_recipe(const std::string& model) {
  Recipe r = torch_rechub_recipe(model);
  r.name = "rechub";
  r.model_overrides = nlohmann::json::object();
  if (model == "youtube_sbc") r.model_overrides["normalize"] = true;  // cosine towers, as SBC scores them
  r.samples.mode = 0;  // one row per (history, target), no sampled negatives: the catalogue is the negatives
  r.samples.neg_ratio = 0;
  r.mask_history_padding = true;
  r.embed_dim = 32;
  r.trainer.objective = Objective{};
  r.trainer.objective.mode = 2;
  r.trainer.objective.loss = "full";
  r.trainer.objective.temperature = 0.05f;
  r.trainer.lr = 1e-3;
  r.trainer.weight_decay = 1e-6;
  r.trainer.batch_size = 512;
  r.trainer.epochs = 20;
  return r;
}

/// The recurrent, attention and multi-interest models (one row per (history, target) or per user).
inline bool is_sequence_model(const std::string& model) {
  return model == "gru4rec" || model == "narm" || model == "stamp" || model == "sasrec" || model == "mind" ||
         model == "comirec_dr" || model == "comirec_sa" || model == "sine";
}

/// rechub's default recipe for the sequence and multi-interest models: a full softmax over the
/// catalogue on every training target, newest items kept (pre padding), ranked by the inner
/// product it trains, early-stopped on the validation item; SASRec trains on every position of
/// each user's sequence (Klenitskiy & Vasilev 2023). Tuned on the validation split of
/// MovieLens-100K (README "Sequence and multi-interest models").
inline Recipe rechub_sequence_recipe(const std::string& model) {
  Recipe r = torch_rechub_recipe(model);
  r.name = "rechub";
  r.model_overrides = nlohmann::json::object();
  r.samples.padding = r.samples.truncating = PadSide::pre;
  r.samples.mode = 0;
  r.samples.neg_ratio = 0;
  r.mask_history_padding = true;
  r.metric = "inner_product";
  r.embed_dim = 64;
  r.trainer.objective = Objective{};
  r.trainer.objective.mode = 2;
  r.trainer.objective.loss = "full";
  r.trainer.objective.temperature = 1.0f;
  r.trainer.lr = 1e-3;
  r.trainer.weight_decay = 0;
  // Early stopping on each user's second-to-last item (the best of at most 40 epochs, patience
  // 4): on ML-100K these models peak anywhere between epoch 6 and 20.
  r.trainer.epochs = 40;
  r.trainer.patience = 4;
  if (model == "mind" || model == "comirec_dr" || model == "comirec_sa") {
    // Cosine scores (both sides L2-normalised): a softmax separates them only at a low
    // temperature; the newest 20 items beat 50 on the validation split. (SINE's vectors are not
    // normalised: T 1, its example's seq_max_len.)
    r.trainer.objective.temperature = 0.1f;
    r.samples.seq_max_len = 20;
  }
  if (model == "sasrec") {
    r.trainer.objective.loss = "position_full";
    r.samples.seq_max_len = 200;
    r.trainer.batch_size = 64;
    r.trainer.epochs = 100;
    r.trainer.patience = 8;
    r.model_overrides = {{"dropout", 0.2}};
  }
  return r;
}

inline Recipe make_recipe(const std::string& model, const std::string& recipe) {
  if (recipe == "torch-rechub") return torch_rechub_recipe(model);
  RECHUB_CHECK_AS(ConfigError, recipe == "rechub", "unknown recipe '", recipe, "' (rechub, torch-rechub)");
  return is_sequence_model(model) ? rechub_sequence_recipe(model) : rechub_recipe(model);
}

/// Samples for a recipe, with the derived columns its objective needs (neg_<attr>, log q).
/// A "full" objective points at md.items: keep the returned MatchData alive while training.
inline MatchData prepare_samples(const Interactions& data, Recipe& r) {
  if (trains_on_positions(r)) {
    // Test rows and the item table as usual (no negatives needed there); training rows per user.
    MatchSampleOptions so = r.samples;
    so.mode = 0;
    so.neg_ratio = 0;
    MatchData md = generate_seq_feature_match(data, so);
    PositionSampleOptions po;
    po.seq_max_len = r.samples.seq_max_len;
    po.neg_ratio = r.samples.neg_ratio;
    po.sample_method = r.samples.sample_method;
    po.padding = r.samples.padding;
    po.seed = r.samples.seed;
    PositionData pd = generate_position_samples(data, po);
    md.train = std::move(pd.train);
    md.n_train_rows = pd.n_rows;
    md.n_train_samples = pd.n_positions;
    r.trainer.objective.item_col = md.item_col;
    return md;
  }
  MatchData md = generate_seq_feature_match(data, r.samples);
  add_negative_attributes(md.train, data);
  r.trainer.objective.item_col = md.item_col;
  const std::string loss = r.trainer.objective.effective_loss();
  if (loss == "sbc" || r.trainer.objective.log_q_correction)
    r.trainer.objective.log_q = log_of(item_sample_weight(md.item_counts));
  return md;
}

/// The model of a recipe for a dataset's features (default config + the recipe's overrides).
inline nlohmann::json recipe_model_config(const Recipe& r, const FeatureSchema& s) {
  nlohmann::json cfg;
  if (r.model == "facebook_dssm") {
    const bool shared = r.model_overrides.value("shared_negatives", true);
    cfg = two_tower_json(FaceBookDSSM::default_config(s, r.embed_dim, shared, r.samples.mode == 1));
  } else {
    cfg = default_model_config(r.model, s, r.embed_dim, r.samples.mode);
  }
  if (!r.mask_history_padding && cfg.contains("user_features"))
    for (auto& f : cfg["user_features"])
      if (f["type"] == "sequence" && f["pooling"] != "concat") f["padding_idx"] = -1;
  // Models with a fixed sequence length (position tables) take the recipe's.
  for (const char* key : {"max_len", "max_length", "seq_max_len"})
    if (cfg.contains(key)) cfg[key] = r.samples.seq_max_len;
  nlohmann::json over = r.model_overrides;
  over.erase("shared_negatives");
  cfg.merge_patch(over);
  return cfg;
}

}  // namespace rechub
