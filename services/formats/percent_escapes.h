// What rules read of a percent-encoded text: a server decodes "%XX" in a request's path before
// it picks the file or script (nginx and Apache both, once), and logs the path as the client
// wrote it. So "/.%65nv" is a request for "/.env" and "/wp-%6cogin.php" one for wp-login.php,
// which a pattern written for the plain name cannot see (one spelling per letter is too many
// to write). The engine hands rules the message with such escapes decoded
// (services/engine/engine.h); this is the decoding.
//
// Only an escape of an RFC 3986 unreserved character (A-Z a-z 0-9 - . _ ~) or of '/' is
// decoded: a client may write any of those plainly, so a decoded text says nothing a client
// could not have written itself, and no escape becomes a field's delimiter (a space, '"', '[',
// '=' ...), which would let it forge the server's part of the line (a key after it). '%25' stays
// as it is: a server decodes once, and "%252e" reaches it as "%2e", which patterns of
// double-encoding probes read as such.
//
// Only an access line's message is read so (ReadsEscapesDecoded): the request in it is the
// client's, as sent. An error log writes paths the server decoded already (nginx's open()
// "/srv/x"), and a bound on a field's length there counts the bytes the server wrote (nginx cuts
// an error line at 2048 bytes: a forged tail in a padded user name is cut off before the real
// "client:" field only if the padding is counted as written).
//
// Thread-safety: pure functions.
#ifndef PALISADE_SERVICES_FORMATS_PERCENT_ESCAPES_H_
#define PALISADE_SERVICES_FORMATS_PERCENT_ESCAPES_H_

#include <cstring>
#include <string>

#include "absl/strings/string_view.h"
#include "palisade/v1/rules.pb.h"

namespace palisade {

namespace percent_escapes_internal {
// DecodeReadableEscapes for a text that holds a '%'.
bool DecodeReadableEscapes(absl::string_view text, std::string* out);
// Whether `message` opens with an address and a space.
bool OpensWithAddress(absl::string_view message);
// ReadsEscapesDecoded for the formats it does not name.
bool ReadsEscapesDecodedOther(palisade::v1::LogFormat format);
}  // namespace percent_escapes_internal

// Whether rules read `message`, of a line of `format`, with its escapes decoded: an access
// line's. LOG_FORMAT_COMBINED, LOG_FORMAT_COMBINED_VHOST and the JSON presets (rendered as
// combined lines, RendersCombined) always; a line of the formats that carry any program's text
// (SYSLOG, SYSLOG5424, RAW, a custom JSON mapping, which may name a `message` field) when it
// opens with an address and a space, as an access log writes it (the web rules anchor on it; a
// daemon's own message, a service log's time stamp, a postfix queue id do not).
// Inline: every line the engine reads asks, and most lines are told at their first bytes.
inline bool ReadsEscapesDecoded(palisade::v1::LogFormat format, absl::string_view message) {
  using palisade::v1::LogFormat;
  if (format == LogFormat::LOG_FORMAT_COMBINED || format == LogFormat::LOG_FORMAT_COMBINED_VHOST) {
    return true;
  }
  if (format != LogFormat::LOG_FORMAT_SYSLOG && format != LogFormat::LOG_FORMAT_SYSLOG5424 &&
      format != LogFormat::LOG_FORMAT_RAW && format != LogFormat::LOG_FORMAT_JSON) {
    return percent_escapes_internal::ReadsEscapesDecodedOther(format);
  }
  if (message.size() < 3) return false;
  const char c = message[0];
  if (c != ':') {
    // An address's first group is at most 3 digits (IPv4) or 4 hex digits (IPv6): a '.' or ':'
    // follows within the first five bytes.
    const char lower = static_cast<char>(c | 0x20);
    if (!((c >= '0' && c <= '9') || (lower >= 'a' && lower <= 'f'))) return false;
    const size_t n = message.size() < 5 ? message.size() : 5;
    bool separator = false;
    for (size_t i = 1; i < n; ++i) separator |= message[i] == ':' || message[i] == '.';
    if (!separator) return false;
  }
  return percent_escapes_internal::OpensWithAddress(message);
}

// `text` with each escape of an unreserved character or '/' (a "%XX", upper or lower case hex)
// replaced by its character, in `*out` (replaced), and true; or false and `*out` untouched when
// `text` holds none. Most lines hold no '%': one vectorised search, inline (every access line
// the engine reads asks). One left-to-right pass: the character an
// escape gives is not read again as part of another escape ("%2%36" is "%2" then "6").
inline bool DecodeReadableEscapes(absl::string_view text, std::string* out) {
  return !text.empty() && std::memchr(text.data(), '%', text.size()) != nullptr &&
         percent_escapes_internal::DecodeReadableEscapes(text, out);
}

}  // namespace palisade

#endif  // PALISADE_SERVICES_FORMATS_PERCENT_ESCAPES_H_
