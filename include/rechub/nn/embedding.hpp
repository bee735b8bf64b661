#pragma once
// EmbeddingLayer: Torch-RecHub's EmbeddingLayer (torch_rechub/basic/layers.py).
//
// One table (Parameter [vocab_size, embed_dim]) per Sparse/SequenceFeature that is not shared_with
// another, registered as "embed_dict.<feature>.weight" so that a model holding the layer as
// "embedding" has Torch-RecHub's state_dict keys ("embedding.embed_dict.movie_id.weight").
// A feature with shared_with looks its ids up in the other feature's table: the same Parameter,
// so its gradient is the sum over both uses.
//
// forward(batch, features, squeeze_dim), B = batch rows:
//   SparseFeature    ids int32 [B] (or [B, 1])  -> gather_rows                 [B, D]
//   SequenceFeature  ids int32 [B, L]           -> embedding_bag(pooling)      [B, D], concat: [B, L, D]
//   DenseFeature     float32 [B] or [B, d]      -> the column itself           [B, d]
//   squeeze_dim = true:  [B, sum of widths]: sparse/sequence embeddings flattened in feature order,
//                        then the dense columns (Torch-RecHub's order).
//   squeeze_dim = false: [B, num_features, D] (or [B, num_features, L, D] for concat pooling);
//                        every feature must embed to the same shape and dense features are
//                        rejected (Torch-RecHub silently drops them there).
// Sequence pooling skips padding ids: padding_idx if the feature sets one, else 0 (rechub's label
// encoding reserves id 0); padding_idx = -1 pools every position like Torch-RecHub without a mask.
// Concat pooling zeroes padding positions.
#include <array>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "rechub/core/rng.hpp"
#include "rechub/data/dataset.hpp"
#include "rechub/nn/features.hpp"
#include "rechub/nn/module.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/shape.hpp"

namespace rechub {

/// Torch-RecHub's EmbeddingLayer: embedding tables for a feature list, and their lookup.
class EmbeddingLayer : public Module {
 public:
  /// Most features one forward() call accepts.
  static constexpr int kMaxFeatures = 64;

  /// Builds a table for every feature that owns one; `rng` draws the initial values.
  explicit EmbeddingLayer(const std::vector<Feature>& features, Rng& rng = global_rng()) : features_(features) {
    for (const auto& f : features_) {
      if (std::holds_alternative<DenseFeature>(f)) {
        ++n_dense_;
        continue;
      }
      const std::string& name = feature_name(f);
      if (find_table(name) || feature_table_name(f) != name) continue;  // repeated name, or shared
      const auto* sp = std::get_if<SparseFeature>(&f);
      const auto* sq = std::get_if<SequenceFeature>(&f);
      const Initializer& init = sp ? sp->initializer : sq->initializer;
      const std::int64_t vocab = sp ? sp->vocab_size : sq->vocab_size;
      Tensor w = Tensor::empty(Shape{vocab, feature_embed_dim(f)});
      init.fill(w, rng);
      tables_.push_back({name, std::make_unique<Parameter>(std::move(w))});
      register_parameter("embed_dict." + name + ".weight", *tables_.back().weight);
    }
    for (const auto& f : features_) {
      if (std::holds_alternative<DenseFeature>(f)) continue;
      const std::string& name = feature_name(f);
      const std::string& target = feature_table_name(f);
      if (target == name) continue;
      const Parameter* t = find_table(target);
      RECHUB_CHECK_AS(ConfigError, t != nullptr, "EmbeddingLayer: feature '", name, "' is shared_with '", target,
                      "', which has no embedding table (not among the features, or itself shared)");
      RECHUB_CHECK_AS(ConfigError, t->shape()[1] == feature_embed_dim(f), "EmbeddingLayer: feature '", name,
                      "' has embed_dim ", feature_embed_dim(f), " but is shared_with '", target, "' with embed_dim ",
                      t->shape()[1]);
    }
  }

