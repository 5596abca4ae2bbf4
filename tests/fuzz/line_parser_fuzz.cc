// libFuzzer target: every line parser, on any bytes. Must not crash, hang or read out of
// bounds; a parse either fails with a status or yields views inside the input.
#include <cstddef>
#include <cstdint>
#include <string>

#include "services/formats/line_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view line(reinterpret_cast<const char*>(data), size);
  for (auto format : {palisade::v1::LOG_FORMAT_SYSLOG, palisade::v1::LOG_FORMAT_SYSLOG5424,
                      palisade::v1::LOG_FORMAT_COMBINED, palisade::v1::LOG_FORMAT_COMBINED_VHOST,
                      palisade::v1::LOG_FORMAT_RAW,
                      palisade::v1::LOG_FORMAT_NGINX_ERROR, palisade::v1::LOG_FORMAT_APACHE_ERROR}) {
    palisade::LineParser parser(format);
    palisade::ParsedLine out;
    if (parser.Parse(line, absl::FromUnixSeconds(1'772'600'000), &out).ok()) {
      // The error formats' program is a constant ("nginx", "apache"), not a view of the line.
      const bool own_program = format == palisade::v1::LOG_FORMAT_NGINX_ERROR ||
                               format == palisade::v1::LOG_FORMAT_APACHE_ERROR;
      for (absl::string_view v :
           {out.message, out.host, own_program ? absl::string_view() : out.program, out.pid}) {
        if (!v.empty() && (v.data() < line.data() || v.data() + v.size() > line.data() + size)) {
          __builtin_trap();  // a view escaped the input
        }
      }
    }
  }
  return 0;
}
