#pragma once
// MovieLens readers for the raw files, merged as Torch-RecHub's preprocessing does:
//
//   data = merge(merge(ratings, movies), users)      (inner joins on movie_id, then user_id)
//   cate_id = genres.split("|")[0]
//   every sparse column = LabelEncoder().fit_transform(col) + 1   (over the merged rows)
//
// so ratings whose movie or user has no profile are dropped (counted in ReadReport), and a
// feature value that only an unrated movie or user has gets no code. Rows keep the order of the
// ratings file (Torch-RecHub sorts by timestamp later; so do our sample generators).
//
// Output (Interactions): user_col "user_id", item_col "movie_id"; user features gender, age,
// occupation, zip (in that order); item feature cate_id; ratings; titles in UTF-8 by item code.
// Integer-valued fields (ids, age, the ML-1M occupation code) are kept as their canonical
// decimal text ("007" -> "7"), as pandas reads them, so LabelEncoder orders them numerically.
//
// Formats:
//   ML-1M (rechub::read_movielens_1m, dataset "ml-1m"), fields separated by "::":
//     users.dat    UserID::Gender::Age::Occupation::Zip-code
//     movies.dat   MovieID::Title::Genres            (Title in Latin-1, Genres '|'-separated)
//     ratings.dat  UserID::MovieID::Rating::Timestamp
//   ML-100K (rechub::read_movielens_100k, dataset "ml-100k"):
//     u.data       user id \t item id \t rating \t timestamp
//     u.user       user id | age | gender | occupation | zip code
//     u.item       movie id | title | release date | video release date | IMDb URL | 19 genre
//                  flags (0/1) in u.genre order; cate_id = the first genre flagged 1 ("unknown"
//                  when none is)
//
// Titles: when the whole title file is valid UTF-8 it is taken as UTF-8, otherwise as Latin-1
// (what GroupLens ships) and converted; ReadReport::title_encoding says which.
//
// Bad input: a missing or empty file always throws DataError. A malformed row (wrong field
// count, a non-integer id / age / timestamp, a non-numeric rating, a genre flag other than 0/1,
// an empty Genres field, a duplicate UserID / MovieID) throws DataError
// "<reader>: <path>:<line>: <what, naming the field>" when ReadOptions::strict (the default);
// otherwise it is skipped, counted and its line recorded in ReadReport. Empty lines are
// ignored. A last line without '\n' is read like any other.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rechub/data/interactions.hpp"
#include "rechub/data/text.hpp"

namespace rechub {
namespace detail {

/// Raw integer id -> slot. A flat array while ids are small and non-negative (MovieLens ids are
/// below 10^4), a hash map for the rest; lookups in the ratings loop are then one load.
class IdSlots {
 public:
  static constexpr std::int64_t kDenseLimit = std::int64_t(1) << 22;
  /// Slot of `id`, or -1.
  std::int32_t find(std::int64_t id) const {
    if (id >= 0 && id < kDenseLimit) {
      auto i = static_cast<std::size_t>(id);
      return i < dense_.size() ? dense_[i] : -1;
    }
    auto it = sparse_.find(id);
    return it == sparse_.end() ? -1 : it->second;
  }
  /// Gives `id` the slot `slot`; false (and no change) when it already has one.
  bool insert(std::int64_t id, std::int32_t slot) {
    if (id >= 0 && id < kDenseLimit) {
      auto i = static_cast<std::size_t>(id);
      if (i >= dense_.size()) dense_.resize(std::max(i + 1, dense_.size() * 2), -1);
      if (dense_[i] >= 0) return false;
      dense_[i] = slot;
      return true;
    }
    return sparse_.emplace(id, slot).second;
  }

