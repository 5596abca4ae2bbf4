#include "services/formats/percent_escapes.h"

#include <cstring>

#include "services/formats/json_parser.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsAddressByte(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
         c == ':' || c == '.';
}

bool Readable(int c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~' || c == '/';
}

// The character the escape at text[i] ('%') gives, or -1 when it is no readable escape.
int EscapeAt(absl::string_view text, size_t i) {
  if (i + 2 >= text.size()) return -1;
  const int high = HexValue(text[i + 1]);
  const int low = HexValue(text[i + 2]);
  if (high < 0 || low < 0) return -1;
  const int c = high << 4 | low;
  return Readable(c) ? c : -1;
}

// The offset of the first readable escape at or after `from`, or npos.
size_t FindEscape(absl::string_view text, size_t from) {
  while (from < text.size()) {
    const void* found = std::memchr(text.data() + from, '%', text.size() - from);
    if (found == nullptr) return absl::string_view::npos;
    const size_t i = static_cast<const char*>(found) - text.data();
    if (EscapeAt(text, i) >= 0) return i;
    from = i + 1;
  }
  return absl::string_view::npos;
}

}  // namespace

namespace percent_escapes_internal {

bool OpensWithAddress(absl::string_view message) {
  size_t end = 0;
  while (end < message.size() && end <= 45 && IsAddressByte(message[end])) ++end;
  return end < message.size() && message[end] == ' ' && IsIpAddress(message.substr(0, end));
}

bool ReadsEscapesDecodedOther(palisade::v1::LogFormat format) {
  return format != palisade::v1::LogFormat::LOG_FORMAT_JSON && IsJsonFormat(format) &&
         RendersCombined(format);
}

bool DecodeReadableEscapes(absl::string_view text, std::string* out) {
  size_t i = FindEscape(text, 0);
  if (i == absl::string_view::npos) return false;
  out->assign(text.data(), i);
  while (i < text.size()) {
    const int c = text[i] == '%' ? EscapeAt(text, i) : -1;
    if (c >= 0) {
      out->push_back(static_cast<char>(c));
      i += 3;
      continue;
    }
    // Up to the next '%' in one copy.
    const void* next = std::memchr(text.data() + i + 1, '%', text.size() - i - 1);
    const size_t end =
        next == nullptr ? text.size() : static_cast<const char*>(next) - text.data();
    out->append(text.data() + i, end - i);
    i = end;
  }
  return true;
}

}  // namespace percent_escapes_internal
}  // namespace palisade
