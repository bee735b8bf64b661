#pragma once
// Models by name: build from a JSON config (a checkpoint's or a user's file).
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "rechub/models/comirec.hpp"
#include "rechub/models/dssm.hpp"
#include "rechub/models/facebook_dssm.hpp"
#include "rechub/models/gru4rec.hpp"
#include "rechub/models/mind.hpp"
#include "rechub/models/narm.hpp"
#include "rechub/models/sasrec.hpp"
#include "rechub/models/sine.hpp"
#include "rechub/models/stamp.hpp"
#include "rechub/models/youtube_dnn.hpp"
#include "rechub/models/youtube_sbc.hpp"

namespace rechub {

inline const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names{"dssm", "facebook_dssm", "youtube_dnn", "youtube_sbc",
                                              "mind", "comirec_dr", "comirec_sa", "sine",
                                              "gru4rec", "narm", "stamp", "sasrec"};
  return names;
}

[[noreturn]] inline void unknown_model(const std::string& name) {
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  detail::throw_error<ConfigError>("unknown model '", name, "' (known: ", known, ")");
}

/// Builds the model named `name` from its JSON config (the format MatchModel::config() writes).
inline std::unique_ptr<MatchModel> make_model(const std::string& name, const nlohmann::json& config) {
  const auto& names = model_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) unknown_model(name);
  if (name == "mind") return std::make_unique<MIND>(config.get<MultiInterestConfig>());
  if (name == "comirec_dr") return std::make_unique<ComirecDR>(config.get<MultiInterestConfig>());
  if (name == "comirec_sa") return std::make_unique<ComirecSA>(config.get<MultiInterestConfig>());
  if (name == "sine") return std::make_unique<SINE>(config.get<SINEConfig>());
  if (name == "gru4rec") return std::make_unique<GRU4Rec>(gru4rec_from_json(config));
  if (name == "narm") return std::make_unique<NARM>(narm_from_json(config));
  if (name == "stamp") return std::make_unique<STAMP>(stamp_from_json(config));
  if (name == "sasrec") return std::make_unique<SASRec>(sasrec_from_json(config));
  TwoTowerConfig c = two_tower_from_json(config);
  if (name == "dssm") return std::make_unique<DSSM>(std::move(c));
  if (name == "facebook_dssm") return std::make_unique<FaceBookDSSM>(std::move(c));
  if (name == "youtube_dnn") return std::make_unique<YoutubeDNN>(std::move(c));
  return std::make_unique<YoutubeSBC>(std::move(c));
}

/// The default (Torch-RecHub example) configuration of `name` for a dataset.
inline nlohmann::json default_model_config(const std::string& name, const FeatureSchema& s, int embed_dim = 16,
                                           int mode = 2) {
  if (name == "dssm") return two_tower_json(DSSM::default_config(s, embed_dim, mode != 1));
  if (name == "facebook_dssm") return two_tower_json(FaceBookDSSM::default_config(s, embed_dim, true, mode == 1));
  if (name == "youtube_dnn") return two_tower_json(YoutubeDNN::default_config(s, embed_dim));
  if (name == "youtube_sbc") return two_tower_json(YoutubeSBC::default_config(s, embed_dim));
  if (name == "mind") return MIND::default_config(s, embed_dim);
  if (name == "comirec_dr") return ComirecDR::default_config(s, embed_dim);
  if (name == "comirec_sa") return ComirecSA::default_config(s, embed_dim);
  if (name == "sine") return SINE::default_config(s, embed_dim);
  if (name == "gru4rec") return gru4rec_json(GRU4Rec::default_config(s, embed_dim, mode == 1));
  if (name == "narm") return narm_json(NARM::default_config(s, embed_dim));
  if (name == "stamp") return stamp_json(STAMP::default_config(s, embed_dim));
  if (name == "sasrec") return sasrec_json(SASRec::default_config(s, embed_dim));
  unknown_model(name);
}

}  // namespace rechub
