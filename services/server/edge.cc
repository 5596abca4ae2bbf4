#include "services/server/edge.h"

#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/actions/actuators.h"
#include "services/cloudflare/credentials.h"
#include "services/cloudflare/rotation.h"
#include "services/common/proto_time.h"

namespace palisade {
namespace {

// Only API tokens can be verified; the legacy key has no verify endpoint.
bool HasToken(const CredentialSource& s) { return !s.token_file.empty() || !s.token_env.empty(); }

}  // namespace

TokenNeeds TokenNeedsFor(const palisade::v1::CloudflareConfig& config, bool audit_logs) {
  TokenNeeds needs;
  needs.account_id = config.account_id();
  needs.zone_id = config.zone_id();
  needs.access_rules_account_scope = config.access_rule_scope() == "account";
  needs.audit_log = audit_logs;
  return needs;
}

bool ReadsAuditLogs(const RuleSet& rules) {
  for (const auto& rule : rules.rules()) {
    if (rule->proto.key_kind() == palisade::v1::TARGET_KIND_TOKEN_ID) return true;
  }
  return false;
}

absl::StatusOr<CidrSet> NeverBanSet(const palisade::v1::Config& config) {
  std::vector<std::string> never(config.allowlist().begin(), config.allowlist().end());
  never.insert(never.end(), config.guard().never_ban().begin(), config.guard().never_ban().end());
  if (config.guard().cloudflare_ranges_file().empty()) {
    for (const auto& c : Guard::CloudflareRanges()) never.push_back(c);
  } else {
    absl::StatusOr<std::vector<std::string>> ranges =
        Guard::ReadCidrFile(config.guard().cloudflare_ranges_file());
    if (!ranges.ok()) return ranges.status();
    never.insert(never.end(), ranges->begin(), ranges->end());
  }
  for (const auto& ip : Guard::LocalAddresses()) never.push_back(ip);
  return CidrSet::Parse(never);
}

absl::StatusOr<std::unique_ptr<Edge>> Edge::Start(const palisade::v1::Config& full_config,
                                                  Clock& clock, prometheus::Registry& registry,
                                                  DecisionTable& table, Store* store,
                                                  bool audit_logs, AttachListener attach) {
  const palisade::v1::CloudflareConfig& config = full_config.cloudflare();
  // The guard first: a bad never-ban file refuses the start before anything is sent.
  GuardOptions guard;
  absl::StatusOr<CidrSet> never_ban = NeverBanSet(full_config);
  if (!never_ban.ok()) return never_ban.status();
  guard.never_ban = *std::move(never_ban);
  guard.max_new_per_minute = static_cast<int>(full_config.guard().max_new_bans_per_minute());
  guard.max_active_per_actuator = static_cast<int>(full_config.guard().max_active_per_actuator());

  CredentialSource source;
  source.token_file = config.token_file();
  source.token_env = config.token_env();
  source.allow_global_api_key = config.allow_global_api_key();
  source.email = config.email();
  source.api_key_file = config.api_key_file();
  absl::StatusOr<Credentials> creds = LoadCredentials(source);
  if (!creds.ok()) return creds.status();
  const bool account_token = absl::StartsWith(creds->token.value(), "cfat_");

  std::unique_ptr<Edge> edge(new Edge());
  edge->transport_ = std::make_unique<CurlTransport>();
  ClientOptions options;
  options.base_url = config.api_base();
  options.account_id = config.account_id();
  options.zone_id = config.zone_id();
  options.budget_requests = static_cast<int>(config.budget_requests());
  options.budget_window = FromProtoDuration(config.budget_window());
  options.timeout = FromProtoDuration(config.request_timeout());
  options.initial_backoff = FromProtoDuration(config.retry_initial_backoff());
  edge->client_ = std::make_unique<CloudflareClient>(*edge->transport_, clock, options,
                                                     *std::move(creds), registry);

  // Rotation: a secret from the environment cannot be written back, so it is refused; a roll
  // interrupted by a crash (side file left) is finished before the token is used.
  const bool rotate = config.has_rotation();
  if (rotate && source.token_file.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cloudflare: rotation is configured but the credential does not come from token_file",
        source.token_env.empty() ? "" : " (it comes from environment variable ", source.token_env,
        source.token_env.empty() ? "" : ")",
        ": a rolled secret could not be written back; use token_file or remove "
        "cloudflare.rotation"));
  }
  if (rotate && FromProtoDuration(config.rotation().interval()) < absl::Seconds(1)) {
    return absl::InvalidArgumentError("cloudflare.rotation.interval must be at least 1s");
  }
  // A roll retires the only live secret: where its successor cannot be saved, none goes out.
  if (rotate) {
    if (absl::Status s = CheckTokenFileWritable(source.token_file); !s.ok()) return s;
  }
  // The periodic credentials check: unset, every hour; 0s turns it off.
  const absl::Duration check_interval =
      config.has_check_interval() ? FromProtoDuration(config.check_interval()) : absl::Hours(1);
  if (check_interval != absl::ZeroDuration() && check_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cloudflare.check_interval must be 0s (off) or at least 1s, not ",
                     absl::FormatDuration(check_interval)));
  }
  if (!rotate) {
    edge->no_rotation_ =
        source.token_env.empty()
            ? "token rotation is not configured: add cloudflare { rotation { interval { ... } } } "
              "(the token must come from cloudflare.token_file)"
            : absl::StrCat("the API token comes from environment variable ",
                           ShownSecretName(source.token_env),
                           ": a rolled secret could not be written back, so it cannot be "
                           "rotated; use cloudflare.token_file and cloudflare.rotation");
  }
  if (!source.token_file.empty() && !edge->client_->options().base_url.empty()) {
    absl::StatusOr<std::optional<Secret>> forward =
        RollForward(source.token_file, *edge->client_, account_token);
    if (!forward.ok()) return forward.status();
  }

  std::string own_token_id;
  TokenInfo own_info;
  if (!edge->client_->options().base_url.empty() && HasToken(source)) {
    absl::StatusOr<TokenInfo> info = edge->client_->VerifyToken(account_token);
    if (info.status().code() == absl::StatusCode::kUnauthenticated) {
      return absl::UnauthenticatedError(
          absl::StrCat("cloudflare: the API token was refused (invalid, disabled or expired): ",
                       info.status().message()));
    }
    if (IsIpRestricted(info.status())) {
      // Every call would be refused the same way: nothing to retry until the token changes.
      return absl::FailedPreconditionError(absl::StrCat(
          "cloudflare: the API token may not be used from this host's address (its IP filter, "
          "condition.request.ip, leaves it out): add this host to the token's allowed addresses "
          "or run palisaded from one of them: ",
          info.status().message()));
    }
    if (!info.ok()) {
      std::cerr << "palisaded: cloudflare: could not verify the token yet ("
                << info.status().message() << "); actions will retry" << std::endl;
    } else {
      if (info->status != "active") {
        return absl::FailedPreconditionError(
            absl::StrCat("cloudflare: the API token ", info->id, " is ", info->status));
      }
      std::string expiry = info->expires_on ? absl::FormatTime(absl::RFC3339_sec, *info->expires_on,
                                                               absl::UTCTimeZone())
                                            : "never";
      own_token_id = info->id;
      own_info = *info;
      std::cerr << "palisaded: cloudflare: token " << info->id << " " << info->status
                << ", expires " << expiry << std::endl;
      if (info->expires_on && *info->expires_on - clock.TimeNow() < absl::Hours(24 * 14)) {
        std::cerr << "palisaded: WARNING: cloudflare: the API token expires within 14 days ("
                  << expiry << "); roll it" << std::endl;
      }
      // Least privilege: what the token may do against what the actuators need, now and every
      // check_interval.
      CredentialMonitorOptions mo;
      mo.needs = TokenNeedsFor(config, audit_logs);
      mo.account_owned = info->account_owned;
      if (check_interval > absl::ZeroDuration()) mo.interval = check_interval;
      // Operations Cloudflare refused for the token's credentials wait in the dispatcher's
      // queue: they go out as soon as a check finds the permission back. The monitor's thread
      // starts after the dispatcher exists, and stops before it.
      mo.on_gained = [e = edge.get()](const std::string& actuator) {
        if (e->dispatcher_ != nullptr) e->dispatcher_->CredentialsRestored(actuator);
      };
      edge->monitor_ = std::make_unique<CredentialMonitor>(*edge->client_, clock, mo, registry);
      absl::StatusOr<CredentialReport> report = edge->monitor_->CheckAtStart(info->expires_on);
      if (!report.ok()) {
        std::cerr << "palisaded: cloudflare: credentials check not made ("
                  << report.status().message() << "); every actuator runs" << std::endl;
      } else {
        for (const CredentialFinding& f : report->findings) {
          std::cerr << "palisaded: cloudflare: credentials: " << f.kind
                    << (f.actuator.empty() ? "" : " (" + f.actuator + ")") << ": " << f.detail
                    << std::endl;
        }
        edge->credential_report_ = *std::move(report);
      }
    }
  }
  // An actuator runs unless the check found the token unable to drive it. With a monitor, it
  // keeps palisade_actuator_enabled (and the states Status shows) from here on.
  prometheus::Family<prometheus::Gauge>* enabled_family = nullptr;
  if (!edge->monitor_) {
    enabled_family = &prometheus::BuildGauge()
                          .Name("palisade_actuator_enabled")
                          .Help(
                              "1 when the actuator runs, 0 when the credentials check "
                              "disabled it (the token lacks a permission it needs).")
                          .Register(registry);
  }
  // One left out is parked: its operations stay in the outbox for a start with the permission.
  std::vector<std::string> started;
  auto enabled = [&edge, enabled_family, &started](palisade::v1::Actuator kind,
                                                   const char* actuator) {
    const bool on = !edge->credential_report_ || edge->credential_report_->Enabled(actuator);
    if (enabled_family != nullptr) enabled_family->Add({{"actuator", actuator}}).Set(on ? 1 : 0);
    if (on) started.push_back(actuator);
    if (!on) {
      edge->dispatcher_->ParkActuator(kind, actuator);
      for (const ActuatorState& a : edge->credential_report_->actuators) {
        if (a.actuator == actuator) {
          std::cerr << "palisaded: cloudflare: actuator " << actuator << " disabled: " << a.reason
                    << std::endl;
        }
      }
    }
    return on;
  };

  DispatcherOptions dopts;
  dopts.flush_interval = FromProtoDuration(config.flush_interval());
  dopts.dry_run = config.dry_run();
  edge->dispatcher_ = std::make_unique<Dispatcher>(clock, dopts, registry);
  // Its own token is never revoked, whatever a log says (an alert is raised instead).
  guard.own_token_id = own_token_id;
  edge->dispatcher_->SetGuard(std::make_unique<Guard>(guard));
  CloudflareClient& client = *edge->client_;
  if (enabled(palisade::v1::ACTUATOR_ACCESS_RULE, kAccessRuleActuator)) {
    edge->dispatcher_->AddActuator(
        palisade::v1::ACTUATOR_ACCESS_RULE,
        std::make_unique<AccessRuleActuator>(client,
                                             config.access_rule_scope() == "account"
                                                 ? RuleScope::kAccount
                                                 : RuleScope::kZone,
                                             config.instance()));
  }
  IpListOptions list;
  list.list_name = config.list_name();
  list.instance = config.instance();
  list.max_items = static_cast<int>(config.list_max_items());
  list.ipv6_prefix = static_cast<int>(config.list_ipv6_prefix());
  // The list judges the (wider) item it sends as well, by the guard's own set (one handle, so
  // SetNeverBan reaches it, and the reconciler's copy of these options, too).
  list.never_ban = guard.never_ban;
  if (enabled(palisade::v1::ACTUATOR_IP_LIST, kIpListActuator)) {
    edge->dispatcher_->AddActuator(palisade::v1::ACTUATOR_IP_LIST,
                                   std::make_unique<IpListActuator>(client, list, registry));
  }
  RateLimitOptions rl;
  rl.period = static_cast<int>(config.ratelimit_period());
  rl.requests_per_period = static_cast<int>(config.ratelimit_requests_per_period());
  rl.mitigation_timeout = static_cast<int>(config.ratelimit_mitigation_timeout());
  rl.instance = config.instance();
  if (enabled(palisade::v1::ACTUATOR_RATE_LIMIT, kRateLimitActuator)) {
    edge->dispatcher_->AddActuator(palisade::v1::ACTUATOR_RATE_LIMIT,
                                   std::make_unique<RateLimitActuator>(client, rl));
  }
  if (enabled(palisade::v1::ACTUATOR_TOKEN_REVOCATION, kTokenRevocationActuator)) {
    edge->dispatcher_->AddActuator(
        palisade::v1::ACTUATOR_TOKEN_REVOCATION,
        std::make_unique<TokenActuator>(client, config.token_delete(), own_token_id));
  }
  if (edge->monitor_) {
    // Reading the audit logs has nothing to start: it works whenever the token may.
    started.push_back(kAuditLogActuator);
    edge->monitor_->Started(started);
    if (check_interval > absl::ZeroDuration()) edge->monitor_->Start();
  }
  if (store != nullptr) {
    edge->dispatcher_->SetStore(store);
    absl::Status restored = edge->dispatcher_->Restore();
    if (!restored.ok()) return restored;
  }
  Dispatcher* dispatcher = edge->dispatcher_.get();
  DecisionTable::Listener listener = [dispatcher](const DecisionUpdate& u) {
    dispatcher->OnDecision(u);
  };
  if (attach) {
    attach(std::move(listener));
  } else {
    table.AddListener(std::move(listener));
  }
  edge->dispatcher_->Start();

  // Drift: once at start, then every reconcile_interval.
  ReconcilerOptions ropts;
  ropts.scope = config.access_rule_scope() == "account" ? RuleScope::kAccount : RuleScope::kZone;
  ropts.list = list;
  ropts.withdraw_on_missing = config.drift_policy() == "withdraw";
  // Only objects with this tag are this palisaded's (another's on a shared zone are left alone).
  ropts.instance = config.instance();
  ropts.access_rules =
      !edge->credential_report_ || edge->credential_report_->Enabled(kAccessRuleActuator);
  ropts.ip_list = !edge->credential_report_ || edge->credential_report_->Enabled(kIpListActuator);
  ropts.rate_limits =
      !edge->credential_report_ || edge->credential_report_->Enabled(kRateLimitActuator);
  edge->reconciler_ =
      std::make_unique<Reconciler>(client, *edge->dispatcher_, table, ropts, registry);
  if (!config.dry_run()) {
    const absl::Duration every = FromProtoDuration(config.reconcile_interval());
    Edge* e = edge.get();
    edge->reconcile_thread_ = std::thread([e, every] {
      do {
        absl::StatusOr<DriftReport> r = e->reconciler_->Run();
        if (!r.ok()) {
          std::cerr << "palisaded: reconcile: " << r.status().message() << std::endl;
        } else if (r->missing + r->orphans > 0) {
          std::cerr << "palisaded: reconcile: " << r->missing << " missing, " << r->orphans
                    << " orphaned object(s) repaired" << std::endl;
        }
      } while (!e->stopping_.WaitForNotificationWithTimeout(every));
    });
  }
  if (rotate) {
    if (own_info.id.empty()) {
      edge->no_rotation_ =
          "token rotation is off until a restart: the token was not verified at start, so its "
          "id is unknown";
      std::cerr << "palisaded: WARNING: cloudflare: " << edge->no_rotation_ << std::endl;
    } else {
      RotationOptions ro;
      ro.token_file = source.token_file;
      ro.token_id = own_info.id;
      ro.account_owned = own_info.account_owned;
      ro.interval = FromProtoDuration(config.rotation().interval());
      ro.expires_on = own_info.expires_on;
      edge->rotator_ = std::make_unique<TokenRotator>(*edge->client_, clock, ro, registry);
      edge->rotator_->Start();
      std::cerr << "palisaded: cloudflare: token " << own_info.id << " rolled every "
                << absl::FormatDuration(ro.interval) << ", next at "
                << absl::FormatTime(absl::RFC3339_sec, edge->rotator_->next_roll(),
                                    absl::UTCTimeZone())
                << std::endl;
    }
  }
  return edge;
}

