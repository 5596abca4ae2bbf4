// Fingerprint: a short, stable, non-reversible name for a secret (an API token seen in a log):
// "sha256:" + the first 16 hex characters of its SHA-256. Decisions, logs and metrics carry the
// fingerprint, never the secret.
//
// Token shapes: FindTokenShapes / RedactTokenShapes recognise, anywhere in a line, the shapes
// the cloudflare-tokens pack (rules/cloudflare-tokens.textproto) treats as Cloudflare API
// tokens: cfut_/cfat_ + 40 alphanumerics between non-word characters (any byte but
// [A-Za-z0-9_], whether or not the line is UTF-8), and a 40-character
// [A-Za-z0-9_-] value right after "Authorization: Bearer", "cf_api_token=",
// "cloudflare_api_token=" or "?cf_token=" / "&cf_token=" (case-insensitive). The engine redacts
// them from every evidence line, whichever rule keeps the line, so no token reaches a decision,
// the event stream, a sink or the store. Keep the two in step: the pack's examples are checked
// against FindTokenShapes by //rules:pack_test (every token rule of every pack).
//
// Thread-safety: every function is thread-safe (the patterns are compiled once, on first use).
#ifndef PALISADE_SERVICES_COMMON_FINGERPRINT_H_
#define PALISADE_SERVICES_COMMON_FINGERPRINT_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace palisade {

std::string Fingerprint(absl::string_view secret);

// Every token-shaped value in `line`, in order of appearance, each a view into `line`.
std::vector<absl::string_view> FindTokenShapes(absl::string_view line);

// `line` with every token shape (and every value of `also`, for token rules whose pattern is not
// one of the built-in shapes) replaced by "[token sha256:...]"; secrets that overlap get one
// marker, the fingerprint of all the bytes they cover. Returns false, leaving `out`
// untouched, when there is nothing to redact: the caller keeps the line as it is.
bool RedactTokenShapes(absl::string_view line, std::string* out,
                       const std::vector<absl::string_view>& also = {});

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_FINGERPRINT_H_
