#pragma once
// NPY files (numpy's .npy) for tensors, and a Dataset as a directory of .npy columns.
//
// Why: the benchmark hands the exact samples rechub trains on to Torch-RecHub (and back), and numpy
// reads .npy with no extra dependency (benchmarks/torch_rechub/README.md defines the sample directory).
//
// The file (format 1.0, as numpy.save writes it):
//   "\x93NUMPY" 0x01 0x00 <uint16 LE header length> <header> <raw C-order data>
//   header = "{'descr': '<f4', 'fortran_order': False, 'shape': (N, L), }" padded with spaces and a
//   final '\n' so the data starts at a multiple of 64 bytes. We write exactly numpy's bytes (numpy
//   >= 1.24 also pads room for the first dim to grow to 21 digits); we read format 1.0, 2.0 and 3.0
//   (4-byte header length) with any padding.
// dtypes: '<f4' <-> float32, '<i4' <-> int32; '<i8' (numpy's default int) is also read and narrowed to
// int32, failing on values outside int32. Everything else, big-endian data and fortran_order=True are
// DataErrors naming the file. The data size must match the shape exactly (a truncated file is an error).
//
// A dataset directory: DIR/<column>.npy for every column plus DIR/columns.json, a JSON array of the
// column names in order. Writes are atomic per file (temp file + rename, io/atomic_file.hpp).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rechub/core/error.hpp"
#include "rechub/core/tensor.hpp"
#include "rechub/data/dataset.hpp"
#include "rechub/io/atomic_file.hpp"

namespace rechub {

namespace detail {

inline bool host_is_little_endian() {
  const std::uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

/// numpy's exact header for a C-order array of `descr` with `shape` (format 1.0, 64-byte aligned).
inline std::string npy_header(const char* descr, const Shape& shape) {
  std::string dims = "(";
  for (int i = 0; i < shape.ndim(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.ndim() == 1) dims += ",";
  dims += ")";
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + dims + ", }";
  // numpy leaves room for the growth axis (dim 0 for C order) to reach 21 digits without a rewrite.
  if (shape.ndim() > 0) dict.append(21 - std::to_string(shape[0]).size(), ' ');
  const std::size_t prefix = 10;  // magic (6) + version (2) + uint16 length (2)
  const std::size_t hlen = dict.size() + 1;
  const std::size_t pad = 64 - (prefix + hlen) % 64;  // numpy pads 1..64, never 0
  dict.append(pad, ' ');
  dict += '\n';
  RECHUB_CHECK(dict.size() <= 65535, "write_npy: header of ", dict.size(), " bytes does not fit format 1.0");
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>((dict.size() >> 8) & 0xff);
  return out + dict;
}

/// Parsed header fields.
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
};

/// Parses numpy's header dict literal (keys in any order, single or double quotes, any spacing).
inline NpyHeader parse_npy_header(const std::string& h, const std::string& path) {
  auto fail = [&](const std::string& why) {
    const std::size_t end = h.find_last_not_of(" \n");
    throw_error<DataError>("read_npy: '", path, "': malformed header (", why, "): ",
                           end == std::string::npos ? std::string() : h.substr(0, end + 1));
  };
  auto find_key = [&](const char* key) -> std::size_t {
    for (const char q : {'\'', '"'}) {
      const std::string k = std::string(1, q) + key + q;
      const std::size_t p = h.find(k);
      if (p == std::string::npos) continue;
      std::size_t c = h.find_first_not_of(" \t", p + k.size());
      if (c == std::string::npos || h[c] != ':') fail(std::string("no ':' after ") + key);
      c = h.find_first_not_of(" \t", c + 1);
      if (c == std::string::npos) fail(std::string("no value for ") + key);
      return c;
    }
    fail(std::string("no '") + key + "' key");
    return 0;
  };
  NpyHeader out;
  if (h.empty() || h[0] != '{') fail("not a dict");
  std::size_t p = find_key("descr");
  const char q = h[p];
  if (q != '\'' && q != '"') fail("descr is not a string");
  const std::size_t e = h.find(q, p + 1);
  if (e == std::string::npos) fail("unterminated descr");
  out.descr = h.substr(p + 1, e - p - 1);

  p = find_key("fortran_order");
  if (h.compare(p, 4, "True") == 0) out.fortran_order = true;
  else if (h.compare(p, 5, "False") == 0) out.fortran_order = false;
  else fail("fortran_order is neither True nor False");

  p = find_key("shape");
  if (h[p] != '(') fail("shape is not a tuple");
  const std::size_t close = h.find(')', p);
  if (close == std::string::npos) fail("unterminated shape");
  std::size_t i = p + 1;
  while (i < close) {
    while (i < close && (h[i] == ' ' || h[i] == ',')) ++i;
    if (i >= close) break;
    if (h[i] < '0' || h[i] > '9') fail("shape entry is not a non-negative integer");
    std::int64_t v = 0;
    while (i < close && h[i] >= '0' && h[i] <= '9') {
      if (v > (std::numeric_limits<std::int64_t>::max() - 9) / 10) fail("shape entry too large");
      v = v * 10 + (h[i++] - '0');
    }
    if (i < close && h[i] == 'L') ++i;  // Python 2 long suffix
    if (i < close && h[i] != ',' && h[i] != ' ') fail("shape entry is not a non-negative integer");
    out.shape.push_back(v);
  }
  return out;
}

inline void check_column_name(const std::string& fn, const std::string& name) {
  const bool bad = name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
                   name.find('\0') != std::string::npos;
  RECHUB_CHECK_AS(ConfigError, !bad, fn, ": column name '", name, "' cannot be a file name");
}

}  // namespace detail

/// Writes `t` (CPU, float32 or int32) as a .npy file, byte-identical to numpy.save; atomic.
inline void write_npy(const std::string& path, const Tensor& t) {
  RECHUB_CHECK_SHAPE(t.device() == Device::cpu, "write_npy: '", path, "': tensor ", t.shape().str(),
                     " is on ", device_name(t.device()), "; copy it to the CPU first");
  RECHUB_CHECK(detail::host_is_little_endian(), "write_npy: big-endian hosts are not supported");
  const std::string header = detail::npy_header(t.dtype() == DType::f32 ? "<f4" : "<i4", t.shape());
  write_file_atomic_with(path, [&](AtomicFile& f) {
    f.write(header);
    if (t.nbytes()) f.write(t.raw(), t.nbytes());
  });
}

/// Reads a .npy file into an owned CPU tensor (float32 / int32; int64 narrowed), validating everything.
inline Tensor read_npy(const std::string& path) {
  RECHUB_CHECK(detail::host_is_little_endian(), "read_npy: big-endian hosts are not supported");
  std::ifstream in(path, std::ios::binary);
  RECHUB_CHECK_AS(DataError, in.good(), "read_npy: cannot open '", path, "'");
  in.seekg(0, std::ios::end);
  const std::uint64_t file_size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0, std::ios::beg);

