#include "services/cloudflare/rotation.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "services/cloudflare/credentials.h"

namespace palisade {
namespace {

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", ShownSecretName(path), ": ", strerror(errno)));
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open directory", dir);
  int rc = fsync(fd);
  close(fd);
  if (rc != 0) return Errno("cannot fsync directory", dir);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path) {
  if (absl::Status s = CheckSecretFileMode(path, "cloudflare: rolled token"); !s.ok()) return s;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  std::string value(absl::StripAsciiWhitespace(line));
  if (value.empty()) {
    return absl::DataLossError(
        absl::StrCat("cloudflare: rolled token file ", ShownSecretName(path), " is empty"));
  }
  return value;
}

}  // namespace

absl::Status AtomicWriteFile(const std::string& path, absl::string_view content, mode_t new_mode) {
  struct stat old;
  const bool exists = stat(path.c_str(), &old) == 0;
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  // Created owner-only whatever the umask; the old file's mode is applied after the chown, so
  // the secret is never readable by anyone the old file did not allow.
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Errno("cannot create", tmp);
  auto fail = [&](absl::string_view what) {
    absl::Status s = Errno(what, tmp);
    close(fd);
    unlink(tmp.c_str());
    return s;
  };
  // No chown when the new file has the old one's owner already: a process that may not chown
  // at all (a seccomp filter kills it) still replaces its own files.
  struct stat mine;
  if (fstat(fd, &mine) != 0) return fail("cannot stat");
  if (exists && (mine.st_uid != old.st_uid || mine.st_gid != old.st_gid) &&
      fchown(fd, old.st_uid, old.st_gid) != 0 && errno != EPERM) {
    return fail("cannot chown");
  }
  if (fchmod(fd, exists ? (old.st_mode & 07777) : new_mode) != 0) return fail("cannot chmod");
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot write");
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) return fail("cannot fsync");
  if (close(fd) != 0) {
    absl::Status s = Errno("cannot close", tmp);
    unlink(tmp.c_str());
    return s;
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno("cannot rename over", path);
    unlink(tmp.c_str());
    return s;
  }
  return FsyncDir(DirOf(path));
}

std::string RolledSideFile(const std::string& token_file) {
  return absl::StrCat(token_file, ".rolled");
}

absl::Status CheckTokenFileWritable(const std::string& token_file) {
  const std::string probe = absl::StrCat(token_file, ".probe");
  auto refused = [&](absl::string_view what) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cloudflare.rotation: palisaded cannot ", what, " ", ShownSecretName(probe), " (",
        strerror(errno), ") next to cloudflare.token_file ", ShownSecretName(token_file),
        ": a rolled secret could not be saved ",
        "there and the next start would read a dead token, so no roll is sent; put the token "
        "file in a directory palisaded can write (its state directory) or remove "
        "cloudflare.rotation"));
  };
  int fd = open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return refused("create");
  close(fd);
  if (unlink(probe.c_str()) != 0 && errno != ENOENT) return refused("remove");
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Secret>> RollForward(const std::string& token_file,
                                                  CloudflareClient& client, bool account_owned) {
  const std::string side = RolledSideFile(token_file);
  struct stat st;
  if (stat(side.c_str(), &st) != 0) return std::optional<Secret>();
  absl::StatusOr<std::string> value = ReadSecretFile(side);
  if (!value.ok()) return value.status();
  Secret secret(*value);
  absl::StatusOr<TokenInfo> info = client.VerifyOtherToken(secret, account_owned);
  if (info.status().code() == absl::StatusCode::kUnauthenticated) {
    std::cerr << "palisaded: cloudflare: the rolled token in " << ShownSecretName(side)
              << " is refused by Cloudflare; removing it and keeping "
              << ShownSecretName(token_file) << std::endl;
    if (unlink(side.c_str()) != 0) return Errno("cannot remove", side);
    return std::optional<Secret>();
  }
  if (!info.ok()) {
    // The side file is written only after a successful roll and removed only once the token
    // file holds the same value: it is the newest secret even when it cannot be checked now.
    std::cerr << "palisaded: cloudflare: cannot verify the rolled token in "
              << ShownSecretName(side) << " ("
              << info.status().message() << "); rolling forward to it anyway" << std::endl;
  }
  if (absl::Status s = AtomicWriteFile(token_file, *value + "\n"); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cloudflare: rolling the token file ",
                                               ShownSecretName(token_file), " forward from ",
                                               ShownSecretName(side), ": ", s.message()));
  }
  if (unlink(side.c_str()) != 0) return Errno("cannot remove", side);
  if (absl::Status s = FsyncDir(DirOf(side)); !s.ok()) return s;
  client.SetToken(secret);
  std::cerr << "palisaded: cloudflare: rolled " << ShownSecretName(token_file)
            << " forward to the secret of an "
            << "interrupted rotation" << std::endl;
  return std::optional<Secret>(secret);
}

