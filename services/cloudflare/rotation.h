// Rotation of Palisade's own API token: rolls the secret (PUT .../tokens/{id}/value) on an
// interval, and writes the new value where the next start reads it without ever losing it.
//
// Order of one roll (crash-safe):
//   1. roll (CloudflareClient::RollToken: calls are held behind the credential gate, the old
//      secret is dead from here on);
//   2. write the new secret to the side file (token_file + ".rolled", same dir, mode 0600,
//      fsync, rename, fsync dir);
//   3. write it to the token file atomically (same owner and mode, fsync, rename, fsync dir);
//   4. delete the side file (fsync dir).
// A side file found at start (RollForward) means a crash between 2 and 4: the token file may
// hold the dead secret, the side file holds the live one; it is verified and rolled forward.
// A crash between 1 and 2 loses the new secret: nothing can save it (the API returns it once);
// the window is one local file write.
// A write that fails (2, 3 or 4: a full disk, a read-only directory) leaves the roll done: the
// client uses the new secret and the old one is dead. The rotator keeps the new secret in
// memory and writes it again on the schedule's ticks (with backoff) until it is saved; no roll
// goes out meanwhile, the schedule's or an operator's, since it would retire the only live
// secret for one no easier to save. Once saved, the schedule runs from that roll.
// So that a write does not fail that way, no roll goes out while no file can be created next to
// the token file (CheckTokenFileWritable: /run/credentials, /etc under ProtectSystem=strict).
// A roll whose answer was lost (cut, timed out, 5xx, an unreadable 2xx) or whose secret was
// refused (libcurl may have sent it again, with the retired secret) may have gone through:
// the secret held is verified. Alive: the roll did not happen. Refused: the roll went through
// and its secret is lost; said so (create a new token), counted (result="lost"), never rolled
// again. Not checkable: the outcome is unknown, said so, and checked again before any roll.
//
// Test hook: PALISADE_TEST_EXIT_AFTER_ROLL=1 in the environment makes the process _exit(86)
// after step 2 (the e2e crash test).
//
// Thread-safety: TokenRotator's methods may be called from any thread; rolls are serialised.
#ifndef PALISADE_SERVICES_CLOUDFLARE_ROTATION_H_
#define PALISADE_SERVICES_CLOUDFLARE_ROTATION_H_

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/cloudflare/client.h"
#include "services/common/clock.h"

namespace palisade {

// Replaces `path` with `content`: a temporary file in the same directory, given the mode and
// owner of the file it replaces (`new_mode` when there is none), written, fsynced, renamed over
// `path`, then the directory fsynced. Readers see the old content or the new, never a mix.
// fchown runs only when the owner differs from the writer's (never for a file palisaded owns:
// under a seccomp filter without @chown it would kill the process); EPERM leaves the writer's.
absl::Status AtomicWriteFile(const std::string& path, absl::string_view content,
                             mode_t new_mode = 0600);

// Where a rolled secret waits until the token file holds it.
std::string RolledSideFile(const std::string& token_file);

// Whether a rolled secret could be saved next to `token_file`: creates and removes
// `<token_file>.probe`. kFailedPrecondition naming the token file, the probe and why.
absl::Status CheckTokenFileWritable(const std::string& token_file);

// At start, before the token is used. No side file: nullopt. A side file: its secret is
// verified (as itself); accepted, or not checkable (Cloudflare unreachable: by construction the
// side file holds the newest secret), it is written to the token file, the side file removed,
// the client switched to it, and it is returned. Refused (invalid): the side file is removed
// and the token file kept (nullopt). Errors name the files, never the secret.
absl::StatusOr<std::optional<Secret>> RollForward(const std::string& token_file,
                                                  CloudflareClient& client, bool account_owned);

struct RotationOptions {
  std::string token_file;
  std::string token_id;
  bool account_owned = false;
  absl::Duration interval = absl::Hours(24 * 30);
  // When the token expires, rolls are scheduled to land 2 intervals before it at the latest.
  std::optional<absl::Time> expires_on;
  absl::Duration initial_backoff = absl::Minutes(1);
  absl::Duration max_backoff = absl::Hours(1);
  // How often the background thread looks at the schedule.
  absl::Duration poll = absl::Seconds(1);
  // Test hook: called with the roll lock held, before the roll is sent (a test holds a roll
  // "running" here to see a second one refused). Unset in production.
  std::function<void()> before_roll_for_test;
};

// What an operator's roll (palisadectl cloudflare rotate) reports: never the secret.
struct RollReport {
  std::string token_id;
  absl::Time rolled_at;
  // The token's expiry as read after the roll (a roll keeps it), or the one known at start when
  // the token may not read itself; nullopt: it never expires.
  std::optional<absl::Time> expires_on;
  bool expiry_read = false;  // expires_on comes from a read after the roll
  absl::Time next_roll;      // the schedule restarts from the roll
};

class TokenRotator {
 public:
  TokenRotator(CloudflareClient& client, Clock& clock, RotationOptions options,
               prometheus::Registry& registry);
  ~TokenRotator();  // stops the thread