  unsigned char pre[12] = {};  // magic (6) + version (2) + header length (2 in v1, 4 in v2/v3)
  in.read(reinterpret_cast<char*>(pre), 8);
  RECHUB_CHECK_AS(DataError, in.gcount() == 8 && std::memcmp(pre, "\x93NUMPY", 6) == 0, "read_npy: '", path,
                  "' is not a .npy file (bad magic)");
  const int major = pre[6], minor = pre[7];
  RECHUB_CHECK_AS(DataError, (major >= 1 && major <= 3) && minor == 0, "read_npy: '", path,
                  "': unsupported format version ", major, ".", minor);
  const int len_bytes = major == 1 ? 2 : 4;
  in.read(reinterpret_cast<char*>(pre + 8), len_bytes);
  RECHUB_CHECK_AS(DataError, in.gcount() == len_bytes, "read_npy: '", path, "': truncated header");
  std::uint64_t hlen = 0;
  for (int i = len_bytes - 1; i >= 0; --i) hlen = (hlen << 8) | pre[8 + i];
  const std::uint64_t data_offset = 8 + static_cast<std::uint64_t>(len_bytes) + hlen;
  RECHUB_CHECK_AS(DataError, data_offset <= file_size, "read_npy: '", path, "': truncated header (declares ",
                  hlen, " bytes, file has ", file_size, ")");
  std::string header(static_cast<std::size_t>(hlen), '\0');
  in.read(&header[0], static_cast<std::streamsize>(hlen));
  RECHUB_CHECK_AS(DataError, static_cast<std::uint64_t>(in.gcount()) == hlen, "read_npy: '", path,
                  "': truncated header");

  const detail::NpyHeader h = detail::parse_npy_header(header, path);
  RECHUB_CHECK_AS(DataError, !h.fortran_order, "read_npy: '", path,
                  "': fortran_order=True is not supported (save a C-order array)");
  const bool i64 = h.descr == "<i8";
  RECHUB_CHECK_AS(DataError, h.descr == "<f4" || h.descr == "<i4" || i64, "read_npy: '", path, "': dtype '",
                  h.descr, "' is not supported (need '<f4', '<i4' or '<i8')");
  RECHUB_CHECK_AS(DataError, h.shape.size() <= static_cast<std::size_t>(Shape::kMaxDims), "read_npy: '", path,
                  "': ", h.shape.size(), " dims, at most ", Shape::kMaxDims, " supported");
  Shape shape;
  std::uint64_t numel = 1;
  for (auto d : h.shape) {
    shape.push(d);
    RECHUB_CHECK_AS(DataError, d == 0 || numel <= std::numeric_limits<std::uint64_t>::max() / 8 / d, "read_npy: '",
                    path, "': shape ", shape.str(), " is too large");
    numel *= static_cast<std::uint64_t>(d);
  }
  const std::uint64_t item = i64 ? 8 : 4;
  const std::uint64_t need = numel * item, have = file_size - data_offset;
  RECHUB_CHECK_AS(DataError, have >= need, "read_npy: '", path, "': truncated: shape ", shape.str(), " ", h.descr,
                  " needs ", need, " data bytes, file has ", have);
  RECHUB_CHECK_AS(DataError, have == need, "read_npy: '", path, "': ", have - need,
                  " unexpected trailing bytes after shape ", shape.str(), " ", h.descr, " data");

