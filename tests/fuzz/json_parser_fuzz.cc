// libFuzzer target: the JSON lines parser (services/formats/json_parser.h), every preset and a
// custom mapping, on any bytes. Must not crash, hang or read out of bounds; a record that
// parses as an access log renders a line that starts with its client address and a space (the
// structure a client cannot forge), and no rendered line holds a raw quote inside a client
// field's escaping (checked as: the message has no control byte).
#include <cstddef>
#include <cstdint>
#include <string>

#include "services/formats/json_parser.h"
#include "services/formats/line_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view line(reinterpret_cast<const char*>(data), size);
  palisade::v1::JsonFormat custom;
  custom.set_name("fuzz");
  custom.set_time("t");
  custom.set_client_address("a");
  custom.set_path("p.q");
  for (auto format :
       {palisade::v1::LOG_FORMAT_JSON, palisade::v1::LOG_FORMAT_NGINX_JSON,
        palisade::v1::LOG_FORMAT_CADDY_JSON, palisade::v1::LOG_FORMAT_TRAEFIK_JSON,
        palisade::v1::LOG_FORMAT_ENVOY_JSON, palisade::v1::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS,
        palisade::v1::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS}) {
    palisade::LineParser parser(format);
    if (format == palisade::v1::LOG_FORMAT_JSON && !parser.SetJsonFormat(custom).ok()) {
      __builtin_trap();
    }
    palisade::ParsedLine out;
    if (!parser.Parse(line, absl::FromUnixSeconds(1'772'600'000), &out).ok()) continue;
    const absl::string_view m = out.message;
    if (m.size() <= out.client_address.size() ||
        m.substr(0, out.client_address.size()) != out.client_address ||
        m[out.client_address.size()] != ' ') {
      __builtin_trap();  // the address the server wrote does not lead the rendered line
    }
    for (unsigned char c : m) {
      if (c < 0x20 || c >= 0x7f) __builtin_trap();  // an unescaped byte reached the message
    }
  }
  return 0;
}
