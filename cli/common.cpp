#include "cli/common.hpp"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace fusedloss_cli {

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::string current;
  for (char c : text) {
    if (c == sep) {
      parts.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  parts.push_back(current);
  return parts;
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

double parse_double(const std::string& text, const std::string& what) {
  if (text.empty() || std::isspace(static_cast<unsigned char>(text.front())))
    throw UsageError(what + ": expected a number, got '" + text + "'");
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) throw UsageError(what + ": expected a number, got '" + text + "'");
  if (!std::isfinite(v) || errno == ERANGE) throw UsageError(what + ": '" + text + "' is not a finite number");
  return v;
}

std::int64_t parse_int(const std::string& text, const std::string& what) {
  if (text.empty() || std::isspace(static_cast<unsigned char>(text.front())))
    throw UsageError(what + ": expected an integer, got '" + text + "'");
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (end != text.c_str() + text.size()) throw UsageError(what + ": expected an integer, got '" + text + "'");
  if (errno == ERANGE) throw UsageError(what + ": '" + text + "' is out of range");
  return static_cast<std::int64_t>(v);
}

std::int64_t parse_size(const std::string& raw, const std::string& what) {
  const std::string text = lower(raw);
  if (text.empty()) throw UsageError(what + ": empty size");
  const std::size_t caret = text.find('^');
  std::int64_t value = 0;
  if (caret != std::string::npos) {
    const std::int64_t base = parse_int(text.substr(0, caret), what);
    const std::int64_t exp = parse_int(text.substr(caret + 1), what);
    if (base < 1 || exp < 0) throw UsageError(what + ": bad size '" + raw + "'");
    long double v = std::pow(static_cast<long double>(base), static_cast<long double>(exp));
    if (v > static_cast<long double>(std::numeric_limits<std::int64_t>::max() / 2))
      throw UsageError(what + ": size '" + raw + "' is too large");
    value = static_cast<std::int64_t>(v);
  } else {
    std::int64_t mult = 1;
    std::string digits = text;
    const char last = text.back();
    if (last == 'k' || last == 'm' || last == 'g') {
      mult = last == 'k' ? (std::int64_t(1) << 10) : last == 'm' ? (std::int64_t(1) << 20) : (std::int64_t(1) << 30);
      digits.pop_back();
    }
    const std::int64_t base = parse_int(digits, what);
    if (base < 0 || base > std::numeric_limits<std::int64_t>::max() / mult)
      throw UsageError(what + ": bad size '" + raw + "'");
    value = base * mult;
  }
  if (value < 1) throw UsageError(what + ": size '" + raw + "' must be at least 1");
  return value;
}

std::string quote_arg(const std::string& a) {
  if (!a.empty() && a.find_first_of(" \t\n'\"\\$`*?;&|<>()[]{}!#~") == std::string::npos) return a;
  std::string q = "'";
  for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string one_line(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::int64_t shape_numel(const std::vector<std::int64_t>& shape, const std::string& what) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) throw UsageError(what + ": shape " + shape_string(shape) + " is too large");
  }
  return n;
}

}  // namespace fusedloss_cli
