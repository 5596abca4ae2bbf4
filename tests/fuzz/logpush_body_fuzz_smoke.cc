// Runs logpush_body_fuzz's target under the ordinary (gcc) build, without libFuzzer: gzipped
// seeds (a Logpush upload, the check upload, concatenated members, a small bomb) and
// deterministic mutations of their compressed bytes (flipped, cut, inserted), so zlib's error
// paths and the caps are exercised by `bazel test` too. The real fuzzing is tools/fuzz.sh's.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::string Gzip(const std::string& data) {
  z_stream z{};
  deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

void Run(const std::string& s) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

int main() {
  const std::string record =
      R"({"ClientIP":"203.0.113.7","ClientRequestMethod":"POST","ClientRequestURI":"/login",)"
      R"("EdgeResponseStatus":401,"EdgeStartTimestamp":1772546521})";
  const std::vector<std::string> bodies = {
      Gzip(record + "\n" + record + "\r\n" + record),
      Gzip(R"({"content":"test","filename":"test.txt"})"),
      Gzip(record + "\n") + Gzip("\n\n" + record),
      Gzip(std::string(4 << 20, '\n')),  // inflates past the target's 1 MiB cap
      record + "\n\r\n" + record,        // plain
  };
  std::mt19937 rng(14);
  long runs = 0;
  for (const std::string& body : bodies) {
    for (int lead = 0; lead < 8; ++lead) {
      Run(std::string(1, static_cast<char>(lead * 37)) + body);
      ++runs;
    }
    for (int i = 0; i < 3000; ++i) {
      std::string s = std::string(1, static_cast<char>(rng() % 256)) + body;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits && s.size() > 1; ++e) {
        const size_t at = 1 + rng() % (s.size() - 1);
        switch (rng() % 3) {
          case 0: s[at] = static_cast<char>(rng() % 256); break;
          case 1: s.erase(at, 1 + rng() % 16); break;
          default: s.insert(at, std::string(1 + rng() % 4, static_cast<char>(rng() % 256)));
        }
      }
      Run(s);
      ++runs;
    }
  }
  std::printf("logpush_body_fuzz smoke: %ld inputs, invariants held\n", runs);
  return 0;
}
