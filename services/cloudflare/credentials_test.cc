#include "services/cloudflare/credentials.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "cfut_0123456789abcdefghijABCDEFGHIJ0123456789";

std::string WriteFile(const std::string& name, const std::string& content) {
  std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::ofstream(path) << content;
  chmod(path.c_str(), 0600);
  return path;
}

TEST(CredentialsTest, TokenFromFileOrEnvironment) {
  CredentialSource s;
  s.token_file = WriteFile("token", std::string(kToken) + "\n");
  absl::StatusOr<Credentials> c = LoadCredentials(s);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->token.value(), kToken);

  setenv("PALISADE_TEST_TOKEN", kToken, 1);
  s = CredentialSource();
  s.token_env = "PALISADE_TEST_TOKEN";
  EXPECT_EQ(LoadCredentials(s)->token.value(), kToken);
  s.token_env = "PALISADE_TEST_UNSET";
  EXPECT_THAT(LoadCredentials(s),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("PALISADE_TEST_UNSET")));
}

TEST(CredentialsTest, ErrorsNeverShowTheValue) {
  CredentialSource s;
  s.token_file = WriteFile("bad", "not a token: hunter2\n");
  absl::StatusOr<Credentials> c = LoadCredentials(s);
  EXPECT_THAT(c, StatusIs(absl::StatusCode::kInvalidArgument, Not(HasSubstr("hunter2"))));
  s.token_file = "/nonexistent/token";
  EXPECT_THAT(LoadCredentials(s), StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent")));
}

// The token written where its file or variable goes (the config refuses that, but a caller may
// build a CredentialSource itself): the message naming the file or variable shows the token only
// as a fingerprint.
TEST(CredentialsTest, ATokenInTheFileOrVariableNameIsRedactedFromTheError) {
  CredentialSource s;
  s.token_file = kToken;
  absl::StatusOr<Credentials> c = LoadCredentials(s);
  EXPECT_THAT(c, StatusIs(absl::StatusCode::kNotFound,
                          AllOf(HasSubstr("cloudflare: token file"), HasSubstr("[token sha256:"),
                                Not(HasSubstr(kToken)))));
  s.token_file = std::string("/run/secrets/") + kToken;
  EXPECT_THAT(LoadCredentials(s), StatusIs(absl::StatusCode::kNotFound, Not(HasSubstr(kToken))));
  s = CredentialSource();
  s.token_env = kToken;
  EXPECT_THAT(LoadCredentials(s),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("environment variable"), Not(HasSubstr(kToken)))));
  EXPECT_THAT(CheckSecretFileMode(kToken, "cloudflare: token"),
              StatusIs(absl::StatusCode::kNotFound, Not(HasSubstr(kToken))));
}

TEST(CredentialsTest, TokenFileOpenToGroupOrOthersIsRefused) {
  // Before this check a 0644 token file was read and used like any other.
  CredentialSource s;
  s.token_file = WriteFile("open-token", std::string(kToken) + "\n");
  for (mode_t mode : {0644, 0640, 0604, 0660, 0620}) {
    ASSERT_EQ(chmod(s.token_file.c_str(), mode), 0);
    absl::StatusOr<Credentials> c = LoadCredentials(s);
    EXPECT_THAT(c, StatusIs(absl::StatusCode::kPermissionDenied,
                            AllOf(HasSubstr(s.token_file), HasSubstr("chmod 600"),
                                  Not(HasSubstr(kToken)))))
        << std::oct << mode;
  }
  ASSERT_EQ(chmod(s.token_file.c_str(), 0400), 0);
  EXPECT_THAT(LoadCredentials(s), IsOk());
}

// A FIFO at the token file's path (mode 0600 passes the mode check) blocked the start for ever
// in the open; a directory read as "empty". Both are refused, without blocking. Run beside the
// test so a blocked open fails it (after a minute, then unblocked by a writer) instead of
// hanging it.
TEST(CredentialsTest, ATokenFileThatIsNotARegularFileIsRefusedWithoutBlocking) {
  const std::string fifo = std::string(std::getenv("TEST_TMPDIR")) + "/token-fifo";
  unlink(fifo.c_str());
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/token-dir";
  mkdir(dir.c_str(), 0700);
  for (const std::string& path : {fifo, dir}) {
    CredentialSource s;
    s.token_file = path;
    std::future<absl::StatusOr<Credentials>> loaded =
        std::async(std::launch::async, [s] { return LoadCredentials(s); });
    if (loaded.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
      ADD_FAILURE() << path << ": LoadCredentials blocked";
      const int w = open(fifo.c_str(), O_WRONLY | O_NONBLOCK);  // lets the blocked open return
      if (w >= 0) close(w);
    }
    EXPECT_THAT(loaded.get(), StatusIs(absl::StatusCode::kInvalidArgument,
                                       AllOf(HasSubstr(path), HasSubstr("not a regular file"))));
    EXPECT_THAT(CheckSecretFileMode(path, "cloudflare: token"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular file")));
  }
}

TEST(CredentialsTest, GlobalApiKeyIsRefusedUnlessAllowed) {
  CredentialSource s;
  s.email = "ops@example.com";
  s.api_key_file = WriteFile("key", "0123456789abcdef0123456789abcdef01234\n");
  EXPECT_THAT(LoadCredentials(s),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("Global API Key")));
  s.allow_global_api_key = true;
  absl::StatusOr<Credentials> c = LoadCredentials(s);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->email, "ops@example.com");
  EXPECT_TRUE(c->token.empty());
}

}  // namespace
}  // namespace palisade
