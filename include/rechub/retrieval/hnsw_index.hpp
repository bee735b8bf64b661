#pragma once
// HnswIndex: approximate top-k over item vectors with hnswlib's HNSW graph.
//   inner product: hnswlib's InnerProductSpace, distance = 1 - <q, x>, reported score = 1 - distance
//   cosine:        the same on vectors normalised to unit length (items on insert, queries per search)
// Shapes and result layout match ExactIndex: queries [Q, D] -> scores f32 [Q, k], labels [Q, k],
// best first, ties by the lower label, empty slots (label -1, score -inf) when fewer items qualify.
// Scores equal <q, x> up to float rounding of 1 - (1 - <q, x>).
//
// Knobs: M (graph degree), ef_construction (build beam), ef (search beam; a search of k uses
// max(ef, k)). M = 16 and ef_construction = 200 are hnswlib's own defaults. The default ef = 500
// keeps recall@100 >= 0.98 (0.99 measured; ef 400 gave 0.984-0.986, too thin a margin) against
// ExactIndex on 50,000 i.i.d. Gaussian 32-d vectors under inner product (tests/test_retrieval.cpp),
// the hard case: trained embeddings have a lower intrinsic dimension and reach that recall at a
// much smaller ef, so lower it (set_ef) when serving latency matters.
//
// Building inserts serially by default: with the same data, options and seed the graph is identical
// run to run. build_threads > 1 (or 0 = all OpenMP threads) inserts concurrently, faster but the
// graph then depends on thread timing. Searches are thread-safe; adding while searching is not.
//
// File format (one file, replaced atomically):
//   "RHHNSW01" | u32 version = 1 | u32 metric | u64 dim | u64 ef | u64 count | u64 next_label |
//   u64 payload bytes | payload = hnswlib's own saveIndex() bytes
// hnswlib only reads and writes whole files by path, so save goes through a temp file next to the
// target and load through a temp file in $TMPDIR.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/parallel.hpp"
#include "rechub/core/tensor.hpp"
#include "rechub/io/atomic_file.hpp"
#include "rechub/retrieval/exact_index.hpp"

// ---- hnswlib, private to each translation unit ------------------------------------------------
// Debian's hnswlib 0.6 header defines non-inline functions (cpuid, AVXCapable, ...) and mutable
// globals (InnerProductSIMD16Ext, ...) at namespace scope: two translation units that include it
// fail to link with "multiple definition". So we include it inside an unnamed namespace, after
// everything it includes (their include guards then keep the standard headers out of that
// namespace), and hold the graph behind a type-erased pointer so that no class with linkage has a
// field of a TU-local type. A consequence: include <hnswlib/hnswlib.h> yourself only before this
// header (it is then reused), or use rechub::detail::hnsw::hnswlib.
// Under AddressSanitizer hnswlib's SIMD path is switched off: its prefetching reads one entry past
// the end of a full neighbour list (harmless in practice, but ASan stops the program).
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <list>
#include <queue>
#include <random>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#include <x86intrin.h>
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(NO_MANUAL_VECTORIZATION)
#define NO_MANUAL_VECTORIZATION
#define RECHUB_UNDEF_NO_MANUAL_VECTORIZATION
#endif
#if defined(_XCR_XFEATURE_ENABLED_MASK)  // the includer already pulled hnswlib in at global scope
namespace rechub::detail::hnsw {
namespace hnswlib = ::hnswlib;
}
#else
namespace rechub::detail::hnsw {
namespace {
// hnswlib calls log() unqualified; without this, lookup from inside rechub:: would stop at
// rechub::log(const Var&) (ops/elementwise.hpp) before reaching the C library's.
using std::log;
#include <hnswlib/hnswlib.h>
}  // namespace
}  // namespace rechub::detail::hnsw
#endif
#ifdef RECHUB_UNDEF_NO_MANUAL_VECTORIZATION
#undef NO_MANUAL_VECTORIZATION
#undef RECHUB_UNDEF_NO_MANUAL_VECTORIZATION
#endif

