#include "services/actions/actuators.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "services/common/ip.h"

namespace palisade {
namespace {

using palisade::v1::Decision;
using palisade::v1::TargetKind;

// The custom rule blocking the list: one a palisaded, by its instance tag (two instances on one
// zone, each with its own list, rewrote one shared rule to their own list at each reconcile).
std::string BlocklistRef(const std::string& instance) {
  return instance.empty() ? "palisade_blocklist" : "palisade_blocklist_" + instance;
}
constexpr char kCustomPhase[] = "http_request_firewall_custom";
constexpr char kRateLimitPhase[] = "http_ratelimit";

absl::StatusOr<std::string> ModeFor(palisade::v1::Action action) {
  switch (action) {
    case palisade::v1::ACTION_BLOCK:
      return std::string("block");
    case palisade::v1::ACTION_CHALLENGE:
      return std::string("challenge");
    case palisade::v1::ACTION_MANAGED_CHALLENGE:
      return std::string("managed_challenge");
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("an access rule cannot carry action ", palisade::v1::Action_Name(action)));
  }
}

}  // namespace

bool IsTransient(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    // A reply over the client's byte caps: the API misbehaving, not the decision.
    case absl::StatusCode::kOutOfRange:
    // A create whose answer was lost (CloudflareClient: outcome unknown, not sent again): the
    // next run reads the state back first (the list by its name, a rule by its ref) and makes
    // only what is not there.
    case absl::StatusCode::kUnknown:
      return true;
    default:
      return false;
  }
}

bool IsDecisionId(absl::string_view id) {
  return id.size() == 16 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string Mark(absl::string_view id, absl::string_view instance) {
  return instance.empty() ? absl::StrCat("palisade:", id)
                          : absl::StrCat("palisade:", id, "@", instance);
}

std::string RefMark(absl::string_view id, absl::string_view instance) {
  return instance.empty() ? absl::StrCat("palisade_", id)
                          : absl::StrCat("palisade_", id, "_", instance);
}

namespace {

// "<id>" or "<id><sep><tag>" -> "<id>" when the tag is `instance` (none for an empty one) and the
// id a decision id's; else "". An instance is [a-z0-9-]: the first `sep` ends the id.
std::string OwnId(absl::string_view marked, char sep, absl::string_view instance) {
  const size_t at = marked.find(sep);
  const bool tagged = at != absl::string_view::npos;
  if (tagged == instance.empty()) return "";  // a tag where none is wanted, or none where one is
  if (tagged && marked.substr(at + 1) != instance) return "";
  const absl::string_view id = marked.substr(0, at);
  return IsDecisionId(id) ? std::string(id) : "";
}

}  // namespace

std::string MarkedDecisionId(absl::string_view notes, absl::string_view instance) {
  if (!absl::ConsumePrefix(&notes, "palisade:")) return "";
  return OwnId(notes.substr(0, notes.find(' ')), '@', instance);
}

std::string RefDecisionId(absl::string_view ref, absl::string_view instance) {
  if (!absl::ConsumePrefix(&ref, "palisade_")) return "";
  return OwnId(ref, '_', instance);
}

bool IsCredentialError(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnauthenticated ||
         s.code() == absl::StatusCode::kPermissionDenied;
}

// --- access rules ----------------------------------------------------------------------------

std::string AccessRuleActuator::Notes(const Decision& d, absl::string_view instance) {
  return absl::StrCat(Mark(d.id(), instance), " ", d.rule_id().empty() ? "manual" : d.rule_id());
}

absl::Status AccessRuleActuator::Apply(ActionOp& op) {
  const Decision& d = op.decision;
  absl::StatusOr<std::string> mode = ModeFor(d.action());
  if (!mode.ok()) return mode.status();
  std::string target, value;
  if (d.target().kind() == TargetKind::TARGET_KIND_IP) {
    std::optional<IpAddress> ip = IpAddress::Parse(d.target().value());
    if (!ip) return absl::InvalidArgumentError("decision target is not an IP address");
    target = ip->is_v4() ? "ip" : "ip6";
    value = ip->ToString();
  } else if (d.target().kind() == TargetKind::TARGET_KIND_RANGE) {
    absl::StatusOr<Cidr> cidr = Cidr::Parse(d.target().value());
    if (!cidr.ok()) return cidr.status();
    const int len = cidr->prefix_length();
    const bool ok =
        cidr->base().is_v4() ? (len == 16 || len == 24) : (len == 32 || len == 48 || len == 64);
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("access rules take IPv4 /16 or /24 and IPv6 /32, /48 or /64 ranges, not /",
                       len, "; use the IP list actuator"));
    }
    target = "ip_range";
    value = cidr->ToString();
  } else {
    return absl::InvalidArgumentError("access rules act on addresses and ranges only");
  }
  absl::StatusOr<AccessRule> rule =
      client_.CreateAccessRule(scope_, *mode, target, value, Notes(d, instance_));
  if (rule.ok()) {
    op.edge = {rule->id, "", false};
    return absl::OkStatus();
  }
  if (rule.status().code() != absl::StatusCode::kAlreadyExists) return rule.status();
  // 10009: the same target already has a rule. Adopt it; delete it later only if it is ours.
  absl::StatusOr<std::optional<AccessRule>> existing = FindRule(target, value);
  if (!existing.ok()) return existing.status();
  if (!existing->has_value()) return rule.status();
  // Ours: marked by this instance (another's, or a human's "palisade:office", is foreign).
  const bool ours = !MarkedDecisionId((*existing)->notes, instance_).empty();
  if ((*existing)->mode != *mode) {
    // A human's whitelist or challenge on the address: adopted, the edge would let in what the
    // decision blocks. Which one wins is an operator's choice.
    return absl::FailedPreconditionError(absl::StrCat(
        "access rule ", (*existing)->id, " (", ours ? "Palisade's" : "not Palisade's",
        ") already holds ", value, " with mode ", (*existing)->mode, ", not ", *mode,
        "; not adopted: change or delete that rule, or end the decision"));
  }
  op.edge = {(*existing)->id, "", !ours};
  return absl::OkStatus();
}

