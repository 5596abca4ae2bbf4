#include "services/common/fingerprint.h"

#include <openssl/sha.h>

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "re2/re2.h"

namespace palisade {
namespace {

re2::StringPiece Piece(absl::string_view s) { return re2::StringPiece(s.data(), s.size()); }

// The shapes of rules/cloudflare-tokens.textproto, as one pattern whose only capturing group is
// the token. The leading context is matched but not captured, so a search resumed at the end of
// a token still sees the separator before the next one. Latin-1 mode: log lines are bytes, often
// not UTF-8 (cp1252 quotes, a no-break space), and in UTF-8 mode a negated class matches no byte
// that is not valid UTF-8, so a token next to one went unseen. The pattern is ASCII, so each
// byte is one character and every byte outside the token alphabet is a separator. An escape
// ("%3D", "%20": a token in a URL that is itself a parameter; "%253D" for a URL one level
// deeper) is a separator too, though its last character is a hex digit, and the older form's
// contexts are read escaped as well (the token pack reads only their plain spellings: each
// spelling would be a literal its gate looks for in every line).
const RE2& TokenShapes() {
  static const RE2* const re = [] {
    RE2::Options options;
    options.set_encoding(RE2::Options::EncodingLatin1);
    options.set_log_errors(false);
    options.set_max_mem(8 << 20);
    return new RE2(
        "(?:(?:^|[^A-Za-z0-9_]|%(?:25)*[0-9A-Fa-f]{2})(cf[ua]t_[A-Za-z0-9]{40})"
        "(?:[^A-Za-z0-9_-]|$)"
        "|(?i:authorization:\\s*bearer\\s+|bearer(?:%(?:25)*20|\\+)+|"
        "(?:cf_api_token|cloudflare_api_token)(?:=|%(?:25)*3d)|"
        "(?:[?&]|%(?:25)*(?:3f|26))cf_token(?:=|%(?:25)*3d))"
        "([A-Za-z0-9_-]{40})(?:[^A-Za-z0-9_-]|$))",
        options);
  }();
  return *re;
}

}  // namespace

std::string Fingerprint(absl::string_view secret) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), digest);
  return absl::StrCat("sha256:", absl::BytesToHexString(
                                     absl::string_view(reinterpret_cast<const char*>(digest), 8)));
}

std::vector<absl::string_view> FindTokenShapes(absl::string_view line) {
  std::vector<absl::string_view> out;
  const RE2& re = TokenShapes();
  re2::StringPiece groups[3];
  size_t at = 0;
  while (at <= line.size() &&
         re.Match(Piece(line), at, line.size(), RE2::UNANCHORED, groups, 3)) {
    const re2::StringPiece& token = groups[1].data() != nullptr ? groups[1] : groups[2];
    out.emplace_back(token.data(), token.size());
    // Resume right after the token (not after the separator the match consumed), so two tokens
    // one character apart are both found.
    at = static_cast<size_t>(token.data() - line.data()) + token.size();
  }
  return out;
}

bool RedactTokenShapes(absl::string_view line, std::string* out,
                       const std::vector<absl::string_view>& also) {
  // (offset, length) of each secret, from the built-in shapes and the caller's own.
  std::vector<std::pair<size_t, size_t>> spans;
  for (absl::string_view t : FindTokenShapes(line)) {
    spans.emplace_back(static_cast<size_t>(t.data() - line.data()), t.size());
  }
  for (absl::string_view secret : also) {
    if (secret.empty()) continue;
    for (size_t pos = line.find(secret); pos != absl::string_view::npos;
         pos = line.find(secret, pos + secret.size())) {
      spans.emplace_back(pos, secret.size());
    }
  }
  if (spans.empty()) return false;
  std::sort(spans.begin(), spans.end());
  // Spans that overlap (one secret a prefix of another, or two sharing bytes) are merged and
  // replaced by one marker, with the fingerprint of all the bytes they cover: that of the longer
  // secret when it holds the others. Replacing the first alone left the rest of the other in clear.
  std::string redacted;
  redacted.reserve(line.size());
  size_t copied = 0;
  for (size_t i = 0; i < spans.size();) {
    const size_t pos = spans[i].first;
    size_t end = pos + spans[i].second;
    for (++i; i < spans.size() && spans[i].first < end; ++i) {
      end = std::max(end, spans[i].first + spans[i].second);
    }
    absl::StrAppend(&redacted, line.substr(copied, pos - copied), "[token ",
                    Fingerprint(line.substr(pos, end - pos)), "]");
    copied = end;
  }
  absl::StrAppend(&redacted, line.substr(copied));
  *out = std::move(redacted);
  return true;
}

}  // namespace palisade
