#pragma once
// Interactions from delimited text files:
//
//   read_torch_rechub_csv(path)            Torch-RecHub's merged ml-1m.csv (and ml-1m_sample.csv):
//     header user_id,movie_id,rating,timestamp,title,genres,gender,age,occupation,zip
//     (columns found by name; quoted titles may hold commas and "" escapes)
//   read_interactions_csv(path, schema)    any file, described by a small JSON schema:
//
//   {
//     "delimiter": ",",            any non-empty string: ",", "\t", "|", "::"     (default ",")
//     "header": true,              the first record names the columns            (default true)
//     "quoted": true,              honour double-quoted fields with "" escapes   (default true)
//     "user_col": "user_id",       required; a column is a header name or a 0-based index
//     "item_col": "movie_id",      required
//     "timestamp_col": "timestamp",required; integers (an integral float such as "9.0" is accepted)
//     "rating_col": "rating",      optional; numbers
//     "title_col": "title",        optional; item titles, kept by item (first value wins)
//     "user_features": ["gender", 7],                                   optional, categorical
//     "item_features": [{"name": "cate_id", "column": "genres", "first_of": "|"}],
//     "dataset": "my-clicks"       optional name for Interactions::dataset (default: the path)
//   }
//
// A feature is a column (its name, or "col<index>" without a header) or an object naming the
// column, an output name, and optionally "first_of": keep the text before the first occurrence
// of that separator (Torch-RecHub's cate_id = genres.split("|")[0]).
//
// Encoding follows Torch-RecHub: ids and every feature column are label-encoded over all
// rows read (LabelEncoder().fit_transform(col) + 1), then profiles are taken per user / item
// from its first row (drop_duplicates keeps the first). A feature whose value varies within
// one user or item keeps the first value; ReadReport counts such (entity, feature) pairs.
// Empty feature values are a category of their own (""); an empty user or item id is a
// malformed row. Titles: kept as they are when every title is valid UTF-8, else read as
// Latin-1 and converted (ReadReport::title_encoding).
//
// Errors: a schema key that is unknown, mistyped or names a column the file does not have is
// a ConfigError naming the key, the column and the file. A missing or empty file is a
// DataError. A malformed record (wrong field count, empty id, non-numeric timestamp or
// rating, a bad quote; a malformed header always) is a DataError "<reader>: <path>:<line>: <what>" when
// ReadOptions::strict, else skipped and counted in ReadReport.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "rechub/data/interactions.hpp"
#include "rechub/data/text.hpp"

namespace rechub {

/// A column named by header name (index < 0) or by 0-based index.
struct CsvColumn {
  std::string name;
  int index = -1;
  bool given = false;  ///< false for an optional column the schema leaves out
  std::string str() const { return index >= 0 ? std::to_string(index) : "'" + name + "'"; }
};

/// A categorical feature column; `first_of` non-empty keeps the text before that separator.
struct CsvFeature {
  std::string name;
  CsvColumn column;
  std::string first_of;
};

/// The parsed JSON schema of read_interactions_csv (see the top of this file).
struct CsvSchema {
  std::string delimiter = ",";
  bool header = true;
  bool quoted = true;
  CsvColumn user, item, timestamp, rating, title;
  std::vector<CsvFeature> user_features, item_features;
  std::string dataset;