  /// Embeds `features` of `batch` (see the header comment for shapes).
  Var forward(const Batch& batch, const std::vector<Feature>& features, bool squeeze_dim = false) const {
    RECHUB_CHECK_AS(ConfigError, !features.empty(), "EmbeddingLayer: the input features can not be empty");
    RECHUB_CHECK_AS(ConfigError, features.size() <= static_cast<std::size_t>(kMaxFeatures),
                    "EmbeddingLayer: ", features.size(), " features in one call, at most ", kMaxFeatures);
    std::array<Var, kMaxFeatures> parts;
    int n = 0;
    const Feature* first = nullptr;
    for (const auto& f : features) {
      if (std::holds_alternative<DenseFeature>(f)) {
        RECHUB_CHECK_AS(ConfigError, squeeze_dim, "EmbeddingLayer: dense feature '", feature_name(f),
                        "' needs squeeze_dim = true");
        continue;
      }
      Var e = embed(batch, f);
      if (squeeze_dim) {
        if (e.ndim() == 3) e = reshape(e, Shape{e.dim(0), e.dim(1) * e.dim(2)});  // concat pooling: [B, L*D]
      } else {
        if (first)
          RECHUB_CHECK_SHAPE(e.shape() == parts[0].shape(),
                             "EmbeddingLayer: with squeeze_dim = false every feature "
                             "must embed to the same shape; '",
                             feature_name(*first), "' gives ", parts[0].shape().str(), ", '", feature_name(f),
                             "' gives ", e.shape().str());
        else first = &f;
      }
      parts[static_cast<std::size_t>(n++)] = e;
    }
    if (!squeeze_dim) {
      RECHUB_CHECK_AS(ConfigError, n > 0, "EmbeddingLayer: squeeze_dim = false needs a sparse or sequence feature");
      for (int i = 0; i < n; ++i) parts[static_cast<std::size_t>(i)] = unsqueeze(parts[static_cast<std::size_t>(i)], 1);
      return concat(parts.data(), n, 1);
    }
    for (const auto& f : features)
      if (std::holds_alternative<DenseFeature>(f)) parts[static_cast<std::size_t>(n++)] = embed(batch, f);
    return concat(parts.data(), n, 1);
  }

  /// One feature's embedding: sparse [B, D]; sequence pooled [B, D] or concat [B, L, D]; dense [B, d].
  Var embed(const Batch& batch, const Feature& f) const {
    const std::string& name = feature_name(f);
    const Tensor& col = batch[name];
    if (auto* d = std::get_if<DenseFeature>(&f)) {
      detail::check_f32("EmbeddingLayer", col, name.c_str());
      RECHUB_CHECK_SHAPE((col.ndim() == 1 && d->embed_dim == 1) || (col.ndim() == 2 && col.dim(1) == d->embed_dim),
                         "EmbeddingLayer: dense feature '", name, "' column ", col.shape().str(),
                         " does not match embed_dim ", d->embed_dim);
      return constant(col.ndim() == 1 ? col.reshape(Shape{col.dim(0), 1}) : col);
    }
    detail::check_i32("EmbeddingLayer", col, name.c_str());
    const Parameter& t = table(name);
    if (std::holds_alternative<SparseFeature>(f)) {
      RECHUB_CHECK_SHAPE(col.ndim() == 1 || (col.ndim() == 2 && col.dim(1) == 1), "EmbeddingLayer: sparse feature '",
                         name, "' column ", col.shape().str(), " must be [B] or [B, 1]");
      return gather_rows(t.var(), col.ndim() == 1 ? col : col.reshape(Shape{col.dim(0)}));
    }
    const auto& s = std::get<SequenceFeature>(f);
    RECHUB_CHECK_SHAPE(col.ndim() == 2, "EmbeddingLayer: sequence feature '", name, "' column ", col.shape().str(),
                       " must be [B, L]");
    return embedding_bag(t.var(), col, bag_mode_from_string(s.pooling), s.padding_idx.value_or(0));
  }

  /// The table a feature (or a table name) uses; throws ConfigError when there is none.
  const Parameter& table(const std::string& feature) const {
    if (const Parameter* p = find_table(feature)) return *p;
    for (const auto& f : features_)
      if (feature_name(f) == feature && !std::holds_alternative<DenseFeature>(f))
        if (const Parameter* p = find_table(feature_table_name(f))) return *p;
    detail::throw_error<ConfigError>("EmbeddingLayer: no embedding table for feature '", feature,
                                     "' (tables: ", table_names(), ")");
  }
  Parameter& table(const std::string& feature) {
    return const_cast<Parameter&>(static_cast<const EmbeddingLayer*>(this)->table(feature));
  }
  /// Whether `name` owns a table (false for shared and dense features).
  bool has_table(const std::string& name) const { return find_table(name) != nullptr; }
  /// Marks every table for lazy (row-sparse) Adam: rows receiving gradient are recorded.
  void track_rows(bool on = true) {
    for (auto& t : tables_) t.weight->track_rows(on);
  }
  /// Number of dense features given to the constructor.
  int n_dense() const { return n_dense_; }
  const std::vector<Feature>& features() const { return features_; }
  /// Table names in creation order, comma-separated (for messages).
  std::string table_names() const {
    std::string s;
    for (const auto& t : tables_) s += (s.empty() ? "" : ", ") + t.name;
    return s;
  }

 private:
  struct Table {
    std::string name;
    std::unique_ptr<Parameter> weight;  // by pointer: Module registers parameters by address
  };
  const Parameter* find_table(const std::string& name) const {
    for (const auto& t : tables_)
      if (t.name == name) return t.weight.get();
    return nullptr;
  }

  std::vector<Feature> features_;
  std::vector<Table> tables_;
  int n_dense_ = 0;
};

}  // namespace rechub
