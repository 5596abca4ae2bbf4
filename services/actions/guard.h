// The safety guard, checked by the dispatcher before any apply reaches the edge, so Palisade can
// never become an attacker's tool to take a site down:
//  - the never-ban set: loopback, private, link-local and CGNAT ranges, the configured
//    allowlist, the addresses palisaded itself runs on, and Cloudflare's own published ranges
//    (shipped as data, deploy/cloudflare-ips.txt). A target inside it, or a range overlapping
//    it, is refused outright and counted; an IPv6 form that embeds an IPv4 address (NAT64,
//    6to4, Teredo, IPv4-compatible; services/common/ip.h EmbeddedIpv4) is judged as that IPv4
//    too. What an actuator sends can be wider than the target (the IP list widens IPv6 to a
//    prefix): that actuator checks its item against the same set (TouchesNeverBan). The set
//    is shared (SharedNeverBan): a reload that changes the allowlist swaps it whole for the
//    guard and those actuators at once (Dispatcher::SetNeverBan).
//  - the blast-radius limit: at most N targets newly restricted per minute over all actuators,
//    and at most M objects active per actuator. A decision the table made to replace one
//    whose object stands at the edge (a block replacing a challenge: Decision.replaces; never
//    a creation after an expiry or an operator's withdrawal) restricts no new target: it
//    spends no per-minute budget (the target spent it when first restricted), and its
//    actuator's cap does not count the target twice (the dispatcher tells: ActionOp::replaces;
//    the replaced object's remove waits for it). Token revocations have a per-minute budget of
//    their own: they block no visitor, and a burst of them (tokens in a log) must not hold the
//    bans behind it.
//    Threat-feed entries (a version is vetted by its feed's shrink and growth guards) and an
//    operator's manual decisions (a deliberate act, which a flood of detections must not hold)
//    spend neither budget; the active cap holds them too. Past a limit, applies are held: kept,
//    reported (metric, log line, Admin.Status), not pushed, until an operator releases them
//    (Admin.ReleaseHeld).
//  - palisaded's own API token (its id, known once verified at start): a revocation of it is
//    refused outright whatever a log says (the audit-log misuse rule catches it used from an
//    unexpected address): the dispatcher raises an alert instead (ActionOutcome::alert).
// Thread-safety: Guard is not thread-safe (the dispatcher calls it under its lock);
// SharedNeverBan is.
#ifndef PALISADE_SERVICES_ACTIONS_GUARD_H_
#define PALISADE_SERVICES_ACTIONS_GUARD_H_

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.pb.h"
#include "services/common/ip.h"

namespace palisade {

// The never-ban set, as a handle: copies share one set, and Set replaces it for every copy. The
// guard, the IP list actuator and the reconciler's copy of the list options hold one each, so a
// reload that changes the allowlist reaches all of them at once. Readers take a snapshot (Get)
// that stays whole while a Set replaces it.
class SharedNeverBan {
 public:
  SharedNeverBan() : SharedNeverBan(CidrSet()) {}
  // Implicit: a set is its own first version (`options.never_ban = set;`).
  SharedNeverBan(CidrSet set);  // NOLINT(google-explicit-constructor)

  std::shared_ptr<const CidrSet> Get() const;
  void Set(CidrSet set);

 private:
  struct Slot {
    mutable absl::Mutex mu;
    std::shared_ptr<const CidrSet> set ABSL_GUARDED_BY(mu);
  };
  std::shared_ptr<Slot> slot_;
};

struct GuardOptions {
  // Ranges never acted upon, on top of NonPublicRanges() (services/common/ip.h).
  SharedNeverBan never_ban;
  int max_new_per_minute = 60;
  // Token revocations (token fingerprint or id targets) per minute, apart from the bans. Only
  // verified tokens get here (services/actions/token_vetter.h); 30 a minute is far more than an
  // honest leak, and a flood of real leaked tokens is held for an operator, not the bans.
  int max_revocations_per_minute = 30;
  int max_active_per_actuator = 10000;
  // palisaded's own API token id: never revoked (OwnToken). Empty: unknown (not verified);
  // OwnToken cannot tell then, and the token actuator learns the id before any revocation.
  std::string own_token_id;
};

class Guard {
 public:
  enum class Verdict { kAllow, kNeverBan, kHeld };

  explicit Guard(GuardOptions options);

  // For an apply at `now` with `active` decisions already at the edge for its actuator. kAllow
  // counts the apply toward the per-minute limit (a feed or manual one spends none, nor one
  // that `replaces_standing`: it takes over a target already restricted at the edge; the
  // caller leaves the object it replaces out of `active` when both are the same actuator's).
  Verdict Check(const palisade::v1::Decision& d, absl::Time now, int active,
                bool replaces_standing = false);
  // Counts a released (operator-approved) apply toward the budget its kind spends (bans, or
  // revocations; a feed or manual one none) without checking it.
  void Record(const palisade::v1::Decision& d, absl::Time now);

  // True when the target is (or overlaps) the never-ban set. Paths and tokens never are.
  bool NeverBan(const palisade::v1::Target& target) const;
  // Replaces the never-ban set, for every holder of the options' handle (see SharedNeverBan).
  void SetNeverBan(CidrSet never_ban) { options_.never_ban.Set(std::move(never_ban)); }
  // True when the target is palisaded's own API token (by id).
  bool OwnToken(const palisade::v1::Target& target) const;

  // Reads a file of CIDRs, one per line, '#' comments. Errors name the file and line.
  static absl::StatusOr<std::vector<std::string>> ReadCidrFile(const std::string& path);
  // The addresses of this host's interfaces.
  static std::vector<std::string> LocalAddresses();
  // The built-in copy of Cloudflare's published ranges (deploy/cloudflare-ips.txt).
  static std::vector<std::string> CloudflareRanges();

 private:
  GuardOptions options_;  // only never_ban changes (SetNeverBan)
  std::deque<absl::Time> recent_;              // new bans allowed in the last minute
  std::deque<absl::Time> recent_revocations_;  // revocations allowed in the last minute
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_ACTIONS_GUARD_H_
