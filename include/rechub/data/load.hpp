#pragma once
// One entry point from a data spec to Interactions, as the `rechub` tool takes it:
//   "synthetic"                 the built-in generator (default options)
//   a directory with ratings.dat   MovieLens-1M (`::` files)
//   a directory with u.data        MovieLens-100K
//   a .csv file                 Torch-RecHub's merged ml-1m.csv layout, or any CSV with a JSON
//                               schema (`schema` non-empty: a path to the schema file)
#include <string>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "rechub/data/csv_reader.hpp"
#include "rechub/data/movielens.hpp"
#include "rechub/data/synthetic.hpp"

namespace rechub {

namespace detail {
inline bool path_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}
inline bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
}  // namespace detail

/// Short dataset name for reports: "synthetic", "ml-1m", "ml-100k" or the file name.
inline Interactions load_interactions(const std::string& spec, const std::string& schema_path = "",
                                      ReadReport* report = nullptr, const ReadOptions& opt = {}) {
  if (spec == "synthetic") return generate_synthetic();
  RECHUB_CHECK_AS(DataError, detail::path_exists(spec), "data: '", spec,
                  "' is neither 'synthetic' nor an existing file or directory");
  if (detail::is_dir(spec)) {
    const std::string d = spec.back() == '/' ? spec : spec + "/";
    if (detail::path_exists(d + "ratings.dat")) return read_movielens_1m(spec, opt, report);
    if (detail::path_exists(d + "u.data")) return read_movielens_100k(spec, opt, report);
    detail::throw_error<DataError>("data: directory '", spec,
                                   "' has neither ratings.dat (MovieLens-1M) nor u.data (MovieLens-100K)");
  }
  if (!schema_path.empty()) {
    nlohmann::json schema;
    try {
      schema = nlohmann::json::parse(text::read_file(schema_path, "schema"));
    } catch (const nlohmann::json::parse_error& e) {
      detail::throw_error<ConfigError>("schema ", schema_path, ": not valid JSON: ", e.what());
    }
    return read_interactions_csv(spec, schema, opt, report);
  }
  return read_torch_rechub_csv(spec, opt, report);
}

}  // namespace rechub