namespace rechub::detail::hnsw {
namespace {
/// The space and the graph together: the graph keeps a pointer into the space.
struct Graph {
  hnswlib::InnerProductSpace space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> alg;
  explicit Graph(std::size_t dim) : space(dim) {}
};
void destroy_graph(void* g) { delete static_cast<Graph*>(g); }
}  // namespace
}  // namespace rechub::detail::hnsw

namespace rechub {

namespace detail {
/// Keeps the first exception thrown on any OpenMP thread (one must never escape a parallel region)
/// and rethrows it on the calling thread.
class FirstError {
 public:
  template <class Fn>
  void run(Fn&& fn) {
    try {
      fn();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!err_) err_ = std::current_exception();
    }
  }
  void rethrow() {
    if (err_) std::rethrow_exception(err_);
  }

 private:
  std::mutex mu_;
  std::exception_ptr err_;
};
}  // namespace detail

/// HNSW construction and search settings.
struct HnswOptions {
  Metric metric = Metric::inner_product;
  std::size_t M = 16;
  std::size_t ef_construction = 200;
  std::size_t ef = 500;
  std::size_t seed = 100;
  /// 1: serial, reproducible inserts; 0: all OpenMP threads; n: n threads (graph not reproducible).
  int build_threads = 1;
};

class HnswIndex {
 public:
  static constexpr char kMagic[9] = "RHHNSW01";
  static constexpr std::uint32_t kVersion = 1;

  HnswIndex() = default;

  /// An empty index for `dim`-dimensional vectors.
  explicit HnswIndex(std::int64_t dim, HnswOptions opt = {}) : opt_(opt), d_(dim) {
    RECHUB_CHECK_AS(ConfigError, dim >= 1, "HnswIndex: dim must be >= 1, got ", dim);
    RECHUB_CHECK_AS(ConfigError, opt.M >= 2, "HnswIndex: M must be >= 2, got ", opt.M);
    RECHUB_CHECK_AS(ConfigError, opt.ef >= 1, "HnswIndex: ef must be >= 1");
    auto* g = new detail::hnsw::Graph(static_cast<std::size_t>(d_));
    graph_.reset(g);
    g->alg = std::make_unique<detail::hnsw::hnswlib::HierarchicalNSW<float>>(&g->space, 16, opt_.M,
                                                                             opt_.ef_construction, opt_.seed);
    g->alg->setEf(opt_.ef);
  }

  /// Builds over items [N, D]; labels[i] names row i (default 0..N-1).
  explicit HnswIndex(const Tensor& items, HnswOptions opt = {}, const std::vector<std::int64_t>& labels = {})
      : HnswIndex(items.ndim() == 2 ? items.dim(1) : 1, opt) {
    add(items, labels);
  }

  /// Number of stored items (excluded ones included).
  std::int64_t size() const { return graph_ ? static_cast<std::int64_t>(alg().cur_element_count) : 0; }
  std::int64_t dim() const { return d_; }
  Metric metric() const { return opt_.metric; }
  const HnswOptions& options() const { return opt_; }
  /// The label the next add() without labels starts from (one past the largest label so far).
  std::int64_t next_label() const { return next_label_; }

  void set_ef(std::size_t ef) {
    RECHUB_CHECK_AS(ConfigError, ef >= 1, "HnswIndex::set_ef: ef must be >= 1");
    opt_.ef = ef;
    alg().setEf(ef);
  }