  /// Validates and converts; ConfigError names the offending key.
  static CsvSchema from_json(const nlohmann::json& j) {
    using nlohmann::json;
    static const char* const kKeys[] = {"delimiter", "header",        "quoted",        "user_col",
                                        "item_col",  "timestamp_col", "rating_col",    "title_col",
                                        "user_features", "item_features", "dataset"};
    RECHUB_CHECK_AS(ConfigError, j.is_object(), "csv schema: expected a JSON object, got ", j.type_name());
    for (const auto& kv : j.items()) {
      bool known = false;
      for (const char* k : kKeys) known = known || kv.key() == k;
      if (!known) {
        std::string list;
        for (const char* k : kKeys) list += (list.empty() ? "" : ", ") + std::string(k);
        throw ConfigError("csv schema: unknown key '" + kv.key() + "' (known: " + list + ")");
      }
    }
    CsvSchema s;
    if (j.contains("delimiter")) {
      const json& d = j["delimiter"];
      RECHUB_CHECK_AS(ConfigError, d.is_string() && !d.get<std::string>().empty(),
                      "csv schema: 'delimiter' must be a non-empty string, got ", d.dump());
      s.delimiter = d.get<std::string>();
    }
    s.header = get_bool(j, "header", true);
    s.quoted = get_bool(j, "quoted", true);
    for (auto [key, col, required] : {std::make_tuple("user_col", &s.user, true), std::make_tuple("item_col", &s.item, true),
                                      std::make_tuple("timestamp_col", &s.timestamp, true),
                                      std::make_tuple("rating_col", &s.rating, false),
                                      std::make_tuple("title_col", &s.title, false)}) {
      if (!j.contains(key)) {
        RECHUB_CHECK_AS(ConfigError, !required, "csv schema: '", key, "' is required");
        continue;
      }
      *col = column(j[key], key);
    }
    s.user_features = features(j, "user_features");
    s.item_features = features(j, "item_features");
    if (j.contains("dataset")) {
      RECHUB_CHECK_AS(ConfigError, j["dataset"].is_string(), "csv schema: 'dataset' must be a string");
      s.dataset = j["dataset"].get<std::string>();
    }
    return s;
  }

  /// Reads a schema from a JSON file.
  static CsvSchema from_file(const std::string& path) {
    std::string buf = text::read_file(path, "csv schema");
    nlohmann::json j = nlohmann::json::parse(buf, nullptr, false);
    RECHUB_CHECK_AS(ConfigError, !j.is_discarded(), "csv schema: '", path, "' is not valid JSON");
    return from_json(j);
  }

 private:
  static bool get_bool(const nlohmann::json& j, const char* key, bool dflt) {
    if (!j.contains(key)) return dflt;
    RECHUB_CHECK_AS(ConfigError, j[key].is_boolean(), "csv schema: '", key, "' must be true or false, got ",
                    j[key].dump());
    return j[key].get<bool>();
  }
  static CsvColumn column(const nlohmann::json& v, const std::string& key) {
    CsvColumn c;
    c.given = true;
    if (v.is_string() && !v.get<std::string>().empty()) {
      c.name = v.get<std::string>();
    } else if (v.is_number_integer() && v.get<long long>() >= 0 && v.get<long long>() < (1 << 30)) {
      c.index = v.get<int>();
    } else {
      throw ConfigError("csv schema: '" + key + "' must be a column name or a 0-based index, got " + v.dump());
    }
    return c;
  }
  static std::vector<CsvFeature> features(const nlohmann::json& j, const char* key) {
    std::vector<CsvFeature> out;
    if (!j.contains(key)) return out;
    const nlohmann::json& arr = j[key];
    RECHUB_CHECK_AS(ConfigError, arr.is_array(), "csv schema: '", key, "' must be an array, got ", arr.dump());
    for (std::size_t i = 0; i < arr.size(); ++i) {
      const nlohmann::json& v = arr[i];
      std::string where = std::string(key) + "[" + std::to_string(i) + "]";
      CsvFeature f;
      if (v.is_object()) {
        for (const auto& kv : v.items())
          RECHUB_CHECK_AS(ConfigError, kv.key() == "name" || kv.key() == "column" || kv.key() == "first_of",
                          "csv schema: unknown key '", kv.key(), "' in ", where, " (known: name, column, first_of)");
        RECHUB_CHECK_AS(ConfigError, v.contains("column"), "csv schema: ", where, " needs a 'column'");
        f.column = column(v["column"], where + ".column");
        if (v.contains("name")) {
          RECHUB_CHECK_AS(ConfigError, v["name"].is_string() && !v["name"].get<std::string>().empty(),
                          "csv schema: ", where, ".name must be a non-empty string");
          f.name = v["name"].get<std::string>();
        }
        if (v.contains("first_of")) {
          RECHUB_CHECK_AS(ConfigError, v["first_of"].is_string() && !v["first_of"].get<std::string>().empty(),
                          "csv schema: ", where, ".first_of must be a non-empty string");
          f.first_of = v["first_of"].get<std::string>();
        }
      } else {
        f.column = column(v, where);
      }
      if (f.name.empty()) f.name = f.column.index >= 0 ? "col" + std::to_string(f.column.index) : f.column.name;
      for (const auto& g : out)
        RECHUB_CHECK_AS(ConfigError, g.name != f.name, "csv schema: ", key, " has two features named '", f.name, "'");
      out.push_back(std::move(f));
    }
    return out;
  }
};

namespace detail {

/// Distinct values in order of first appearance; views point into the file buffer.
class Interner {
 public:
  /// Slot of `v`, adding it when new.
  std::int32_t intern(std::string_view v) {
    auto [it, added] = map_.try_emplace(v, static_cast<std::int32_t>(values_.size()));
    if (added) values_.push_back(v);
    return it->second;
  }
  const std::vector<std::string_view>& values() const { return values_; }
  std::size_t size() const { return values_.size(); }
  /// LabelEncoder over the distinct values, and the code of every slot.
  std::vector<std::int32_t> encode(LabelEncoder& enc) const {
    std::vector<std::string> raw(values_.begin(), values_.end());
    enc = LabelEncoder::fit(raw);
    std::vector<std::int32_t> code(values_.size());
    for (std::size_t s = 0; s < values_.size(); ++s) code[s] = enc.find(raw[s]);
    return code;
  }