 private:
  std::vector<std::int32_t> dense_;
  std::unordered_map<std::int64_t, std::int32_t> sparse_;
};

/// A user profile row: raw values, already canonical (see the header comment).
struct MlUser {
  std::int64_t id = 0;
  std::size_t line = 0;
  std::string gender, age, occupation, zip;
};
/// A movie row; the title is still in the file's encoding.
struct MlMovie {
  std::int64_t id = 0;
  std::size_t line = 0;
  std::string_view title;
  std::string cate;
};
/// Ratings after the inner joins: slots into the user and movie tables, columns side by side.
struct MlJoined {
  std::vector<std::int32_t> user, movie;
  std::vector<std::int64_t> timestamp;
  std::vector<float> rating;
};

inline std::string ml_path(const std::string& dir, const char* file) {
  return (std::filesystem::path(dir) / file).string();
}

/// The file's bytes, or DataError when it is missing or has no non-blank line.
inline std::string ml_read_nonempty(const RowErrors& errs) {
  std::string buf = text::read_file(errs.path(), errs.who().c_str());
  if (std::all_of(buf.begin(), buf.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }))
    errs.fail("is empty");
  return buf;
}

/// Parses an integer field; false (after a bad_row) when it is not one.
inline bool ml_int_field(std::string_view v, const char* field, std::size_t line, RowErrors& errs, std::int64_t& out) {
  if (text::parse_int(v, out)) return true;
  errs.bad_row(line, std::string("field ") + field + " is not an integer: " + quote_value(v));
  return false;
}

inline std::string ml_field_count_message(std::size_t want, const char* layout, std::size_t got) {
  return "expected " + std::to_string(want) + " fields (" + layout + "), got " + std::to_string(got);
}

inline std::size_t sep_size(char) { return 1; }
inline std::size_t sep_size(std::string_view s) { return s.size(); }
inline bool at_sep(const char* p, const char* end, char sep) { return p < end && *p == sep; }
inline bool at_sep(const char* p, const char* end, std::string_view sep) {
  if (static_cast<std::size_t>(end - p) < sep.size()) return false;
  for (std::size_t k = 0; k < sep.size(); ++k)  // separators are 1-2 bytes: no memcmp call
    if (p[k] != sep[k]) return false;
  return true;
}

/// The hot path: "u SEP i SEP r SEP t" parsed straight off the line, no split. false sends the
/// line to the careful path (spaces, junk, a wrong field count), which also words the error.
template <class Sep>
bool ml_fast_rating_row(std::string_view line, Sep sep, std::int64_t& u, std::int64_t& i, float& r, std::int64_t& t) {
  const char* p = line.data();
  const char* end = p + line.size();
  auto integer = [&](std::int64_t& v) {  // plain digits beat from_chars here; <= 18 cannot overflow
    const bool neg = p < end && *p == '-';
    const char* b = p + (neg ? 1 : 0);
    const char* q = b;
    std::uint64_t x = 0;
    while (q < end && static_cast<unsigned>(*q - '0') < 10u) x = x * 10 + static_cast<unsigned>(*q++ - '0');
    if (q == b || q - b > 18) return false;
    v = neg ? -static_cast<std::int64_t>(x) : static_cast<std::int64_t>(x);
    p = q;
    return true;
  };
  auto delim = [&] {
    if (!at_sep(p, end, sep)) return false;
    p += sep_size(sep);
    return true;
  };
  if (!integer(u) || !delim() || !integer(i) || !delim()) return false;
  const char* rb = p;
  std::int64_t ri = 0;
  if (integer(ri) && at_sep(p, end, sep) && ri >= -(1 << 24) && ri <= (1 << 24)) {
    r = static_cast<float>(ri);  // MovieLens ratings are whole stars; exact in float
  } else {
    p = rb;
    auto res = std::from_chars(p, end, r);
    if (res.ec != std::errc() || !std::isfinite(r)) return false;
    p = res.ptr;
  }
  return delim() && integer(t) && p == end;
}

/// Parses rating rows "user SEP item SEP rating SEP timestamp" (ratings.dat, u.data) and joins
/// them on the fly: movie first, then user, as merge(merge(ratings, movies), users) does.
template <class Sep>
void ml_parse_ratings(std::string_view buf, Sep sep, const char* layout, const char* const names[4],
                      const IdSlots& user_slot, const IdSlots& movie_slot, RowErrors& errs, ReadReport& rep,
                      MlJoined& out) {
  const std::size_t guess = text::count_lines(buf);
  out.user.reserve(guess);
  out.movie.reserve(guess);
  out.timestamp.reserve(guess);
  out.rating.reserve(guess);
  const std::size_t skipped_before = rep.rows_skipped;
  std::size_t valid = 0;
  std::vector<std::string_view> f;
  f.reserve(8);
  text::LineReader lines(buf);
  text::Line ln;
  while (lines.next(ln)) {
    std::int64_t u = 0, i = 0, t = 0;
    float r = 0;
    if (!ml_fast_rating_row(ln.text, sep, u, i, r, t)) {
      if (text::is_blank(ln.text)) { ++rep.blank_lines; continue; }
      ++rep.rows_read;
      if (text::split(ln.text, sep, f) != 4) {
        errs.bad_row(ln.number, ml_field_count_message(4, layout, f.size()));
        continue;
      }
      if (!ml_int_field(f[0], names[0], ln.number, errs, u)) continue;
      if (!ml_int_field(f[1], names[1], ln.number, errs, i)) continue;
      if (!text::parse_float(f[2], r)) {
        errs.bad_row(ln.number, std::string("field ") + names[2] + " is not a number: " + quote_value(f[2]));
        continue;
      }
      if (!ml_int_field(f[3], names[3], ln.number, errs, t)) continue;
    } else {
      ++rep.rows_read;
    }
    ++valid;
    std::int32_t m = movie_slot.find(i);
    if (m < 0) { ++rep.dropped_unknown_item; continue; }
    std::int32_t us = user_slot.find(u);
    if (us < 0) { ++rep.dropped_unknown_user; continue; }
    out.user.push_back(us);
    out.movie.push_back(m);
    out.rating.push_back(r);
    out.timestamp.push_back(t);
  }
  if (valid == 0) errs.fail("has no valid rows (" + std::to_string(rep.rows_skipped - skipped_before) + " skipped)");
  RECHUB_CHECK_AS(DataError, !out.user.empty(), errs.who(), ": no rating is left after joining with the movie and ",
                  "user files (", rep.dropped_unknown_item, " with an unknown movie, ", rep.dropped_unknown_user,
                  " with an unknown user)");
}

/// Label-encodes one profile column over the profiles in use, like LabelEncoder().fit(col) + 1.
inline ProfileColumn ml_profile_column(std::string name, const std::vector<const std::string*>& by_code) {
  std::vector<std::string> values;
  values.reserve(by_code.size());
  for (std::size_t c = 1; c < by_code.size(); ++c) values.push_back(*by_code[c]);
  ProfileColumn col;
  col.name = std::move(name);
  col.encoder = LabelEncoder::fit(values);
  col.codes.assign(by_code.size(), 0);
  for (std::size_t c = 1; c < by_code.size(); ++c) col.codes[c] = col.encoder.find(*by_code[c]);
  return col;
}

/// Codes 1..n for the slots flagged in `used`, in increasing raw-id order (LabelEncoder's
/// numeric order); fills the encoder and returns code per slot (0 for unused slots).
template <class Row>
std::vector<std::int32_t> ml_encode_ids(const std::vector<Row>& rows, const std::vector<char>& used,
                                        LabelEncoder& enc) {
  std::vector<std::int32_t> order;
  for (std::size_t s = 0; s < rows.size(); ++s)
    if (used[s]) order.push_back(static_cast<std::int32_t>(s));
  std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return rows[a].id < rows[b].id; });
  std::vector<std::string> raw;
  raw.reserve(order.size());
  std::vector<std::int32_t> code(rows.size(), 0);
  for (std::size_t k = 0; k < order.size(); ++k) {
    raw.push_back(std::to_string(rows[static_cast<std::size_t>(order[k])].id));
    code[static_cast<std::size_t>(order[k])] = static_cast<std::int32_t>(k + 1);
  }
  enc = LabelEncoder::from_raw_values(std::move(raw));
  return code;
}

