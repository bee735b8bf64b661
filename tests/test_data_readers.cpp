// Data readers: text helpers, MovieLens-1M / -100K raw files, Torch-RecHub's merged CSV, the
// schema-driven CSV reader, and every kind of bad input. Fixtures in tests/fixtures/ are
// hand-written (invented titles and ids); bad inputs are written to a temporary directory
// next to the assertion that reads them.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "rechub/data/csv_reader.hpp"
#include "rechub/data/movielens.hpp"

using namespace rechub;
namespace fs = std::filesystem;

namespace {

std::string fixtures() { return (fs::path(__FILE__).parent_path() / "fixtures").string(); }

/// A fresh directory under the system temp dir, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("rechub_readers_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  TempDir(TempDir&& o) noexcept : path(std::move(o.path)) { o.path.clear(); }
  TempDir(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path / name, std::ios::binary) << bytes;
    return file(name);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::string str() const { return path.string(); }
};

std::string slurp(const std::string& path) { return text::read_file(path); }

/// An ML-1M directory with the good fixture files, `name` replaced by `bytes`.
TempDir ml1m_with(const std::string& name, const std::string& bytes) {
  TempDir d;
  for (const char* f : {"users.dat", "movies.dat", "ratings.dat"})
    d.write(f, slurp(fixtures() + "/ml-1m-tiny/" + f));
  d.write(name, bytes);
  return d;
}

TempDir ml100k_with(const std::string& name, const std::string& bytes) {
  TempDir d;
  for (const char* f : {"u.user", "u.item", "u.data"}) d.write(f, slurp(fixtures() + "/ml-100k-tiny/" + f));
  d.write(name, bytes);
  return d;
}

std::vector<std::int32_t> codes(const ProfileColumn* c) {
  REQUIRE(c != nullptr);
  return c->codes;
}

std::string shared_data(const std::string& sub) {
  const char* s = std::getenv("RECHUB_SHARED");
  fs::path p = s ? fs::path(s) / "data" / sub : fs::path(__FILE__).parent_path() / ".." / ".." / "shared" / "data" / sub;
  return fs::exists(p) ? p.string() : std::string();
}

}  // namespace

// ---- text helpers ---------------------------------------------------------------------------

TEST_CASE("text: lines keep numbers, drop \\r, and keep a last line without newline") {
  auto lines = text::split_lines("a\r\n\nbc\nlast");
  REQUIRE(lines.size() == 4);
  CHECK(lines[0].text == "a");
  CHECK(lines[1].text == "");
  CHECK(lines[2].text == "bc");
  CHECK(lines[3].text == "last");
  CHECK(lines[3].number == 4);
  CHECK(text::split_lines("x\n").size() == 1);
  CHECK(text::split_lines("").empty());
  CHECK(text::count_lines("a\nb") == 2);
  CHECK(text::count_lines("a\nb\n") == 2);
}

TEST_CASE("text: split on strings and chars, first field") {
  std::vector<std::string_view> f;
  CHECK(text::split("1::Title: Sub (1999)::A|B", "::", f) == 3);
  CHECK(f[1] == "Title: Sub (1999)");
  CHECK(text::split("a||b|", '|', f) == 4);
  CHECK(f[1] == "");
  CHECK(f[3] == "");
  CHECK(text::split("", "::", f) == 1);
  CHECK(text::first_field("Drama|War", "|") == "Drama");
  CHECK(text::first_field("Drama", "|") == "Drama");
}

TEST_CASE("text: numbers parse fully or fail") {
  std::int64_t i = 0;
  CHECK(text::parse_int(std::string_view("978300760"), i));
  CHECK(i == 978300760);
  CHECK(text::parse_int(std::string_view(" -42 "), i));
  CHECK(i == -42);
  for (const char* bad : {"", "12a", "1.5", "+3", "abc", "99999999999999999999"})
    CHECK_FALSE(text::parse_int(std::string_view(bad), i));
  std::int32_t small = 0;
  CHECK_FALSE(text::parse_int(std::string_view("3000000000"), small));
  float r = 0;
  CHECK(text::parse_float(std::string_view("4.5"), r));
  CHECK(r == 4.5f);
  CHECK_FALSE(text::parse_float(std::string_view("4.5x"), r));
  CHECK_FALSE(text::parse_float(std::string_view("nan"), r));
  CHECK(text::parse_int_lenient("900000100.0", i));
  CHECK(i == 900000100);
  CHECK_FALSE(text::parse_int_lenient("1.5", i));
}

TEST_CASE("text: Latin-1 to UTF-8 and UTF-8 validation") {
  CHECK(text::latin1_to_utf8("Caf\xE9") == "Caf\xC3\xA9");  // é
  CHECK(text::latin1_to_utf8("\xFF") == "\xC3\xBF");
  CHECK(text::is_valid_utf8("plain"));
  CHECK(text::is_valid_utf8("Caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x8E\xAC"));  // é, €, a 4-byte emoji
  CHECK_FALSE(text::is_valid_utf8("Caf\xE9"));               // a Latin-1 byte
  CHECK_FALSE(text::is_valid_utf8("\xC0\xAF"));              // overlong '/'
  CHECK_FALSE(text::is_valid_utf8("\xED\xA0\x80"));          // a surrogate
  CHECK_FALSE(text::is_valid_utf8("\xF4\x90\x80\x80"));      // past U+10FFFF
  CHECK_FALSE(text::is_valid_utf8("\xE2\x82"));              // truncated
}

