#pragma once
// Feature specs, as Torch-RecHub's torch_rechub/basic/features.py defines them (same names, same
// defaults), so a model's feature lists read the same in both:
//
//   SparseFeature(name, vocab_size, embed_dim = auto, shared_with = none, padding_idx = none,
//                 initializer = RandomNormal(0, 1e-4))                    one id per row -> [B, D]
//   SequenceFeature(name, vocab_size, embed_dim = auto, pooling = "mean", shared_with = none,
//                   padding_idx = none, initializer = RandomNormal(0, 1e-4))  ids [B, L] -> pooled
//   DenseFeature(name, embed_dim = 1)                                       float column [B] or [B, d]
//
// embed_dim = auto is get_auto_embedding_dim(vocab_size) = floor(6 * vocab_size^0.25) (DCN, ADKDD'17).
// shared_with = "" means the feature owns its table; otherwise it looks ids up in the named
// feature's table. Initializers mirror torch_rechub/basic/initializers.py (RandomNormal,
// RandomUniform, XavierNormal, XavierUniform) on rechub's own RNG.
//
// JSON (nlohmann): {"type": "sparse" | "sequence" | "dense", "name": ..., "vocab_size": ...,
// "embed_dim": int | null (auto), "pooling": "mean", "shared_with": str | null,
// "padding_idx": int | null, "initializer": {"type": "RandomNormal", "mean": 0, "std": 0.0001}}.
// Missing optional keys take the defaults above; every error is a ConfigError naming the feature.
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/rng.hpp"
#include "rechub/core/tensor.hpp"

namespace rechub {

/// Torch-RecHub's default embedding size for a vocabulary: floor(6 * vocab_size^0.25).
inline int get_auto_embedding_dim(std::int64_t vocab_size) {
  return static_cast<int>(std::floor(6.0 * std::pow(static_cast<double>(vocab_size), 0.25)));
}

/// How an embedding table is initialised (a plain value; the named subtypes only construct it).
struct Initializer {
  enum class Kind : std::uint8_t { random_normal, random_uniform, xavier_normal, xavier_uniform };
  Kind kind = Kind::random_normal;
  double a = 0.0;  // mean (normal), minval (uniform), gain (xavier)
  double b = 1.0;  // std (normal), maxval (uniform); unused for xavier

  /// Torch-RecHub's class name ("RandomNormal", ...), also the JSON "type".
  const char* name() const {
    switch (kind) {
      case Kind::random_normal:
        return "RandomNormal";
      case Kind::random_uniform:
        return "RandomUniform";
      case Kind::xavier_normal:
        return "XavierNormal";
      default:
        return "XavierUniform";
    }
  }
  /// Fills a [V, D] table (torch's fan_in = D, fan_out = V for the Xavier variants).
  void fill(Tensor& t, Rng& rng) const {
    float* p = t.f32();
    const std::int64_t n = t.numel();
    const double fan_in = t.ndim() >= 2 ? double(t.dim(1)) : double(n),
                 fan_out = t.ndim() >= 2 ? double(t.dim(0)) : 1.0;
    switch (kind) {
      case Kind::random_normal:
        for (std::int64_t i = 0; i < n; ++i) p[i] = rng.normal(float(a), float(b));
        break;
      case Kind::random_uniform:
        for (std::int64_t i = 0; i < n; ++i) p[i] = rng.uniform(float(a), float(b));
        break;
      case Kind::xavier_normal: {
        const float sd = float(a * std::sqrt(2.0 / (fan_in + fan_out)));
        for (std::int64_t i = 0; i < n; ++i) p[i] = rng.normal(0.0f, sd);
        break;
      }
      case Kind::xavier_uniform: {
        const float bound = float(a * std::sqrt(6.0 / (fan_in + fan_out)));
        for (std::int64_t i = 0; i < n; ++i) p[i] = rng.uniform(-bound, bound);
        break;
      }
    }
  }
  bool operator==(const Initializer& o) const {
    return kind == o.kind && a == o.a && (b == o.b || kind == Kind::xavier_normal || kind == Kind::xavier_uniform);
  }
  bool operator!=(const Initializer& o) const { return !(*this == o); }
};

/// Normal(mean, std) entries.
struct RandomNormal : Initializer {
  explicit RandomNormal(double mean = 0.0, double std = 1.0) {
    kind = Kind::random_normal;
    a = mean;
    b = std;
  }
};
/// Uniform(minval, maxval) entries.
struct RandomUniform : Initializer {
  explicit RandomUniform(double minval = 0.0, double maxval = 1.0) {
    kind = Kind::random_uniform;
    a = minval;
    b = maxval;
  }
};
/// Normal(0, gain * sqrt(2 / (fan_in + fan_out))) entries.
struct XavierNormal : Initializer {
  explicit XavierNormal(double gain = 1.0) {
    kind = Kind::xavier_normal;
    a = gain;
    b = 0.0;
  }
};
/// Uniform(+-gain * sqrt(6 / (fan_in + fan_out))) entries.
struct XavierUniform : Initializer {
  explicit XavierUniform(double gain = 1.0) {
    kind = Kind::xavier_uniform;
    a = gain;
    b = 0.0;
  }
};

namespace detail {
inline int resolve_embed_dim(const char* type, const std::string& name, std::int64_t vocab_size,
                             std::optional<int> embed_dim) {
  RECHUB_CHECK_AS(ConfigError, vocab_size > 0, type, " '", name, "': vocab_size must be positive, got ", vocab_size);
  const int d = embed_dim ? *embed_dim : get_auto_embedding_dim(vocab_size);
  RECHUB_CHECK_AS(ConfigError, d > 0, type, " '", name, "': embed_dim must be positive, got ", d);
  return d;
}
}  // namespace detail

/// A categorical feature with one id per row.
struct SparseFeature {
  std::string name;
  std::int64_t vocab_size = 0;
  int embed_dim = 0;
  std::string shared_with;                  // "" = owns its table
  std::optional<std::int32_t> padding_idx;  // kept for configs; a sparse lookup never masks (as in Torch-RecHub)
  Initializer initializer = RandomNormal(0.0, 1e-4);

