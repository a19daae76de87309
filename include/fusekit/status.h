// fusekit/status.h — the error type every public entry point returns.
//
// Library code never throws across its API, never exits and never aborts: a failed
// check comes back as a Status whose message names the argument, what was expected and
// what was given. An entry point that returns an error has launched and written nothing.
#pragma once

#include <string>
#include <utility>

namespace fusekit {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // wrong dtype, shape, rank, layout, range, alignment, aliasing
  kUnsupported,      // valid request this build or device cannot serve (e.g. no CUDA)
  kCudaError,        // a CUDA runtime / driver / cuBLAS call failed
  kNcclError,        // a collective failed
  kInternal,         // a bug in fusekit
};

const char* status_code_name(StatusCode code);

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid argument: qkv: expected ..." — for logs and exceptions.
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string message) {
  return Status(StatusCode::kInvalidArgument, std::move(message));
}
inline Status unsupported(std::string message) {
  return Status(StatusCode::kUnsupported, std::move(message));
}

}  // namespace fusekit

// Early-return helper for code that composes Status-returning calls.
#define FUSEKIT_RETURN_IF_ERROR(expr)            \
  do {                                           \
    ::fusekit::Status fusekit_status_ = (expr);  \
    if (!fusekit_status_.ok()) return fusekit_status_; \
  } while (0)