absl::StatusOr<std::optional<AccessRule>> AccessRuleActuator::FindRule(const std::string& target,
                                                                       const std::string& value) {
  // The same address or range, however written ("192.0.2.1" and "192.0.2.1/32",
  // "2001:0db8::0001" and "2001:db8::1").
  const std::string canonical = CanonicalListIp(value);
  auto same = [&](const AccessRule& r) {
    return r.target == target && CanonicalListIp(r.value) == canonical;
  };
  std::vector<AccessRuleFilter> searches;
  absl::StatusOr<Cidr> cidr = Cidr::Parse(value);
  const bool searchable =
      cidr.ok() && cidr->base().is_v4() &&
      (target == "ip" || cidr->prefix_length() == 16 || cidr->prefix_length() == 24);
  if (searchable) {
    // The value search is documented for IPv4 addresses and /16 and /24 ranges.
    AccessRuleFilter f;
    f.target = target;
    f.value = value;
    searches.push_back(f);
  } else {
    // IPv6: the list filters take no "ip6" target and no IPv6 value. Palisade's own rules are
    // found by their notes; a human's only by paging through every rule.
    AccessRuleFilter ours;
    ours.notes = "palisade:";
    searches.push_back(ours);
    searches.push_back(AccessRuleFilter());
  }
  for (const AccessRuleFilter& f : searches) {
    absl::StatusOr<std::vector<AccessRule>> rules = client_.ListAllAccessRules(scope_, f);
    if (!rules.ok()) return rules.status();
    for (const AccessRule& r : *rules) {
      if (same(r)) return std::optional<AccessRule>(r);
    }
  }
  return std::optional<AccessRule>();
}

absl::Status AccessRuleActuator::Remove(ActionOp& op) {
  if (op.edge.foreign) return absl::OkStatus();  // not ours to delete
  std::string id = op.edge.id;
  if (id.empty()) {
    AccessRuleFilter f;
    f.notes = Notes(op.decision, instance_);
    absl::StatusOr<std::vector<AccessRule>> found = client_.ListAllAccessRules(scope_, f);
    if (!found.ok()) return found.status();
    for (const AccessRule& r : *found) {
      if (r.notes == f.notes) id = r.id;  // the filter is a substring match: check exactly
    }
    if (id.empty()) return absl::OkStatus();
  }
  absl::Status s = client_.DeleteAccessRule(scope_, id);
  return s.code() == absl::StatusCode::kNotFound ? absl::OkStatus() : s;
}

void AccessRuleActuator::Run(std::vector<ActionOp*>& ops) {
  for (ActionOp* op : ops) {
    op->result = op->kind == ActionOp::Kind::kApply ? Apply(*op) : Remove(*op);
  }
}

// --- IP list ---------------------------------------------------------------------------------