 private:
  std::unordered_map<std::string_view, std::int32_t> map_;
  std::vector<std::string_view> values_;
};

/// One feature while reading: its column, its values, and the first value of every entity.
struct CsvFeatureState {
  const CsvFeature* spec = nullptr;
  std::size_t col = 0;
  Interner values;
  std::vector<std::int32_t> first;  // value slot per entity slot
  std::vector<char> varied;         // per entity slot: counted once in the report
};

inline std::size_t csv_resolve(const CsvColumn& c, const char* key, const std::vector<std::string>& header,
                               std::size_t ncols, bool has_header, const char* who, const std::string& path) {
  if (c.index >= 0) {
    RECHUB_CHECK_AS(ConfigError, static_cast<std::size_t>(c.index) < ncols, who, ": schema ", key, " is column index ",
                    c.index, ", but '", path, "' has ", ncols, " columns");
    return static_cast<std::size_t>(c.index);
  }
  RECHUB_CHECK_AS(ConfigError, has_header, who, ": schema ", key, " names column '", c.name, "', but '", path,
                  "' is read without a header (\"header\": false); name columns by 0-based index");
  for (std::size_t i = 0; i < header.size(); ++i)
    if (header[i] == c.name) return i;
  std::string have;
  for (const auto& h : header) have += (have.empty() ? "" : ", ") + h;
  throw ConfigError(std::string(who) + ": schema " + key + " names column '" + c.name + "', which '" + path +
                    "' does not have (its columns: " + have + ")");
}

inline Interactions read_csv_impl(const char* who, const std::string& path, const CsvSchema& schema,
                                  const ReadOptions& opt, ReadReport* report) {
  auto t0 = std::chrono::steady_clock::now();
  ReadReport local;
  ReadReport& rep = report ? *report : local;
  rep = ReadReport();
  RowErrors errs(who, path, opt, rep);

  std::string buf = text::read_file(path, who);
  std::size_t skip = text::strip_bom(buf).size() == buf.size() ? 0 : 3;
  if (std::all_of(buf.begin() + static_cast<std::ptrdiff_t>(skip), buf.end(),
                  [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }))
    errs.fail("is empty");
  text::CsvReader rd(&buf[skip], buf.size() - skip, schema.delimiter, schema.quoted);
  std::vector<std::string_view> f;
  f.reserve(16);

  // The first record: the header, or the first data row (it fixes the column count).
  auto st = rd.next(f);
  if (st == text::CsvReader::kBad) throw DataError(errs.where(rd.line()) + rd.error());
  std::vector<std::string> header;
  const std::size_t ncols = f.size();
  if (schema.header)
    for (auto h : f) header.emplace_back(text::trim(h));
  auto resolve = [&](const CsvColumn& c, const char* key) {
    return csv_resolve(c, key, header, ncols, schema.header, who, path);
  };
  const std::size_t cu = resolve(schema.user, "user_col");
  const std::size_t ci = resolve(schema.item, "item_col");
  const std::size_t ct = resolve(schema.timestamp, "timestamp_col");
  const bool has_rating = schema.rating.given, has_title = schema.title.given;
  const std::size_t cr = has_rating ? resolve(schema.rating, "rating_col") : 0;
  const std::size_t cn = has_title ? resolve(schema.title, "title_col") : 0;
  std::vector<CsvFeatureState> uf(schema.user_features.size()), itf(schema.item_features.size());
  for (std::size_t k = 0; k < uf.size(); ++k) {
    uf[k].spec = &schema.user_features[k];
    uf[k].col = resolve(uf[k].spec->column, ("user_features[" + std::to_string(k) + "]").c_str());
  }
  for (std::size_t k = 0; k < itf.size(); ++k) {
    itf[k].spec = &schema.item_features[k];
    itf[k].col = resolve(itf[k].spec->column, ("item_features[" + std::to_string(k) + "]").c_str());
  }
  auto col_name = [&](std::size_t c) {
    return schema.header ? "'" + header[c] + "'" : "column " + std::to_string(c);
  };

  Interner users, items;
  std::vector<std::int32_t> row_user, row_item;
  std::vector<std::int64_t> row_ts;
  std::vector<float> row_rating;
  const std::size_t guess = text::count_lines(buf);
  row_user.reserve(guess);
  row_item.reserve(guess);
  row_ts.reserve(guess);
  if (has_rating) row_rating.reserve(guess);
  std::vector<std::string_view> titles;

  auto take_features = [&](std::vector<CsvFeatureState>& feats, std::int32_t slot, bool is_new, std::size_t& varying) {
    for (auto& fs : feats) {
      std::string_view v = f[fs.col];
      if (!fs.spec->first_of.empty()) v = text::first_field(v, fs.spec->first_of);
      std::int32_t vs = fs.values.intern(v);
      if (is_new) {
        fs.first.push_back(vs);
        fs.varied.push_back(0);
      } else if (fs.first[static_cast<std::size_t>(slot)] != vs && !fs.varied[static_cast<std::size_t>(slot)]) {
        fs.varied[static_cast<std::size_t>(slot)] = 1;
        ++varying;
      }
    }
  };

  bool have_record = !schema.header;  // without a header the first record is data
  for (;;) {
    if (!have_record) {
      st = rd.next(f);
      if (st == text::CsvReader::kEnd) break;
    }
    have_record = false;
    ++rep.rows_read;
    if (st == text::CsvReader::kBad) {
      errs.bad_row(rd.line(), rd.error());
      continue;
    }
    if (f.size() != ncols) {
      errs.bad_row(rd.line(), "expected " + std::to_string(ncols) + " fields separated by '" + schema.delimiter +
                                  "', got " + std::to_string(f.size()));
      continue;
    }
    if (f[cu].empty()) { errs.bad_row(rd.line(), "user id " + col_name(cu) + " is empty"); continue; }
    if (f[ci].empty()) { errs.bad_row(rd.line(), "item id " + col_name(ci) + " is empty"); continue; }
    std::int64_t ts = 0;
    if (!text::parse_int_lenient(f[ct], ts)) {
      errs.bad_row(rd.line(), "field " + col_name(ct) + " is not an integer timestamp: " + quote_value(f[ct]));
      continue;
    }
    float r = 0;
    if (has_rating && !text::parse_float(f[cr], r)) {
      errs.bad_row(rd.line(), "field " + col_name(cr) + " is not a number: " + quote_value(f[cr]));
      continue;
    }
    const std::size_t nu = users.size(), ni = items.size();
    std::int32_t u = users.intern(f[cu]);
    std::int32_t i = items.intern(f[ci]);
    take_features(uf, u, users.size() > nu, rep.varying_user_features);
    take_features(itf, i, items.size() > ni, rep.varying_item_features);
    if (has_title && items.size() > ni) titles.push_back(f[cn]);
    row_user.push_back(u);
    row_item.push_back(i);
    row_ts.push_back(ts);
    if (has_rating) row_rating.push_back(r);
  }
  rep.blank_lines = rd.blank_lines();
  if (rep.rows_read == 0) errs.fail("has no data rows");
  if (row_user.empty()) errs.fail("has no valid rows (" + std::to_string(rep.rows_skipped) + " skipped)");

  Interactions out;
  out.dataset = schema.dataset.empty() ? path : schema.dataset;
  out.user_col = schema.header ? header[cu] : "user_id";
  out.item_col = schema.header ? header[ci] : "item_id";
  std::vector<std::int32_t> user_code = users.encode(out.user_ids);
  std::vector<std::int32_t> item_code = items.encode(out.item_ids);
  const std::size_t n = row_user.size();
  out.user.resize(n);
  out.item.resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    out.user[k] = user_code[static_cast<std::size_t>(row_user[k])];
    out.item[k] = item_code[static_cast<std::size_t>(row_item[k])];
  }
  out.timestamp = std::move(row_ts);
  out.rating = std::move(row_rating);

