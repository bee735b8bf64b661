// I/O: atomic writes, safetensors round trips and corruption checks, checkpoints.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/io/atomic_file.hpp"
#include "rechub/io/checkpoint.hpp"
#include "rechub/io/safetensors.hpp"

using namespace rechub;
using nlohmann::json;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/rechub_test_io_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
  int entries() const {
    int n = 0;
    for (auto& e : std::filesystem::directory_iterator(path)) n += static_cast<int>(!e.path().empty());
    return n;
  }
};

/// A safetensors image from a literal header and raw data bytes.
std::string st_file(const std::string& header, const std::string& data) {
  std::string out;
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

// user_mlp.{0,1}.{weight,bias} and a buffer, named like Torch modules.
struct Mlp : Module {
  Parameter w0, b0, w1, b1;
  Mlp(std::int64_t in, std::int64_t hidden, Rng& rng)
      : w0(testing::random_tensor({hidden, in}, rng)),
        b0(testing::random_tensor({hidden}, rng)),
        w1(testing::random_tensor({4, hidden}, rng)),
        b1(testing::random_tensor({4}, rng)) {
    register_parameter("0.weight", w0);
    register_parameter("0.bias", b0);
    register_parameter("1.weight", w1);
    register_parameter("1.bias", b1);
  }
};
struct Tower : Module {
  Mlp user_mlp;
  Parameter temperature;
  Tensor seen;  // an int32 buffer
  Tower(std::int64_t in, std::int64_t hidden, Rng& rng)
      : user_mlp(in, hidden, rng), temperature(Tensor::full({1}, 0.05f)), seen(Tensor::zeros({3}, DType::i32)) {
    register_module("user_mlp", user_mlp);
    register_parameter("temperature", temperature);
    register_buffer("seen", seen);
  }
};
struct TowerWithExtra : Tower {
  Parameter bias;
  TowerWithExtra(std::int64_t in, std::int64_t hidden, Rng& rng) : Tower(in, hidden, rng), bias(Tensor::zeros({2})) {
    register_parameter("bias", bias);
  }
};
struct BareMlp : Module {
  Mlp user_mlp;
  BareMlp(std::int64_t in, std::int64_t hidden, Rng& rng) : user_mlp(in, hidden, rng) {
    register_module("user_mlp", user_mlp);
  }
};

}  // namespace