TEST_CASE("text: CSV records honour quotes, \"\" escapes, embedded newlines and report bad quotes") {
  std::string buf = "a,\"b,c\",\"say \"\"hi\"\"\"\r\n\n\"two\nlines\",x,\nlast,\"\",z";
  text::CsvReader rd(&buf[0], buf.size(), ",");
  std::vector<std::string_view> f;
  REQUIRE(rd.next(f) == text::CsvReader::kRecord);
  CHECK(rd.line() == 1);
  REQUIRE(f.size() == 3);
  CHECK(f[1] == "b,c");
  CHECK(f[2] == "say \"hi\"");
  REQUIRE(rd.next(f) == text::CsvReader::kRecord);
  CHECK(rd.line() == 3);
  REQUIRE(f.size() == 3);
  CHECK(f[0] == "two\nlines");
  CHECK(f[2] == "");
  REQUIRE(rd.next(f) == text::CsvReader::kRecord);
  CHECK(rd.line() == 5);
  REQUIRE(f.size() == 3);
  CHECK(f[1] == "");
  CHECK(f[2] == "z");
  CHECK(rd.next(f) == text::CsvReader::kEnd);
  CHECK(rd.blank_lines() == 1);

  std::string bad = "\"ab\"c,d\nok,1\n\"open,2\n";
  text::CsvReader rb(&bad[0], bad.size(), ",");
  CHECK(rb.next(f) == text::CsvReader::kBad);
  CHECK(rb.error() == "unexpected character 'c' after the closing quote of field 1");
  REQUIRE(rb.next(f) == text::CsvReader::kRecord);
  CHECK(f[0] == "ok");
  CHECK(rb.line() == 2);
  CHECK(rb.next(f) == text::CsvReader::kBad);
  CHECK(rb.line() == 3);
  CHECK(rb.error() == "unterminated quoted field (opened on line 3)");
  CHECK(rb.next(f) == text::CsvReader::kEnd);

  std::string multi = "1::\"x\"::3";
  text::CsvReader rm(&multi[0], multi.size(), "::", false);
  REQUIRE(rm.next(f) == text::CsvReader::kRecord);
  REQUIRE(f.size() == 3);
  CHECK(f[1] == "\"x\"");  // quoted = false: quotes are data
}

// ---- MovieLens-1M ---------------------------------------------------------------------------

TEST_CASE("ml-1m: fixture parses, joins like Torch-RecHub and label-encodes in sorted order") {
  ReadReport rep;
  Interactions d = read_movielens_1m(fixtures() + "/ml-1m-tiny", {}, &rep);
  CHECK(d.dataset == "ml-1m");
  CHECK(d.user_col == "user_id");
  CHECK(d.item_col == "movie_id");
  // 8 ratings: movie 99 is not in movies.dat, user 8 not in users.dat (inner joins). The last
  // line has no newline and still counts.
  CHECK(rep.rows_read == 8);
  CHECK(rep.rows_kept == 6);
  CHECK(rep.dropped_unknown_item == 1);
  CHECK(rep.dropped_unknown_user == 1);
  CHECK(rep.rows_skipped == 0);
  CHECK(rep.title_encoding == "latin-1");
  // Users 1,2,3,5 -> 1..4 (user 9 rated nothing); movies 7,10,20,30 -> 1..4 numerically
  // (lexicographic order would put "7" last); movie 40 rated nothing.
  CHECK(d.user == std::vector<std::int32_t>{1, 1, 2, 3, 4, 3});
  CHECK(d.item == std::vector<std::int32_t>{2, 3, 2, 4, 1, 3});
  CHECK(d.timestamp == std::vector<std::int64_t>{900000100, 900000200, 900000050, 900000400, 900000500, 900000700});
  CHECK(d.rating == std::vector<float>{5, 3, 4, 1, 4, 5});
  CHECK(d.user_ids.raw_values() == std::vector<std::string>{"1", "2", "3", "5"});
  CHECK(d.item_ids.raw_values() == std::vector<std::string>{"7", "10", "20", "30"});
  CHECK(d.item_ids.decode(1) == "7");
  // Profiles by code; each column encoded over the users / movies that are in the merge.
  REQUIRE(d.user_features.size() == 4);
  CHECK(d.user_features[0].name == "gender");
  CHECK(d.user_features[3].name == "zip");
  CHECK(codes(d.user_feature("gender")) == std::vector<std::int32_t>{0, 1, 2, 1, 2});      // F=1, M=2
  CHECK(codes(d.user_feature("age")) == std::vector<std::int32_t>{0, 2, 1, 3, 2});         // 18, 25, 56
  CHECK(codes(d.user_feature("occupation")) == std::vector<std::int32_t>{0, 2, 4, 1, 3});  // 0 < 4 < 7 < 12
  // Zips hold "90210-3301", so the column is text and sorts lexicographically.
  CHECK(codes(d.user_feature("zip")) == std::vector<std::int32_t>{0, 2, 3, 1, 2});
  CHECK(d.user_feature("zip")->encoder.raw_values() == std::vector<std::string>{"02139", "10001", "90210-3301"});
  // cate_id = first genre; "Action" belongs only to the unrated movie 40, so it has no code.
  REQUIRE(d.item_features.size() == 1);
  CHECK(codes(d.item_feature("cate_id")) == std::vector<std::int32_t>{0, 1, 3, 2, 4});
  CHECK(d.item_feature("cate_id")->encoder.raw_values() ==
        std::vector<std::string>{"Animation", "Comedy", "Drama", "Sci-Fi"});
  // Titles by item code, Latin-1 0xE9 -> UTF-8 "é"; a single ':' inside a title is not a separator.
  REQUIRE(d.item_titles.size() == 5);
  CHECK(d.item_titles[0] == "");
  CHECK(d.item_titles[3] == "Caf\xC3\xA9 Noir (1997)");
  CHECK(d.item_titles[4] == "The Quiet Orbit: Part 2 (2001)");
  // The codes match LabelEncoder::fit over the merged raw column.
  CHECK(LabelEncoder::fit({"5", "1", "3", "2", "1"}).raw_values() == d.user_ids.raw_values());
}

