// Loading the Cloudflare credential: an API token from a file (first line, trimmed) or an
// environment variable; never from the config text itself. The legacy Global API Key is
// refused unless explicitly allowed. Errors name the file or variable, never the value; a token
// shape (RedactTokenShapes) in the name itself, the token typed where its file or variable goes,
// is shown as its fingerprint.
#ifndef PALISADE_SERVICES_CLOUDFLARE_CREDENTIALS_H_
#define PALISADE_SERVICES_CLOUDFLARE_CREDENTIALS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/cloudflare/client.h"

namespace palisade {

struct CredentialSource {
  std::string token_file;
  std::string token_env;
  bool allow_global_api_key = false;
  std::string email;
  std::string api_key_file;
};

// The token and key files must be regular files (kInvalidArgument otherwise: a FIFO is refused,
// not waited on) and owner-only (no group or other bits): kPermissionDenied naming the file and
// its mode otherwise. Only the first line is read, within its first 64 KiB.
absl::StatusOr<Credentials> LoadCredentials(const CredentialSource& source);

// A secret's file path or variable name as a message shows it: a token shape in it (the token
// typed where its file or variable goes) as its fingerprint (RedactTokenShapes).
std::string ShownSecretName(absl::string_view name);

// kInvalidArgument when `path` is not a regular file, kPermissionDenied when it grants any
// permission to group or others; `what` names it.
absl::Status CheckSecretFileMode(const std::string& path, absl::string_view what);

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLOUDFLARE_CREDENTIALS_H_
