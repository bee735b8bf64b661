#pragma once
// Named float32/int32 tensors in the safetensors layout, readable by Python's
// safetensors.torch.load_file and by Hugging Face tooling:
//   u64 N (little endian) | N bytes of JSON header | data section
//   header = { "<name>": {"dtype": "F32" | "I32", "shape": [d0, ...], "data_offsets": [begin, end]},
//              ...,  "__metadata__": {"<key>": "<string>", ...} }
// Offsets are relative to the data section, tensors are row-major little endian. We write tensors
// in name order, back to back, and pad the header with spaces to a multiple of 8 bytes (so data is
// aligned), as the reference writer does.
//
// Reading trusts nothing: every inconsistency is a DataError naming the file (and the tensor):
// short file, header length past the end, bad JSON, unknown dtype, bad shape, offsets out of range,
// reversed, overlapping, not matching the shape, or leaving bytes of the data section unclaimed
// (the reference reader rejects such files too).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/tensor.hpp"
#include "rechub/io/atomic_file.hpp"

namespace rechub {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

/// Tensors by name plus the string metadata map.
struct SafeTensors {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

namespace detail {

/// Header size limit of the reference implementation (100 MB): larger is a corrupt length field.
constexpr std::uint64_t kSafetensorsMaxHeader = 100u << 20;

inline const char* safetensors_dtype(DType t) { return t == DType::f32 ? "F32" : "I32"; }

/// The JSON header (space-padded to a multiple of 8) for tensors laid out in map order.
inline std::string safetensors_header(const std::map<std::string, Tensor>& tensors,
                                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json h = nlohmann::json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    nlohmann::json shape = nlohmann::json::array();
    for (int i = 0; i < t.ndim(); ++i) shape.push_back(t.dim(i));
    h[name] = {{"dtype", safetensors_dtype(t.dtype())}, {"shape", shape}, {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  std::string s = h.dump();
  s.append((8 - s.size() % 8) % 8, ' ');
  return s;
}

inline std::map<std::string, Tensor> safetensors_check_inputs(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                                              const std::map<std::string, std::string>& metadata,
                                                              const std::string& path) {
  std::map<std::string, Tensor> sorted;
  for (const auto& [name, t] : tensors) {
    RECHUB_CHECK_AS(ConfigError, !name.empty() && name != "__metadata__", "save_safetensors: ", path,
                    ": invalid tensor name '", name, "'");
    RECHUB_CHECK_AS(ConfigError, t.defined() && t.device() == Device::cpu, "save_safetensors: ", path, ": tensor '",
                    name, "' must be a defined cpu tensor");
    RECHUB_CHECK_AS(ConfigError, sorted.emplace(name, t).second, "save_safetensors: ", path, ": tensor name '", name,
                    "' appears twice");
  }
  (void)metadata;
  return sorted;
}

}  // namespace detail

/// The file's bytes for these tensors and metadata (see save_safetensors for the atomic write).
inline std::string encode_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                      const std::map<std::string, std::string>& metadata = {}) {
  const auto sorted = detail::safetensors_check_inputs(tensors, metadata, "<memory>");
  const std::string header = detail::safetensors_header(sorted, metadata);
  std::string out;
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += header;
  for (const auto& kv : sorted) out.append(static_cast<const char*>(kv.second.raw()), kv.second.nbytes());
  return out;
}

/// Writes tensors (+ string metadata) to `path` atomically, streaming tensor data (no full copy).
inline void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  const auto sorted = detail::safetensors_check_inputs(tensors, metadata, path);
  const std::string header = detail::safetensors_header(sorted, metadata);
  write_file_atomic_with(path, [&](AtomicFile& f) {
    char len[8];
    const std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    f.write(len, 8);
    f.write(header);
    for (const auto& kv : sorted) f.write(kv.second.raw(), kv.second.nbytes());
  });
}

/// Parses and validates a safetensors image; `name` (the file path) is used in error messages.
inline SafeTensors decode_safetensors(const std::string& bytes, const std::string& name) {
  auto fail = [&](const auto&... what) { detail::throw_error<DataError>("safetensors: ", name, ": ", what...); };
  if (bytes.size() < 8) fail("file is ", bytes.size(), " bytes, shorter than the 8-byte header length");
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (n > bytes.size() - 8) fail("header length ", n, " runs past the end of the file (", bytes.size(), " bytes)");
  if (n > detail::kSafetensorsMaxHeader) fail("header length ", n, " exceeds the 100 MB limit");
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const nlohmann::json::parse_error& e) {
    fail("header is not valid JSON (error at byte ", e.byte, " of the header)");
  }
  if (!h.is_object()) fail("header is not a JSON object");