  /// Inserts items [N, D] under labels (default next_label() .. +N-1), growing the index as needed.
  void add(const Tensor& items, const std::vector<std::int64_t>& labels = {}) {
    check_ready("HnswIndex::add");
    RECHUB_CHECK_SHAPE(items.ndim() == 2 && items.dtype() == DType::f32 && items.device() == Device::cpu,
                       "HnswIndex::add: items must be a float32 [N, D] cpu tensor, got ", items.shape().str(), " ",
                       dtype_name(items.dtype()));
    RECHUB_CHECK_SHAPE(items.dim(1) == d_, "HnswIndex::add: items ", items.shape().str(), " do not match index dim ",
                       d_);
    const std::int64_t n = items.dim(0);
    std::vector<std::int64_t> lab = labels;
    if (lab.empty()) {
      lab.resize(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) lab[i] = next_label_ + i;
    }
    RECHUB_CHECK_SHAPE(static_cast<std::int64_t>(lab.size()) == n, "HnswIndex::add: ", lab.size(), " labels for ", n,
                       " items");
    {
      std::vector<std::int64_t> sorted = lab;
      std::sort(sorted.begin(), sorted.end());
      for (std::size_t i = 0; i < sorted.size(); ++i) {
        RECHUB_CHECK_AS(ConfigError, sorted[i] >= 0, "HnswIndex::add: label ", sorted[i],
                        " is negative (-1 marks empty slots)");
        RECHUB_CHECK_AS(ConfigError, i == 0 || sorted[i] != sorted[i - 1], "HnswIndex::add: label ", sorted[i],
                        " appears twice");
        RECHUB_CHECK_AS(ConfigError, alg().label_lookup_.count(static_cast<std::size_t>(sorted[i])) == 0,
                        "HnswIndex::add: label ", sorted[i], " is already in the index");
      }
    }
    auto& a = alg();
    const std::size_t need = a.cur_element_count + static_cast<std::size_t>(n);
    if (need > a.max_elements_) a.resizeIndex(std::max(need, 2 * a.max_elements_));

    const float* x = items.f32();
    auto insert = [&](std::int64_t i, float* buf) {
      const float* v = x + i * d_;
      if (opt_.metric == Metric::cosine) {
        detail::normalize_row(v, buf, d_);
        v = buf;
      }
      alg().addPoint(v, static_cast<std::size_t>(lab[i]));  // not `a`: no lambda may capture a TU-local type
    };
    int threads = opt_.build_threads == 0 ? num_threads() : opt_.build_threads;
    if (threads <= 1 || n < 2 * threads) {
      std::vector<float> buf(static_cast<std::size_t>(d_));
      for (std::int64_t i = 0; i < n; ++i) insert(i, buf.data());
    } else {
      std::int64_t start = 0;
      if (a.cur_element_count == 0) {  // the first insert sets the entry point: do it alone
        std::vector<float> buf(static_cast<std::size_t>(d_));
        insert(0, buf.data());
        start = 1;
      }
      detail::FirstError err;
#pragma omp parallel num_threads(threads)
      {
        std::vector<float> buf(static_cast<std::size_t>(d_));
#pragma omp for schedule(dynamic, 64)
        for (std::int64_t i = start; i < n; ++i) err.run([&] { insert(i, buf.data()); });
      }
      err.rethrow();
    }
    for (auto l : lab) next_label_ = std::max(next_label_, l + 1);
  }

  /// Never return `label` again (hnswlib marks it deleted; it still routes searches).
  void exclude(std::int64_t label) {
    check_ready("HnswIndex::exclude");
    auto& a = alg();
    auto it = a.label_lookup_.find(static_cast<std::size_t>(label));
    RECHUB_CHECK_AS(ConfigError, label >= 0 && it != a.label_lookup_.end(), "HnswIndex::exclude: label ", label,
                    " is not in the index");
    if (!a.isMarkedDeleted(it->second)) a.markDelete(static_cast<std::size_t>(label));
  }
  std::int64_t num_excluded() const { return graph_ ? static_cast<std::int64_t>(alg().num_deleted_) : 0; }

