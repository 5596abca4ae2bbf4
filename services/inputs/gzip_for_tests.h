// Test helper for the inputs' tests (file_follower_test, file_inputs_test,
// logpush_receiver_test): data compressed as gzip writes it (header, deflate, CRC-32, ISIZE),
// through zlib. Test-only; no shared state.
#ifndef PALISADE_SERVICES_INPUTS_GZIP_FOR_TESTS_H_
#define PALISADE_SERVICES_INPUTS_GZIP_FOR_TESTS_H_

#include <zlib.h>

#include <string>

#include "gtest/gtest.h"

namespace palisade::testing {

// `data` as one gzip member, at zlib's `level`.
inline std::string Gzip(const std::string& data, int level = Z_DEFAULT_COMPRESSION) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace palisade::testing

#endif  // PALISADE_SERVICES_INPUTS_GZIP_FOR_TESTS_H_