/// The encodings and the profiles, shared by both MovieLens readers.
inline Interactions ml_build(std::string dataset, const std::vector<MlUser>& users, const std::vector<MlMovie>& movies,
                             MlJoined&& r, bool titles_latin1, ReadReport& rep) {
  const std::size_t kept = r.user.size();
  std::vector<char> user_used(users.size(), 0), movie_used(movies.size(), 0);
  for (std::size_t k = 0; k < kept; ++k) {
    user_used[static_cast<std::size_t>(r.user[k])] = 1;
    movie_used[static_cast<std::size_t>(r.movie[k])] = 1;
  }
  Interactions out;
  out.dataset = std::move(dataset);
  const std::vector<std::int32_t> user_code = ml_encode_ids(users, user_used, out.user_ids);
  const std::vector<std::int32_t> item_code = ml_encode_ids(movies, movie_used, out.item_ids);
  for (std::size_t k = 0; k < kept; ++k) {  // slots -> codes, in place
    r.user[k] = user_code[static_cast<std::size_t>(r.user[k])];
    r.movie[k] = item_code[static_cast<std::size_t>(r.movie[k])];
  }
  out.user = std::move(r.user);
  out.item = std::move(r.movie);
  out.timestamp = std::move(r.timestamp);
  out.rating = std::move(r.rating);

  // Profiles by code: row c describes the user / item whose code is c.
  const auto nu = static_cast<std::size_t>(out.num_users()) + 1;
  const auto ni = static_cast<std::size_t>(out.num_items()) + 1;
  std::vector<const MlUser*> user_of(nu, nullptr);
  for (std::size_t s = 0; s < users.size(); ++s)
    if (user_code[s]) user_of[static_cast<std::size_t>(user_code[s])] = &users[s];
  std::vector<const MlMovie*> movie_of(ni, nullptr);
  for (std::size_t s = 0; s < movies.size(); ++s)
    if (item_code[s]) movie_of[static_cast<std::size_t>(item_code[s])] = &movies[s];

  static const std::string kNone;
  std::vector<const std::string*> col(nu, &kNone);
  using Field = std::string MlUser::*;
  const std::pair<const char*, Field> fields[] = {
      {"gender", &MlUser::gender}, {"age", &MlUser::age}, {"occupation", &MlUser::occupation}, {"zip", &MlUser::zip}};
  for (const auto& [name, field] : fields) {
    for (std::size_t c = 1; c < nu; ++c) col[c] = &(user_of[c]->*field);
    out.user_features.push_back(ml_profile_column(name, col));
  }
  std::vector<const std::string*> cate(ni, &kNone);
  for (std::size_t c = 1; c < ni; ++c) cate[c] = &movie_of[c]->cate;
  out.item_features.push_back(ml_profile_column("cate_id", cate));

  out.item_titles.assign(ni, std::string());
  for (std::size_t c = 1; c < ni; ++c)
    out.item_titles[c] = titles_latin1 ? text::latin1_to_utf8(movie_of[c]->title) : std::string(movie_of[c]->title);
  rep.title_encoding = titles_latin1 ? "latin-1" : "utf-8";
  rep.rows_kept = out.size();
  return out;
}