  SafeTensors out;
  const std::uint64_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;
  struct Span {
    std::uint64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("__metadata__ value of '", m.key(), "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const auto&... what) { fail("tensor '", key, "': ", what...); };
    if (!v.is_object()) bad("entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) bad("missing or non-string 'dtype'");
    const std::string dt = v["dtype"].get<std::string>();
    DType dtype;
    if (dt == "F32") dtype = DType::f32;
    else if (dt == "I32") dtype = DType::i32;
    else bad("unsupported dtype '", dt, "' (expects F32 or I32)");
    if (!v.contains("shape") || !v["shape"].is_array()) bad("missing or non-array 'shape'");
    const auto& sh = v["shape"];
    if (sh.size() > static_cast<std::size_t>(Shape::kMaxDims)) bad(sh.size(), " dims, at most 4 supported");
    Shape shape;
    std::uint64_t numel = 1;
    for (const auto& d : sh) {
      if (!d.is_number_unsigned()) bad("shape ", sh.dump(), " holds a non-integer or negative dim");
      const std::uint64_t dv = d.get<std::uint64_t>();
      if (dv > (std::uint64_t(1) << 40)) bad("shape ", sh.dump(), " is implausibly large");
      numel *= dv;
      if (numel > (std::uint64_t(1) << 40)) bad("shape ", sh.dump(), " is implausibly large");
      shape.push(static_cast<std::int64_t>(dv));
    }
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2 ||
        !v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned())
      bad("'data_offsets' must be two non-negative integers");
    const std::uint64_t b = v["data_offsets"][0].get<std::uint64_t>(), e = v["data_offsets"][1].get<std::uint64_t>();
    if (b > e) bad("data_offsets [", b, ", ", e, "] are reversed");
    if (e > data_size) bad("data_offsets [", b, ", ", e, "] run past the data section (", data_size, " bytes)");
    if (e - b != numel * 4)
      bad("shape ", shape.str(), " ", dt, " needs ", numel * 4, " bytes, data_offsets [", b, ", ", e, "] hold ", e - b);
    Tensor t = Tensor::empty(shape, dtype);
    if (e > b) std::memcpy(t.raw(), data + b, e - b);
    out.tensors.emplace(key, std::move(t));
    spans.push_back({b, e, key});
  }
  // The tensors must tile the data section exactly: no overlap, no unclaimed bytes.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  std::uint64_t covered = 0;
  for (std::size_t i = 0; i < spans.size(); ++i) {
    if (i > 0 && spans[i].begin < spans[i - 1].end)
      fail("tensors '", spans[i - 1].name, "' [", spans[i - 1].begin, ", ", spans[i - 1].end, ") and '", spans[i].name,
           "' [", spans[i].begin, ", ", spans[i].end, ") overlap");
    if (spans[i].begin > covered)
      fail("data bytes [", covered, ", ", spans[i].begin, ") belong to no tensor");
    covered = std::max(covered, spans[i].end);
  }
  if (covered != data_size) fail("data bytes [", covered, ", ", data_size, ") belong to no tensor");
  return out;
}

/// Reads and validates a safetensors file.
inline SafeTensors load_safetensors(const std::string& path) { return decode_safetensors(read_file(path), path); }

/// Only the string metadata, reading just the header (to learn a model's config before building it).
inline std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  std::string head;
  {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) {
      const int err = errno;
      detail::throw_error("read_safetensors_metadata: cannot open ", path, ": ", detail::errno_text(err));
    }
    struct stat st;
    std::uint64_t n = 0;
    char len[8];
    const bool ok = ::fstat(fd, &st) == 0 && ::pread(fd, len, 8, 0) == 8;
    if (ok) {
      for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(static_cast<unsigned char>(len[i])) << (8 * i);
    }
    if (ok && n <= static_cast<std::uint64_t>(st.st_size) - 8 && n <= detail::kSafetensorsMaxHeader) {
      head.assign(len, 8);
      head.resize(8 + n);
      if (::pread(fd, &head[8], n, 8) != static_cast<::ssize_t>(n)) head.clear();
    }
    ::close(fd);
  }
  // Malformed files take the full path, which reports exactly what is wrong.
  if (head.empty()) return load_safetensors(path).metadata;
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(head.begin() + 8, head.end());
  } catch (const nlohmann::json::parse_error&) {
    return load_safetensors(path).metadata;
  }
  std::map<std::string, std::string> meta;
  if (!h.is_object()) return load_safetensors(path).metadata;
  if (h.contains("__metadata__")) {
    const auto& m = h["__metadata__"];
    if (!m.is_object()) return load_safetensors(path).metadata;
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (!it.value().is_string()) return load_safetensors(path).metadata;
      meta[it.key()] = it.value().get<std::string>();
    }
  }
  return meta;
}

}  // namespace rechub