TEST_CASE("ml-1m: CRLF line endings, blank lines, leading zeros and UTF-8 titles") {
  TempDir d;
  d.write("users.dat", "01::F::1::10::12345\r\n\r\n2::M::56::16::54321\r\n");
  d.write("movies.dat", "5::Caf\xC3\xA9 Two (1990)::Drama\r\n");
  d.write("ratings.dat", "1::5::4::100\r\n2::005::3::90\r\n\n");
  ReadReport rep;
  Interactions x = read_movielens_1m(d.str(), {}, &rep);
  CHECK(x.size() == 2);
  CHECK(rep.blank_lines == 2);
  CHECK(x.user_ids.raw_values() == std::vector<std::string>{"1", "2"});  // "01" is user 1, as pandas reads it
  CHECK(x.item_ids.raw_values() == std::vector<std::string>{"5"});
  CHECK(rep.title_encoding == "utf-8");
  CHECK(x.item_titles[1] == "Caf\xC3\xA9 Two (1990)");  // already UTF-8: not converted twice
  CHECK(codes(x.user_feature("zip")) == std::vector<std::int32_t>{0, 1, 2});
}

TEST_CASE("ml-1m: bad input is a DataError naming file, line and field") {
  SUBCASE("wrong field count") {
    auto d = ml1m_with("ratings.dat", "1::10::5::900000100\n1::20::3\n");
    CHECK_THROWS_WITH_AS(read_movielens_1m(d.str()),
                         ("read_movielens_1m: " + d.file("ratings.dat") +
                          ":2: expected 4 fields (UserID::MovieID::Rating::Timestamp), got 3")
                             .c_str(),
                         DataError);
  }
  SUBCASE("non-numeric id") {
    auto d = ml1m_with("ratings.dat", "1::x10::5::900000100\n");
    CHECK_THROWS_WITH_AS(read_movielens_1m(d.str()),
                         ("read_movielens_1m: " + d.file("ratings.dat") + ":1: field MovieID is not an integer: 'x10'")
                             .c_str(),
                         DataError);
  }
  SUBCASE("non-numeric timestamp") {
    auto d = ml1m_with("ratings.dat", "1::10::5::900000100\n1::20::3::9000002OO\n");
    CHECK_THROWS_WITH_AS(
        read_movielens_1m(d.str()),
        ("read_movielens_1m: " + d.file("ratings.dat") + ":2: field Timestamp is not an integer: '9000002OO'").c_str(),
        DataError);
  }
  SUBCASE("non-numeric rating") {
    auto d = ml1m_with("ratings.dat", "1::10::five::900000100\n");
    CHECK_THROWS_WITH_AS(read_movielens_1m(d.str()),
                         ("read_movielens_1m: " + d.file("ratings.dat") + ":1: field Rating is not a number: 'five'")
                             .c_str(),
                         DataError);
  }
  SUBCASE("non-numeric age in users.dat") {
    auto d = ml1m_with("users.dat", "1::F::25::4::10001\n2::M::old::12::90210\n");
    CHECK_THROWS_WITH_AS(read_movielens_1m(d.str()),
                         ("read_movielens_1m: " + d.file("users.dat") + ":2: field Age is not an integer: 'old'").c_str(),
                         DataError);
  }
  SUBCASE("wrong field count in movies.dat") {
    auto d = ml1m_with("movies.dat", "10::Paper Lanterns (1994)\n");
    CHECK_THROWS_WITH_AS(
        read_movielens_1m(d.str()),
        ("read_movielens_1m: " + d.file("movies.dat") + ":1: expected 3 fields (MovieID::Title::Genres), got 2").c_str(),
        DataError);
  }
  SUBCASE("empty genres") {
    auto d = ml1m_with("movies.dat", "10::Paper Lanterns (1994)::\n");
    CHECK_THROWS_WITH_AS(read_movielens_1m(d.str()),
                         ("read_movielens_1m: " + d.file("movies.dat") + ":1: field Genres is empty").c_str(), DataError);
  }
  SUBCASE("duplicate movie id") {
    auto d = ml1m_with("movies.dat", "10::A (1990)::Drama\n20::B (1991)::Comedy\n10::C (1992)::War\n");
    CHECK_THROWS_WITH_AS(
        read_movielens_1m(d.str()),
        ("read_movielens_1m: " + d.file("movies.dat") + ":3: duplicate MovieID 10 (first on line 1)").c_str(),
        DataError);
  }
  SUBCASE("empty file") {
    auto d = ml1m_with("ratings.dat", "");
    CHECK_THROWS_WITH_AS(read_movielens_1m(d.str()),
                         ("read_movielens_1m: " + d.file("ratings.dat") + " is empty").c_str(), DataError);
    auto e = ml1m_with("users.dat", "\n\n");
    CHECK_THROWS_WITH_AS(read_movielens_1m(e.str()), ("read_movielens_1m: " + e.file("users.dat") + " is empty").c_str(),
                         DataError);
  }
  SUBCASE("missing file") {
    auto d = ml1m_with("ratings.dat", "1::10::5::1\n");
    fs::remove(d.path / "movies.dat");
    CHECK_THROWS_WITH_AS(read_movielens_1m(d.str()),
                         ("read_movielens_1m: cannot open " + d.file("movies.dat") + ": No such file or directory").c_str(), DataError);
    CHECK_THROWS_AS(read_movielens_1m(d.file("no-such-dir")), DataError);
  }
  SUBCASE("truncated last line: an incomplete row is an error, with its line") {
    auto d = ml1m_with("ratings.dat", "1::10::5::900000100\n3::2");
    CHECK_THROWS_WITH_AS(read_movielens_1m(d.str()),
                         ("read_movielens_1m: " + d.file("ratings.dat") +
                          ":2: expected 4 fields (UserID::MovieID::Rating::Timestamp), got 2")
                             .c_str(),
                         DataError);
  }
  SUBCASE("nothing left after the join") {
    auto d = ml1m_with("ratings.dat", "1::99::5::1\n8::10::5::2\n");
    CHECK_THROWS_WITH_AS(read_movielens_1m(d.str()),
                         "read_movielens_1m: no rating is left after joining with the movie and user files "
                         "(1 with an unknown movie, 1 with an unknown user)",
                         DataError);
  }
}

