// The four Cloudflare actuators (see docs/ARCHITECTURE.md and ../shared/cloudflare-api.md):
//
//  AccessRuleActuator  one IP access rule per decision; notes "palisade:<decision id> ..." (with
//                      the instance's tag: Mark) so Palisade can find exactly its own rules; a
//                      duplicate (10009) is adopted when its mode is the decision's (else the
//                      apply fails, naming it), as foreign unless it bears this instance's mark.
//  IpListActuator      decisions batched into one list operation per flush on Palisade's IP
//                      list, which one custom rule (`ip.src in $list`) blocks; list and rule are
//                      created when missing (the rule also enabled and put right when edited),
//                      checked on first use and again by the reconciler on each run (EnsureRule);
//                      IPv6 collapsed to a prefix; a cap on its items; a bulk add that the
//                      account's item quota (which its other lists share) refuses is split:
//                      what fits goes in (an operator's bans, then rules', then feeds'), the
//                      rest fail kResourceExhausted and are retried. What the account's lists
//                      hold together, as last read (by the actuator, or by the reconciler
//                      on each run: ListsRead), is gauged against that quota
//                      (palisade_cloudflare_account_list_items, ..._limit) for an alert.
//  RateLimitActuator   a temporary rate-limiting rule for a path under attack.
//  TokenActuator       a leaked token is verified (to learn its id), then disabled or deleted.
//                      Its removal leaves the token revoked: a leaked secret is never re-enabled.
//                      palisaded's own token is never revoked: its id, when not given, is
//                      learnt (verify) before the first revocation; until then none goes out.
//                      A 404 is "NOT revoked" unless the token was seen first (a GET by id, or
//                      verify by secret, which is asked again after the 404): then a DELETE
//                      whose answer was lost went through.
//
// Thread-safety: each is driven by the dispatcher's worker thread only.
#ifndef PALISADE_SERVICES_ACTIONS_ACTUATORS_H_
#define PALISADE_SERVICES_ACTIONS_ACTUATORS_H_

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/actions/actuator.h"
#include "services/actions/guard.h"
#include "services/cloudflare/client.h"
#include "services/common/ip.h"

namespace palisade {

// Palisade's marks on what it makes at the edge, naming the decision and, when
// CloudflareConfig.instance is set, the palisaded that made it (instances sharing a zone or an
// account each have their own):
//   access-rule notes   "palisade:<id> <rule>"   tagged "palisade:<id>@<instance> <rule>"
//   list-item comments  "palisade:<id>"          tagged "palisade:<id>@<instance>"
//   rate-limit refs     "palisade_<id>"          tagged "palisade_<id>_<instance>"
// A mark is an instance's own only when its <id> has the shape of a decision id (16 lowercase
// hex: DecisionTable::NewIdLocked) and its tag is that instance (none for an empty one): a
// human's rule noted "palisade:office", and another instance's marks, are never deleted or
// taken as its own.
bool IsDecisionId(absl::string_view id);
// The list-item comment (and, with the rule after a space, the access-rule notes) for `id`.
std::string Mark(absl::string_view id, absl::string_view instance);
// The rate-limit rule ref for `id`.
std::string RefMark(absl::string_view id, absl::string_view instance);
// The decision id that access-rule notes or a list-item comment mark as `instance`'s own; ""
// when they are not its mark.
std::string MarkedDecisionId(absl::string_view notes, absl::string_view instance);
// The decision id that a rate-limit rule's ref marks as `instance`'s own; "" when it is not.
std::string RefDecisionId(absl::string_view ref, absl::string_view instance);

class AccessRuleActuator final : public Actuator {
 public:
  // `instance`: CloudflareConfig.instance, the tag in the notes ("" for none).
  AccessRuleActuator(CloudflareClient& client, RuleScope scope, std::string instance = "")
      : client_(client), scope_(scope), instance_(std::move(instance)) {}
  std::string name() const override { return "access_rule"; }
  void Run(std::vector<ActionOp*>& ops) override;
  // A duplicate (10009) of the same mode is adopted, even one another Palisade decision made
  // (as foreign when it is not this instance's: never deleted by it).
  bool AdoptsExisting() const override { return true; }

  // The notes Palisade writes on its rules (and searches for).
  static std::string Notes(const palisade::v1::Decision& d, absl::string_view instance = "");

 private:
  absl::Status Apply(ActionOp& op);
  absl::Status Remove(ActionOp& op);
  // The rule already at the edge for a target (after a 10009), using only filters the API
  // takes: the value search for IPv4, else Palisade's notes, then every page.
  absl::StatusOr<std::optional<AccessRule>> FindRule(const std::string& target,
                                                     const std::string& value);
  CloudflareClient& client_;
  RuleScope scope_;
  const std::string instance_;
};

struct IpListOptions {
  std::string list_name = "palisade_block";
  // CloudflareConfig.instance: the tag in the items' comments ("" for none).
  std::string instance;
  // This list's cap (the account's item quota below Enterprise, 10,000, which its other lists
  // share: a bulk add that fails on it is split, the items that fit put in, the rest retried).
  int max_items = 10000;
  int ipv6_prefix = 64;
  // The guard's never-ban set (on top of NonPublicRanges()): the guard judges the decision's
  // target, but an IPv6 address goes out widened to `ipv6_prefix`, so the list judges the item
  // it actually sends again (see ItemFor). The guard's own handle (GuardOptions::never_ban), so
  // a reload that swaps the set (Dispatcher::SetNeverBan) reaches the list too.
  SharedNeverBan never_ban;
};

class IpListActuator final : public Actuator {
 public:
  IpListActuator(CloudflareClient& client, IpListOptions options, prometheus::Registry& registry);
  std::string name() const override { return "ip_list"; }
  // Adds are one bulk operation: an op whose item is in that operation succeeds or fails with
  // it, and only a confirmed item is counted as made.
  void Run(std::vector<ActionOp*>& ops) override;
  bool RunsInBatches() const override { return true; }
  // Counts the decisions per item again from the edge records, so an item shared by several
  // decisions (one IPv6 /64) still stays until the last of them ends after a restart.
  void Restore(const std::vector<EdgeRef>& made) override;
  void Forget(const EdgeRef& made) override;
  // The reconciler's read of the lists: the counts (and the gauges) are taken from it, so the
  // quota alert does not wait for this actuator's next read, which may be hours away.
  void ListsRead(const std::vector<IpList>& lists) override;