void Edge::FillCredentialStatus(palisade::v1::StatusResponse* status) const {
  if (!monitor_) return;
  const CredentialStatus now = monitor_->status();
  if (now.report) {
    for (const CredentialFinding& f : now.report->findings) {
      palisade::v1::CredentialFinding* out = status->add_credential_findings();
      out->set_kind(f.kind);
      out->set_actuator(f.actuator);
      out->set_detail(f.detail);
    }
    if (now.report->expires_on) {
      *status->mutable_cloudflare_token_expires() = ToProtoTime(*now.report->expires_on);
    }
  }
  for (const ActuatorState& a : now.actuators) {
    palisade::v1::ActuatorState* out = status->add_actuator_states();
    out->set_actuator(a.actuator);
    out->set_enabled(a.enabled);
    out->set_reason(a.reason);
  }
  if (now.checked) *status->mutable_credentials_checked() = ToProtoTime(*now.checked);
  status->set_credentials_check_error(now.error);
}

absl::StatusOr<RollReport> Edge::RotateToken() {
  if (!rotator_) return absl::FailedPreconditionError(no_rotation_);
  return rotator_->RotateNowForOperator();
}

Edge::~Edge() {
  if (monitor_) monitor_->Stop();
  stopping_.Notify();
  if (reconcile_thread_.joinable()) reconcile_thread_.join();
  if (dispatcher_) dispatcher_->Stop();
}

}  // namespace palisade