TEST_CASE("ml-1m: strict = false skips malformed rows, counts them and records their lines") {
  auto d = ml1m_with("ratings.dat", "1::10::5::900000100\nbroken\n1::x::3::5\n\n2::10::4::900000050\n1::20::3::1::9");
  ReadOptions opt;
  opt.strict = false;
  opt.max_recorded = 2;
  ReadReport rep;
  Interactions x = read_movielens_1m(d.str(), opt, &rep);
  CHECK(x.size() == 2);
  CHECK(rep.rows_read == 5);
  CHECK(rep.rows_skipped == 3);
  CHECK(rep.blank_lines == 1);
  REQUIRE(rep.skipped.size() == 2);
  CHECK(rep.skipped[0].file == d.file("ratings.dat"));
  CHECK(rep.skipped[0].line == 2);
  CHECK(rep.skipped[0].reason == "expected 4 fields (UserID::MovieID::Rating::Timestamp), got 1");
  CHECK(rep.skipped[1].line == 3);
  CHECK(rep.skipped[1].reason == "field MovieID is not an integer: 'x'");
  CHECK(rep.summary().find("3 malformed skipped") != std::string::npos);
  // A file where every row is bad is still an error.
  auto e = ml1m_with("ratings.dat", "bad\nworse\n");
  CHECK_THROWS_WITH_AS(read_movielens_1m(e.str(), opt),
                       ("read_movielens_1m: " + e.file("ratings.dat") + " has no valid rows (2 skipped)").c_str(),
                       DataError);
}

// ---- MovieLens-100K -------------------------------------------------------------------------

