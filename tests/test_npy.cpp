// NPY I/O: round trips, byte-identity with numpy.save, files in numpy's other header variants,
// pinned errors for truncated / garbage / unsupported files, and Dataset directories.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "rechub/io/npy.hpp"

using namespace rechub;
namespace fs = std::filesystem;

namespace {

/// A fresh directory under the system temp dir, removed when the test case ends.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("rechub_test_npy_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// A format-1.0 header exactly as numpy 1.24's np.save writes it: the dict, spaces, '\n', with the
/// header length (118 for these small shapes, read off numpy's own output) in the 2-byte LE field.
std::string numpy_v1_header(const std::string& dict, std::size_t header_len = 118) {
  std::string h = std::string("\x93NUMPY\x01\x00", 8);
  h += static_cast<char>(header_len & 0xff);
  h += static_cast<char>(header_len >> 8);
  h += dict + std::string(header_len - 1 - dict.size(), ' ') + "\n";
  return h;
}

template <class T>
std::string raw_bytes(std::initializer_list<T> v) {
  std::string s(v.size() * sizeof(T), '\0');
  std::memcpy(&s[0], v.begin(), s.size());
  return s;
}

}  // namespace

TEST_CASE("npy round trip: float32 and int32, 1-d to 4-d, empty") {
  TempDir d;
  Tensor f1 = Tensor::empty({5});
  for (int i = 0; i < 5; ++i) f1.f32()[i] = 0.25f * static_cast<float>(i) - 1.0f;
  Tensor f2 = Tensor::empty({3, 4});
  for (int i = 0; i < 12; ++i) f2.f32()[i] = static_cast<float>(i) * 1e-3f + 1e30f * static_cast<float>(i == 7);
  Tensor i1 = Tensor::empty({4}, DType::i32);
  const std::int32_t iv[] = {0, -1, 2147483647, -2147483647 - 1};
  std::memcpy(i1.i32(), iv, sizeof iv);
  Tensor i2 = Tensor::empty({2, 50}, DType::i32);
  for (int i = 0; i < 100; ++i) i2.i32()[i] = i * 17 - 3;
  Tensor i4 = Tensor::empty({2, 1, 3, 2}, DType::i32);
  for (int i = 0; i < 12; ++i) i4.i32()[i] = i;
  Tensor e1 = Tensor::empty({0}, DType::i32);
  Tensor e2 = Tensor::empty({0, 5});

  for (const Tensor* t : {&f1, &f2, &i1, &i2, &i4, &e1, &e2}) {
    const std::string p = d / "x.npy";
    write_npy(p, *t);
    Tensor r = read_npy(p);
    CHECK(r.is_owned());
    CHECK(r.shape() == t->shape());
    CHECK(r.dtype() == t->dtype());
    REQUIRE(r.nbytes() == t->nbytes());
    if (t->nbytes()) CHECK(std::memcmp(r.raw(), t->raw(), t->nbytes()) == 0);  // empty tensors own no buffer
  }
  // a view (rows 1..2 of f2) writes just its rows
  write_npy(d / "v.npy", f2.slice(1, 3));
  Tensor v = read_npy(d / "v.npy");
  CHECK(v.shape() == Shape{2, 4});
  CHECK(v.f32()[0] == f2.f32()[4]);
  // the atomic writer leaves no temp files behind
  int files = 0;
  for (const auto& e : fs::directory_iterator(d.path)) files += e.is_regular_file();
  CHECK(files == 2);
}

TEST_CASE("write_npy produces numpy.save's exact bytes") {
  TempDir d;
  Tensor a = Tensor::empty({3}, DType::i32);
  a.i32()[0] = 0, a.i32()[1] = 1, a.i32()[2] = 2;
  write_npy(d / "a.npy", a);
  const std::string want_a = numpy_v1_header("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }") +
                             raw_bytes<std::int32_t>({0, 1, 2});
  CHECK(slurp(d / "a.npy") == want_a);
  CHECK(want_a.size() == 140);  // np.save(np.arange(3, dtype='<i4')) is 140 bytes

  Tensor b = Tensor::empty({2, 3});
  for (int i = 0; i < 6; ++i) b.f32()[i] = static_cast<float>(i);
  write_npy(d / "b.npy", b);
  CHECK(slurp(d / "b.npy") == numpy_v1_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }") +
                                  raw_bytes<float>({0, 1, 2, 3, 4, 5}));

  Tensor big = Tensor::zeros({123456, 2, 3}, DType::i32);
  write_npy(d / "big.npy", big);
  const std::string s = slurp(d / "big.npy");
  CHECK(s.size() == 2963072);  // numpy's size for the same array
  CHECK(s.substr(0, 128) ==
        numpy_v1_header("{'descr': '<i4', 'fortran_order': False, 'shape': (123456, 2, 3), }"));
}