  // One roll now, waiting for one already running (the schedule). A failed roll keeps the old
  // secret (checked when Cloudflare may have done it: see above); the schedule then retries
  // with backoff. Refused (kFailedPrecondition) while no file can be created next to the token
  // file; kDataLoss once a roll's secret was lost. A roll whose secret could not be saved
  // returns the write's error, saying the token was rolled; while a rolled secret is unsaved,
  // this saves it instead of rolling, and fails (naming no new roll) if it still cannot.
  absl::Status RotateNow();
  // One roll now for an operator (Admin.RotateToken): never waits behind another roll, it is
  // refused (kAborted, saying so) while one runs. On success the schedule restarts from now.
  // Errors are the roll's (kUnavailable, kPermissionDenied, ...), or the write's when the roll
  // went through but its secret could not be saved (as RotateNow), or say that a roll whose
  // answer was lost went through (kDataLoss) or may have; the secret is never in them.
  absl::StatusOr<RollReport> RotateNowForOperator();
  // Rolls when the schedule says so, or saves a rolled secret not saved yet; returns whether it
  // tried. For tests on a SimulatedClock; the thread calls it every `poll`.
  bool Tick();
  absl::Time next_roll() const;

  void Start();
  void Stop();

 private:
  absl::Status Persist(const Secret& fresh);
  absl::Status RollLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(roll_mu_);
  // Saves unsaved_ (Persist) and forgets it once saved.
  absl::Status SaveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(roll_mu_);
  // The error for a rolled secret that could not be saved (`persisted`: the write's).
  absl::Status Unsaved(const absl::Status& persisted) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(roll_mu_);
  absl::Time Schedule(absl::Time now) const;
  // After a roll whose outcome is unclear_: verifies the secret held. Alive: forgets unclear_;
  // refused: sets lost_ (counted, logged) and returns Lost(); else the outcome is unknown.
  absl::Status SettleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(roll_mu_);
  absl::Status Lost() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(roll_mu_);
  // After a failure: no next roll once lost_, a soon one while unsaved_ or unclear_.
  void RescheduleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(roll_mu_);

  CloudflareClient& client_;
  Clock& clock_;
  const RotationOptions options_;
  absl::Mutex roll_mu_;  // one roll at a time
  // A rolled secret the client uses that could not be saved yet, and when it was rolled.
  std::optional<Secret> unsaved_ ABSL_GUARDED_BY(roll_mu_);
  absl::Time unsaved_since_ ABSL_GUARDED_BY(roll_mu_);
  // A failed roll Cloudflare may have done (its error) and when; lost_: it did.
  std::optional<absl::Status> unclear_ ABSL_GUARDED_BY(roll_mu_);
  absl::Time unclear_since_ ABSL_GUARDED_BY(roll_mu_);
  bool lost_ ABSL_GUARDED_BY(roll_mu_) = false;
  mutable absl::Mutex mu_;
  absl::Time next_roll_ ABSL_GUARDED_BY(mu_);
  absl::Duration backoff_ ABSL_GUARDED_BY(mu_);
  prometheus::Family<prometheus::Counter>& rolls_;
  prometheus::Gauge& last_roll_;
  absl::Notification stopping_;
  std::thread thread_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLOUDFLARE_ROTATION_H_