  /// Top-k for each row of queries [Q, D]; `exclude` has one list per query (or is null).
  SearchResult search(const Tensor& queries, std::int64_t k, const ExcludeLists* exclude = nullptr) const {
    check_ready("HnswIndex::search");
    RECHUB_CHECK_SHAPE(queries.ndim() == 2 && queries.dtype() == DType::f32 && queries.device() == Device::cpu,
                       "HnswIndex::search: queries must be a float32 [Q, D] cpu tensor, got ", queries.shape().str(), " ",
                       dtype_name(queries.dtype()));
    RECHUB_CHECK_SHAPE(queries.dim(1) == d_, "HnswIndex::search: queries ", queries.shape().str(),
                       " do not match index dim ", d_);
    RECHUB_CHECK_AS(ConfigError, k >= 1, "HnswIndex::search: k must be >= 1, got ", k);
    const std::int64_t q = queries.dim(0);
    SearchResult r{Tensor::empty({q, k}), Tensor::empty({q, k}, DType::i32)};
    search_into(queries.f32(), q, k, r.scores.f32(), r.ids.i32(), exclude);
    return r;
  }

  /// Raw batched search (threads over queries); query q uses exclusion list q / queries_per_list.
  template <class Label>
  void search_into(const float* queries, std::int64_t nq, std::int64_t k, float* scores, Label* labels,
                   const ExcludeLists* exclude = nullptr, std::int64_t queries_per_list = 1) const {
    check_ready("HnswIndex::search");
    RECHUB_CHECK_AS(ConfigError, k >= 1, "HnswIndex::search: k must be >= 1, got ", k);
    RECHUB_CHECK_AS(ConfigError, queries_per_list >= 1, "HnswIndex::search: queries_per_list must be >= 1");
    detail::check_label_type<Label>(next_label_ - 1 <= std::numeric_limits<std::int32_t>::max(), next_label_ - 1,
                                    "HnswIndex::search");
    if (exclude)
      RECHUB_CHECK_SHAPE(exclude->num_lists() * queries_per_list == nq, "HnswIndex::search: ", exclude->num_lists(),
                         " exclusion lists for ", nq, " queries (", queries_per_list, " per list)");
    // A graph search costs roughly ef * M distance evaluations of d flops.
    const std::int64_t cost = static_cast<std::int64_t>(std::max<std::size_t>(opt_.ef, k) * opt_.M) * d_;
    detail::FirstError err;
    parallel_for(nq, cost, [&](std::int64_t qb, std::int64_t qe) {
      err.run([&] {
        std::vector<float> buf(static_cast<std::size_t>(d_));
        for (std::int64_t i = qb; i < qe; ++i) {
          const std::int64_t* ex = nullptr;
          std::int64_t nex = 0;
          if (exclude) {
            ex = exclude->list(i / queries_per_list);
            nex = exclude->list_size(i / queries_per_list);
          }
          one(queries + i * d_, k, scores + i * k, labels + i * k, buf.data(), ex, nex);
        }
      });
    });
    err.rethrow();
  }

  /// One query on the calling thread.
  template <class Label>
  void search_one(const float* query, std::int64_t k, float* scores, Label* labels, const std::int64_t* exclude = nullptr,
                  std::int64_t n_exclude = 0) const {
    check_ready("HnswIndex::search_one");
    RECHUB_CHECK_AS(ConfigError, k >= 1, "HnswIndex::search_one: k must be >= 1, got ", k);
    detail::check_label_type<Label>(next_label_ - 1 <= std::numeric_limits<std::int32_t>::max(), next_label_ - 1,
                                    "HnswIndex::search_one");
    std::vector<float> buf(opt_.metric == Metric::cosine ? static_cast<std::size_t>(d_) : 0);
    one(query, k, scores, labels, buf.data(), exclude, n_exclude);
  }