TEST_CASE("ml-100k: fixture parses; cate_id is the first flagged genre, 'unknown' when none") {
  ReadReport rep;
  Interactions d = read_movielens_100k(fixtures() + "/ml-100k-tiny", {}, &rep);
  CHECK(d.dataset == "ml-100k");
  CHECK(rep.rows_read == 6);
  CHECK(rep.rows_kept == 5);
  CHECK(rep.dropped_unknown_item == 1);  // item 9 is not in u.item
  CHECK(rep.dropped_unknown_user == 0);
  CHECK(d.user == std::vector<std::int32_t>{2, 1, 3, 1, 4});
  CHECK(d.item == std::vector<std::int32_t>{1, 2, 3, 1, 4});  // items 1, 2, 3, 5 (4 is unrated)
  CHECK(d.timestamp == std::vector<std::int64_t>{800000010, 800000020, 800000030, 800000040, 800000060});
  CHECK(d.rating == std::vector<float>{4, 3, 5, 2, 4});
  // Item 1: Comedy+Drama -> Comedy; item 2: Action+Thriller -> Action; item 3: only 'unknown';
  // item 5: no flag at all -> 'unknown'. Upper case sorts before "unknown".
  CHECK(codes(d.item_feature("cate_id")) == std::vector<std::int32_t>{0, 2, 1, 3, 3});
  CHECK(d.item_feature("cate_id")->encoder.raw_values() == std::vector<std::string>{"Action", "Comedy", "unknown"});
  CHECK(codes(d.user_feature("gender")) == std::vector<std::int32_t>{0, 2, 1, 2, 1});
  CHECK(codes(d.user_feature("age")) == std::vector<std::int32_t>{0, 2, 3, 1, 4});
  CHECK(codes(d.user_feature("occupation")) == std::vector<std::int32_t>{0, 2, 1, 4, 3});
  CHECK(codes(d.user_feature("zip")) == std::vector<std::int32_t>{0, 2, 4, 3, 1});
  CHECK(d.item_titles[2] == "Le Ch\xC3\xA2teau Rouge (1996)");  // 0xE2 -> "â"
  CHECK(rep.title_encoding == "latin-1");
}

TEST_CASE("ml-100k: bad input names file, line and field") {
  const std::string flags = "|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0";  // 18 flags after the first
  SUBCASE("genre flag not 0/1") {
    auto d = ml100k_with("u.item", "1|A (1990)|||url|0|2|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n");
    CHECK_THROWS_WITH_AS(read_movielens_100k(d.str()),
                         ("read_movielens_100k: " + d.file("u.item") + ":1: genre flag 'Action' is not 0 or 1: '2'")
                             .c_str(),
                         DataError);
  }
  SUBCASE("wrong field count") {
    auto d = ml100k_with("u.item", "1|A (1990)|||url|1" + flags + "\n2|B (1991)|||url" + flags + "\n");
    CHECK_THROWS_WITH_AS(read_movielens_100k(d.str()),
                         ("read_movielens_100k: " + d.file("u.item") +
                          ":2: expected 24 fields (movie id|title|release date|video release date|IMDb URL|19 genre "
                          "flags), got 23")
                             .c_str(),
                         DataError);
  }
  SUBCASE("non-numeric item id in u.data") {
    auto d = ml100k_with("u.data", "1\t1\t4\t5\n1\tabc\t4\t6\n");
    CHECK_THROWS_WITH_AS(
        read_movielens_100k(d.str()),
        ("read_movielens_100k: " + d.file("u.data") + ":2: field item id is not an integer: 'abc'").c_str(), DataError);
  }
  SUBCASE("u.data with spaces instead of tabs") {
    auto d = ml100k_with("u.data", "1 1 4 5\n");
    CHECK_THROWS_WITH_AS(read_movielens_100k(d.str()),
                         ("read_movielens_100k: " + d.file("u.data") +
                          ":1: expected 4 fields (user id, item id, rating, timestamp separated by tabs), got 1")
                             .c_str(),
                         DataError);
  }
  SUBCASE("non-numeric age in u.user") {
    auto d = ml100k_with("u.user", "1|3l|M|engineer|12345\n");
    CHECK_THROWS_WITH_AS(read_movielens_100k(d.str()),
                         ("read_movielens_100k: " + d.file("u.user") + ":1: field age is not an integer: '3l'").c_str(),
                         DataError);
  }
}

// ---- Torch-RecHub merged CSV ----------------------------------------------------------------

TEST_CASE("torch-rechub csv: quoted titles, \"\" escapes, first genre, same codes as the raw reader") {
  ReadReport rep;
  const std::string path = fixtures() + "/csv/ml-1m-merged.csv";
  Interactions c = read_torch_rechub_csv(path, {}, &rep);
  CHECK(c.dataset == path);
  CHECK(rep.rows_read == 5);
  CHECK(rep.rows_kept == 5);
  CHECK(rep.title_encoding == "utf-8");
  CHECK(c.user == std::vector<std::int32_t>{3, 1, 1, 2, 4});
  CHECK(c.item == std::vector<std::int32_t>{4, 2, 3, 2, 1});
  CHECK(c.timestamp == std::vector<std::int64_t>{900000400, 900000100, 900000200, 900000050, 900000500});
  CHECK(c.rating == std::vector<float>{1, 5, 3, 4, 4});
  CHECK(c.item_titles[4] == "The \"Quiet\" Orbit, Part 2 (2001)");
  CHECK(c.item_titles[2] == "Paper Lanterns, Again (1994)");
  CHECK(c.item_titles[3] == "Caf\xC3\xA9 Noir (1997)");
  // The same users and movies as the ml-1m-tiny fixture: every profile code agrees.
  Interactions r = read_movielens_1m(fixtures() + "/ml-1m-tiny");
  CHECK(c.user_ids.raw_values() == r.user_ids.raw_values());
  CHECK(c.item_ids.raw_values() == r.item_ids.raw_values());
  for (const char* f : {"gender", "age", "occupation", "zip"}) {
    CAPTURE(f);
    CHECK(codes(c.user_feature(f)) == codes(r.user_feature(f)));
  }
  CHECK(codes(c.item_feature("cate_id")) == codes(r.item_feature("cate_id")));
}

