#pragma once
// FeatureSchema: the vocabularies a dataset offers (ids and profile columns), from which the
// models build their default feature lists the way Torch-RecHub's examples do:
//   user:  SparseFeature(user_col) + every user profile column + SequenceFeature("hist_<item>",
//          pooling mean, shared_with item_col)
//   item:  SparseFeature(item_col) + every item profile column
//   negatives: "neg_items" (shared_with item_col) + "neg_<attr>" for each item profile column.
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "rechub/data/interactions.hpp"
#include "rechub/nn/features.hpp"

namespace rechub {

struct FeatureSchema {
  std::string user_col = "user_id", item_col = "movie_id";
  std::int64_t user_vocab = 0, item_vocab = 0;                       // including padding row 0
  std::vector<std::pair<std::string, std::int64_t>> user_profile;    // name, vocab (incl. 0)
  std::vector<std::pair<std::string, std::int64_t>> item_profile;

  static FeatureSchema from(const Interactions& data) {
    FeatureSchema s;
    s.user_col = data.user_col;
    s.item_col = data.item_col;
    s.user_vocab = data.user_ids.vocab_size();
    s.item_vocab = data.item_ids.vocab_size();
    for (const auto& c : data.user_features) s.user_profile.emplace_back(c.name, c.encoder.vocab_size());
    for (const auto& c : data.item_features) s.item_profile.emplace_back(c.name, c.encoder.vocab_size());
    return s;
  }
  std::string hist_col() const { return "hist_" + item_col; }

  std::vector<Feature> user_sparse(int dim) const {
    std::vector<Feature> f{SparseFeature(user_col, user_vocab, dim)};
    for (const auto& [n, v] : user_profile) f.push_back(SparseFeature(n, v, dim));
    return f;
  }
  SequenceFeature history(int dim, const std::string& pooling = "mean") const {
    return SequenceFeature(hist_col(), item_vocab, dim, pooling, item_col);
  }
  std::vector<Feature> item_sparse(int dim) const {
    std::vector<Feature> f{SparseFeature(item_col, item_vocab, dim)};
    for (const auto& [n, v] : item_profile) f.push_back(SparseFeature(n, v, dim));
    return f;
  }
  /// Features of sampled negatives: one id per row (pair-wise) or K per row (list-wise).
  /// shared = true reuses the positive items' tables (rechub's default); false gives the
  /// negatives tables of their own, as Torch-RecHub's FaceBookDSSM example does.
  std::vector<Feature> negatives(int dim, bool one_per_row, bool shared) const {
    std::vector<Feature> f;
    auto add = [&](const std::string& name, std::int64_t vocab, const std::string& table) {
      const std::string with = shared ? table : "";
      if (one_per_row) f.push_back(SparseFeature(name, vocab, dim, with));
      else f.push_back(SequenceFeature(name, vocab, dim, "concat", with));
    };
    add("neg_items", item_vocab, item_col);
    for (const auto& [n, v] : item_profile) add("neg_" + n, v, n);
    return f;
  }
};

}  // namespace rechub
