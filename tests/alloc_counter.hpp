#pragma once
// Replaces the global allocation functions with counting ones, for tests that prove a
// steady-state step allocates nothing. Include from exactly ONE translation unit per test
// program (the replacements are ordinary definitions). Under AddressSanitizer the counts still
// work: ASan intercepts malloc, which these call.
#include <atomic>
#include <cstdlib>
#include <new>

namespace rechub::testing {
inline std::atomic<long>& allocation_counter() {
  static std::atomic<long> n{0};
  return n;
}
/// operator new calls (of any form) since the program started.
inline long allocations() { return allocation_counter().load(); }
}  // namespace rechub::testing

// GCC cannot see that these operator new are malloc, and warns about the matching free.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  ++rechub::testing::allocation_counter();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  ++rechub::testing::allocation_counter();
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