TEST_CASE("read_npy accepts numpy's other header variants") {
  TempDir d;
  // numpy < 1.24: 16-byte alignment, no growth padding; keys in another order, double quotes, no spaces
  std::string h = "{\"shape\":(2,2),\"fortran_order\":False,\"descr\":\"<f4\"}";
  std::string v1 = std::string("\x93NUMPY\x01\x00", 8);
  std::string dict = h;
  while ((10 + dict.size() + 1) % 16) dict += ' ';
  dict += '\n';
  v1 += static_cast<char>(dict.size()), v1 += '\0';
  spit(d / "old.npy", v1 + dict + raw_bytes<float>({1.5f, -2.0f, 3.0f, 0.0f}));
  Tensor t = read_npy(d / "old.npy");
  CHECK(t.shape() == Shape{2, 2});
  CHECK(t.f32()[0] == 1.5f);
  CHECK(t.f32()[1] == -2.0f);

  // format 2.0 (4-byte header length), a Python 2 'L' suffix
  std::string d2 = "{'descr': '<i4', 'fortran_order': False, 'shape': (3L,), }";
  d2 += std::string(64 - (12 + d2.size() + 1) % 64, ' ') + "\n";
  std::string v2 = std::string("\x93NUMPY\x02\x00", 8);
  const std::uint32_t n2 = static_cast<std::uint32_t>(d2.size());
  v2.append(reinterpret_cast<const char*>(&n2), 4);
  spit(d / "v2.npy", v2 + d2 + raw_bytes<std::int32_t>({7, 8, 9}));
  t = read_npy(d / "v2.npy");
  CHECK(t.shape() == Shape{3});
  CHECK(t.dtype() == DType::i32);
  CHECK(t.i32()[2] == 9);

  // numpy's default int64 is narrowed to int32
  spit(d / "i8.npy", numpy_v1_header("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }") +
                         raw_bytes<std::int64_t>({1, -5, 2147483647}));
  t = read_npy(d / "i8.npy");
  CHECK(t.dtype() == DType::i32);
  CHECK(t.i32()[1] == -5);
  CHECK(t.i32()[2] == 2147483647);

  // 0-d scalar
  spit(d / "s.npy", numpy_v1_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), }") +
                        raw_bytes<float>({2.5f}));
  t = read_npy(d / "s.npy");
  CHECK(t.ndim() == 0);
  CHECK(t.f32()[0] == 2.5f);
}

TEST_CASE("read_npy: truncated, garbage and unsupported files give pinned DataErrors") {
  TempDir d;
  const std::string hdr3 = numpy_v1_header("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }");

  const std::string missing = d / "missing.npy";
  CHECK_THROWS_WITH_AS(read_npy(missing), ("read_npy: cannot open '" + missing + "'").c_str(), DataError);

  const std::string garbage = d / "garbage.npy";
  spit(garbage, "user_id,movie_id\n1,2\n");
  CHECK_THROWS_WITH_AS(read_npy(garbage), ("read_npy: '" + garbage + "' is not a .npy file (bad magic)").c_str(),
                       DataError);
  spit(garbage, "");
  CHECK_THROWS_WITH_AS(read_npy(garbage), ("read_npy: '" + garbage + "' is not a .npy file (bad magic)").c_str(),
                       DataError);

  const std::string trunc = d / "trunc.npy";
  spit(trunc, hdr3 + raw_bytes<std::int32_t>({1, 2}));
  CHECK_THROWS_WITH_AS(read_npy(trunc),
                       ("read_npy: '" + trunc + "': truncated: shape [3] <i4 needs 12 data bytes, file has 8").c_str(),
                       DataError);
  spit(trunc, hdr3.substr(0, 60));
  CHECK_THROWS_WITH_AS(read_npy(trunc),
                       ("read_npy: '" + trunc + "': truncated header (declares 118 bytes, file has 60)").c_str(),
                       DataError);
  spit(trunc, hdr3.substr(0, 9));
  CHECK_THROWS_WITH_AS(read_npy(trunc), ("read_npy: '" + trunc + "': truncated header").c_str(), DataError);

  const std::string extra = d / "extra.npy";
  spit(extra, hdr3 + raw_bytes<std::int32_t>({1, 2, 3, 4}));
  CHECK_THROWS_WITH_AS(read_npy(extra),
                       ("read_npy: '" + extra + "': 4 unexpected trailing bytes after shape [3] <i4 data").c_str(),
                       DataError);

  const std::string f8 = d / "f8.npy";
  spit(f8, numpy_v1_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }") + raw_bytes<double>({1.0}));
  CHECK_THROWS_WITH_AS(read_npy(f8),
                       ("read_npy: '" + f8 + "': dtype '<f8' is not supported (need '<f4', '<i4' or '<i8')").c_str(),
                       DataError);
  const std::string be = d / "be.npy";
  spit(be, numpy_v1_header("{'descr': '>i4', 'fortran_order': False, 'shape': (1,), }") + std::string(4, '\0'));
  CHECK_THROWS_WITH_AS(read_npy(be),
                       ("read_npy: '" + be + "': dtype '>i4' is not supported (need '<f4', '<i4' or '<i8')").c_str(),
                       DataError);

  const std::string fo = d / "fortran.npy";
  spit(fo, numpy_v1_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }") + std::string(16, '\0'));
  CHECK_THROWS_WITH_AS(read_npy(fo),
                       ("read_npy: '" + fo + "': fortran_order=True is not supported (save a C-order array)").c_str(),
                       DataError);

  const std::string ver = d / "ver.npy";
  std::string v4 = hdr3 + raw_bytes<std::int32_t>({1, 2, 3});
  v4[6] = 4;
  spit(ver, v4);
  CHECK_THROWS_WITH_AS(read_npy(ver), ("read_npy: '" + ver + "': unsupported format version 4.0").c_str(), DataError);

  const std::string bad = d / "bad.npy";
  spit(bad, numpy_v1_header("{'descr': '<f4', 'fortran_order': False}"));
  CHECK_THROWS_WITH_AS(read_npy(bad),
                       ("read_npy: '" + bad + "': malformed header (no 'shape' key): "
                        "{'descr': '<f4', 'fortran_order': False}").c_str(),
                       DataError);
  spit(bad, numpy_v1_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }"));
  CHECK_THROWS_WITH_AS(read_npy(bad),
                       ("read_npy: '" + bad + "': malformed header (shape entry is not a non-negative integer): "
                        "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }").c_str(),
                       DataError);
  spit(bad, numpy_v1_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1), }") +
                raw_bytes<float>({1.0f}));
  CHECK_THROWS_WITH_AS(read_npy(bad), ("read_npy: '" + bad + "': 5 dims, at most 4 supported").c_str(), DataError);

  const std::string big = d / "big.npy";
  spit(big, numpy_v1_header("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }") +
                raw_bytes<std::int64_t>({3, 4294967296LL}));
  CHECK_THROWS_WITH_AS(read_npy(big),
                       ("read_npy: '" + big + "': int64 value 4294967296 at flat index 1 does not fit int32").c_str(),
                       DataError);
}