  Tensor t = Tensor::empty(shape, h.descr == "<f4" ? DType::f32 : DType::i32);
  if (!i64) {
    if (need) in.read(static_cast<char*>(t.raw()), static_cast<std::streamsize>(need));
    RECHUB_CHECK_AS(DataError, static_cast<std::uint64_t>(in.gcount()) == need || need == 0, "read_npy: '", path,
                    "': read failed");
    return t;
  }
  std::vector<std::int64_t> buf(static_cast<std::size_t>(numel));
  if (need) in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(need));
  RECHUB_CHECK_AS(DataError, static_cast<std::uint64_t>(in.gcount()) == need || need == 0, "read_npy: '", path,
                  "': read failed");
  std::int32_t* out = t.i32();
  for (std::size_t i = 0; i < buf.size(); ++i) {
    RECHUB_CHECK_AS(DataError,
                    buf[i] >= std::numeric_limits<std::int32_t>::min() &&
                        buf[i] <= std::numeric_limits<std::int32_t>::max(),
                    "read_npy: '", path, "': int64 value ", buf[i], " at flat index ", i, " does not fit int32");
    out[i] = static_cast<std::int32_t>(buf[i]);
  }
  return t;
}

/// Writes every column as DIR/<name>.npy and the column order as DIR/columns.json (creates DIR).
inline void write_dataset_dir(const std::string& dir, const Dataset& ds) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  RECHUB_CHECK(!ec, "write_dataset_dir: cannot create '", dir, "': ", ec.message());
  nlohmann::json names = nlohmann::json::array();
  for (const auto& c : ds.columns()) {
    detail::check_column_name("write_dataset_dir", c.first);
    write_npy(dir + "/" + c.first + ".npy", c.second);
    names.push_back(c.first);
  }
  write_file_atomic(dir + "/columns.json", names.dump() + "\n");
}

/// Reads a directory written by write_dataset_dir (or by numpy: one .npy per column). Columns come in
/// columns.json order; without columns.json, every *.npy in name order.
inline Dataset read_dataset_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  RECHUB_CHECK_AS(DataError, fs::is_directory(dir), "read_dataset_dir: '", dir, "' is not a directory");
  std::vector<std::string> names;
  const std::string cj = dir + "/columns.json";
  if (fs::exists(cj)) {
    std::ifstream in(cj);
    nlohmann::json j;
    try {
      in >> j;
    } catch (const nlohmann::json::exception& e) {
      detail::throw_error<DataError>("read_dataset_dir: '", cj, "': not valid JSON: ", e.what());
    }
    RECHUB_CHECK_AS(DataError, j.is_array(), "read_dataset_dir: '", cj, "' must be a JSON array of column names");
    for (const auto& n : j) {
      RECHUB_CHECK_AS(DataError, n.is_string(), "read_dataset_dir: '", cj, "': entry ", n.dump(), " is not a string");
      names.push_back(n.get<std::string>());
    }
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".npy") names.push_back(e.path().stem().string());
    std::sort(names.begin(), names.end());
  }
  Dataset ds;
  std::string first;
  for (const auto& n : names) {
    detail::check_column_name("read_dataset_dir", n);
    const std::string path = dir + "/" + n + ".npy";
    RECHUB_CHECK_AS(DataError, fs::exists(path), "read_dataset_dir: '", cj, "' lists '", n, "' but '", path,
                    "' does not exist");
    RECHUB_CHECK_AS(DataError, !ds.has(n), "read_dataset_dir: '", cj, "' lists '", n, "' twice");
    Tensor t = read_npy(path);
    RECHUB_CHECK_AS(DataError, t.ndim() >= 1, "read_dataset_dir: '", path, "' is 0-d; a column needs a row dim");
    if (!first.empty())
      RECHUB_CHECK_AS(DataError, t.dim(0) == ds.rows(), "read_dataset_dir: '", path, "' has ", t.dim(0),
                      " rows, '", first, "' has ", ds.rows());
    else first = path;
    ds.set(n, std::move(t));
  }
  return ds;
}

}  // namespace rechub
