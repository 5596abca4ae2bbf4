// Fingerprint: a short, stable, non-reversible name for a secret (an API token seen in a log):
// "sha256:" + the first 16 hex characters of its SHA-256. Decisions, logs and metrics carry the
// fingerprint, never the secret.
#ifndef PALISADE_SERVICES_COMMON_FINGERPRINT_H_
#define PALISADE_SERVICES_COMMON_FINGERPRINT_H_

#include <string>

#include "absl/strings/string_view.h"

namespace palisade {

std::string Fingerprint(absl::string_view secret);

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_FINGERPRINT_H_