  // The list item an address or range becomes ("203.0.113.7", "2001:db8:1:2::/64"). An IPv6
  // item that the configured prefix would spread over a never-ban address is narrowed to the
  // widest prefix, down to /64, that spares it; kFailedPrecondition when even the /64 holds one.
  absl::StatusOr<std::string> ItemFor(const palisade::v1::Target& target) const;

  // The custom rule that blocks the list (ref "palisade_blocklist", "palisade_blocklist_<tag>"
  // with cloudflare.instance, one rule per palisaded sharing a zone; the list must exist):
  // created when missing, enabled and given back its expression and action when changed by
  // hand. Returns true when it had to do any of that. The actuator checks once, on first use;
  // the reconciler on every run, since the list blocks nothing without it.
  absl::StatusOr<bool> EnsureRule();

 private:
  // ItemFor, saying whether the never-ban set narrowed the item.
  absl::StatusOr<std::string> Item(const palisade::v1::Target& target, bool* narrowed) const;
  // Finds the list by its name (list_id_ stays empty when there is none); makes nothing.
  absl::Status FindList();
  // Reads every list of the account: finds Palisade's (by id once known: kNotFound when it is
  // gone) and counts its items and the other lists' items.
  absl::Status ReadLists();
  // Counts `lists` (what ReadLists read, or the reconciler's): finds Palisade's list by id once
  // known, else by name; false when it is not among them.
  bool CountLists(const std::vector<IpList>& lists);
  // Finds or creates the list and the custom rule that blocks it.
  absl::Status EnsureListAndRule();
  // Sets the gauges from the counts (the account's once its lists were read).
  void PublishCounts();

  CloudflareClient& client_;
  const IpListOptions options_;
  std::string list_id_;
  bool rule_ready_ = false;
  // Decisions per item: an item shared by several decisions (one IPv6 /64) stays until the last
  // of them ends.
  std::map<std::string, int> refs_;
  int items_in_list_ = 0;
  // Items in the account's other lists, as last read: the account's item quota spans them all
  // (read when a bulk add fails, to tell the quota).
  int items_elsewhere_ = 0;
  // The counts were read from the API during this Run.
  bool counts_read_ = false;
  // The counts were read from the API at least once (items_elsewhere_ is known).
  bool account_read_ = false;
  // Item ids by item, from the last listing (an item added since is not in it): a removal lists
  // the list only when one of its items is missing here.
  std::map<std::string, std::string> item_ids_;
  prometheus::Gauge& items_gauge_;
  prometheus::Gauge& cap_gauge_;
  prometheus::Counter& overflow_;
  prometheus::Family<prometheus::Counter>& never_ban_;  // by reason:
  prometheus::Counter& never_ban_narrowed_;
  prometheus::Counter& never_ban_refused_;
  // The account's lists together and their quota (max_items), for an alert before a bulk add
  // is split on it. Fed only by the reads above and the reconciler's (ListsRead): no call of
  // their own.
  prometheus::Gauge& account_items_gauge_;
  prometheus::Gauge& account_limit_gauge_;
};

// Defaults are the only values the Free plan takes (10 s / 10 s), valid on every plan; the
// config sets them per plan (services/server/config.cc).
struct RateLimitOptions {
  int period = 10;
  int requests_per_period = 10;
  int mitigation_timeout = 10;
  std::string action = "block";
  // CloudflareConfig.instance: the tag in the rules' refs ("" for none).
  std::string instance;
};

class RateLimitActuator final : public Actuator {
 public:
  RateLimitActuator(CloudflareClient& client, RateLimitOptions options)
      : client_(client), options_(std::move(options)) {}
  std::string name() const override { return "rate_limit"; }
  void Run(std::vector<ActionOp*>& ops) override;

  // The rule expression for a path; kInvalidArgument for a path that is not a plain URI path
  // (nothing from a log line reaches an expression unvalidated).
  static absl::StatusOr<std::string> ExpressionFor(const std::string& path);

 private:
  absl::Status Apply(ActionOp& op);
  absl::Status Remove(ActionOp& op);
  CloudflareClient& client_;
  const RateLimitOptions options_;
};

class TokenActuator final : public Actuator {
 public:
  // `own_token_id`: palisaded's own token, which it refuses to revoke whatever a log says.
  // Empty (the verify at start failed): learnt with the client's verify before any revocation.
  TokenActuator(CloudflareClient& client, bool delete_token, std::string own_token_id = "")
      : client_(client), delete_(delete_token), own_token_id_(std::move(own_token_id)) {}
  std::string name() const override { return "token_revocation"; }
  void Run(std::vector<ActionOp*>& ops) override;

 private:
  absl::Status Apply(ActionOp& op);
  // Fails closed: OK only once palisaded's own token id is known (verified once, then kept).
  // kUnavailable while it cannot be learnt (the op is retried, nothing is revoked); a refused
  // credential keeps its code (the op waits for the credentials).
  absl::Status LearnOwnTokenId();
  CloudflareClient& client_;
  const bool delete_;
  std::string own_token_id_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_ACTIONS_ACTUATORS_H_