  SparseFeature() = default;
  SparseFeature(std::string name_, std::int64_t vocab_size_, std::optional<int> embed_dim_ = std::nullopt,
                std::string shared_with_ = "", std::optional<std::int32_t> padding_idx_ = std::nullopt,
                Initializer initializer_ = RandomNormal(0.0, 1e-4))
      : name(std::move(name_)),
        vocab_size(vocab_size_),
        embed_dim(detail::resolve_embed_dim("SparseFeature", name, vocab_size_, embed_dim_)),
        shared_with(std::move(shared_with_)),
        padding_idx(padding_idx_),
        initializer(initializer_) {}
  bool operator==(const SparseFeature& o) const {
    return name == o.name && vocab_size == o.vocab_size && embed_dim == o.embed_dim && shared_with == o.shared_with &&
           padding_idx == o.padding_idx && initializer == o.initializer;
  }
  bool operator!=(const SparseFeature& o) const { return !(*this == o); }
};

/// A sequence (or multi-hot) feature: ids [B, L] pooled by "mean", "sum" or "concat".
struct SequenceFeature {
  std::string name;
  std::int64_t vocab_size = 0;
  int embed_dim = 0;
  std::string pooling = "mean";
  std::string shared_with;
  std::optional<std::int32_t> padding_idx;  // none = 0 (rechub's label encoding); -1 = no id is padding
  Initializer initializer = RandomNormal(0.0, 1e-4);

  SequenceFeature() = default;
  SequenceFeature(std::string name_, std::int64_t vocab_size_, std::optional<int> embed_dim_ = std::nullopt,
                  std::string pooling_ = "mean", std::string shared_with_ = "",
                  std::optional<std::int32_t> padding_idx_ = std::nullopt,
                  Initializer initializer_ = RandomNormal(0.0, 1e-4))
      : name(std::move(name_)),
        vocab_size(vocab_size_),
        embed_dim(detail::resolve_embed_dim("SequenceFeature", name, vocab_size_, embed_dim_)),
        pooling(std::move(pooling_)),
        shared_with(std::move(shared_with_)),
        padding_idx(padding_idx_),
        initializer(initializer_) {
    RECHUB_CHECK_AS(ConfigError, pooling == "mean" || pooling == "sum" || pooling == "concat", "SequenceFeature '",
                    name, "': pooling '", pooling, "' is not one of mean, sum, concat");
  }
  bool operator==(const SequenceFeature& o) const {
    return name == o.name && vocab_size == o.vocab_size && embed_dim == o.embed_dim && pooling == o.pooling &&
           shared_with == o.shared_with && padding_idx == o.padding_idx && initializer == o.initializer;
  }
  bool operator!=(const SequenceFeature& o) const { return !(*this == o); }
};

/// A float column used as is: [B] (embed_dim 1) or [B, embed_dim].
struct DenseFeature {
  std::string name;
  int embed_dim = 1;