TokenRotator::TokenRotator(CloudflareClient& client, Clock& clock, RotationOptions options,
                           prometheus::Registry& registry)
    : client_(client),
      clock_(clock),
      options_(std::move(options)),
      rolls_(prometheus::BuildCounter()
                 .Name("palisade_cloudflare_token_rolls_total")
                 .Help("Rolls of the service's own API token, by result (ok, failed; lost: "
                       "it went through but its answer, the new secret, was lost).")
                 .Register(registry)),
      last_roll_(prometheus::BuildGauge()
                     .Name("palisade_cloudflare_token_last_roll_timestamp_seconds")
                     .Help("When the service's API token was last rolled (0: not since start).")
                     .Register(registry)
                     .Add({})) {
  absl::MutexLock lock(&mu_);
  next_roll_ = Schedule(clock_.TimeNow());
  backoff_ = options_.initial_backoff;
}

TokenRotator::~TokenRotator() { Stop(); }

absl::Time TokenRotator::Schedule(absl::Time now) const {
  absl::Time next = now + options_.interval;
  if (options_.expires_on) {
    const absl::Time latest = *options_.expires_on - 2 * options_.interval;
    if (latest > now) next = std::min(next, latest);
  }
  return next;
}

namespace {

// A failed roll that Cloudflare may have done all the same (transport error, 5xx, a 2xx that
// could not be read), as opposed to one it refused (4xx) or that was never sent (budget, no
// connection made). A refusal of the secret (401, 9109) is not: the roll goes on a fresh
// connection (Call::fresh_connection), so libcurl cannot have sent it again after a first try
// that went through; the secret was refused before any roll (disabled, expired, rolled
// elsewhere), and the rotator backs off as for any refusal.
bool MayHaveRolled(const absl::Status& s) {
  if (TransportNeverSent(s)) return false;
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::Status TokenRotator::Persist(const Secret& fresh) {
  const std::string side = RolledSideFile(options_.token_file);
  if (absl::Status s = AtomicWriteFile(side, fresh.value() + "\n", 0600); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cloudflare: the token was rolled but the side "
                                               "file could not be written: ",
                                               s.message()));
  }
  const char* hook = std::getenv("PALISADE_TEST_EXIT_AFTER_ROLL");
  if (hook != nullptr && std::string(hook) == "1") {
    std::cerr << "palisaded: test hook: exiting between the side file and the token file"
              << std::endl;
    _exit(86);
  }
  if (absl::Status s = AtomicWriteFile(options_.token_file, fresh.value() + "\n"); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("cloudflare: the token was rolled; ",
                                     ShownSecretName(options_.token_file),
                                     " could not be written (the new secret is kept in ",
                                     ShownSecretName(side), "): ", s.message()));
  }
  if (unlink(side.c_str()) != 0) return Errno("cannot remove", side);
  return FsyncDir(DirOf(side));
}

absl::Status TokenRotator::Unsaved(const absl::Status& persisted) const {
  return absl::Status(
      persisted.code(),
      absl::StrCat("token ", options_.token_id, " was rolled at ", absl::FormatTime(unsaved_since_),
                   " and palisaded uses the new secret, but it could not be saved (",
                   persisted.message(),
                   "); saving it is retried, the token is not rolled again until it is saved, "
                   "and palisaded must not be restarted before then"));
}

