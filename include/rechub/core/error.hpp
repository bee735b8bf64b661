#pragma once
// Errors: one base type, a few derived kinds, and RECHUB_CHECK, which is on in every build.
#include <sstream>
#include <stdexcept>
#include <string>

namespace rechub {

/// Base of every error rechub throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};
/// A tensor has the wrong shape, dtype or device for an op.
class ShapeError : public Error { using Error::Error; };
/// A configuration value is missing, unknown or out of range.
class ConfigError : public Error { using Error::Error; };
/// Input data is malformed (messages name file and line).
class DataError : public Error { using Error::Error; };
/// A CUDA call failed or a CUDA path is missing.
class CudaError : public Error { using Error::Error; };

namespace detail {
template <class E = Error, class... Args>
[[noreturn]] void throw_error(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw E(os.str());
}
}  // namespace detail
}  // namespace rechub

/// Checks `cond` in every build; on failure throws `ErrorType` with the streamed message.
#define RECHUB_CHECK_AS(ErrorType, cond, ...)                                   \
  do {                                                                          \
    if (!(cond)) ::rechub::detail::throw_error<ErrorType>(__VA_ARGS__);         \
  } while (0)
#define RECHUB_CHECK(cond, ...) RECHUB_CHECK_AS(::rechub::Error, cond, __VA_ARGS__)
#define RECHUB_CHECK_SHAPE(cond, ...) RECHUB_CHECK_AS(::rechub::ShapeError, cond, __VA_ARGS__)