  DenseFeature() = default;
  explicit DenseFeature(std::string name_, int embed_dim_ = 1) : name(std::move(name_)), embed_dim(embed_dim_) {
    RECHUB_CHECK_AS(ConfigError, embed_dim > 0, "DenseFeature '", name, "': embed_dim must be positive, got ",
                    embed_dim);
  }
  bool operator==(const DenseFeature& o) const { return name == o.name && embed_dim == o.embed_dim; }
  bool operator!=(const DenseFeature& o) const { return !(*this == o); }
};

/// Any one of the three feature kinds (a model's feature lists are std::vector<Feature>).
using Feature = std::variant<SparseFeature, SequenceFeature, DenseFeature>;

/// The feature's name (its column in a Batch).
inline const std::string& feature_name(const Feature& f) {
  return std::visit([](const auto& x) -> const std::string& { return x.name; }, f);
}
/// The feature's embedding width (dense: its number of columns).
inline int feature_embed_dim(const Feature& f) {
  return std::visit([](const auto& x) { return x.embed_dim; }, f);
}
/// The feature whose table this one uses: shared_with, or its own name (dense: its name).
inline const std::string& feature_table_name(const Feature& f) {
  if (auto* s = std::get_if<SparseFeature>(&f)) return s->shared_with.empty() ? s->name : s->shared_with;
  if (auto* q = std::get_if<SequenceFeature>(&f)) return q->shared_with.empty() ? q->name : q->shared_with;
  return std::get<DenseFeature>(f).name;
}
/// Sum of the embed dims (the width of EmbeddingLayer::forward(..., squeeze_dim = true) for pooled features).
inline int sum_embed_dims(const std::vector<Feature>& features) {
  int n = 0;
  for (const auto& f : features) n += feature_embed_dim(f);
  return n;
}

// ---- JSON -------------------------------------------------------------------------------------
namespace detail {
using json = nlohmann::json;

template <class T>
T json_get(const json& j, const char* key, const std::string& ctx) {
  auto it = j.find(key);
  RECHUB_CHECK_AS(ConfigError, it != j.end(), ctx, ": missing '", key, "'");
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw_error<ConfigError>(ctx, ": '", key, "' has the wrong type (", it->dump(), ")");
  }
}
template <class T>
std::optional<T> json_get_opt(const json& j, const char* key, const std::string& ctx) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return json_get<T>(j, key, ctx);
}
inline std::string feature_ctx(const json& j, const char* type) {
  RECHUB_CHECK_AS(ConfigError, j.is_object(), type, " JSON must be an object, got ", j.dump());
  auto it = j.find("name");
  return std::string(type) + " '" + (it != j.end() && it->is_string() ? it->get<std::string>() : "?") + "'";
}
inline void check_type(const json& j, const char* expected, const std::string& ctx) {
  auto it = j.find("type");
  if (it != j.end())
    RECHUB_CHECK_AS(ConfigError, it->is_string() && it->get<std::string>() == expected, ctx, ": type ", it->dump(),
                    " where \"", expected, "\" was expected");
}
}  // namespace detail

inline void to_json(nlohmann::json& j, const Initializer& init) {
  j = nlohmann::json{{"type", init.name()}};
  switch (init.kind) {
    case Initializer::Kind::random_normal:
      j["mean"] = init.a, j["std"] = init.b;
      break;
    case Initializer::Kind::random_uniform:
      j["minval"] = init.a, j["maxval"] = init.b;
      break;
    default:
      j["gain"] = init.a;
  }
}
inline void from_json(const nlohmann::json& j, Initializer& init) {
  const std::string ctx = "initializer";
  RECHUB_CHECK_AS(ConfigError, j.is_object(), ctx, " JSON must be an object, got ", j.dump());
  const auto type = detail::json_get<std::string>(j, "type", ctx);
  if (type == "RandomNormal")
    init = RandomNormal(detail::json_get_opt<double>(j, "mean", ctx).value_or(0.0),
                        detail::json_get_opt<double>(j, "std", ctx).value_or(1.0));
  else if (type == "RandomUniform")
    init = RandomUniform(detail::json_get_opt<double>(j, "minval", ctx).value_or(0.0),
                         detail::json_get_opt<double>(j, "maxval", ctx).value_or(1.0));
  else if (type == "XavierNormal") init = XavierNormal(detail::json_get_opt<double>(j, "gain", ctx).value_or(1.0));
  else if (type == "XavierUniform") init = XavierUniform(detail::json_get_opt<double>(j, "gain", ctx).value_or(1.0));
  else
    detail::throw_error<ConfigError>("initializer: type '", type,
                                     "' is not one of RandomNormal, RandomUniform, XavierNormal, XavierUniform");
}