TEST_CASE("dataset directories keep column order and validate rows") {
  TempDir d;
  Dataset ds;
  Tensor uid = Tensor::empty({3}, DType::i32);
  Tensor hist = Tensor::empty({3, 4}, DType::i32);
  Tensor label = Tensor::empty({3});
  for (int i = 0; i < 3; ++i) {
    uid.i32()[i] = 10 + i;
    label.f32()[i] = i == 1 ? 1.0f : 0.0f;
    for (int j = 0; j < 4; ++j) hist.i32()[i * 4 + j] = i * 4 + j;
  }
  // deliberately not alphabetical: the order must survive via columns.json
  ds.set("user_id", uid);
  ds.set("label", label);
  ds.set("hist_movie_id", hist);
  const std::string dir = d / "train";
  write_dataset_dir(dir, ds);  // creates the directory
  CHECK(slurp(dir + "/columns.json") == "[\"user_id\",\"label\",\"hist_movie_id\"]\n");

  Dataset r = read_dataset_dir(dir);
  REQUIRE(r.columns().size() == 3);
  CHECK(r.columns()[0].first == "user_id");
  CHECK(r.columns()[1].first == "label");
  CHECK(r.columns()[2].first == "hist_movie_id");
  CHECK(r.rows() == 3);
  CHECK(r["hist_movie_id"].shape() == Shape{3, 4});
  CHECK(r["hist_movie_id"].i32()[11] == 11);
  CHECK(r["label"].dtype() == DType::f32);
  CHECK(r["label"].f32()[1] == 1.0f);
  CHECK(r["user_id"].i32()[2] == 12);

  // without columns.json (e.g. written by hand with numpy): every .npy, in name order
  fs::remove(dir + "/columns.json");
  Dataset a = read_dataset_dir(dir);
  REQUIRE(a.columns().size() == 3);
  CHECK(a.columns()[0].first == "hist_movie_id");
  CHECK(a.columns()[2].first == "user_id");

  // a column with a different row count names both files
  write_npy(dir + "/zz.npy", Tensor::zeros({2}, DType::i32));
  CHECK_THROWS_WITH_AS(read_dataset_dir(dir),
                       ("read_dataset_dir: '" + dir + "/zz.npy' has 2 rows, '" + dir + "/hist_movie_id.npy' has 3")
                           .c_str(),
                       DataError);
  // columns.json naming a file that is not there
  spit(dir + "/columns.json", "[\"user_id\", \"movie_id\"]");
  CHECK_THROWS_WITH_AS(read_dataset_dir(dir),
                       ("read_dataset_dir: '" + dir + "/columns.json' lists 'movie_id' but '" + dir +
                        "/movie_id.npy' does not exist")
                           .c_str(),
                       DataError);
  spit(dir + "/columns.json", "{\"user_id\": 1}");
  CHECK_THROWS_WITH_AS(read_dataset_dir(dir),
                       ("read_dataset_dir: '" + dir + "/columns.json' must be a JSON array of column names").c_str(),
                       DataError);
  CHECK_THROWS_WITH_AS(read_dataset_dir(d / "nope"),
                       ("read_dataset_dir: '" + (d / "nope") + "' is not a directory").c_str(), DataError);

  Dataset badname;
  badname.set("../evil", uid);
  CHECK_THROWS_WITH_AS(write_dataset_dir(d / "x", badname),
                       "write_dataset_dir: column name '../evil' cannot be a file name", ConfigError);
}