TEST_CASE("torch-rechub csv: Latin-1 titles are converted, missing columns are a ConfigError") {
  TempDir d;
  const std::string header = "user_id,movie_id,rating,timestamp,title,genres,gender,age,occupation,zip\n";
  auto p = d.write("latin.csv", header + "1,2,4,10,Caf\xE9 (1990),Drama,F,1,2,3\n");
  ReadReport rep;
  Interactions x = read_torch_rechub_csv(p, {}, &rep);
  CHECK(rep.title_encoding == "latin-1");
  CHECK(x.item_titles[1] == "Caf\xC3\xA9 (1990)");
  auto q = d.write("nogenres.csv", "user_id,movie_id,rating,timestamp,title,gender,age,occupation,zip\n1,2,4,10,T,F,1,2,3\n");
  CHECK_THROWS_WITH_AS(read_torch_rechub_csv(q),
                       ("read_torch_rechub_csv: schema item_features[0] names column 'genres', which '" + q +
                        "' does not have (its columns: user_id, movie_id, rating, timestamp, title, gender, age, "
                        "occupation, zip)")
                           .c_str(),
                       ConfigError);
}

// ---- schema-driven CSV ----------------------------------------------------------------------

TEST_CASE("interactions csv: schema file, string ids, first-value profiles and varying features") {
  const std::string dir = fixtures() + "/csv";
  CsvSchema schema = CsvSchema::from_file(dir + "/clicks.schema.json");
  ReadReport rep;
  Interactions x = read_interactions_csv(dir + "/clicks.tsv", schema, {}, &rep);
  CHECK(x.dataset == "clicks");
  CHECK(x.user_col == "uid");
  CHECK(x.item_col == "sku");
  CHECK(rep.rows_read == 5);
  CHECK(rep.blank_lines == 1);
  // Non-numeric ids sort as text: "u10" < "u2" < "u7".
  CHECK(x.user_ids.raw_values() == std::vector<std::string>{"u10", "u2", "u7"});
  CHECK(x.user == std::vector<std::int32_t>{3, 2, 3, 1, 2});
  CHECK(x.item == std::vector<std::int32_t>{1, 2, 2, 1, 3});
  CHECK(x.timestamp == std::vector<std::int64_t>{1700000003, 1700000001, 1700000002, 1700000005, 1700000004});
  CHECK(x.rating.empty());
  // u7 is "ios" then "android": the first value is kept and the pair counted; "android" still
  // has a code (the encoder is fit over every row, as Torch-RecHub's is).
  CHECK(rep.varying_user_features == 1);
  CHECK(rep.varying_item_features == 0);
  CHECK(x.user_feature("device")->encoder.raw_values() == std::vector<std::string>{"android", "ios", "web"});
  CHECK(codes(x.user_feature("device")) == std::vector<std::int32_t>{0, 3, 3, 2});
  // An empty value is a category of its own.
  CHECK(x.item_feature("brand")->encoder.raw_values() == std::vector<std::string>{"", "acme", "zenith"});
  CHECK(codes(x.item_feature("brand")) == std::vector<std::int32_t>{0, 2, 3, 1});
  CHECK(x.item_titles.empty());
}

TEST_CASE("interactions csv: headerless file by column index, ratings, first_of, multi-char delimiter") {
  TempDir d;
  auto p = d.write("x.dat", "10::7::4.5::100::Drama|War\n3::7::2::90::Comedy\n10::8::1::80::War");
  nlohmann::json schema = {{"delimiter", "::"},
                           {"header", false},
                           {"quoted", false},
                           {"user_col", 0},
                           {"item_col", 1},
                           {"timestamp_col", 3},
                           {"rating_col", 2},
                           {"item_features", nlohmann::json::array({nlohmann::json::object(
                                                 {{"name", "cate_id"}, {"column", 4}, {"first_of", "|"}})})}};
  Interactions x = read_interactions_csv(p, schema);
  CHECK(x.dataset == p);
  CHECK(x.user_col == "user_id");
  CHECK(x.item_col == "item_id");
  CHECK(x.user == std::vector<std::int32_t>{2, 1, 2});  // 3 < 10 numerically
  CHECK(x.item == std::vector<std::int32_t>{1, 1, 2});
  CHECK(x.rating == std::vector<float>{4.5f, 2, 1});
  CHECK(codes(x.item_feature("cate_id")) == std::vector<std::int32_t>{0, 2, 3});  // Drama, War
  CHECK(x.item_feature("cate_id")->encoder.raw_values() == std::vector<std::string>{"Comedy", "Drama", "War"});
}

