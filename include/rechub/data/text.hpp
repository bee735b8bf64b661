#pragma once
// Text tokenising for the data readers, plus the bookkeeping they share (ReadOptions,
// ReadReport, the strict/skip policy for bad rows).
//
// A file is read whole and cut into lines and fields in place (std::string_view into the
// buffer), so parsing a 500k-row file allocates nothing per row. Numbers go through
// std::from_chars, which reports failure instead of accepting junk (std::stoi("12ab") == 12).
// MovieLens titles are Latin-1; everything rechub keeps is UTF-8.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/file.hpp"

namespace rechub {
namespace text {

// ---- files and lines -------------------------------------------------------------------------

using rechub::read_file;  // core/file.hpp: DataError "<who>: cannot open <path>: <reason>"

/// `s` without a leading UTF-8 byte-order mark (spreadsheet exports start with one).
inline std::string_view strip_bom(std::string_view s) {
  return s.size() >= 3 && s.compare(0, 3, "\xEF\xBB\xBF") == 0 ? s.substr(3) : s;
}

/// One line of a buffer (without '\n' and a trailing '\r') and its 1-based number.
struct Line {
  std::string_view text;
  std::size_t number = 0;
};

/// Walks a buffer line by line in place. A last line without '\n' is still a line; a buffer
/// that ends in '\n' has no extra empty line after it.
class LineReader {
 public:
  explicit LineReader(std::string_view buf) : p_(buf.data()), end_(buf.data() + buf.size()) {}
  bool next(Line& line) {
    if (p_ >= end_) return false;
    const char* nl = static_cast<const char*>(std::memchr(p_, '\n', static_cast<std::size_t>(end_ - p_)));
    const char* e = nl ? nl : end_;
    const char* te = (e > p_ && e[-1] == '\r') ? e - 1 : e;
    line.text = std::string_view(p_, static_cast<std::size_t>(te - p_));
    line.number = ++number_;
    p_ = nl ? nl + 1 : end_;
    return true;
  }

 private:
  const char* p_;
  const char* end_;
  std::size_t number_ = 0;
};

/// Every line of `buf` (see LineReader); the views point into `buf`.
inline std::vector<Line> split_lines(std::string_view buf) {
  std::vector<Line> out;
  LineReader r(buf);
  Line l;
  while (r.next(l)) out.push_back(l);
  return out;
}

/// Upper bound on the number of lines, for reserving row arrays before a parse.
inline std::size_t count_lines(std::string_view buf) {
  std::size_t n = 0;
  const char* p = buf.data();
  const char* end = p + buf.size();
  while (p < end && (p = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p))))) {
    ++n;
    ++p;
  }
  return n + (!buf.empty() && buf.back() != '\n' ? 1 : 0);
}

/// True when `s` holds only spaces, tabs and '\r'.
inline bool is_blank(std::string_view s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\r') return false;
  return true;
}

