#pragma once
// Atomic file replacement: readers see the old contents or the new, never a torn mix, and a crash
// or an error mid-write leaves the old file untouched.
//   1. write into a temp file created next to the target (same directory, so rename stays on one
//      file system and is atomic),
//   2. fsync the temp file (data on disk before the name points at it),
//   3. rename over the target, then fsync the directory (the rename itself survives a crash).
// On any failure (or when the writer throws) the temp file is closed and unlinked.
// POSIX only (open/fsync/rename).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/file.hpp"  // read_file, the reading half

namespace rechub {

namespace detail {
inline std::string errno_text(int err) { return std::strerror(err); }

inline std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}
inline std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}
}  // namespace detail

/// A file being written atomically: write(), then commit(); destroyed uncommitted, it leaves no trace.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)) {
    RECHUB_CHECK(!path_.empty() && path_.back() != '/', "atomic write: '", path_, "' is not a file path");
    const std::string dir = detail::parent_dir(path_);
    temp_ = dir + "/." + detail::base_name(path_) + ".tmp.XXXXXX";
    std::vector<char> buf(temp_.begin(), temp_.end());
    buf.push_back('\0');
    fd_ = ::mkstemp(buf.data());
    if (fd_ < 0) {
      const int err = errno;
      detail::throw_error("atomic write ", path_, ": cannot create a temp file in ", dir, ": ", detail::errno_text(err));
    }
    temp_.assign(buf.data());
    // mkstemp makes 0600; a checkpoint should be as readable as any file we would create (keep the
    // mode of the file being replaced).
    struct stat st;
    const mode_t mode = ::stat(path_.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0644;
    ::fchmod(fd_, mode);
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() { abort(); }

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }
  std::uint64_t bytes_written() const { return written_; }

  /// Appends n bytes; throws (naming the target) on any short write.
  void write(const void* data, std::size_t n) {
    RECHUB_CHECK(fd_ >= 0, "atomic write ", path_, ": write after commit or abort");
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ::ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        abort();
        detail::throw_error("atomic write ", path_, ": write failed: ", detail::errno_text(err));
      }
      p += w;
      n -= static_cast<std::size_t>(w);
      written_ += static_cast<std::uint64_t>(w);
    }
  }
  void write(const std::string& s) { write(s.data(), s.size()); }

  /// Makes the new contents durable and visible under the target name.
  void commit() {
    RECHUB_CHECK(fd_ >= 0, "atomic write ", path_, ": commit after commit or abort");
    if (::fsync(fd_) != 0) fail("fsync failed");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) {
      const int err = errno;
      ::unlink(temp_.c_str());
      detail::throw_error("atomic write ", path_, ": close failed: ", detail::errno_text(err));
    }
    if (::rename(temp_.c_str(), path_.c_str()) != 0) {
      const int err = errno;
      ::unlink(temp_.c_str());
      detail::throw_error("atomic write ", path_, ": rename failed: ", detail::errno_text(err));
    }
    committed_ = true;
    // Persist the directory entry; failure here cannot un-rename, so it is not an error.
    const int dfd = ::open(detail::parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

  /// Drops the temp file (idempotent; the target is untouched).
  void abort() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (!committed_ && !temp_.empty()) {
      ::unlink(temp_.c_str());
      temp_.clear();
    }
  }

 private:
  [[noreturn]] void fail(const char* what) {
    const int err = errno;
    abort();
    detail::throw_error("atomic write ", path_, ": ", what, ": ", detail::errno_text(err));
  }

  std::string path_, temp_;
  int fd_ = -1;
  bool committed_ = false;
  std::uint64_t written_ = 0;
};

/// Writes `fn(AtomicFile&)`'s output to `path` atomically; if fn throws, the old file stays.
template <class Fn>
void write_file_atomic_with(const std::string& path, Fn&& fn) {
  AtomicFile f(path);
  fn(f);
  f.commit();
}

/// Replaces `path` with n bytes atomically.
inline void write_file_atomic(const std::string& path, const void* data, std::size_t n) {
  write_file_atomic_with(path, [&](AtomicFile& f) { f.write(data, n); });
}
inline void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}


}  // namespace rechub