  auto profiles = [](std::vector<CsvFeatureState>& feats, const std::vector<std::int32_t>& entity_code,
                     std::size_t n_codes, std::vector<ProfileColumn>& dst) {
    for (auto& fs : feats) {
      ProfileColumn col;
      col.name = fs.spec->name;
      std::vector<std::int32_t> value_code = fs.values.encode(col.encoder);
      col.codes.assign(n_codes + 1, 0);
      for (std::size_t s = 0; s < entity_code.size(); ++s)
        col.codes[static_cast<std::size_t>(entity_code[s])] = value_code[static_cast<std::size_t>(fs.first[s])];
      dst.push_back(std::move(col));
    }
  };
  profiles(uf, user_code, users.size(), out.user_features);
  profiles(itf, item_code, items.size(), out.item_features);

  if (has_title) {
    bool utf8 = true;
    for (auto t : titles) utf8 = utf8 && text::is_valid_utf8(t);
    out.item_titles.assign(items.size() + 1, std::string());
    for (std::size_t s = 0; s < titles.size(); ++s)
      out.item_titles[static_cast<std::size_t>(item_code[s])] = utf8 ? std::string(titles[s]) : text::latin1_to_utf8(titles[s]);
    rep.title_encoding = utf8 ? "utf-8" : "latin-1";
  }
  rep.rows_kept = n;
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace detail

/// Reads interactions from a delimited file described by `schema` (see the top of this file).
inline Interactions read_interactions_csv(const std::string& path, const CsvSchema& schema,
                                          const ReadOptions& opt = {}, ReadReport* report = nullptr) {
  return detail::read_csv_impl("read_interactions_csv", path, schema, opt, report);
}

/// As above with the schema as JSON; ConfigError when the schema is malformed.
inline Interactions read_interactions_csv(const std::string& path, const nlohmann::json& schema,
                                          const ReadOptions& opt = {}, ReadReport* report = nullptr) {
  return detail::read_csv_impl("read_interactions_csv", path, CsvSchema::from_json(schema), opt, report);
}

/// The schema of Torch-RecHub's merged MovieLens CSV (ml-1m.csv): user features gender, age,
/// occupation, zip; item feature cate_id = first of the '|'-separated genres; titles.
inline CsvSchema torch_rechub_csv_schema() {
  return CsvSchema::from_json(nlohmann::json{
      {"delimiter", ","},
      {"header", true},
      {"quoted", true},
      {"user_col", "user_id"},
      {"item_col", "movie_id"},
      {"timestamp_col", "timestamp"},
      {"rating_col", "rating"},
      {"title_col", "title"},
      {"user_features", {"gender", "age", "occupation", "zip"}},
      {"item_features", nlohmann::json::array({nlohmann::json::object(
                            {{"name", "cate_id"}, {"column", "genres"}, {"first_of", "|"}})})},
  });
}

/// Reads Torch-RecHub's merged ml-1m.csv layout into the same Interactions as read_movielens_1m
/// (except that nothing is dropped: the file is already joined).
inline Interactions read_torch_rechub_csv(const std::string& path, const ReadOptions& opt = {},
                                          ReadReport* report = nullptr) {
  return detail::read_csv_impl("read_torch_rechub_csv", path, torch_rechub_csv_schema(), opt, report);
}

}  // namespace rechub