TEST_CASE("atomic write creates, replaces, and reads back files") {
  TempDir dir;
  const std::string p = dir / "a.bin";
  write_file_atomic(p, std::string("first"));
  CHECK(read_file(p) == "first");
  struct stat st;
  REQUIRE(::stat(p.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
  ::chmod(p.c_str(), 0600);
  write_file_atomic(p, std::string("second, longer"));
  CHECK(read_file(p) == "second, longer");
  REQUIRE(::stat(p.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);  // the replaced file's mode is kept
  write_file_atomic(p, std::string());
  CHECK(read_file(p).empty());
  CHECK(dir.entries() == 1);
}

TEST_CASE("atomic write leaves the old file intact when writing fails") {
  TempDir dir;
  const std::string p = dir / "model.safetensors";
  write_file_atomic(p, std::string("old contents"));
  // The writer fails half way (a serialisation error, a full disk...).
  CHECK_THROWS_WITH_AS(write_file_atomic_with(p,
                                              [](AtomicFile& f) {
                                                f.write(std::string("new hal"));
                                                throw std::runtime_error("simulated failure");
                                              }),
                       "simulated failure", std::runtime_error);
  CHECK(read_file(p) == "old contents");
  CHECK(dir.entries() == 1);  // no temp file left behind
  {
    AtomicFile f(p);  // abandoned without commit
    f.write(std::string("xyz"));
  }
  CHECK(read_file(p) == "old contents");
  CHECK(dir.entries() == 1);

  // The target directory does not exist, or is a file: nothing is written, the error names the path.
  CHECK_THROWS_WITH_AS(write_file_atomic(dir / "missing/x.bin", std::string("x")),
                       ("atomic write " + dir.path + "/missing/x.bin: cannot create a temp file in " + dir.path +
                        "/missing: No such file or directory")
                           .c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(write_file_atomic(p + "/x.bin", std::string("x")),
                       ("atomic write " + p + "/x.bin: cannot create a temp file in " + p + ": Not a directory").c_str(),
                       Error);
  // Renaming onto a directory fails after the temp file was written: it is cleaned up.
  std::filesystem::create_directory(dir / "sub");
  CHECK_THROWS_WITH_AS(write_file_atomic(dir / "sub", std::string("x")),
                       ("atomic write " + dir.path + "/sub: rename failed: Is a directory").c_str(), Error);
  CHECK(read_file(p) == "old contents");
  CHECK(dir.entries() == 2);  // the file and sub/

  CHECK_THROWS_WITH_AS(read_file(dir / "nope"),
                       ("read_file: cannot open " + dir.path + "/nope: No such file or directory").c_str(), Error);
  CHECK_THROWS_WITH_AS(read_file(dir.path), ("read_file: " + dir.path + " is not a regular file").c_str(), Error);
}

TEST_CASE("safetensors round trip is bit exact and the layout is the reference one") {
  TempDir dir;
  const std::string p = dir / "t.safetensors";
  Rng rng(4);
  Tensor w = testing::random_tensor({3, 5}, rng);
  w.f32()[0] = std::numeric_limits<float>::quiet_NaN();
  w.f32()[1] = -std::numeric_limits<float>::infinity();
  w.f32()[2] = std::numeric_limits<float>::denorm_min();
  w.f32()[3] = -0.0f;
  std::vector<std::int32_t> iv = {-7, 0, 2147483647};
  Tensor ids = Tensor::from_vector({3}, iv.data());
  Tensor scalar = Tensor::full(Shape{}, 2.5f);
  Tensor empty = Tensor::zeros({0, 4});
  Tensor big = testing::random_tensor({2, 3, 4, 5}, rng);
  save_safetensors(p, {{"w", w}, {"ids", ids}, {"scalar", scalar}, {"empty", empty}, {"big", big}},
                   {{"format", "pt"}, {"note", "hello"}});
  SafeTensors r = load_safetensors(p);
  CHECK(r.tensors.size() == 5);
  CHECK(same_bits(r.tensors.at("w"), w));
  CHECK(same_bits(r.tensors.at("ids"), ids));
  CHECK(same_bits(r.tensors.at("scalar"), scalar));
  CHECK(same_bits(r.tensors.at("empty"), empty));
  CHECK(same_bits(r.tensors.at("big"), big));
  CHECK(r.metadata == std::map<std::string, std::string>{{"format", "pt"}, {"note", "hello"}});
  CHECK(read_safetensors_metadata(p) == r.metadata);

  // Header: little-endian u64 length, JSON padded with spaces to 8 bytes, tensors packed in name order.
  const std::string bytes = read_file(p);
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= std::uint64_t(static_cast<unsigned char>(bytes[i])) << (8 * i);
  CHECK(n % 8 == 0);
  json h = json::parse(bytes.substr(8, n));
  CHECK(h["ids"] == json::parse(R"({"dtype":"I32","shape":[3],"data_offsets":[480,492]})"));
  CHECK(h["big"] == json::parse(R"({"dtype":"F32","shape":[2,3,4,5],"data_offsets":[0,480]})"));
  CHECK(h["scalar"]["shape"] == json::array());
  CHECK(bytes.size() == 8 + n + 480 + 0 + 12 + 4 + 60);
  CHECK(encode_safetensors({{"w", w}, {"ids", ids}, {"scalar", scalar}, {"empty", empty}, {"big", big}},
                           {{"format", "pt"}, {"note", "hello"}}) == bytes);

  // A file as Python's safetensors writes it (unpadded header, F32 then I32) decodes.
  float fv[] = {1.5f, -2.0f};
  std::int32_t i32v[] = {42};
  std::string data(reinterpret_cast<const char*>(fv), 8);
  data.append(reinterpret_cast<const char*>(i32v), 4);
  SafeTensors py = decode_safetensors(
      st_file(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},)"
              R"("b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]}})",
              data),
      "py.safetensors");
  CHECK(py.tensors.at("a").shape() == Shape{1, 2});
  CHECK(py.tensors.at("a").f32()[1] == -2.0f);
  CHECK(py.tensors.at("b").i32()[0] == 42);

  CHECK_THROWS_WITH_AS(save_safetensors(p, {{"w", w}, {"w", ids}}),
                       ("save_safetensors: " + p + ": tensor name 'w' appears twice").c_str(), ConfigError);
  CHECK(same_bits(load_safetensors(p).tensors.at("w"), w));  // failed save left the file alone
}

