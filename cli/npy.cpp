#include "cli/npy.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

namespace fusedloss_cli {
namespace {

constexpr unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

bool host_is_little_endian() {
  const std::uint16_t probe = 1;
  unsigned char first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

/// A tiny parser for the Python dict literal of an .npy header, e.g.
///   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& name) : s_(text), name_(name) {}

  void parse(std::string* descr, bool* fortran, std::vector<std::int64_t>* shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_ws();
    expect('{');
    for (;;) {
      skip_ws();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const std::string key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (peek() != '\'' && peek() != '"')
          fail("structured or non-string dtype descriptions are not supported");
        *descr = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        *fortran = parse_bool();
        have_fortran = true;
      } else if (key == "shape") {
        *shape = parse_shape();
        have_shape = true;
      } else {
        fail("unexpected header key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_ws();
      expect('}');
      break;
    }
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected text after the header dictionary");
    if (!have_descr || !have_fortran || !have_shape)
      fail("header lacks one of the keys 'descr', 'fortran_order', 'shape'");
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw NpyError(name_ + ": malformed .npy header: " + why); }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string parse_string() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    ++pos_;
    const std::size_t end = s_.find(quote, pos_);
    if (end == std::string::npos) fail("unterminated string");
    std::string value = s_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return value;
  }
  bool parse_bool() {
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    fail("fortran_order must be True or False");
  }
  std::vector<std::int64_t> parse_shape() {
    std::vector<std::int64_t> shape;
    expect('(');
    for (;;) {
      skip_ws();
      if (peek() == ')') {
        ++pos_;
        return shape;
      }
      if (peek() < '0' || peek() > '9') fail("shape must be a tuple of non-negative integers");
      std::int64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, peek() - '0', &v))
          fail("shape dimension too large");
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 long literal
      shape.push_back(v);
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_ws();
      expect(')');
      if (shape.size() == 1) fail("a one-element shape tuple needs a trailing comma");
      return shape;
    }
  }

  const std::string& s_;
  const std::string& name_;
  std::size_t pos_ = 0;
};

bool parse_descr(const std::string& descr, NpyType* type) {
  static const struct {
    const char* text;
    NpyType type;
  } kTable[] = {{"<f2", NpyType::F2}, {"<f4", NpyType::F4}, {"<f8", NpyType::F8},
                {"<i4", NpyType::I4}, {"<i8", NpyType::I8}};
  for (const auto& e : kTable) {
    if (descr == e.text) {
      *type = e.type;
      return true;
    }
  }
  return false;
}