IpListActuator::IpListActuator(CloudflareClient& client, IpListOptions options,
                               prometheus::Registry& registry)
    : client_(client),
      options_(std::move(options)),
      items_gauge_(prometheus::BuildGauge()
                       .Name("palisade_actions_list_items")
                       .Help("Items Palisade keeps in its Cloudflare IP list.")
                       .Register(registry)
                       .Add({{"list", options_.list_name}})),
      cap_gauge_(prometheus::BuildGauge()
                     .Name("palisade_actions_list_capacity")
                     .Help("The configured cap on items in Palisade's IP list.")
                     .Register(registry)
                     .Add({{"list", options_.list_name}})),
      overflow_(prometheus::BuildCounter()
                    .Name("palisade_actions_list_overflow_total")
                    .Help("Decisions not added to the IP list: it was at its cap, or the "
                          "account's item quota, which its other lists share, was used (those "
                          "are retried).")
                    .Register(registry)
                    .Add({{"list", options_.list_name}})),
      never_ban_(prometheus::BuildCounter()
                     .Name("palisade_actions_list_never_ban_total")
                     .Help("List items that would cover a never-ban address, by reason "
                           "(narrowed: IPv6 sent as a longer prefix than configured; "
                           "refused: not sent, e.g. even the /64 covers one).")
                     .Register(registry)),
      never_ban_narrowed_(
          never_ban_.Add({{"list", options_.list_name}, {"reason", "narrowed"}})),
      never_ban_refused_(never_ban_.Add({{"list", options_.list_name}, {"reason", "refused"}})),
      // No label: one account per palisaded, and its id stays out of the metrics.
      account_items_gauge_(prometheus::BuildGauge()
                               .Name("palisade_cloudflare_account_list_items")
                               .Help("Items in all the account's lists together (its list-item "
                                     "quota spans them), as last read from Cloudflare and moved "
                                     "by what Palisade added or removed since.")
                               .Register(registry)
                               .Add({})),
      account_limit_gauge_(prometheus::BuildGauge()
                               .Name("palisade_cloudflare_account_list_items_limit")
                               .Help("The account's list-item quota as Palisade takes it (the IP "
                                     "list's max_items: the API does not report the quota).")
                               .Register(registry)
                               .Add({})) {
  cap_gauge_.Set(options_.max_items);
  account_limit_gauge_.Set(options_.max_items);
}

void IpListActuator::PublishCounts() {
  items_gauge_.Set(items_in_list_);
  // Until the lists were read once, the other lists' items are not known: 0, not a guess.
  if (account_read_) account_items_gauge_.Set(items_in_list_ + items_elsewhere_);
}

absl::StatusOr<std::string> IpListActuator::ItemFor(const palisade::v1::Target& target) const {
  return Item(target, nullptr);
}

absl::StatusOr<std::string> IpListActuator::Item(const palisade::v1::Target& target,
                                                 bool* narrowed) const {
  if (narrowed != nullptr) *narrowed = false;
  absl::StatusOr<Cidr> cidr = Cidr::Parse(target.value());
  if (!cidr.ok()) return cidr.status();
  if (target.kind() != TargetKind::TARGET_KIND_IP &&
      target.kind() != TargetKind::TARGET_KIND_RANGE) {
    return absl::InvalidArgumentError("the IP list holds addresses and ranges only");
  }
  // The guard judged the decision's target; what goes out is judged here again, since the item
  // can be wider than the target (and an actuator must not rely on being called past a guard).
  auto refuse = [&](const Cidr& sent) {
    return absl::FailedPreconditionError(absl::StrCat(
        "IP list item ", sent.ToString(), " for ", target.value(),
        " would cover a never-ban address; not sent"));
  };
  // One version of the set for the whole judgement, whatever a reload swaps meanwhile.
  const std::shared_ptr<const CidrSet> never_ban = options_.never_ban.Get();
  int len = cidr->prefix_length();
  if (cidr->base().is_v4()) {
    if (len < 8) return absl::InvalidArgumentError("IPv4 list items must be /8 or longer");
    if (TouchesNeverBan(*cidr, *never_ban)) return refuse(*cidr);
    return len == 32 ? cidr->base().ToString() : cidr->ToString();
  }
  // IPv6: one attacker holds a whole /64; collapse to the configured prefix. When that prefix
  // would also cover a never-ban address (an allowlisted host beside the attacker), send the
  // widest longer prefix that spares it. Cloudflare lists take IPv6 items of /64 or wider only,
  // so if even the /64 holds a protected address the item is refused, not narrowed to the
  // /128: an access rule for the one address would live outside this list, where neither the
  // per-item counts nor the reconciler's view of the list could follow it, and it would stop
  // little anyway, since an attacker inside a /64 picks a new address at will. The decision
  // stays recorded; the refusal is counted and reported as a failed apply.
  constexpr int kNarrowestV6Item = 64;
  if (len > options_.ipv6_prefix) {
    for (int prefix = options_.ipv6_prefix; prefix <= kNarrowestV6Item; ++prefix) {
      const Cidr item = Cidr::Covering(cidr->base(), prefix);
      if (TouchesNeverBan(item, *never_ban)) continue;
      if (narrowed != nullptr) *narrowed = prefix != options_.ipv6_prefix;
      return item.ToString();
    }
    return refuse(Cidr::Covering(cidr->base(), kNarrowestV6Item));
  }
  if (len < 12) return absl::InvalidArgumentError("IPv6 list items must be /12 or longer");
  if (TouchesNeverBan(*cidr, *never_ban)) return refuse(*cidr);
  return len == 128 ? cidr->base().ToString() : cidr->ToString();
}

