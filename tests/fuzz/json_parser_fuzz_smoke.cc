// Runs json_parser_fuzz's target under the ordinary (gcc) build, without libFuzzer: seed
// records, and deterministic mutations of them (bytes flipped, cut, structure bytes inserted,
// nesting, numbers), so the target's invariants are checked by `bazel test` too. The real
// fuzzing is tools/fuzz.sh's.
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main() {
  const std::vector<std::string> seeds = {
      R"({"time":"2026-03-03T14:02:01+00:00","remote_addr":"203.0.113.7","remote_user":"",)"
      R"("request_method":"GET","request_uri":"/a?b=\"c\"","server_protocol":"HTTP/1.1",)"
      R"("status":404,"body_bytes_sent":153,"http_referer":"","http_user_agent":"curl/8"})",
      R"({"time_local":"03/Mar/2026:15:02:01 +0100","remote_addr":"2001:db8::7","request":"POST /login HTTP/2.0","status":"401"})",
      R"({"ts":1772546521.5241024,"request":{"client_ip":"203.0.113.7","method":"POST","uri":"/x",)"
      R"("headers":{"User-Agent":["M"]}},"status":401,"size":12})",
      R"({"ClientHost":"203.0.113.7","RequestMethod":"GET","RequestPath":"/.env","DownstreamStatus":404,"StartUTC":"2026-03-03T14:02:01.4925843Z"})",
      R"({"start_time":"2026-03-03T14:02:01.522Z","method":"GET","path":"/","response_code":403,"downstream_remote_address":"[2001:db8::7]:4"})",
      R"({"ClientIP":"203.0.113.7","ClientRequestMethod":"POST","ClientRequestURI":"/login","EdgeResponseStatus":401,"EdgeStartTimestamp":1772546521000000000})",
      R"({"Action":"block","ClientIP":"203.0.113.7","Datetime":"2026-03-03T14:02:01Z","ClientRequestPath":"/x","Source":"waf","RuleID":"r"})",
      R"({"t":1772546521,"a":"203.0.113.7:1","p":{"q":"/\u0000\u00e9\ud83d\ude00"}})",
  };
  const std::string inserts[] = {"\"", "\\", "{", "}", "[", "]", ",", ":", "\\u0000", "\\ud800",
                                 "\xff", "\xc3", " ", "1e999", "-0", "null", "\"a.b\":1,"};
  std::mt19937 rng(14);
  long runs = 0;
  for (const std::string& seed : seeds) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(seed.data()), seed.size());
    for (int i = 0; i < 20000; ++i) {
      std::string s = seed;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !s.empty(); ++e) {
        const size_t at = rng() % s.size();
        switch (rng() % 4) {
          case 0: s[at] = static_cast<char>(rng() % 256); break;
          case 1: s.erase(at, 1 + rng() % 8); break;
          case 2: s.insert(at, inserts[rng() % (sizeof(inserts) / sizeof(inserts[0]))]); break;
          default: s.resize(at); break;
        }
      }
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
      ++runs;
    }
  }
  // Deep nesting and many keys.
  std::string deep = "{\"a\":" + std::string(5000, '[') + std::string(5000, ']') + "}";
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(deep.data()), deep.size());
  std::printf("json_parser_fuzz smoke: %ld mutated records, no invariant broken\n", runs);
  return 0;
}