/// `s` without surrounding spaces and tabs.
inline std::string_view trim(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

// ---- fields ----------------------------------------------------------------------------------

/// Cuts `s` at every occurrence of `delim`; fields go to `out` (cleared first, so a reused
/// vector stops allocating). Returns the field count; "" gives one empty field.
inline std::size_t split(std::string_view s, char delim, std::vector<std::string_view>& out) {
  out.clear();
  const char* p = s.data();
  const char* end = p + s.size();
  for (;;) {
    const char* d = static_cast<const char*>(std::memchr(p, delim, static_cast<std::size_t>(end - p)));
    if (!d) break;
    out.emplace_back(p, static_cast<std::size_t>(d - p));
    p = d + 1;
  }
  out.emplace_back(p, static_cast<std::size_t>(end - p));
  return out.size();
}

/// As split(s, char, out) for a delimiter of any length ("::" in MovieLens-1M).
inline std::size_t split(std::string_view s, std::string_view delim, std::vector<std::string_view>& out) {
  if (delim.size() == 1) return split(s, delim[0], out);
  RECHUB_CHECK_AS(ConfigError, !delim.empty(), "text::split: empty delimiter");
  out.clear();
  std::size_t pos = 0;
  for (;;) {
    std::size_t d = s.find(delim, pos);
    if (d == std::string_view::npos) break;
    out.push_back(s.substr(pos, d - pos));
    pos = d + delim.size();
  }
  out.push_back(s.substr(pos));
  return out.size();
}

/// The part of `s` before the first `delim` (all of `s` when there is none): "Drama|War" -> "Drama".
inline std::string_view first_field(std::string_view s, std::string_view delim) {
  if (delim.empty()) return s;
  std::size_t d = s.find(delim);
  return d == std::string_view::npos ? s : s.substr(0, d);
}

/// Reads delimited records where a field may be double-quoted: inside quotes the delimiter
/// and newlines are data and "" is one quote (RFC 4180, what pandas.to_csv writes). Quoted
/// fields are unescaped in place, so the reader needs a buffer it may write to; the views it
/// hands out stay valid while that buffer lives. Empty lines between records are skipped.
class CsvReader {
 public:
  enum Status { kRecord, kEnd, kBad };
  /// `quoted` false: quotes are ordinary characters and a record is exactly one line.
  CsvReader(char* data, std::size_t size, std::string_view delim, bool quoted = true)
      : p_(data), end_(data + size), delim_(delim), quoted_(quoted) {
    RECHUB_CHECK_AS(ConfigError, !delim_.empty(), "CsvReader: empty delimiter");
    RECHUB_CHECK_AS(ConfigError, delim_.find_first_of("\"\r\n") == std::string_view::npos,
                    "CsvReader: delimiter may not contain a quote or a newline");
  }
  /// Next record into `fields` (cleared first). kBad: the record is malformed (error() says
  /// why, line() where it started); the reader has skipped to the next line.
  Status next(std::vector<std::string_view>& fields) {
    fields.clear();
    // Skip empty lines ("\n" or "\r\n") between records.
    for (;;) {
      if (p_ >= end_) return kEnd;
      if (*p_ == '\n') { ++p_; ++line_; ++blank_; continue; }
      if (*p_ == '\r' && p_ + 1 < end_ && p_[1] == '\n') { p_ += 2; ++line_; ++blank_; continue; }
      break;
    }
    start_line_ = ++line_;
    for (;;) {
      if (quoted_ && p_ < end_ && *p_ == '"') {
        if (!read_quoted(fields)) return skip_bad();
        // After the closing quote: a delimiter, the end of the record, or junk.
        if (p_ >= end_) return kRecord;
        if (*p_ == '\n') { ++p_; return kRecord; }
        if (*p_ == '\r' && (p_ + 1 >= end_ || p_[1] == '\n')) { p_ += (p_ + 1 >= end_) ? 1 : 2; return kRecord; }
        if (!at_delim()) {
          error_ = "unexpected character '" + std::string(1, *p_) + "' after the closing quote of field " +
                   std::to_string(fields.size());
          return skip_bad();
        }
      } else {
        const char* b = p_;
        while (p_ < end_ && *p_ != '\n' && !at_delim()) ++p_;
        const char* e = p_;
        if (p_ >= end_ || *p_ == '\n') {  // end of the record
          if (e > b && e[-1] == '\r') --e;
          fields.emplace_back(b, static_cast<std::size_t>(e - b));
          if (p_ < end_) ++p_;
          return kRecord;
        }
        fields.emplace_back(b, static_cast<std::size_t>(e - b));
      }
      p_ += delim_.size();  // on a delimiter: another field follows (maybe an empty last one)
    }
  }
  /// 1-based line where the last record started.
  std::size_t line() const { return start_line_; }
  /// Why the last kBad record was malformed.
  const std::string& error() const { return error_; }
  /// Empty lines skipped so far.
  std::size_t blank_lines() const { return blank_; }

 private:
  bool at_delim() const {
    return static_cast<std::size_t>(end_ - p_) >= delim_.size() && *p_ == delim_[0] &&
           std::memcmp(p_, delim_.data(), delim_.size()) == 0;
  }
  // p_ is on the opening quote. Unescapes into the same buffer (the output never outruns the
  // input because "" shrinks to one byte) and leaves p_ just after the closing quote.
  bool read_quoted(std::vector<std::string_view>& fields) {
    std::size_t open_line = line_;
    ++p_;
    char* w = p_;
    const char* b = w;
    for (;;) {
      char* q = static_cast<char*>(std::memchr(p_, '"', static_cast<std::size_t>(end_ - p_)));
      char* stop = q ? q : end_;
      line_ += static_cast<std::size_t>(std::count(p_, stop, '\n'));
      if (w != p_) std::memmove(w, p_, static_cast<std::size_t>(stop - p_));
      w += stop - p_;
      if (!q) {
        p_ = end_;
        error_ = "unterminated quoted field (opened on line " + std::to_string(open_line) + ")";
        return false;
      }
      if (q + 1 < end_ && q[1] == '"') {  // "" inside quotes is one quote
        *w++ = '"';
        p_ = q + 2;
        continue;
      }
      p_ = q + 1;
      fields.emplace_back(b, static_cast<std::size_t>(w - b));
      return true;
    }
  }
  Status skip_bad() {
    const char* nl = p_ < end_ ? static_cast<const char*>(std::memchr(p_, '\n', static_cast<std::size_t>(end_ - p_)))
                               : nullptr;
    p_ = nl ? const_cast<char*>(nl) + 1 : end_;
    return kBad;
  }

  char* p_;
  char* end_;
  std::string_view delim_;
  bool quoted_;
  std::size_t line_ = 0, start_line_ = 0, blank_ = 0;
  std::string error_;
};

// ---- numbers ---------------------------------------------------------------------------------

/// Parses all of `s` (surrounding spaces allowed) as a base-10 integer; false on an empty
/// field, junk ("12a", "1.5", "+3") or overflow of Int.
template <class Int>
bool parse_int(std::string_view s, Int& out) {
  s = trim(s);
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

/// Parses all of `s` (surrounding spaces allowed) as a finite floating-point number.
template <class Float>
bool parse_float(std::string_view s, Float& out) {
  s = trim(s);
  if (s.empty()) return false;
  Float v{};
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || !std::isfinite(v)) return false;
  out = v;
  return true;
}

/// An integer that may be written as an integral float ("978300760.0", what pandas writes for
/// an int column that once held a NaN).
inline bool parse_int_lenient(std::string_view s, std::int64_t& out) {
  if (parse_int(s, out)) return true;
  double d = 0;
  if (!parse_float(s, d) || d != std::floor(d) || std::fabs(d) > 9.0e15) return false;
  out = static_cast<std::int64_t>(d);
  return true;
}

// ---- encodings -------------------------------------------------------------------------------

/// True when `s` has only 7-bit bytes.
inline bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

/// True when `s` is well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF).
inline bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned c = *p;
    if (c < 0x80) { ++p; continue; }
    int n;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c == 0xE0) { n = 2; lo = 0xA0; }
    else if (c == 0xED) { n = 2; hi = 0x9F; }  // excludes the surrogates U+D800..DFFF
    else if (c >= 0xE1 && c <= 0xEF) n = 2;
    else if (c == 0xF0) { n = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) n = 3;
    else if (c == 0xF4) { n = 3; hi = 0x8F; }
    else return false;
    if (end - p <= n) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (int k = 2; k <= n; ++k)
      if ((p[k] & 0xC0) != 0x80) return false;
    p += n + 1;
  }
  return true;
}