void IpListActuator::Restore(const std::vector<EdgeRef>& made) {
  refs_.clear();
  for (const EdgeRef& ref : made) {
    if (!ref.foreign && !ref.id.empty()) ++refs_[ref.id];
  }
}

void IpListActuator::Forget(const EdgeRef& made) {
  // Without this, a later decision on the item would find it counted and be taken as already
  // there, though the item is gone.
  auto it = refs_.find(made.id);
  if (made.foreign || it == refs_.end()) return;
  item_ids_.erase(made.id);
  if (--it->second <= 0) refs_.erase(it);
}

absl::Status IpListActuator::FindList() {
  if (!list_id_.empty()) return absl::OkStatus();
  return ReadLists();
}

absl::Status IpListActuator::ReadLists() {
  absl::StatusOr<std::vector<IpList>> lists = client_.ListLists();
  if (!lists.ok()) return lists.status();
  const bool known = !list_id_.empty();
  const bool found = CountLists(*lists);
  counts_read_ = true;
  if (!found && known) {
    return absl::NotFoundError(absl::StrCat("IP list ", options_.list_name, " is gone"));
  }
  return absl::OkStatus();
}

bool IpListActuator::CountLists(const std::vector<IpList>& lists) {
  const std::string known = list_id_;
  bool found = false;
  items_elsewhere_ = 0;
  for (const IpList& l : lists) {
    if (known.empty() ? l.name == options_.list_name : l.id == known) {
      list_id_ = l.id;
      items_in_list_ = l.num_items;
      found = true;
    } else {
      items_elsewhere_ += l.num_items;
    }
  }
  account_read_ = true;
  return found;
}

void IpListActuator::ListsRead(const std::vector<IpList>& lists) {
  // Palisade's list not there (or gone): it holds nothing. A flush finds a list it knew gone
  // for itself (its add fails kNotFound) and makes it again.
  if (!CountLists(lists)) items_in_list_ = 0;
  PublishCounts();
}

