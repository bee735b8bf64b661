#pragma once
// Reading a whole file: the one reader behind the data readers, checkpoints, indexes and configs.
// POSIX open/fstat/read: a directory or a device is refused up front (fopen happily opens a
// directory and fails only at the first read), and the buffer is sized once from fstat.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "rechub/core/error.hpp"

namespace rechub {

/// The whole file as bytes. DataError "<who>: cannot open <path>: <reason>" (or "... is not a
/// regular file", "read failed on ...") when it cannot be read; `who` names the caller.
inline std::string read_file(const std::string& path, const char* who = "read_file") {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    const int err = errno;
    detail::throw_error<DataError>(who, ": cannot open ", path, ": ", std::strerror(err));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    detail::throw_error<DataError>(who, ": cannot stat ", path, ": ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    detail::throw_error<DataError>(who, ": ", path, " is not a regular file");
  }
  std::string out;
  out.resize(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  while (got < out.size()) {
    const ::ssize_t r = ::read(fd, &out[got], out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      detail::throw_error<DataError>(who, ": read failed on ", path, ": ", std::strerror(err));
    }
    if (r == 0) break;  // the file shrank under us: return what is there
    got += static_cast<std::size_t>(r);
  }
  out.resize(got);
  ::close(fd);
  return out;
}

}  // namespace rechub