/// Appends Latin-1 (ISO-8859-1) bytes to `out` as UTF-8: every byte is the code point of the
/// same value, so 0xE9 becomes "é" (C3 A9).
inline void append_latin1_as_utf8(std::string_view s, std::string& out) {
  for (unsigned char c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
}

/// Latin-1 bytes as a UTF-8 string.
inline std::string latin1_to_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  append_latin1_as_utf8(s, out);
  return out;
}

}  // namespace text

// ---- reader bookkeeping ----------------------------------------------------------------------

/// How a reader treats malformed rows.
struct ReadOptions {
  bool strict = true;             ///< true: a malformed row throws DataError; false: it is skipped and counted
  std::size_t max_recorded = 10;  ///< skipped rows whose file, line and reason the report keeps
};

/// A row a non-strict read skipped.
struct SkippedRow {
  std::string file;
  std::size_t line = 0;
  std::string reason;
};

/// What a read did besides returning the interactions: counts of everything not kept.
struct ReadReport {
  std::size_t rows_read = 0;             ///< interaction rows parsed (ratings.dat, u.data, CSV records)
  std::size_t rows_kept = 0;             ///< rows in the returned Interactions
  std::size_t rows_skipped = 0;          ///< malformed rows skipped (strict = false), over all files
  std::vector<SkippedRow> skipped;       ///< the first ReadOptions::max_recorded of them
  std::size_t blank_lines = 0;           ///< empty lines ignored, over all files
  std::size_t dropped_unknown_item = 0;  ///< inner join: item missing from movies.dat / u.item
  std::size_t dropped_unknown_user = 0;  ///< inner join: user missing from users.dat / u.user
  std::size_t varying_user_features = 0; ///< (user, feature) pairs with more than one value (first kept)
  std::size_t varying_item_features = 0; ///< (item, feature) pairs with more than one value (first kept)
  std::string title_encoding;            ///< how titles were read: "utf-8", "latin-1", "" when none
  double seconds = 0;                    ///< wall time of the whole read