absl::Status IpListActuator::EnsureListAndRule() {
  if (list_id_.empty()) {
    if (absl::Status found = FindList(); !found.ok()) return found;
    if (list_id_.empty()) {
      absl::StatusOr<IpList> created =
          client_.CreateList(options_.list_name, "Blocked by palisaded (managed; do not edit)");
      if (!created.ok()) return created.status();
      list_id_ = created->id;
      items_in_list_ = 0;
    }
  }
  if (!rule_ready_) {
    absl::StatusOr<bool> repaired = EnsureRule();
    if (!repaired.ok()) return repaired.status();
    rule_ready_ = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> IpListActuator::EnsureRule() {
  RulesetRule rule;
  rule.ref = BlocklistRef(options_.instance);
  rule.description = "palisade: block addresses in $" + options_.list_name;
  rule.expression = "ip.src in $" + options_.list_name;
  rule.action = "block";
  absl::StatusOr<Ruleset> rs = client_.GetEntrypoint(kCustomPhase);
  if (rs.status().code() == absl::StatusCode::kNotFound) {
    absl::StatusOr<Ruleset> put = client_.PutEntrypoint(kCustomPhase, {rule});
    if (!put.ok()) return put.status();
    return true;
  }
  if (!rs.ok()) return rs.status();
  for (const RulesetRule& r : rs->rules) {
    if (r.ref != rule.ref) continue;
    if (r.enabled && r.expression == rule.expression && r.action == rule.action) return false;
    // Disabled or edited by hand: the rule is there but no longer blocks the list's addresses.
    absl::StatusOr<Ruleset> updated = client_.UpdateRulesetRule(rs->id, r.id, rule);
    if (!updated.ok()) return updated.status();
    return true;
  }
  absl::StatusOr<Ruleset> added = client_.AddRulesetRule(rs->id, rule);
  if (!added.ok()) return added.status();
  return true;
}

void IpListActuator::Run(std::vector<ActionOp*>& ops) {
  // A flush of removes only takes items out: it never makes or repairs the list or its
  // blocking rule. In dry run only removes reach the actuator, and putting back a rule an
  // operator had switched off would enforce every item in the list again.
  const bool applies = std::any_of(ops.begin(), ops.end(), [](const ActionOp* op) {
    return op->kind == ActionOp::Kind::kApply;
  });
  counts_read_ = false;
  absl::Status ready = applies ? EnsureListAndRule() : FindList();
  if (!ready.ok()) {
    for (ActionOp* op : ops) op->result = ready;
    PublishCounts();  // the lists may have been read before the failure
    return;
  }
  if (list_id_.empty()) {  // removes only, and no list: its items went with it
    refs_.clear();  // nothing is in a list that is not there: the next apply adds its item
    item_ids_.clear();
    items_in_list_ = 0;
    for (ActionOp* op : ops) op->result = absl::OkStatus();
    PublishCounts();
    return;
  }
  // Adds: one bulk operation for every new item.
  std::vector<ListItem> batch;
  // Every apply whose item is in the bulk operation (the first for each item, and any other
  // decision on the same item in this flush): each succeeds or fails with the operation.
  std::vector<std::pair<ActionOp*, std::string>> adds;
  std::set<std::string> batched;
  // The cap is this list's (max_items; the feeds keep a tenth of it for rule and manual bans,
  // ValidateFeedEdgeRoom). The account's item quota, which its other lists share and whose
  // size Palisade cannot read (an Enterprise account's is larger), is met only when a bulk add
  // fails on it (below). The count drifts: a repair re-adds (upserts) an item that may be
  // there, and the reconciler deletes orphans itself. Unless read in this flush, the counts are
  // read (once a flush) before a decision is refused at the cap.
  absl::Status recount;  // a failed read, answered to every op at the cap in this flush
  bool vanished = false;
  auto at_cap = [&]() -> absl::StatusOr<bool> {
    auto full = [&] {
      return items_in_list_ + static_cast<int>(batch.size()) >= options_.max_items;
    };
    if (!full() || counts_read_) return full();
    if (recount.ok()) {
      recount = ReadLists();
      if (recount.ok()) return full();
      if (recount.code() == absl::StatusCode::kNotFound) {
        vanished = true;
        recount = absl::UnavailableError(absl::StrCat(
            "IP list ", options_.list_name, " disappeared; it will be re-created"));
      }
    }
    return recount;
  };
  for (ActionOp* op : ops) {
    if (op->kind != ActionOp::Kind::kApply) continue;
    bool narrowed = false;
    absl::StatusOr<std::string> item = Item(op->decision.target(), &narrowed);
    if (narrowed) never_ban_narrowed_.Increment();
    if (!item.ok()) {
      // Only the never-ban check answers kFailedPrecondition here (bad targets are invalid).
      if (item.status().code() == absl::StatusCode::kFailedPrecondition) {
        never_ban_refused_.Increment();
      }
      op->result = item.status();
      continue;
    }
    if (batched.count(*item)) {  // on its way in this very operation
      adds.emplace_back(op, *item);
      continue;
    }
    auto counted = refs_.find(*item);
    if (!op->repair && counted != refs_.end() && counted->second > 0) {  // already there
      ++counted->second;
      op->edge = {*item, list_id_, false};
      op->result = absl::OkStatus();
      continue;
    }
    absl::StatusOr<bool> full = at_cap();
    if (!full.ok()) {
      op->result = full.status();
      continue;
    }
    if (*full) {
      overflow_.Increment();
      op->result = absl::FailedPreconditionError(absl::StrCat(
          "IP list ", options_.list_name, " is at its cap of ", options_.max_items, " items"));
      continue;
    }
    batched.insert(*item);
    batch.push_back({"", *item, Mark(op->decision.id(), options_.instance)});
    adds.emplace_back(op, *item);
  }
  if (vanished) {
    list_id_.clear();
    item_ids_.clear();
    rule_ready_ = false;
    batch.clear();
    for (auto& [op, item] : adds) op->result = recount;
  }
  if (!batch.empty()) {
    auto send = [&] {
      absl::StatusOr<std::string> operation = client_.AddListItems(list_id_, batch);
      return operation.ok() ? client_.WaitForOperation(*operation) : operation.status();
    };
    absl::Status s = send();
    if (s.code() == absl::StatusCode::kAborted && ReadLists().ok() &&
        items_elsewhere_ + items_in_list_ + static_cast<int>(batch.size()) > options_.max_items) {
      // The operation failed, and the account's lists leave no room for the batch under
      // max_items (the non-Enterprise quota unless set): the quota, most likely (its error says
      // so only in words). Sent again whole, it would fail with every decision in it: the items
      // that fit go in on their own; the others wait as a transient failure (retried, then
      // repaired by the reconciler), so they go in once another list makes room, and a
      // misread (an Enterprise account's failure for another reason) costs a retry, not a ban.
      // The room max_items leaves (less than the batch, or this would not be reached), unless
      // it leaves none (an Enterprise account's quota is larger): then half the batch is tried.
      int room = options_.max_items - items_elsewhere_ - items_in_list_;
      if (room <= 0) room = static_cast<int>(batch.size()) / 2;
      const absl::Status refused = absl::ResourceExhaustedError(
          absl::StrCat("IP list ", options_.list_name, ": the account's quota of list items "
                       "looks used (", items_in_list_, " in this list, ", items_elsewhere_,
                       " in others); retried"));
      // What goes in first: an operator's ban, then a rule's, then a feed's (the feeds fill
      // the account's last room otherwise, and every rule ban waits behind them).
      std::map<std::string, int> rank;
      for (const auto& [op, item] : adds) {
        const auto origin = op->decision.origin();
        const int r = origin == palisade::v1::ORIGIN_MANUAL ? 0
                      : origin == palisade::v1::ORIGIN_FEED ? 2
                                                             : 1;
        auto [it, fresh] = rank.emplace(item, r);
        if (!fresh) it->second = std::min(it->second, r);
      }
      std::stable_sort(batch.begin(), batch.end(), [&](const ListItem& x, const ListItem& y) {
        return rank[x.ip] < rank[y.ip];
      });
      std::set<std::string> fits;
      for (int i = 0; i < room && i < static_cast<int>(batch.size()); ++i) {
        fits.insert(batch[i].ip);
      }
      batch.resize(fits.size());
      std::vector<std::pair<ActionOp*, std::string>> kept;
      for (auto& [op, item] : adds) {
        if (fits.count(item)) {
          kept.emplace_back(op, item);
        } else {
          overflow_.Increment();
          op->result = refused;
        }
      }
      adds = std::move(kept);
      s = batch.empty() ? absl::OkStatus() : send();
    }
    if (s.code() == absl::StatusCode::kNotFound) {  // the list was deleted behind our back
      list_id_.clear();
      item_ids_.clear();
      rule_ready_ = false;
      s = absl::UnavailableError(
          absl::StrCat("IP list ", options_.list_name, " disappeared; it will be re-created"));
    }
    for (auto& [op, item] : adds) {
      op->result = s;
      if (s.ok()) {
        item_ids_.erase(item);  // its id is learnt from the next listing
        // A repair re-adds an item whose decision is already counted.
        int& refs = refs_[item];
        refs = op->repair ? std::max(refs, 1) : refs + 1;
        op->edge = {item, list_id_, false};
      }
    }
    // An upsert (a repair) may add nothing: the count errs high until the next read.
    if (s.ok()) items_in_list_ += static_cast<int>(batch.size());
  }
  // Removes: an item goes when its last decision goes.
  std::vector<std::pair<ActionOp*, std::string>> removes;
  std::set<std::string> doomed;
  for (ActionOp* op : ops) {
    if (op->kind != ActionOp::Kind::kRemove) continue;
    std::string item = op->edge.id;
    if (item.empty()) {
      absl::StatusOr<std::string> computed = ItemFor(op->decision.target());
      if (!computed.ok()) {
        op->result = absl::OkStatus();  // nothing could have been added
        continue;
      }
      item = *computed;
    }
    auto it = refs_.find(item);
    if (it != refs_.end() && it->second > 1) {
      --it->second;
      op->result = absl::OkStatus();
      continue;
    }
    doomed.insert(item);
    removes.emplace_back(op, item);
  }
  if (!doomed.empty()) {
    absl::Status s;
    // The items' ids come from the last listing: the list (20 pages at 10,000 items) is listed
    // again only when an item is not in it (added since, or first use).
    bool listed = false;
    for (const std::string& item : doomed) {
      if (listed || item_ids_.count(item)) continue;
      absl::StatusOr<std::vector<ListItem>> items = client_.ListAllItems(list_id_);
      if (!items.ok()) {
        s = items.status();
        break;
      }
      listed = true;
      item_ids_.clear();
      for (const ListItem& i : *items) item_ids_[i.ip] = i.id;
      items_in_list_ = static_cast<int>(items->size());
    }
    std::vector<std::string> ids;
    if (s.ok()) {
      for (const std::string& item : doomed) {
        if (auto it = item_ids_.find(item); it != item_ids_.end()) ids.push_back(it->second);
      }
      if (!ids.empty()) {
        absl::StatusOr<std::string> operation = client_.DeleteListItems(list_id_, ids);
        s = operation.ok() ? client_.WaitForOperation(*operation) : operation.status();
      }
    }
    if (s.code() == absl::StatusCode::kNotFound) s = absl::OkStatus();  // list gone: so are items
    for (auto& [op, item] : removes) {
      op->result = s;
      if (s.ok()) refs_.erase(item);
    }
    // Gone, or (on a failure) to be found again by the retry's listing.
    for (const std::string& item : doomed) item_ids_.erase(item);
    if (s.ok()) {
      // An id kept from an earlier listing may name an item already deleted by someone else:
      // the count errs low until the next read (a bulk add past the quota reads it).
      items_in_list_ = std::max(0, items_in_list_ - static_cast<int>(ids.size()));
    }
  }
  PublishCounts();
}

// --- rate limiting rules ---------------------------------------------------------------------

absl::StatusOr<std::string> RateLimitActuator::ExpressionFor(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError("rate-limit path must start with '/'");
  }
  if (path.size() > 512) return absl::InvalidArgumentError("rate-limit path is over 512 bytes");
  for (char c : path) {
    // Printable ASCII without space, quote or backslash: the path cannot break out of the
    // expression's string literal.
    if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') {
      return absl::InvalidArgumentError(
          "rate-limit path holds a character that is not allowed in an expression");
    }
  }
  return absl::StrCat("(http.request.uri.path eq \"", path, "\")");
}

