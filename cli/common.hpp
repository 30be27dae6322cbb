// fusedloss CLI — error kinds, exit codes and small string helpers shared by every command.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fusedloss_cli {

/// Exit status of the program.
enum ExitCode : int {
  kExitOk = 0,
  kExitFail = 1,       ///< validate: a comparison is outside the documented tolerance
  kExitUsage = 2,      ///< a user error: bad option, bad file, shape mismatch, ... (nothing written)
  kExitNoGpu = 3,      ///< a GPU was needed (validate, --device cuda) and none is usable
  kExitRuntime = 4,    ///< the machine failed us: CUDA runtime error, out of memory, unexpected library status
};

/// A user error: reported as one line on stderr, exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// No usable GPU: exit status 3.
struct NoGpuError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// A failure that is not the user's fault (CUDA error, allocation failure): exit status 4.
struct RuntimeFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Splits on `sep`, keeping empty fields.
std::vector<std::string> split(const std::string& text, char sep);
/// Lower-case ASCII copy.
std::string lower(std::string text);
/// The whole string as a finite double; throws UsageError naming `what` otherwise.
double parse_double(const std::string& text, const std::string& what);
/// The whole string as an int64; throws UsageError naming `what` otherwise.
std::int64_t parse_int(const std::string& text, const std::string& what);
/// A size: 1048576, 2^20, 1M (=2^20), 64K (=2^16), 1G (=2^30). Throws UsageError.
std::int64_t parse_size(const std::string& text, const std::string& what);
/// Replaces control characters (newlines, tabs) by spaces so a message stays on one line.
std::string one_line(std::string text);
/// `a` as one POSIX shell word (quoted only when it needs to be).
std::string quote_arg(const std::string& a);
/// "[3, 4]" style rendering of a shape.
std::string shape_string(const std::vector<std::int64_t>& shape);
/// Product of the dimensions (1 for a 0-d shape); throws UsageError on overflow.
std::int64_t shape_numel(const std::vector<std::int64_t>& shape, const std::string& what);

}  // namespace fusedloss_cli