std::uint32_t read_le(const unsigned char* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

const char* npy_descr(NpyType type) {
  switch (type) {
    case NpyType::F2: return "<f2";
    case NpyType::F4: return "<f4";
    case NpyType::F8: return "<f8";
    case NpyType::I4: return "<i4";
    case NpyType::I8: return "<i8";
  }
  return "?";
}

std::size_t npy_itemsize(NpyType type) {
  switch (type) {
    case NpyType::F2: return 2;
    case NpyType::F4: return 4;
    case NpyType::F8: return 8;
    case NpyType::I4: return 4;
    case NpyType::I8: return 8;
  }
  return 0;
}

bool npy_is_float(NpyType type) { return type == NpyType::F2 || type == NpyType::F4 || type == NpyType::F8; }

std::int64_t NpyArray::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

namespace {

/// Parses the preamble and header dictionary held in bytes[0, size) (the file's first bytes;
/// they need not include the data). Returns the array without data, its data size and offset.
NpyArray parse_header(const unsigned char* bytes, std::size_t size, const std::string& name, std::size_t* offset,
                      std::int64_t* data_bytes) {
  if (!host_is_little_endian()) throw NpyError(name + ": .npy support needs a little-endian host");
  if (size < 10) {
    if (size >= 6 && std::memcmp(bytes, kMagic, 6) == 0) throw NpyError(name + ": truncated .npy header");
    throw NpyError(name + ": not a .npy file (too short, " + std::to_string(size) + " bytes)");
  }
  if (std::memcmp(bytes, kMagic, 6) != 0) throw NpyError(name + ": not a .npy file (bad magic string)");
  const int major = bytes[6], minor = bytes[7];
  std::size_t prefix = 0, header_len = 0;
  if (major == 1) {
    prefix = 10;
    header_len = read_le(bytes + 8, 2);
  } else if (major == 2 || major == 3) {
    if (size < 12) throw NpyError(name + ": truncated .npy header");
    prefix = 12;
    header_len = read_le(bytes + 8, 4);
  } else {
    throw NpyError(name + ": unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                   " (1.0, 2.0 and 3.0 are supported)");
  }
  if (header_len > size - prefix) throw NpyError(name + ": truncated .npy header");
  const std::string header(reinterpret_cast<const char*>(bytes + prefix), header_len);
  if (major < 3) {
    for (unsigned char c : header)
      if (c >= 0x80) throw NpyError(name + ": malformed .npy header: non-ASCII byte in a version 1/2 header");
  }

  std::string descr;
  bool fortran = false;
  NpyArray array;
  HeaderParser(header, name).parse(&descr, &fortran, &array.shape);
  if (!parse_descr(descr, &array.type)) {
    if (!descr.empty() && descr[0] == '>' && descr.size() > 1)
      throw NpyError(name + ": big-endian data ('" + descr + "') is not supported; save it little-endian");
    throw NpyError(name + ": unsupported dtype '" + descr + "' (supported: <f4 <f2 <f8 <i4 <i8)");
  }
  if (fortran && array.shape.size() > 1)
    throw NpyError(name + ": Fortran-order arrays are not supported; save a C-contiguous array (np.ascontiguousarray)");

  std::int64_t numel = 1;
  for (std::int64_t d : array.shape)
    if (__builtin_mul_overflow(numel, d, &numel)) throw NpyError(name + ": shape is too large");
  if (__builtin_mul_overflow(numel, static_cast<std::int64_t>(npy_itemsize(array.type)), data_bytes))
    throw NpyError(name + ": shape is too large");
  *offset = prefix + header_len;
  return array;
}

/// Checks that the file holds exactly the data the header announces.
void check_data_size(const NpyArray& array, std::uint64_t have, std::int64_t data_bytes, const std::string& name) {
  if (have < static_cast<std::uint64_t>(data_bytes)) {
    std::string shape = "(";
    for (std::size_t i = 0; i < array.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(array.shape[i]);
    throw NpyError(name + ": truncated data: shape " + shape + ") of " + npy_descr(array.type) + " needs " +
                   std::to_string(data_bytes) + " bytes, the file has " + std::to_string(have));
  }
  if (have > static_cast<std::uint64_t>(data_bytes))
    throw NpyError(name + ": " + std::to_string(have - static_cast<std::uint64_t>(data_bytes)) +
                   " unexpected bytes after the array data");
}

}  // namespace

NpyArray parse_npy(const unsigned char* bytes, std::size_t size, const std::string& name) {
  std::size_t offset = 0;
  std::int64_t data_bytes = 0;
  NpyArray array = parse_header(bytes, size, name, &offset, &data_bytes);
  check_data_size(array, size - offset, data_bytes, name);
  array.data.assign(bytes + offset, bytes + offset + data_bytes);
  return array;
}

NpyArray read_npy(const std::string& path) {
  // The header first, then the data read straight into the array: one copy of the data in memory,
  // and the file's size checked against the header before anything big is allocated.
  struct File {
    std::FILE* f;
    ~File() {
      if (f != nullptr) std::fclose(f);
    }
  } file{std::fopen(path.c_str(), "rb")};
  if (file.f == nullptr) throw NpyError(path + ": cannot open: " + std::strerror(errno));
  auto read_some = [&](unsigned char* dst, std::size_t n) {
    const std::size_t got = std::fread(dst, 1, n, file.f);
    if (got < n && std::ferror(file.f)) throw NpyError(path + ": read error: " + std::strerror(errno));
    return got;
  };

  std::vector<unsigned char> head(12);
  head.resize(read_some(head.data(), head.size()));
  if (head.size() >= 10 && std::memcmp(head.data(), kMagic, 6) == 0 && (head[6] == 1 || head.size() == 12)) {
    const std::size_t prefix = head[6] == 1 ? 10 : 12;
    const std::size_t header_len = read_le(head.data() + 8, head[6] == 1 ? 2 : 4);
    if (header_len <= (std::size_t(1) << 30)) {  // a larger claim is reported as a truncated header
      const std::size_t have = head.size();
      head.resize(prefix + header_len);
      if (head.size() > have) head.resize(have + read_some(head.data() + have, head.size() - have));
    }
  }
  std::size_t offset = 0;
  std::int64_t data_bytes = 0;
  NpyArray array = parse_header(head.data(), head.size(), path, &offset, &data_bytes);

  struct stat st{};
  if (::fstat(::fileno(file.f), &st) == 0 && S_ISREG(st.st_mode)) {
    const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
    check_data_size(array, size >= offset ? size - offset : 0, data_bytes, path);
  }
  if (std::fseek(file.f, static_cast<long>(offset), SEEK_SET) != 0)
    throw NpyError(path + ": read error: " + std::strerror(errno));
  array.data.resize(static_cast<std::size_t>(data_bytes));
  const std::size_t got = read_some(array.data.data(), array.data.size());
  std::uint64_t extra = 0;
  unsigned char probe[4096];
  for (std::size_t n; (n = read_some(probe, sizeof probe)) > 0;) extra += n;
  check_data_size(array, got + extra, data_bytes, path);
  return array;
}

namespace {

/// The preamble + header (version 1.0, or 2.0 when the header needs it) of an array, padded so
/// the data starts on a 64-byte boundary and ended with '\n' (numpy's rules).
std::string npy_header(NpyType type, const std::vector<std::int64_t>& shape) {
  std::string dict = std::string("{'descr': '") + npy_descr(type) + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) dict += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dict += ",";
  dict += "), }";
  std::size_t prefix = 10;
  std::size_t total = prefix + dict.size() + 1;
  if (total % 64 != 0) total += 64 - total % 64;
  if (total - prefix > 0xffff) {
    prefix = 12;
    total = prefix + dict.size() + 1;
    if (total % 64 != 0) total += 64 - total % 64;
  }
  const std::size_t header_len = total - prefix;
  dict.append(header_len - dict.size() - 1, ' ');
  dict += '\n';
  std::string out(reinterpret_cast<const char*>(kMagic), 6);
  out += static_cast<char>(prefix == 10 ? 1 : 2);
  out += '\0';
  for (std::size_t i = 0; i < prefix - 8; ++i) out += static_cast<char>((header_len >> (8 * i)) & 0xff);
  return out + dict;
}

std::size_t data_size(NpyType type, const std::vector<std::int64_t>& shape) {
  std::size_t numel = 1;
  for (std::int64_t d : shape) numel *= static_cast<std::size_t>(d);
  return numel * npy_itemsize(type);
}

}  // namespace

std::vector<unsigned char> serialize_npy(NpyType type, const std::vector<std::int64_t>& shape, const void* data) {
  const std::string header = npy_header(type, shape);
  const std::size_t data_bytes = data_size(type, shape);
  std::vector<unsigned char> out(header.begin(), header.end());
  const auto* p = static_cast<const unsigned char*>(data);
  if (data_bytes > 0) out.insert(out.end(), p, p + data_bytes);
  return out;
}

void write_npy(const std::string& path, NpyType type, const std::vector<std::int64_t>& shape, const void* data) {
  const std::string header = npy_header(type, shape);
  const std::size_t data_bytes = data_size(type, shape);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) throw NpyError(path + ": cannot create: " + std::strerror(errno));
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size();
  if (ok && data_bytes > 0) ok = std::fwrite(data, 1, data_bytes, f) == data_bytes;
  const int err = errno;
  const bool close_failed = std::fclose(f) != 0;
  if (!ok || close_failed) {
    std::remove(path.c_str());
    throw NpyError(path + ": write error: " + std::strerror(ok ? errno : err));
  }
}

}  // namespace fusedloss_cli