absl::Status RateLimitActuator::Apply(ActionOp& op) {
  const Decision& d = op.decision;
  if (d.target().kind() != TargetKind::TARGET_KIND_PATH) {
    return absl::InvalidArgumentError("rate-limit rules act on paths only");
  }
  absl::StatusOr<std::string> expression = ExpressionFor(d.target().value());
  if (!expression.ok()) return expression.status();
  RulesetRule rule;
  rule.ref = RefMark(d.id(), options_.instance);
  rule.description = absl::StrCat("palisade ", d.rule_id().empty() ? "manual" : d.rule_id(), " ",
                                  d.target().value());
  rule.expression = *expression;
  rule.action = options_.action;
  RateLimit limit;
  limit.period = options_.period;
  limit.requests_per_period = options_.requests_per_period;
  limit.mitigation_timeout = options_.mitigation_timeout;
  rule.ratelimit = limit;

  absl::StatusOr<Ruleset> rs = client_.GetEntrypoint(kRateLimitPhase);
  if (rs.status().code() == absl::StatusCode::kNotFound) {
    rs = client_.PutEntrypoint(kRateLimitPhase, {rule});
  } else if (rs.ok()) {
    bool present = false;
    for (const RulesetRule& r : rs->rules) present |= r.ref == rule.ref;
    if (!present) rs = client_.AddRulesetRule(rs->id, rule);
  }
  if (!rs.ok()) return rs.status();
  for (const RulesetRule& r : rs->rules) {
    if (r.ref == rule.ref) {
      op.edge = {r.id, rs->id, false};
      return absl::OkStatus();
    }
  }
  return absl::InternalError("rate-limit rule missing from the ruleset after it was added");
}