TEST_CASE("safetensors reading rejects every corruption with a DataError naming file and tensor") {
  const std::string f = "m.safetensors";
  auto err = [&](const std::string& what) { return "safetensors: " + f + ": " + what; };
  const std::string d8(8, '\0'), d12(12, '\0');
  auto one = [](const std::string& body) { return R"({"w":)" + body + "}"; };

  CHECK_THROWS_WITH_AS(decode_safetensors("abc", f), err("file is 3 bytes, shorter than the 8-byte header length").c_str(),
                       DataError);
  std::string longhdr = st_file(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), d8);
  longhdr[0] = static_cast<char>(0xe8);  // header length 1000
  longhdr[1] = 0x03;
  CHECK_THROWS_WITH_AS(decode_safetensors(longhdr, f),
                       err("header length 1000 runs past the end of the file (" + std::to_string(longhdr.size()) +
                           " bytes)")
                           .c_str(),
                       DataError);
  // A truncated data section shows up as offsets past the end.
  std::string whole = st_file(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), d8);
  CHECK_THROWS_WITH_AS(decode_safetensors(whole.substr(0, whole.size() - 3), f),
                       err("tensor 'w': data_offsets [0, 8] run past the data section (5 bytes)").c_str(), DataError);
  CHECK_THROWS_WITH_AS(decode_safetensors(st_file(R"({"w": {"dtype")", ""), f),
                       doctest::Contains(err("header is not valid JSON (error at byte ").c_str()), DataError);
  CHECK_THROWS_WITH_AS(decode_safetensors(st_file("[1, 2]", ""), f), err("header is not a JSON object").c_str(),
                       DataError);
  CHECK_THROWS_WITH_AS(
      decode_safetensors(st_file(one(R"({"dtype":"F16","shape":[4],"data_offsets":[0,8]})"), d8), f),
      err("tensor 'w': unsupported dtype 'F16' (expects F32 or I32)").c_str(), DataError);
  CHECK_THROWS_WITH_AS(decode_safetensors(st_file(one(R"({"shape":[2],"data_offsets":[0,8]})"), d8), f),
                       err("tensor 'w': missing or non-string 'dtype'").c_str(), DataError);
  CHECK_THROWS_WITH_AS(
      decode_safetensors(st_file(one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), d8), f),
      err("tensor 'w': shape [-2] holds a non-integer or negative dim").c_str(), DataError);
  CHECK_THROWS_WITH_AS(
      decode_safetensors(st_file(one(R"({"dtype":"F32","shape":[1,1,1,1,2],"data_offsets":[0,8]})"), d8), f),
      err("tensor 'w': 5 dims, at most 4 supported").c_str(), DataError);
  CHECK_THROWS_WITH_AS(decode_safetensors(st_file(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), d8), f),
                       err("tensor 'w': 'data_offsets' must be two non-negative integers").c_str(), DataError);
  CHECK_THROWS_WITH_AS(
      decode_safetensors(st_file(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), d8), f),
      err("tensor 'w': data_offsets [0, 16] run past the data section (8 bytes)").c_str(), DataError);
  CHECK_THROWS_WITH_AS(
      decode_safetensors(st_file(one(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), d8), f),
      err("tensor 'w': data_offsets [8, 0] are reversed").c_str(), DataError);
  CHECK_THROWS_WITH_AS(
      decode_safetensors(st_file(one(R"({"dtype":"I32","shape":[3],"data_offsets":[0,8]})"), d8), f),
      err("tensor 'w': shape [3] I32 needs 12 bytes, data_offsets [0, 8] hold 8").c_str(), DataError);
  CHECK_THROWS_WITH_AS(decode_safetensors(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                                  d12),
                                          f),
                       err("tensors 'a' [0, 8) and 'b' [4, 12) overlap").c_str(), DataError);
  CHECK_THROWS_WITH_AS(decode_safetensors(st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                                  d12),
                                          f),
                       err("data bytes [4, 8) belong to no tensor").c_str(), DataError);
  CHECK_THROWS_WITH_AS(
      decode_safetensors(st_file(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})"), d8), f),
      err("data bytes [4, 8) belong to no tensor").c_str(), DataError);
  CHECK_THROWS_WITH_AS(decode_safetensors(st_file(R"({"__metadata__":{"epoch":3}})", ""), f),
                       err("__metadata__ value of 'epoch' is not a string").c_str(), DataError);

  // The same errors come out of load_safetensors with the real path.
  TempDir dir;
  const std::string p = dir / "bad.safetensors";
  write_file_atomic(p, st_file(one(R"({"dtype":"BF16","shape":[4],"data_offsets":[0,8]})"), d8));
  CHECK_THROWS_WITH_AS(load_safetensors(p),
                       ("safetensors: " + p + ": tensor 'w': unsupported dtype 'BF16' (expects F32 or I32)").c_str(),
                       DataError);
  write_file_atomic(p, std::string("\x05\x00", 2));
  CHECK_THROWS_WITH_AS(read_safetensors_metadata(p),
                       ("safetensors: " + p + ": file is 2 bytes, shorter than the 8-byte header length").c_str(),
                       DataError);
}

