// Loading the Cloudflare credential: an API token from a file (first line, trimmed) or an
// environment variable; never from the config text itself. The legacy Global API Key is
// refused unless explicitly allowed. Errors name the file or variable, never the value.
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

// The token and key files must be owner-only (no group or other bits): kPermissionDenied naming
// the file and its mode otherwise.
absl::StatusOr<Credentials> LoadCredentials(const CredentialSource& source);

// kPermissionDenied when `path` grants any permission to group or others; `what` names it.
absl::Status CheckSecretFileMode(const std::string& path, absl::string_view what);

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLOUDFLARE_CREDENTIALS_H_
