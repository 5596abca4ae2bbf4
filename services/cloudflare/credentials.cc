#include "services/cloudflare/credentials.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "services/common/fingerprint.h"

namespace palisade {
namespace {

// A secret file is a regular file (a FIFO would block its reader; a directory reads as empty),
// owner-only: a secret others on the host can read (or rewrite) is a secret already shared,
// refused, not warned about, so the mistake is fixed before the token is ever used.
absl::Status CheckSecretStat(const struct stat& st, const std::string& path,
                             absl::string_view what) {
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " file ", ShownSecretName(path), " is not a regular file"));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    char mode[8];
    snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return absl::PermissionDeniedError(absl::StrCat(
        what, " file ", ShownSecretName(path), " is accessible by group or others (mode ", mode,
        "); it holds a secret: chmod 600 it (owner only)"));
  }
  return absl::OkStatus();
}

// A token is one line; more than this is not a token file.
constexpr size_t kMaxSecretFileBytes = 64 << 10;

// Opened once, without blocking (a FIFO at the path, mode 0600, blocked the start for ever in
// the open), checked on the descriptor and read from it: the file checked is the file read.
absl::StatusOr<std::string> ReadFirstLine(const std::string& path, const char* what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat(what, " file ", ShownSecretName(path), " cannot be read"));
  }
  struct stat st;
  absl::Status s = ::fstat(fd, &st) == 0
                       ? CheckSecretStat(st, path, what)
                       : absl::NotFoundError(absl::StrCat(what, " file ", ShownSecretName(path),
                                                          " cannot be read"));
  std::string content;
  char buf[4096];
  while (s.ok() && content.size() < kMaxSecretFileBytes &&
         content.find('\n') == std::string::npos) {
    const ssize_t n = ::read(fd, buf, std::min(sizeof(buf), kMaxSecretFileBytes - content.size()));
    if (n == 0) break;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s = absl::NotFoundError(
          absl::StrCat(what, " file ", ShownSecretName(path), " cannot be read"));
      break;
    }
    content.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!s.ok()) return s;
  std::string value(absl::StripAsciiWhitespace(content.substr(0, content.find('\n'))));
  if (value.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " file ", ShownSecretName(path), " is empty"));
  }
  return value;
}

}  // namespace

std::string ShownSecretName(absl::string_view name) {
  std::string redacted;
  return RedactTokenShapes(name, &redacted) ? redacted : std::string(name);
}

absl::Status CheckSecretFileMode(const std::string& path, absl::string_view what) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat(what, " file ", ShownSecretName(path), " cannot be read"));
  }
  return CheckSecretStat(st, path, what);
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
      return absl::NotFoundError(absl::StrCat("cloudflare: environment variable ",
                                              ShownSecretName(source.token_env), " is not set"));
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