absl::Status RateLimitActuator::Remove(ActionOp& op) {
  EdgeRef edge = op.edge;
  if (edge.id.empty()) {
    absl::StatusOr<Ruleset> rs = client_.GetEntrypoint(kRateLimitPhase);
    if (rs.status().code() == absl::StatusCode::kNotFound) return absl::OkStatus();
    if (!rs.ok()) return rs.status();
    for (const RulesetRule& r : rs->rules) {
      if (r.ref == RefMark(op.decision.id(), options_.instance)) edge = {r.id, rs->id, false};
    }
    if (edge.id.empty()) return absl::OkStatus();
  }
  absl::Status s = client_.DeleteRulesetRule(edge.container, edge.id).status();
  return s.code() == absl::StatusCode::kNotFound ? absl::OkStatus() : s;
}

void RateLimitActuator::Run(std::vector<ActionOp*>& ops) {
  for (ActionOp* op : ops) {
    op->result = op->kind == ActionOp::Kind::kApply ? Apply(*op) : Remove(*op);
  }
}

// --- token revocation ------------------------------------------------------------------------

absl::Status TokenActuator::LearnOwnTokenId() {
  if (!own_token_id_.empty()) return absl::OkStatus();
  // Left empty when the verify at start failed (network not up, a 5xx): without it, an audit
  // record naming palisaded's own token, or its secret in a log, would revoke it.
  absl::StatusOr<TokenInfo> own = client_.VerifyToken();
  if (own.ok() && !own->id.empty()) {
    own_token_id_ = own->id;
    return absl::OkStatus();
  }
  const absl::Status s = own.ok() ? absl::UnknownError("verify named no token id") : own.status();
  if (IsCredentialError(s)) return s;
  return absl::UnavailableError(absl::StrCat(
      "palisaded's own API token id is not known yet (verify: ", s.message(),
      "); no token is revoked until it is, so as never to revoke its own"));
}

