#include "services/cloudflare/credentials.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace palisade {
namespace {

absl::StatusOr<std::string> ReadFirstLine(const std::string& path, const char* what) {
  if (absl::Status s = CheckSecretFileMode(path, what); !s.ok()) return s;
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(what, " file ", path, " cannot be read"));
  std::string line;
  std::getline(in, line);
  std::string value(absl::StripAsciiWhitespace(line));
  if (value.empty())
    return absl::InvalidArgumentError(absl::StrCat(what, " file ", path, " is empty"));
  return value;
}

}  // namespace

absl::Status CheckSecretFileMode(const std::string& path, absl::string_view what) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(what, " file ", path, " cannot be read"));
  }
  // A secret others on the host can read (or rewrite) is a secret already shared: refused, not
  // warned about, so the mistake is fixed before the token is ever used.
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    char mode[8];
    snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return absl::PermissionDeniedError(absl::StrCat(
        what, " file ", path, " is accessible by group or others (mode ", mode,
        "); it holds a secret: chmod 600 it (owner only)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Credentials> LoadCredentials(const CredentialSource& source) {
  Credentials creds;
  if (!source.api_key_file.empty() || !source.email.empty()) {
    if (!source.allow_global_api_key) {
      return absl::FailedPreconditionError(
          "cloudflare: the Global API Key (email + api_key_file) is refused; use an API token, "
          "or set allow_global_api_key: true to accept the risk");
    }
    if (source.email.empty() || source.api_key_file.empty()) {
      return absl::InvalidArgumentError(
          "cloudflare: the Global API Key needs both email and api_key_file");
    }
    absl::StatusOr<std::string> key = ReadFirstLine(source.api_key_file, "cloudflare: api key");
    if (!key.ok()) return key.status();
    creds.email = source.email;
    creds.api_key = Secret(*key);
    return creds;
  }
  std::string token;
  if (!source.token_file.empty()) {
    absl::StatusOr<std::string> t = ReadFirstLine(source.token_file, "cloudflare: token");
    if (!t.ok()) return t.status();
    token = *t;
  } else if (!source.token_env.empty()) {
    const char* v = std::getenv(source.token_env.c_str());
    if (v == nullptr || *v == '\0') {
      return absl::NotFoundError(
          absl::StrCat("cloudflare: environment variable ", source.token_env, " is not set"));
    }
    token = std::string(absl::StripAsciiWhitespace(v));
  } else {
    return absl::InvalidArgumentError("cloudflare: set token_file or token_env");
  }
  if (!TokenShaped(token)) {
    return absl::InvalidArgumentError(
        "cloudflare: the API token does not look like a token (40+ characters of "
        "[A-Za-z0-9_-])");
  }
  creds.token = Secret(token);
  return creds;
}

}  // namespace palisade