  /// One line for logs: "487650 rows read, 487650 kept, 0 skipped, ... in 0.081 s".
  std::string summary() const {
    std::string s = std::to_string(rows_read) + " rows read, " + std::to_string(rows_kept) + " kept, " +
                    std::to_string(rows_skipped) + " malformed skipped, " + std::to_string(dropped_unknown_item) +
                    " dropped (unknown item), " + std::to_string(dropped_unknown_user) + " dropped (unknown user)";
    if (varying_user_features || varying_item_features)
      s += ", " + std::to_string(varying_user_features) + " varying user features, " +
           std::to_string(varying_item_features) + " varying item features";
    char t[32];
    std::snprintf(t, sizeof(t), " in %.3f s", seconds);
    return s + t;
  }
};

namespace detail {

/// The strict/skip policy for one file of one reader. Messages read
/// "<who>: <path>:<line>: <why>".
class RowErrors {
 public:
  RowErrors(const char* who, std::string path, const ReadOptions& opt, ReadReport& rep)
      : who_(who), path_(std::move(path)), opt_(opt), rep_(rep) {}
  /// A malformed row: throws DataError when strict, else counts and maybe records it.
  void bad_row(std::size_t line, const std::string& why) {
    if (opt_.strict) throw DataError(where(line) + why);
    ++rep_.rows_skipped;
    if (rep_.skipped.size() < opt_.max_recorded) rep_.skipped.push_back({path_, line, why});
  }
  /// A problem no skipping can fix (an empty file): always throws.
  [[noreturn]] void fail(const std::string& why) const { throw DataError(who_ + ": " + path_ + " " + why); }
  std::string where(std::size_t line) const { return who_ + ": " + path_ + ":" + std::to_string(line) + ": "; }
  const std::string& path() const { return path_; }
  const std::string& who() const { return who_; }

 private:
  std::string who_;
  std::string path_;
  const ReadOptions& opt_;
  ReadReport& rep_;
};

/// "'abc'" with non-printable bytes shown as \xNN and long values cut, for error messages.
inline std::string quote_value(std::string_view v) {
  std::string s = "'";
  std::size_t n = std::min<std::size_t>(v.size(), 40);
  for (std::size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(v[i]);
    if (c >= 0x20 && c < 0x7F) {
      s.push_back(static_cast<char>(c));
    } else {
      char b[8];
      std::snprintf(b, sizeof(b), "\\x%02X", c);
      s += b;
    }
  }
  if (v.size() > n) s += "...";
  return s + "'";
}

}  // namespace detail
}  // namespace rechub