  /// Writes the index to `path` atomically (temp file in the same directory, fsync, rename).
  void save(const std::string& path) const {
    check_ready("HnswIndex::save");
    // hnswlib writes only to a path: let it write a temp file beside the target, then copy it
    // behind our header into the atomic file.
    AtomicFile out(path);
    const std::string payload_path = out.temp_path() + ".hnswlib";
    struct Unlink {
      std::string p;
      ~Unlink() { std::remove(p.c_str()); }
    } cleanup{payload_path};
    alg().saveIndex(payload_path);
    const std::string payload = read_file(payload_path);
    RECHUB_CHECK(payload.size() == expected_payload_bytes(), "HnswIndex::save: ", path, ": hnswlib wrote ",
                 payload.size(), " bytes, expected ", expected_payload_bytes(), " (disk full?)");
    std::string header(kMagic, 8);
    put<std::uint32_t>(header, kVersion);
    put<std::uint32_t>(header, static_cast<std::uint32_t>(opt_.metric));
    put<std::uint64_t>(header, static_cast<std::uint64_t>(d_));
    put<std::uint64_t>(header, opt_.ef);
    put<std::uint64_t>(header, static_cast<std::uint64_t>(size()));
    put<std::uint64_t>(header, static_cast<std::uint64_t>(next_label_));
    put<std::uint64_t>(header, payload.size());
    out.write(header);
    out.write(payload);
    out.commit();
  }

  /// Reads an index saved by save(); every error names the file.
  static HnswIndex load(const std::string& path) {
    const std::string bytes = read_file(path);
    constexpr std::size_t kHeader = 8 + 4 + 4 + 8 * 5;
    auto bad = [&](const auto&... what) { detail::throw_error<DataError>("HnswIndex::load: ", path, ": ", what...); };
    if (bytes.size() < kHeader) bad("file is ", bytes.size(), " bytes, shorter than the ", kHeader, "-byte header");
    if (std::memcmp(bytes.data(), kMagic, 8) != 0) bad("not an HnswIndex file (bad magic)");
    std::size_t pos = 8;
    const auto version = get<std::uint32_t>(bytes, pos);
    const auto metric = get<std::uint32_t>(bytes, pos);
    const auto dim = get<std::uint64_t>(bytes, pos);
    const auto ef = get<std::uint64_t>(bytes, pos);
    const auto count = get<std::uint64_t>(bytes, pos);
    const auto next_label = get<std::uint64_t>(bytes, pos);
    const auto payload_bytes = get<std::uint64_t>(bytes, pos);
    if (version != kVersion) bad("unsupported version ", version, " (expects ", kVersion, ")");
    if (metric > 1) bad("unknown metric code ", metric);
    if (dim == 0 || dim > (1u << 20)) bad("implausible dim ", dim);
    if (payload_bytes != bytes.size() - kHeader)
      bad("header announces ", payload_bytes, " payload bytes, file holds ", bytes.size() - kHeader, " (truncated?)");

    // hnswlib reads only from a path; $TMPDIR may be writable where the index directory is not.
    const char* tmpdir = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/rechub_hnsw_XXXXXX";
    std::vector<char> name(tmpl.begin(), tmpl.end());
    name.push_back('\0');
    const int fd = ::mkstemp(name.data());
    if (fd < 0) bad("cannot create a temp file in ", tmpl.substr(0, tmpl.rfind('/')));
    ::close(fd);
    struct Unlink {
      std::string p;
      ~Unlink() { std::remove(p.c_str()); }
    } cleanup{name.data()};
    {
      std::FILE* f = std::fopen(name.data(), "wb");
      const bool ok = f && std::fwrite(bytes.data() + kHeader, 1, payload_bytes, f) == payload_bytes;
      const bool closed = f && std::fclose(f) == 0;
      if (!ok || !closed) bad("cannot stage the payload in ", name.data());
    }

    HnswIndex idx;
    idx.opt_.metric = static_cast<Metric>(metric);
    idx.opt_.ef = ef;
    idx.d_ = static_cast<std::int64_t>(dim);
    idx.next_label_ = static_cast<std::int64_t>(next_label);
    auto* g = new detail::hnsw::Graph(static_cast<std::size_t>(dim));
    idx.graph_.reset(g);
    try {
      g->alg = std::make_unique<detail::hnsw::hnswlib::HierarchicalNSW<float>>(
          &g->space, std::string(name.data()), false, std::max<std::size_t>(count, 1));
    } catch (const std::exception& e) {
      bad("hnswlib: ", e.what());
    }
    auto& a = *g->alg;
    if (a.cur_element_count != count) bad("header says ", count, " items, payload holds ", a.cur_element_count);
    if (a.label_offset_ - a.offsetData_ != dim * sizeof(float))
      bad("payload stores ", (a.label_offset_ - a.offsetData_) / sizeof(float), "-d vectors, header says ", dim);
    // hnswlib 0.6's loadIndex counts deleted items into an uninitialised counter: recount.
    a.num_deleted_ = 0;
    for (std::size_t i = 0; i < a.cur_element_count; ++i) a.num_deleted_ += a.isMarkedDeleted(static_cast<unsigned>(i));
    a.metric_distance_computations = 0;
    a.metric_hops = 0;
    idx.opt_.M = a.M_;
    idx.opt_.ef_construction = a.ef_construction_;
    a.setEf(ef);
    return idx;
  }