absl::Status TokenRotator::SaveLocked() {
  if (absl::Status s = Persist(*unsaved_); !s.ok()) return Unsaved(s);
  unsaved_.reset();
  std::cerr << "palisaded: cloudflare: the new secret of token " << options_.token_id
            << " (rolled at " << absl::FormatTime(unsaved_since_) << ") is now saved in "
            << ShownSecretName(options_.token_file) << std::endl;
  return absl::OkStatus();
}

absl::Status TokenRotator::Lost() const {
  return absl::DataLossError(absl::StrCat(
      "the roll of token ", options_.token_id, " at ", absl::FormatTime(unclear_since_),
      " went through but its new secret was lost (no usable answer came: ", unclear_->message(),
      "; the secret palisaded holds is refused now, as it is after a roll or a revocation): "
      "create a new token and put it in ",
      ShownSecretName(options_.token_file), ", then restart palisaded; no roll is tried until "
      "then"));
}

absl::Status TokenRotator::SettleLocked() {
  absl::StatusOr<TokenInfo> info = client_.VerifyToken(options_.account_owned);
  if (info.ok() || IsIpRestricted(info.status())) {  // the secret held is alive: no roll happened
    unclear_.reset();
    return absl::OkStatus();
  }
  if (info.status().code() == absl::StatusCode::kUnauthenticated) {
    lost_ = true;
    rolls_.Add({{"result", "lost"}}).Increment();
    absl::Status lost = Lost();
    std::cerr << "palisaded: ERROR: cloudflare: " << lost.message() << std::endl;
    return lost;
  }
  return absl::Status(
      unclear_->code(),
      absl::StrCat(
          "the roll of token ", options_.token_id, " at ", absl::FormatTime(unclear_since_),
          " may have gone through (its answer did not arrive: ", unclear_->message(),
          ") and the secret palisaded holds could not be checked (", info.status().message(),
          "): the outcome is unknown; if it went through, the secret in ",
          ShownSecretName(options_.token_file),
          " is dead and the new one lost. No roll is sent until a check tells"));
}

absl::Status TokenRotator::RollLocked() {
  if (lost_) return Lost();
  // A rolled secret not saved yet is saved first, and no roll goes out while it cannot be: the
  // roll would retire the only live secret for one no easier to save.
  if (unsaved_) {
    if (absl::Status s = SaveLocked(); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("no new roll: ", s.message()));
    }
  }
  // A roll whose outcome is unknown is settled first: another would go out with a secret that
  // may be dead.
  if (unclear_) {
    if (absl::Status s = SettleLocked(); !s.ok()) return s;
  }
  // Nor does a roll go out when its secret could not be saved (a read-only directory).
  if (absl::Status s = CheckTokenFileWritable(options_.token_file); !s.ok()) {
    rolls_.Add({{"result", "failed"}}).Increment();
    return s;
  }
  if (options_.before_roll_for_test) options_.before_roll_for_test();
  absl::StatusOr<CloudflareClient::RolledToken> rolled = client_.RollToken(
      options_.token_id, options_.account_owned, [this](const Secret& s) { return Persist(s); });
  const absl::Time now = clock_.TimeNow();
  if (!rolled.ok()) {
    rolls_.Add({{"result", "failed"}}).Increment();
    if (!MayHaveRolled(rolled.status())) return rolled.status();
    // The PUT may have been done with its answer lost (cut, timed out, 5xx, unreadable 2xx):
    // whether the secret held still works tells.
    unclear_ = rolled.status();
    unclear_since_ = now;
    if (absl::Status s = SettleLocked(); !s.ok()) return s;
    return rolled.status();
  }
  // The roll went through whether or not the secret could be written: the old one is dead.
  rolls_.Add({{"result", "ok"}}).Increment();
  last_roll_.Set(static_cast<double>(absl::ToUnixSeconds(now)));
  if (!rolled->persisted.ok()) {
    unsaved_ = std::move(rolled->secret);
    unsaved_since_ = now;
    return Unsaved(rolled->persisted);
  }
  std::cerr << "palisaded: cloudflare: rolled token " << options_.token_id << " (new secret in "
            << ShownSecretName(options_.token_file) << ")" << std::endl;
  return absl::OkStatus();
}

absl::Status TokenRotator::RotateNow() {
  absl::MutexLock roll(&roll_mu_);
  absl::Status s = RollLocked();
  if (!s.ok()) RescheduleLocked();
  return s;
}