absl::Status TokenActuator::Apply(ActionOp& op) {
  if (op.decision.target().kind() == TargetKind::TARGET_KIND_TOKEN_ID) {
    // Known by id (an audit-log record): user tokens first, then the account's.
    const std::string& id = op.decision.target().value();
    if (absl::Status known = LearnOwnTokenId(); !known.ok()) return known;
    if (id == own_token_id_) {
      return absl::FailedPreconditionError(
          "refusing to revoke palisaded's own API token; add the addresses it calls from to "
          "the token's CIDR set");
    }
    for (bool account : {false, true}) {
      const EdgeRef seen{id, account ? "account" : "user", false};
      if (!delete_) {
        absl::Status s = client_.DisableToken(id, account).status();
        if (s.code() == absl::StatusCode::kNotFound) continue;
        if (!s.ok()) return s;
        op.edge = seen;
        return absl::OkStatus();
      }
      // A DELETE whose answer was lost is asked again (by the client, or by the dispatcher's
      // retry of this op) and then answered 404, as a token palisaded's own cannot see is. So
      // the token is looked at first: one seen here (now, or by an earlier attempt of this op:
      // op.edge, memory only) and then not found is gone, revoked.
      absl::StatusOr<TokenInfo> found = client_.GetToken(id, account);
      if (found.status().code() == absl::StatusCode::kNotFound) {
        if (op.edge.id == seen.id && op.edge.container == seen.container) return absl::OkStatus();
        continue;
      }
      if (!found.ok()) return found.status();
      op.edge = seen;
      absl::Status s = client_.DeleteToken(id, account);
      if (s.code() == absl::StatusCode::kNotFound) return absl::OkStatus();  // gone since seen
      return s;
    }
    // 404 from both endpoints does not mean revoked: it is also what a live token palisaded's
    // own cannot see answers (another member's user token), and an audit record says the token
    // was in use. Never count it as revoked; an operator checks.
    op.edge = {"", "", false};
    return absl::NotFoundError(absl::StrCat(
        "token ", id,
        " was not found by the user or the account tokens endpoint: it may be gone already, or "
        "be a token palisaded's API token cannot see (another member's user token); it was NOT "
        "revoked; check it in the dashboard and revoke it by hand if it is live"));
  }
  if (op.secret.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the leaked token ", op.decision.target().value(),
                     " is no longer in memory; revoke it by hand (find it by its fingerprint)"));
  }
  // The cfat_ prefix says "account token", but older account tokens have none: the client tries
  // the other verify endpoint when the first refuses the token.
  absl::StatusOr<TokenInfo> info =
      client_.VerifyOtherToken(Secret(op.secret), absl::StartsWith(op.secret, "cfat_"));
  if (info.status().code() == absl::StatusCode::kUnauthenticated) {
    op.edge = {"", "", false};  // refused by both endpoints: revoked, expired or never real
    return absl::OkStatus();
  }
  if (IsIpRestricted(info.status())) {
    // A live token that may not be used from here: verify cannot name it, so it cannot be
    // revoked from here by secret. Say so loudly; never count it as revoked.
    return absl::FailedPreconditionError(absl::StrCat(
        "the leaked token ", op.decision.target().value(),
        " is LIVE but IP-restricted (Cloudflare 9109: it cannot be used from this host), so its "
        "id cannot be learnt here and it was NOT revoked; revoke it by hand, or ship the "
        "account's audit logs (v2, rules/cloudflare-audit.textproto) so it is revoked by id"));
  }
  if (!info.ok()) return info.status();
  const bool account = info->account_owned;
  if (absl::Status known = LearnOwnTokenId(); !known.ok()) return known;  // secret kept
  if (info->id == own_token_id_) {
    op.secret.clear();
    return absl::FailedPreconditionError(
        "the leaked token is palisaded's own: not revoked automatically; roll it now");
  }
  absl::Status s = delete_ ? client_.DeleteToken(info->id, account)
                           : client_.DisableToken(info->id, account).status();
  if (s.code() == absl::StatusCode::kNotFound) {
    // verify has just said the token is live. A 404 now is a DELETE whose answer was lost and
    // that the client asked again (the first one worked), or palisaded's token cannot reach it
    // (another member's user token, or one it may not manage). The leaked secret tells which:
    // verify refuses a revoked token.
    absl::StatusOr<TokenInfo> again = client_.VerifyOtherToken(Secret(op.secret), account);
    if (again.status().code() == absl::StatusCode::kUnauthenticated) {
      op.edge = {info->id, account ? "account" : "user", false};
      op.secret.clear();
      return absl::OkStatus();
    }
    if (!again.ok() && IsTransient(again.status())) return again.status();  // secret kept
    // Still live: a failure an operator must act on, never a success. The id names it; the
    // secret is never put in a message.
    op.secret.clear();
    return absl::FailedPreconditionError(
        absl::StrCat("the leaked token ", op.decision.target().value(), " (id ", info->id,
                     ") is LIVE but could not be revoked: palisaded's API token cannot reach it (",
                     s.message(), "); revoke it by hand"));
  }
  if (!s.ok()) return s;
  op.edge = {info->id, account ? "account" : "user", false};
  op.secret.clear();  // done with it
  return absl::OkStatus();
}

void TokenActuator::Run(std::vector<ActionOp*>& ops) {
  for (ActionOp* op : ops) {
    // A revoked leaked token stays revoked when its decision ends.
    op->result = op->kind == ActionOp::Kind::kApply ? Apply(*op) : absl::OkStatus();
  }
}

}  // namespace palisade
