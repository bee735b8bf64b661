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
          {"mask_history_padding", r.mask_history_padding}};
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
    else if (k == "model" || k == "recipe") continue;
    else detail::throw_error<ConfigError>("config: unknown field '", k, "' (samples, trainer, embed_dim, model_overrides)");
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
  } else {
    unknown_model(model);
  }
  return r;
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

inline Recipe make_recipe(const std::string& model, const std::string& recipe) {
  if (recipe == "torch-rechub") return torch_rechub_recipe(model);
  RECHUB_CHECK_AS(ConfigError, recipe == "rechub", "unknown recipe '", recipe, "' (rechub, torch-rechub)");
  return rechub_recipe(model);
}

/// Samples for a recipe, with the derived columns its objective needs (neg_<attr>, log q).
/// A "full" objective points at md.items: keep the returned MatchData alive while training.
inline MatchData prepare_samples(const Interactions& data, Recipe& r) {
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
  if (!r.mask_history_padding)
    for (auto& f : cfg["user_features"])
      if (f["type"] == "sequence" && f["pooling"] != "concat") f["padding_idx"] = -1;
  nlohmann::json over = r.model_overrides;
  over.erase("shared_negatives");
  cfg.merge_patch(over);
  return cfg;
}

}  // namespace rechub