void TokenRotator::RescheduleLocked() {
  absl::MutexLock lock(&mu_);
  if (lost_) {
    next_roll_ = absl::InfiniteFuture();
  } else if (unsaved_ || unclear_) {
    // The schedule's ticks save it, or settle the roll: soon, not at the next roll.
    next_roll_ = std::min(next_roll_, clock_.TimeNow() + backoff_);
  }
}

absl::StatusOr<RollReport> TokenRotator::RotateNowForOperator() {
  if (!roll_mu_.TryLock()) {
    return absl::AbortedError(absl::StrCat(
        "a rotation of token ", options_.token_id,
        " is already running (the schedule's, or another operator's); nothing was done: run "
        "the command again once it has finished"));
  }
  absl::Status s = RollLocked();
  RollReport report;
  report.token_id = options_.token_id;
  report.rolled_at = clock_.TimeNow();
  if (s.ok()) {
    absl::MutexLock lock(&mu_);
    next_roll_ = Schedule(report.rolled_at);
    backoff_ = options_.initial_backoff;
    report.next_roll = next_roll_;
  } else {
    RescheduleLocked();
  }
  // Says the token was rolled, or may have been: never "the current secret is kept".
  const bool said = unsaved_.has_value() || lost_ || unclear_.has_value();
  roll_mu_.Unlock();
  if (said) return s;
  if (!s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("the roll of token ", options_.token_id,
                                     " failed; the current secret is kept: ", s.message()));
  }
  // A roll keeps the expiry; it is read again so the operator sees what Cloudflare holds.
  report.expires_on = options_.expires_on;
  absl::StatusOr<TokenInfo> info = client_.GetToken(options_.token_id, options_.account_owned);
  if (info.ok()) {
    report.expires_on = info->expires_on;
    report.expiry_read = true;
  }
  return report;
}

bool TokenRotator::Tick() {
  auto due = [this] {
    absl::MutexLock lock(&mu_);
    return clock_.TimeNow() >= next_roll_;
  };
  // The roll lock is taken only when a roll is due (an operator's roll finds it free otherwise),
  // and the schedule looked at again under it: an operator's roll that just ran moved it.
  if (!due()) return false;
  absl::MutexLock roll(&roll_mu_);
  if (!due()) return false;
  // While a rolled secret is unsaved, the schedule saves it instead of rolling again.
  const bool saving = unsaved_.has_value();
  const absl::Time rolled_at = unsaved_since_;
  absl::Status s = saving ? SaveLocked() : RollLocked();
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.TimeNow();
  if (s.ok()) {
    next_roll_ = Schedule(saving ? rolled_at : now);  // the schedule runs from the roll
    backoff_ = options_.initial_backoff;
  } else if (lost_) {
    next_roll_ = absl::InfiniteFuture();  // logged once, when found
  } else if (unsaved_ || unclear_) {
    std::cerr << "palisaded: cloudflare: " << s.message() << "; trying again in "
              << absl::FormatDuration(backoff_) << std::endl;
    next_roll_ = now + backoff_;
    backoff_ = std::min(options_.max_backoff, backoff_ * 2);
  } else {
    std::cerr << "palisaded: cloudflare: token roll failed (" << s.message()
              << "); the current secret is kept, retrying in " << absl::FormatDuration(backoff_)
              << std::endl;
    next_roll_ = now + backoff_;
    backoff_ = std::min(options_.max_backoff, backoff_ * 2);
  }
  return true;
}

absl::Time TokenRotator::next_roll() const {
  absl::MutexLock lock(&mu_);
  return next_roll_;
}

void TokenRotator::Start() {
  if (thread_.joinable()) return;
  if (absl::Status s = CheckTokenFileWritable(options_.token_file); !s.ok()) {
    std::cerr << "palisaded: WARNING: " << s.message() << std::endl;
  }
  thread_ = std::thread([this] {
    while (!stopping_.WaitForNotificationWithTimeout(options_.poll)) Tick();
  });
}

void TokenRotator::Stop() {
  if (!stopping_.HasBeenNotified()) stopping_.Notify();
  if (thread_.joinable()) thread_.join();
}

}  // namespace palisade