TEST_CASE("checkpoint round trip restores parameters, buffers and metadata") {
  TempDir dir;
  const std::string p = dir / "tower.safetensors";
  Rng rng(8);
  Tower a(16, 64, rng);
  a.seen.i32()[1] = 99;
  json meta = {{"model", "dssm"}, {"config", {{"dims", {64, 4}}, {"temperature", 0.05}}}, {"item_map", {{"1", "Toy Story"}}}};
  save_checkpoint(p, a, meta);

  Rng other(9);
  Tower b(16, 64, other);
  CHECK_FALSE(same_bits(a.user_mlp.w0.value(), b.user_mlp.w0.value()));
  json got = load_checkpoint(p, b);
  CHECK(got == meta);
  CHECK(read_checkpoint_metadata(p) == meta);
  auto sa = module_state(a), sb = module_state(b);
  REQUIRE(sa.size() == 6);
  for (std::size_t i = 0; i < sa.size(); ++i) {
    CHECK(sa[i].first == sb[i].first);
    CHECK(same_bits(*sa[i].second, *sb[i].second));
  }
  CHECK(sa[0].first == "temperature");
  CHECK(sa[1].first == "user_mlp.0.weight");
  CHECK(sa[5].first == "seen");
  // Python's safetensors sees a plain string map under __metadata__.
  CHECK(load_safetensors(p).metadata.at("rechub") == meta.dump());
  CHECK(dir.entries() == 1);
}

TEST_CASE("checkpoint loading is strict and all-or-nothing") {
  TempDir dir;
  const std::string p = dir / "x.safetensors";
  Rng rng(10);
  Tower saved(32, 64, rng);
  save_checkpoint(p, saved);

  Tower narrow(16, 64, rng);
  const Tensor before = narrow.user_mlp.b0.value().clone();
  CHECK_THROWS_WITH_AS(load_checkpoint(p, narrow),
                       ("checkpoint: user_mlp.0.weight has shape [64, 32] in file " + p + ", model expects [64, 16]").c_str(),
                       DataError);
  // Nothing was copied, not even the tensors that matched.
  CHECK(same_bits(narrow.user_mlp.b0.value(), before));

  TowerWithExtra more(32, 64, rng);
  CHECK_THROWS_WITH_AS(load_checkpoint(p, more),
                       ("checkpoint: bias [2] is missing from file " + p + " (model expects it)").c_str(), DataError);
  BareMlp fewer(32, 64, rng);
  CHECK_THROWS_WITH_AS(load_checkpoint(p, fewer),
                       ("checkpoint: file " + p + " holds 2 tensors the model does not have: seen, temperature").c_str(),
                       DataError);
  CHECK(read_checkpoint_metadata(p) == json::object());

  // A buffer saved as int32 cannot land in a float tensor.
  Tensor f = Tensor::zeros({3});
  CHECK_THROWS_WITH_AS(load_named_tensors(p, {{"seen", &f}}, "optimizer"),
                       ("checkpoint: seen has dtype int32 in file " + p + ", optimizer expects float32").c_str(),
                       DataError);
}

TEST_CASE("optimizer state saves and loads as named tensors") {
  TempDir dir;
  const std::string p = dir / "adam.safetensors";
  Rng rng(12);
  Tensor m0 = testing::random_tensor({4, 3}, rng), v0 = testing::random_tensor({4, 3}, rng);
  std::int32_t step_v[] = {1234};
  Tensor step = Tensor::from_vector({1}, step_v);
  save_named_tensors(p, {{"exp_avg.0", m0}, {"exp_avg_sq.0", v0}, {"step", step}}, {{"lr", 0.001}, {"betas", {0.9, 0.999}}});
  Tensor m1 = Tensor::zeros({4, 3}), v1 = Tensor::zeros({4, 3}), s1 = Tensor::zeros({1}, DType::i32);
  json meta = load_named_tensors(p, {{"exp_avg.0", &m1}, {"exp_avg_sq.0", &v1}, {"step", &s1}}, "optimizer");
  CHECK(meta["lr"] == 0.001);
  CHECK(same_bits(m0, m1));
  CHECK(same_bits(v0, v1));
  CHECK(s1.i32()[0] == 1234);
  Tensor wrong = Tensor::zeros({3, 4});
  CHECK_THROWS_WITH_AS(load_named_tensors(p, {{"exp_avg.0", &wrong}, {"exp_avg_sq.0", &v1}, {"step", &s1}}, "optimizer"),
                       ("checkpoint: exp_avg.0 has shape [4, 3] in file " + p + ", optimizer expects [3, 4]").c_str(),
                       DataError);
}