TEST_CASE("interactions csv: a quoted field spanning lines keeps later line numbers right") {
  TempDir d;
  auto p = d.write("q.csv", "u,i,t,title\n1,2,3,\"two\nline title\"\n1,3,x,plain\n");
  nlohmann::json schema = {{"user_col", "u"}, {"item_col", "i"}, {"timestamp_col", "t"}, {"title_col", "title"}};
  CHECK_THROWS_WITH_AS(read_interactions_csv(p, schema),
                       ("read_interactions_csv: " + p + ":4: field 't' is not an integer timestamp: 'x'").c_str(),
                       DataError);
  ReadOptions lax;
  lax.strict = false;
  ReadReport rep;
  Interactions x = read_interactions_csv(p, schema, lax, &rep);
  CHECK(x.size() == 1);
  CHECK(x.item_titles[1] == "two\nline title");
  CHECK(rep.rows_skipped == 1);
  REQUIRE(rep.skipped.size() == 1);
  CHECK(rep.skipped[0].line == 4);
}

TEST_CASE("interactions csv: schema errors are ConfigErrors naming key, column and file") {
  const std::string path = fixtures() + "/csv/clicks.tsv";
  nlohmann::json base = {{"delimiter", "\t"}, {"user_col", "uid"}, {"item_col", "sku"}, {"timestamp_col", "ts"}};
  SUBCASE("unknown column name") {
    auto s = base;
    s["user_col"] = "usr";
    CHECK_THROWS_WITH_AS(read_interactions_csv(path, s),
                         ("read_interactions_csv: schema user_col names column 'usr', which '" + path +
                          "' does not have (its columns: uid, sku, ts, device, brand)")
                             .c_str(),
                         ConfigError);
  }
  SUBCASE("feature column missing") {
    auto s = base;
    s["user_features"] = {"device", "country"};
    CHECK_THROWS_WITH_AS(read_interactions_csv(path, s),
                         ("read_interactions_csv: schema user_features[1] names column 'country', which '" + path +
                          "' does not have (its columns: uid, sku, ts, device, brand)")
                             .c_str(),
                         ConfigError);
  }
  SUBCASE("index out of range") {
    auto s = base;
    s["rating_col"] = 9;
    CHECK_THROWS_WITH_AS(read_interactions_csv(path, s),
                         ("read_interactions_csv: schema rating_col is column index 9, but '" + path + "' has 5 columns")
                             .c_str(),
                         ConfigError);
  }
  SUBCASE("name without a header") {
    auto s = base;
    s["header"] = false;
    CHECK_THROWS_WITH_AS(read_interactions_csv(path, s),
                         ("read_interactions_csv: schema user_col names column 'uid', but '" + path +
                          "' is read without a header (\"header\": false); name columns by 0-based index")
                             .c_str(),
                         ConfigError);
  }
  SUBCASE("unknown key, missing key, wrong type") {
    auto s = base;
    s["delimeter"] = ",";
    CHECK_THROWS_WITH_AS(CsvSchema::from_json(s),
                         "csv schema: unknown key 'delimeter' (known: delimiter, header, quoted, user_col, item_col, "
                         "timestamp_col, rating_col, title_col, user_features, item_features, dataset)",
                         ConfigError);
    auto m = base;
    m.erase("timestamp_col");
    CHECK_THROWS_WITH_AS(CsvSchema::from_json(m), "csv schema: 'timestamp_col' is required", ConfigError);
    auto t = base;
    t["header"] = "yes";
    CHECK_THROWS_WITH_AS(CsvSchema::from_json(t), "csv schema: 'header' must be true or false, got \"yes\"",
                         ConfigError);
    auto u = base;
    u["item_col"] = -1;
    CHECK_THROWS_WITH_AS(CsvSchema::from_json(u),
                         "csv schema: 'item_col' must be a column name or a 0-based index, got -1", ConfigError);
    auto v = base;
    v["item_features"] = {{{"column", "sku"}, {"frist_of", "|"}}};
    CHECK_THROWS_WITH_AS(CsvSchema::from_json(v),
                         "csv schema: unknown key 'frist_of' in item_features[0] (known: name, column, first_of)",
                         ConfigError);
  }
}