/// Latin-1 unless the whole buffer already is valid UTF-8 (see the header comment).
inline bool ml_titles_are_latin1(std::string_view buf) { return !text::is_valid_utf8(buf); }

}  // namespace detail

/// Reads MovieLens-1M's users.dat, movies.dat and ratings.dat from `dir` and merges them as
/// Torch-RecHub does (see the top of this file). `report`, when given, receives the counts.
inline Interactions read_movielens_1m(const std::string& dir, const ReadOptions& opt = {},
                                      ReadReport* report = nullptr) {
  using namespace detail;
  const char* who = "read_movielens_1m";
  auto t0 = std::chrono::steady_clock::now();
  ReadReport local;
  ReadReport& rep = report ? *report : local;
  rep = ReadReport();
  std::vector<std::string_view> f;

  // users.dat
  RowErrors uerr(who, ml_path(dir, "users.dat"), opt, rep);
  std::string ubuf = ml_read_nonempty(uerr);
  std::vector<MlUser> users;
  IdSlots user_slot;
  {
    text::LineReader lines(ubuf);
    text::Line ln;
    while (lines.next(ln)) {
      if (text::is_blank(ln.text)) { ++rep.blank_lines; continue; }
      if (text::split(ln.text, "::", f) != 5) {
        uerr.bad_row(ln.number, ml_field_count_message(5, "UserID::Gender::Age::Occupation::Zip-code", f.size()));
        continue;
      }
      MlUser u;
      std::int64_t age = 0, occ = 0;
      if (!ml_int_field(f[0], "UserID", ln.number, uerr, u.id)) continue;
      if (!ml_int_field(f[2], "Age", ln.number, uerr, age)) continue;
      if (!ml_int_field(f[3], "Occupation", ln.number, uerr, occ)) continue;
      u.line = ln.number;
      u.gender = std::string(f[1]);
      u.age = std::to_string(age);
      u.occupation = std::to_string(occ);
      u.zip = std::string(f[4]);
      if (!user_slot.insert(u.id, static_cast<std::int32_t>(users.size()))) {
        uerr.bad_row(ln.number, "duplicate UserID " + std::to_string(u.id) + " (first on line " +
                                    std::to_string(users[static_cast<std::size_t>(user_slot.find(u.id))].line) + ")");
        continue;
      }
      users.push_back(std::move(u));
    }
    if (users.empty()) uerr.fail("has no valid rows (" + std::to_string(rep.rows_skipped) + " skipped)");
  }

  // movies.dat
  RowErrors merr(who, ml_path(dir, "movies.dat"), opt, rep);
  std::string mbuf = ml_read_nonempty(merr);
  std::vector<MlMovie> movies;
  IdSlots movie_slot;
  {
    const std::size_t skipped_before = rep.rows_skipped;
    text::LineReader lines(mbuf);
    text::Line ln;
    while (lines.next(ln)) {
      if (text::is_blank(ln.text)) { ++rep.blank_lines; continue; }
      if (text::split(ln.text, "::", f) != 3) {
        merr.bad_row(ln.number, ml_field_count_message(3, "MovieID::Title::Genres", f.size()));
        continue;
      }
      MlMovie m;
      if (!ml_int_field(f[0], "MovieID", ln.number, merr, m.id)) continue;
      std::string_view first = text::first_field(f[2], "|");
      if (text::trim(first).empty()) {
        merr.bad_row(ln.number, "field Genres is empty");
        continue;
      }
      m.line = ln.number;
      m.title = f[1];
      m.cate = std::string(first);
      if (!movie_slot.insert(m.id, static_cast<std::int32_t>(movies.size()))) {
        merr.bad_row(ln.number, "duplicate MovieID " + std::to_string(m.id) + " (first on line " +
                                    std::to_string(movies[static_cast<std::size_t>(movie_slot.find(m.id))].line) + ")");
        continue;
      }
      movies.push_back(std::move(m));
    }
    if (movies.empty())
      merr.fail("has no valid rows (" + std::to_string(rep.rows_skipped - skipped_before) + " skipped)");
  }

  // ratings.dat
  RowErrors rerr(who, ml_path(dir, "ratings.dat"), opt, rep);
  std::string rbuf = ml_read_nonempty(rerr);
  MlJoined ratings;
  static const char* const kNames[4] = {"UserID", "MovieID", "Rating", "Timestamp"};
  ml_parse_ratings(rbuf, std::string_view("::"), "UserID::MovieID::Rating::Timestamp", kNames, user_slot, movie_slot,
                   rerr, rep, ratings);

  Interactions out = ml_build("ml-1m", users, movies, std::move(ratings), ml_titles_are_latin1(mbuf), rep);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

/// The 19 genres of MovieLens-100K, in the order of u.genre and of u.item's flag columns.
inline const std::vector<std::string>& movielens_100k_genres() {
  static const std::vector<std::string> g = {"unknown", "Action", "Adventure", "Animation", "Children's",
                                             "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
                                             "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
                                             "Sci-Fi", "Thriller", "War", "Western"};
  return g;
}

/// Reads MovieLens-100K's u.data, u.user and u.item from `dir`, merged like ML-1M (see the top
/// of this file); cate_id is the first genre flagged in u.item.
inline Interactions read_movielens_100k(const std::string& dir, const ReadOptions& opt = {},
                                        ReadReport* report = nullptr) {
  using namespace detail;
  const char* who = "read_movielens_100k";
  auto t0 = std::chrono::steady_clock::now();
  ReadReport local;
  ReadReport& rep = report ? *report : local;
  rep = ReadReport();
  std::vector<std::string_view> f;
  const auto& genres = movielens_100k_genres();

  // u.user
  RowErrors uerr(who, ml_path(dir, "u.user"), opt, rep);
  std::string ubuf = ml_read_nonempty(uerr);
  std::vector<MlUser> users;
  IdSlots user_slot;
  {
    text::LineReader lines(ubuf);
    text::Line ln;
    while (lines.next(ln)) {
      if (text::is_blank(ln.text)) { ++rep.blank_lines; continue; }
      if (text::split(ln.text, '|', f) != 5) {
        uerr.bad_row(ln.number, ml_field_count_message(5, "user id|age|gender|occupation|zip code", f.size()));
        continue;
      }
      MlUser u;
      std::int64_t age = 0;
      if (!ml_int_field(f[0], "user id", ln.number, uerr, u.id)) continue;
      if (!ml_int_field(f[1], "age", ln.number, uerr, age)) continue;
      u.line = ln.number;
      u.age = std::to_string(age);
      u.gender = std::string(f[2]);
      u.occupation = std::string(f[3]);
      u.zip = std::string(f[4]);
      if (!user_slot.insert(u.id, static_cast<std::int32_t>(users.size()))) {
        uerr.bad_row(ln.number, "duplicate user id " + std::to_string(u.id) + " (first on line " +
                                    std::to_string(users[static_cast<std::size_t>(user_slot.find(u.id))].line) + ")");
        continue;
      }
      users.push_back(std::move(u));
    }
    if (users.empty()) uerr.fail("has no valid rows (" + std::to_string(rep.rows_skipped) + " skipped)");
  }

  // u.item
  RowErrors merr(who, ml_path(dir, "u.item"), opt, rep);
  std::string mbuf = ml_read_nonempty(merr);
  std::vector<MlMovie> movies;
  IdSlots movie_slot;
  {
    const std::size_t skipped_before = rep.rows_skipped;
    text::LineReader lines(mbuf);
    text::Line ln;
    while (lines.next(ln)) {
      if (text::is_blank(ln.text)) { ++rep.blank_lines; continue; }
      if (text::split(ln.text, '|', f) != 5 + genres.size()) {
        merr.bad_row(ln.number, ml_field_count_message(5 + genres.size(),
                                                       "movie id|title|release date|video release date|IMDb URL|"
                                                       "19 genre flags",
                                                       f.size()));
        continue;
      }
      MlMovie m;
      if (!ml_int_field(f[0], "movie id", ln.number, merr, m.id)) continue;
      int first = -1;
      bool ok = true;
      for (std::size_t g = 0; g < genres.size(); ++g) {
        std::string_view v = text::trim(f[5 + g]);
        if (v != "0" && v != "1") {
          merr.bad_row(ln.number, "genre flag '" + genres[g] + "' is not 0 or 1: " + quote_value(f[5 + g]));
          ok = false;
          break;
        }
        if (first < 0 && v == "1") first = static_cast<int>(g);
      }
      if (!ok) continue;
      m.line = ln.number;
      m.title = f[1];
      m.cate = genres[static_cast<std::size_t>(first < 0 ? 0 : first)];
      if (!movie_slot.insert(m.id, static_cast<std::int32_t>(movies.size()))) {
        merr.bad_row(ln.number, "duplicate movie id " + std::to_string(m.id) + " (first on line " +
                                    std::to_string(movies[static_cast<std::size_t>(movie_slot.find(m.id))].line) + ")");
        continue;
      }
      movies.push_back(std::move(m));
    }
    if (movies.empty())
      merr.fail("has no valid rows (" + std::to_string(rep.rows_skipped - skipped_before) + " skipped)");
  }

  // u.data
  RowErrors rerr(who, ml_path(dir, "u.data"), opt, rep);
  std::string rbuf = ml_read_nonempty(rerr);
  MlJoined ratings;
  static const char* const kNames[4] = {"user id", "item id", "rating", "timestamp"};
  ml_parse_ratings(rbuf, '\t', "user id, item id, rating, timestamp separated by tabs", kNames, user_slot, movie_slot,
                   rerr, rep, ratings);

  Interactions out = ml_build("ml-100k", users, movies, std::move(ratings), ml_titles_are_latin1(mbuf), rep);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace rechub