 private:
  detail::hnsw::hnswlib::HierarchicalNSW<float>& alg() const {
    return *static_cast<detail::hnsw::Graph*>(graph_.get())->alg;
  }

  void check_ready(const char* who) const {
    RECHUB_CHECK(graph_ != nullptr, who, ": index is empty (default-constructed)");
  }

  template <class Label>
  void one(const float* query, std::int64_t k, float* scores, Label* labels, float* buf, const std::int64_t* ex,
           std::int64_t nex) const {
    const float* q = query;
    if (opt_.metric == Metric::cosine) {
      detail::normalize_row(query, buf, d_);
      q = buf;
    }
    // hnswlib 0.6 has no filter callback: ask for k + |exclusions| and drop the excluded ones.
    auto pq = alg().searchKnn(q, static_cast<std::size_t>(k + nex));
    std::vector<std::pair<float, std::int64_t>> got;
    got.reserve(pq.size());
    while (!pq.empty()) {
      const auto& top = pq.top();
      const std::int64_t label = static_cast<std::int64_t>(top.second);
      bool skip = false;
      for (std::int64_t j = 0; j < nex; ++j)
        if (ex[j] == label) {
          skip = true;
          break;
        }
      if (!skip) got.emplace_back(1.0f - top.first, label);
      pq.pop();
    }
    std::sort(got.begin(), got.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    const std::int64_t n = std::min<std::int64_t>(k, static_cast<std::int64_t>(got.size()));
    for (std::int64_t j = 0; j < n; ++j) {
      scores[j] = got[j].first;
      labels[j] = static_cast<Label>(got[j].second);
    }
    for (std::int64_t j = n; j < k; ++j) {
      scores[j] = -std::numeric_limits<float>::infinity();
      labels[j] = static_cast<Label>(kNoLabel);
    }
  }

  /// Bytes hnswlib's saveIndex writes for the current graph (to catch silent short writes).
  std::size_t expected_payload_bytes() const {
    const auto& a = alg();
    std::size_t b = 11 * sizeof(std::size_t) + sizeof(int) + sizeof(unsigned);
    b += a.cur_element_count * a.size_data_per_element_;
    for (std::size_t i = 0; i < a.cur_element_count; ++i)
      b += sizeof(unsigned int) + (a.element_levels_[i] > 0 ? a.size_links_per_element_ * a.element_levels_[i] : 0);
    return b;
  }

  template <class T>
  static void put(std::string& s, T v) {
    unsigned char b[sizeof(T)];
    for (std::size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(v) >> (8 * i));
    s.append(reinterpret_cast<const char*>(b), sizeof(T));
  }
  template <class T>
  static T get(const std::string& s, std::size_t& pos) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[pos + i])) << (8 * i);
    pos += sizeof(T);
    return static_cast<T>(v);
  }

  HnswOptions opt_;
  std::int64_t d_ = 0;
  std::int64_t next_label_ = 0;
  // A detail::hnsw::Graph; type-erased so this class has no field of a TU-local type.
  std::unique_ptr<void, void (*)(void*)> graph_{nullptr, &detail::hnsw::destroy_graph};
};

}  // namespace rechub