TEST_CASE("interactions csv: malformed rows, empty and missing files") {
  TempDir d;
  nlohmann::json schema = {{"user_col", "u"}, {"item_col", "i"}, {"timestamp_col", "t"}, {"rating_col", "r"}};
  auto wrong = d.write("wrong.csv", "u,i,t,r\n1,2,3,4\n1,2,3\n");
  CHECK_THROWS_WITH_AS(read_interactions_csv(wrong, schema),
                       ("read_interactions_csv: " + wrong + ":3: expected 4 fields separated by ',', got 3").c_str(),
                       DataError);
  auto quote = d.write("quote.csv", "u,i,t,r\n1,2,3,4\n1,\"2,3,4\n");
  CHECK_THROWS_WITH_AS(read_interactions_csv(quote, schema),
                       ("read_interactions_csv: " + quote + ":3: unterminated quoted field (opened on line 3)").c_str(),
                       DataError);
  auto rating = d.write("rating.csv", "u,i,t,r\n1,2,3,high\n");
  CHECK_THROWS_WITH_AS(read_interactions_csv(rating, schema),
                       ("read_interactions_csv: " + rating + ":2: field 'r' is not a number: 'high'").c_str(), DataError);
  auto noid = d.write("noid.csv", "u,i,t,r\n,2,3,4\n");
  CHECK_THROWS_WITH_AS(read_interactions_csv(noid, schema),
                       ("read_interactions_csv: " + noid + ":2: user id 'u' is empty").c_str(), DataError);
  auto header_only = d.write("header.csv", "u,i,t,r\n");
  CHECK_THROWS_WITH_AS(read_interactions_csv(header_only, schema),
                       ("read_interactions_csv: " + header_only + " has no data rows").c_str(), DataError);
  auto empty = d.write("empty.csv", "");
  CHECK_THROWS_WITH_AS(read_interactions_csv(empty, schema),
                       ("read_interactions_csv: " + empty + " is empty").c_str(), DataError);
  CHECK_THROWS_WITH_AS(read_interactions_csv(d.file("absent.csv"), schema),
                       ("read_interactions_csv: cannot open " + d.file("absent.csv") + ": No such file or directory").c_str(), DataError);
  // Truncated last line without newline: parsed when complete; a UTF-8 BOM is ignored.
  auto tail = d.write("tail.csv", "\xEF\xBB\xBFu,i,t,r\n1,2,3,4\n5,6,7,8");
  Interactions x = read_interactions_csv(tail, schema);
  CHECK(x.size() == 2);
  CHECK(x.rating == std::vector<float>{4, 8});
}

// ---- real data (read-only, skipped when absent) ---------------------------------------------

TEST_CASE("real data: ml-1m-part loads fast with the expected counts") {
  const std::string dir = shared_data("ml-1m-part");
  if (dir.empty()) {
    MESSAGE("skipped: ml-1m-part not found (set RECHUB_SHARED)");
    return;
  }
  ReadReport rep;
  Interactions d = read_movielens_1m(dir, {}, &rep);
  double best = rep.seconds;
  for (int k = 0; k < 2; ++k) {  // warm page cache: report the best of three
    ReadReport again;
    read_movielens_1m(dir, {}, &again);
    best = std::min(best, again.seconds);
  }
  MESSAGE("ml-1m-part: " << rep.summary() << "; best of 3 loads " << best << " s");
  CHECK(d.size() == 487650);
  CHECK(rep.dropped_unknown_item + rep.dropped_unknown_user == 0);
  CHECK(d.num_users() == 2999);
  CHECK(d.num_items() == 3615);
  CHECK(d.user_feature("gender")->encoder.size() == 2);
  CHECK(d.user_feature("age")->encoder.size() == 7);
  CHECK(d.user_feature("occupation")->encoder.size() == 21);
  CHECK(d.user_feature("zip")->encoder.size() == 2006);
  CHECK(d.item_feature("cate_id")->encoder.size() == 18);
  // Checksums computed independently (a plain Python join + sorted-unique encoding).
  std::int64_t su = 0, si = 0, st = 0;
  for (std::size_t k = 0; k < d.size(); ++k) su += d.user[k], si += d.item[k], st += d.timestamp[k];
  CHECK(su == 723871726);
  CHECK(si == 830917969);
  CHECK(st == 476905930752458);
  std::int64_t zip_sum = 0, cate_sum = 0;
  for (auto c : d.user_feature("zip")->codes) zip_sum += c;
  for (auto c : d.item_feature("cate_id")->codes) cate_sum += c;
  CHECK(zip_sum == 3043718);
  CHECK(cate_sum == 23378);
  int non_ascii = 0;
  for (const auto& t : d.item_titles) {
    CHECK(text::is_valid_utf8(t));
    non_ascii += !text::is_ascii(t);
  }
  CHECK(non_ascii == 45);
  CHECK(best < 2.0);  // loose: the target is well under 0.5 s; this only catches a collapse
}

TEST_CASE("real data: ml-100k loads with the expected counts") {
  const std::string dir = shared_data("ml-100k");
  if (dir.empty()) {
    MESSAGE("skipped: ml-100k not found (set RECHUB_SHARED)");
    return;
  }
  ReadReport rep;
  Interactions d = read_movielens_100k(dir, {}, &rep);
  MESSAGE("ml-100k: " << rep.summary());
  CHECK(d.size() == 100000);
  CHECK(d.num_users() == 943);
  CHECK(d.num_items() == 1682);
  CHECK(d.user_feature("age")->encoder.size() == 61);
  CHECK(d.user_feature("occupation")->encoder.size() == 21);
  CHECK(d.user_feature("zip")->encoder.size() == 795);
  CHECK(d.item_feature("cate_id")->encoder.size() == 19);
  std::int64_t si = 0, st = 0, cate_sum = 0;
  for (std::size_t k = 0; k < d.size(); ++k) si += d.item[k], st += d.timestamp[k];
  for (auto c : d.item_feature("cate_id")->codes) cate_sum += c;
  CHECK(si == 42553013);
  CHECK(st == 88352885148862);
  CHECK(cate_sum == 10624);
  int non_ascii = 0;
  for (const auto& t : d.item_titles) {
    CHECK(text::is_valid_utf8(t));
    non_ascii += !text::is_ascii(t);
  }
  CHECK(non_ascii == 9);
}