namespace detail {
inline nlohmann::json opt_json(const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); }
inline nlohmann::json opt_json(const std::optional<std::int32_t>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}
inline Initializer init_from(const json& j, const std::string& ctx) {
  auto it = j.find("initializer");
  if (it == j.end() || it->is_null()) return RandomNormal(0.0, 1e-4);
  try {
    return it->get<Initializer>();
  } catch (const ConfigError& e) {
    throw_error<ConfigError>(ctx, ": ", e.what());
  }
}
}  // namespace detail

inline void to_json(nlohmann::json& j, const SparseFeature& f) {
  j = nlohmann::json{{"type", "sparse"},
                     {"name", f.name},
                     {"vocab_size", f.vocab_size},
                     {"embed_dim", f.embed_dim},
                     {"shared_with", detail::opt_json(f.shared_with)},
                     {"padding_idx", detail::opt_json(f.padding_idx)},
                     {"initializer", f.initializer}};
}
inline void from_json(const nlohmann::json& j, SparseFeature& f) {
  const std::string ctx = detail::feature_ctx(j, "SparseFeature");
  detail::check_type(j, "sparse", ctx);
  f = SparseFeature(detail::json_get<std::string>(j, "name", ctx), detail::json_get<std::int64_t>(j, "vocab_size", ctx),
                    detail::json_get_opt<int>(j, "embed_dim", ctx),
                    detail::json_get_opt<std::string>(j, "shared_with", ctx).value_or(""),
                    detail::json_get_opt<std::int32_t>(j, "padding_idx", ctx), detail::init_from(j, ctx));
}

inline void to_json(nlohmann::json& j, const SequenceFeature& f) {
  j = nlohmann::json{{"type", "sequence"},
                     {"name", f.name},
                     {"vocab_size", f.vocab_size},
                     {"embed_dim", f.embed_dim},
                     {"pooling", f.pooling},
                     {"shared_with", detail::opt_json(f.shared_with)},
                     {"padding_idx", detail::opt_json(f.padding_idx)},
                     {"initializer", f.initializer}};
}
inline void from_json(const nlohmann::json& j, SequenceFeature& f) {
  const std::string ctx = detail::feature_ctx(j, "SequenceFeature");
  detail::check_type(j, "sequence", ctx);
  f = SequenceFeature(detail::json_get<std::string>(j, "name", ctx),
                      detail::json_get<std::int64_t>(j, "vocab_size", ctx),
                      detail::json_get_opt<int>(j, "embed_dim", ctx),
                      detail::json_get_opt<std::string>(j, "pooling", ctx).value_or("mean"),
                      detail::json_get_opt<std::string>(j, "shared_with", ctx).value_or(""),
                      detail::json_get_opt<std::int32_t>(j, "padding_idx", ctx), detail::init_from(j, ctx));
}

inline void to_json(nlohmann::json& j, const DenseFeature& f) {
  j = nlohmann::json{{"type", "dense"}, {"name", f.name}, {"embed_dim", f.embed_dim}};
}
inline void from_json(const nlohmann::json& j, DenseFeature& f) {
  const std::string ctx = detail::feature_ctx(j, "DenseFeature");
  detail::check_type(j, "dense", ctx);
  f = DenseFeature(detail::json_get<std::string>(j, "name", ctx),
                   detail::json_get_opt<int>(j, "embed_dim", ctx).value_or(1));
}

inline void to_json(nlohmann::json& j, const Feature& f) {
  std::visit([&](const auto& x) { to_json(j, x); }, f);
}
inline void from_json(const nlohmann::json& j, Feature& f) {
  const std::string ctx = detail::feature_ctx(j, "feature");
  const auto type = detail::json_get<std::string>(j, "type", ctx);
  if (type == "sparse") f = j.get<SparseFeature>();
  else if (type == "sequence") f = j.get<SequenceFeature>();
  else if (type == "dense") f = j.get<DenseFeature>();
  else detail::throw_error<ConfigError>(ctx, ": type '", type, "' is not one of sparse, sequence, dense");
}

}  // namespace rechub
