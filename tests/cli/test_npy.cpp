// Unit tests of the CLI's .npy reader / writer and of the dtype conversions on load.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "cli/npy.hpp"
#include "cli/tensor.hpp"
#include "fusedloss/float16.hpp"

namespace fusedloss_cli {
namespace {

using Bytes = std::vector<unsigned char>;

/// A complete .npy image with a hand-written header (version major.0), for malformed-input tests.
Bytes image(const std::string& header, const Bytes& data, int major = 1, bool pad = true) {
  std::string h = header;
  const std::size_t prefix = major == 1 ? 10 : 12;
  if (pad) {
    std::size_t total = prefix + h.size() + 1;
    if (total % 64) h.append(64 - total % 64, ' ');
    h += '\n';
  }
  Bytes out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(major), 0};
  for (std::size_t i = 0; i < prefix - 8; ++i) out.push_back(static_cast<unsigned char>((h.size() >> (8 * i)) & 0xff));
  out.insert(out.end(), h.begin(), h.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Bytes floats(std::initializer_list<float> values) {
  Bytes b(values.size() * 4);
  std::size_t i = 0;
  for (float v : values) std::memcpy(b.data() + 4 * i++, &v, 4);
  return b;
}

NpyArray parse(const Bytes& b) { return parse_npy(b.data(), b.size(), "test.npy"); }

std::string parse_error(const Bytes& b) {
  try {
    parse(b);
  } catch (const NpyError& e) {
    return e.what();
  }
  return "";
}

// ---- round trips ------------------------------------------------------------------------------

struct RoundTripCase {
  NpyType type;
  std::vector<std::int64_t> shape;
};

void PrintTo(const RoundTripCase& c, std::ostream* os) { *os << npy_descr(c.type) << " rank " << c.shape.size(); }

class NpyRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(NpyRoundTrip, SerializeThenParseGivesTheSameArray) {
  const RoundTripCase& c = GetParam();
  std::int64_t numel = 1;
  for (auto d : c.shape) numel *= d;
  Bytes data(static_cast<std::size_t>(numel) * npy_itemsize(c.type));
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<unsigned char>((i * 37 + 11) & 0xff);
  // Any bit pattern round-trips (NaN payloads included): the reader does not touch values.
  const Bytes img = serialize_npy(c.type, c.shape, data.data());
  // numpy's layout rules: version 1.0, data 64-byte aligned, header ends with '\n'.
  ASSERT_GE(img.size(), 10u);
  EXPECT_EQ(img[6], 1);
  const std::size_t header_len = img[8] | (img[9] << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_EQ(img[10 + header_len - 1], '\n');
  const NpyArray a = parse(img);
  EXPECT_EQ(a.type, c.type);
  EXPECT_EQ(a.shape, c.shape);
  EXPECT_EQ(a.data, data);
  EXPECT_EQ(a.numel(), numel);
}

std::vector<RoundTripCase> round_trip_cases() {
  std::vector<RoundTripCase> cases;
  for (NpyType t : {NpyType::F2, NpyType::F4, NpyType::F8, NpyType::I4, NpyType::I8})
    for (const std::vector<std::int64_t>& s : std::vector<std::vector<std::int64_t>>{{}, {0}, {1}, {7}, {3, 4}, {2, 0, 5}, {2, 3, 4}})
      cases.push_back({t, s});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, NpyRoundTrip, ::testing::ValuesIn(round_trip_cases()),
                         [](const ::testing::TestParamInfo<RoundTripCase>& info) {
                           std::string name = std::string(npy_descr(info.param.type) + 1) + "_";
                           if (info.param.shape.empty()) name += "scalar";
                           for (std::size_t i = 0; i < info.param.shape.size(); ++i)
                             name += (i ? "x" : "") + std::to_string(info.param.shape[i]);
                           return name;
                         });

TEST(Npy, FileRoundTrip) {
  const std::string path = ::testing::TempDir() + "fusedloss_npy_roundtrip.npy";
  const std::vector<double> values = {1.5, -2.25, 1e300, -0.0};
  write_npy(path, NpyType::F8, {2, 2}, values.data());
  const NpyArray a = read_npy(path);
  ASSERT_EQ(a.type, NpyType::F8);
  ASSERT_EQ(a.shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(0, std::memcmp(a.data.data(), values.data(), 32));
  std::remove(path.c_str());
}

TEST(Npy, LongHeaderUsesVersion2) {
  std::vector<std::int64_t> shape(30000, 1);  // the shape tuple alone is ~90 KB of text
  const float v = 3.0f;
  const Bytes img = serialize_npy(NpyType::F4, shape, &v);
  EXPECT_EQ(img[6], 2);
  const NpyArray a = parse(img);
  EXPECT_EQ(a.shape.size(), shape.size());
  float back;
  std::memcpy(&back, a.data.data(), 4);
  EXPECT_EQ(back, 3.0f);
}

// ---- headers numpy (or people) may write ---------------------------------------------------------

TEST(Npy, AcceptsVersion2And3Headers) {
  const Bytes data = floats({1, 2, 3});
  for (int major : {2, 3}) {
    const NpyArray a = parse(image("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", data, major));
    EXPECT_EQ(a.shape, (std::vector<std::int64_t>{3}));
    EXPECT_EQ(a.data, data);
  }
}

TEST(Npy, AcceptsHeaderVariants) {
  const Bytes data = floats({1, 2, 3, 4, 5, 6});
  // Double quotes, keys in another order, no trailing comma, extra spaces, Python 2 long suffix.
  const NpyArray a = parse(image("{\"shape\": (2L, 3L), \"fortran_order\": False, \"descr\": \"<f4\"}", data));
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 3}));
  const NpyArray b = parse(image("{ 'descr' : '<f4' , 'fortran_order' : False , 'shape' : ( 2 , 3 ) , }", data));
  EXPECT_EQ(b.shape, (std::vector<std::int64_t>{2, 3}));
  // Old numpy padded to 16 bytes, not 64: the reader must not insist on 64.
  std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  while ((10 + h.size() + 1) % 16) h += ' ';
  h += '\n';
  const NpyArray c = parse(image(h, data, 1, false));
  EXPECT_EQ(c.data, data);
}

TEST(Npy, FortranOrderIsAcceptedWhereItMeansTheSameLayout) {
  const Bytes data = floats({1, 2, 3});
  EXPECT_NO_THROW(parse(image("{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }", data)));
  EXPECT_NO_THROW(parse(image("{'descr': '<f4', 'fortran_order': True, 'shape': (), }", floats({1}))));
  EXPECT_NE(parse_error(image("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 1), }", data)).find("Fortran"),
            std::string::npos);
}

// ---- malformed files ------------------------------------------------------------------------------

struct BadCase {
  const char* name;
  Bytes bytes;
  const char* expect;  ///< a substring of the message
};

std::vector<BadCase> bad_cases() {
  const Bytes six = floats({1, 2, 3, 4, 5, 6});
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  Bytes truncated_data = image(ok, six);
  truncated_data.resize(truncated_data.size() - 3);
  Bytes truncated_header = image(ok, six);
  truncated_header.resize(30);
  Bytes bad_magic = image(ok, six);
  bad_magic[1] = 'X';
  Bytes version4 = image(ok, six);
  version4[6] = 4;
  Bytes non_ascii = image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x\xc3\xa9': 1}", six);
  return {
      {"Empty", {}, "not a .npy file"},
      {"TooShort", {0x93, 'N', 'U'}, "not a .npy file"},
      {"WrongMagic", bad_magic, "bad magic"},
      {"TruncatedHeader", truncated_header, "truncated"},
      {"TruncatedData", truncated_data, "truncated data"},
      {"TrailingBytes", [&] { Bytes b = image(ok, six); b.push_back(0); return b; }(), "unexpected bytes"},
      {"Version4", version4, "version 4.0"},
      {"NonAsciiHeaderV1", non_ascii, "non-ASCII"},
      {"ComplexDtype", image("{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", six), "unsupported dtype"},
      {"BoolDtype", image("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", six), "unsupported dtype"},
      {"Uint32Dtype", image("{'descr': '<u4', 'fortran_order': False, 'shape': (6,), }", six), "unsupported dtype"},
      {"BigEndian", image("{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }", six), "big-endian"},
      {"Structured", image("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }", six), "structured"},
      {"FortranOrder2D", image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", six), "Fortran"},
      {"MissingKey", image("{'descr': '<f4', 'shape': (6,), }", six), "lacks"},
      {"UnknownKey", image("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}", six), "unexpected header key"},
      {"ShapeNotATuple", image("{'descr': '<f4', 'fortran_order': False, 'shape': (6), }", six), "trailing comma"},
      {"NegativeDim", image("{'descr': '<f4', 'fortran_order': False, 'shape': (-6,), }", six), "non-negative"},
      {"BadBool", image("{'descr': '<f4', 'fortran_order': 0, 'shape': (6,), }", six), "True or False"},
      {"NotADict", image("['<f4', False, (6,)]", six), "expected '{'"},
      {"HugeShape", image("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }", six),
       "too large"},
  };
}

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class NpyMalformed : public ::testing::TestWithParam<BadCase> {};

TEST_P(NpyMalformed, IsRejectedWithOneLineNamingTheFile) {
  const std::string message = parse_error(GetParam().bytes);
  ASSERT_FALSE(message.empty()) << "accepted a malformed file";
  EXPECT_EQ(message.rfind("test.npy: ", 0), 0u) << message;
  EXPECT_NE(message.find(GetParam().expect), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(Files, NpyMalformed, ::testing::ValuesIn(bad_cases()),
                         [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST(Npy, FileWhoseHeaderOverstatesItsDataIsRejectedBeforeAllocating) {
  // 2^40 float32 elements announced, 8 bytes present: an error, not a 4 TiB allocation.
  const std::string path = ::testing::TempDir() + "fusedloss_npy_lying.npy";
  const Bytes img = image("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }", floats({1, 2}));
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(img.data(), 1, img.size(), f);
    std::fclose(f);
  }
  try {
    read_npy(path);
    ADD_FAILURE() << "no error";
  } catch (const NpyError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated data"), std::string::npos) << e.what();
  }
  std::remove(path.c_str());
}

TEST(Npy, MissingFileIsAnError) {
  try {
    read_npy("/nonexistent/dir/x.npy");
    FAIL() << "no error";
  } catch (const NpyError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos);
  }
}

// ---- conversions on load --------------------------------------------------------------------------

TEST(Conversion, DoubleToBfloat16RoundsOnce) {
  // 1 + 2^-8 + 2^-30 lies just above the midpoint of 1 and the next bfloat16 (1 + 2^-7): correct
  // rounding goes up. Rounding through float first lands exactly on the midpoint and then ties to
  // even, down to 1: the double-rounding error this conversion must avoid.
  const double v = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30);
  EXPECT_EQ(round_to_bfloat16_bits(v), 0x3F81);
  EXPECT_EQ(fusedloss::to_bfloat16(static_cast<float>(v)).bits, 0x3F80);  // what double rounding gives
  EXPECT_EQ(round_to_bfloat16_bits(-v), 0xBF81);
  EXPECT_EQ(round_to_bfloat16_bits(1e300), 0x7F80);   // overflow → inf
  EXPECT_TRUE(std::isnan(fusedloss::to_float(fusedloss::bfloat16_t{round_to_bfloat16_bits(NAN)})));
}

TEST(Conversion, DoubleToHalfRoundsOnce) {
  const double v = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  EXPECT_EQ(round_to_half_bits(v), 0x3C01);
  EXPECT_EQ(fusedloss::to_half(static_cast<float>(v)).bits, 0x3C00);
  EXPECT_EQ(round_to_half_bits(65520.0), 0x7C00);  // rounds to inf
  EXPECT_EQ(round_to_half_bits(65519.0), 0x7BFF);  // max finite half
  EXPECT_EQ(round_to_half_bits(std::ldexp(1.0, -24)), 0x0001);  // smallest subnormal
  // Exactly half of the smallest subnormal ties to even (0); anything above rounds up.
  EXPECT_EQ(round_to_half_bits(std::ldexp(1.0, -25)), 0x0000);
  EXPECT_EQ(round_to_half_bits(std::ldexp(1.0, -25) * (1 + 1e-12)), 0x0001);
}

TEST(Conversion, FloatFileToEachDtype) {
  const std::vector<float> values = {1.0f, 1.00390625f /* 1 + 2^-8: a bf16 tie */, -3.14159274f, 65504.0f, 1e-8f};
  NpyArray a;
  a.type = NpyType::F4;
  a.shape = {static_cast<std::int64_t>(values.size())};
  a.data.resize(values.size() * 4);
  std::memcpy(a.data.data(), values.data(), a.data.size());
  const HostTensor f32 = to_values(a, fusedloss::DType::Float32, "x");
  const HostTensor f16 = to_values(a, fusedloss::DType::Float16, "x");
  const HostTensor bf16 = to_values(a, fusedloss::DType::BFloat16, "x");
  for (std::size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(get_value(f32, static_cast<std::int64_t>(i)), values[i]);
    EXPECT_EQ(get_value(f16, static_cast<std::int64_t>(i)), fusedloss::to_float(fusedloss::to_half(values[i])));
    EXPECT_EQ(get_value(bf16, static_cast<std::int64_t>(i)), fusedloss::to_float(fusedloss::to_bfloat16(values[i])));
  }
  // bf16 leaves as exactly widened float32 (NumPy has no bfloat16).
  const NpyArray back = to_npy(bf16);
  EXPECT_EQ(back.type, NpyType::F4);
  float second;
  std::memcpy(&second, back.data.data() + 4, 4);
  EXPECT_EQ(second, 1.0f);  // the tie rounded to even
}

TEST(Conversion, HalfFileKeepsItsBitsAndDefaultsToF16) {
  NpyArray a;
  a.type = NpyType::F2;
  a.shape = {2};
  const std::uint16_t bits[2] = {0x3C01, 0xFC00};
  a.data.resize(4);
  std::memcpy(a.data.data(), bits, 4);
  EXPECT_EQ(default_value_dtype(a.type), fusedloss::DType::Float16);
  const HostTensor t = to_values(a, fusedloss::DType::Float16, "x");
  EXPECT_EQ(0, std::memcmp(t.bytes.data(), bits, 4));
  const NpyArray back = to_npy(t);
  EXPECT_EQ(back.type, NpyType::F2);
  EXPECT_EQ(back.data, a.data);
}

TEST(Conversion, LabelsMustBeIntegers) {
  NpyArray a;
  a.type = NpyType::F4;
  a.shape = {1};
  a.data.resize(4);
  EXPECT_THROW(to_labels(a, "--target y.npy"), std::exception);
  a.type = NpyType::I4;
  const HostTensor t = to_labels(a, "--target y.npy");
  EXPECT_EQ(t.dtype, fusedloss::DType::Int32);
}

}  // namespace
}  // namespace fusedloss_cli
