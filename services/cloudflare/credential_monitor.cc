#include "services/cloudflare/credential_monitor.h"

#include <iostream>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace palisade {
namespace {

std::string At(absl::Time t) { return absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone()); }

std::set<std::pair<std::string, std::string>> FindingKeys(const CredentialReport& r) {
  std::set<std::pair<std::string, std::string>> out;
  for (const CredentialFinding& f : r.findings) out.insert({f.kind, f.actuator});
  return out;
}

}  // namespace

CredentialMonitor::CredentialMonitor(CloudflareClient& client, Clock& clock,
                                     CredentialMonitorOptions options,
                                     prometheus::Registry& registry)
    : client_(client),
      clock_(clock),
      options_(std::move(options)),
      findings_(prometheus::BuildGauge()
                    .Name("palisade_cloudflare_token_findings")
                    .Help("Findings of the last credentials check, by kind.")
                    .Register(registry)),
      enabled_(prometheus::BuildGauge()
                   .Name("palisade_actuator_enabled")
                   .Help("1 when the actuator runs with the token, 0 when the credentials check "
                         "found the token unable to drive it (at start: not started; later: "
                         "the permission was lost, or was gained by one not started).")
                   .Register(registry)),
      expiry_(prometheus::BuildGauge()
                  .Name("palisade_cloudflare_token_expiry_timestamp_seconds")
                  .Help("When the service's API token expires (0: never).")
                  .Register(registry)
                  .Add({})),
      checks_(prometheus::BuildCounter()
                  .Name("palisade_cloudflare_credentials_checks_total")
                  .Help("Credentials checks (at start and every check_interval), by result "
                        "(ok, failed: not made, the last report is kept).")
                  .Register(registry)),
      checked_at_(prometheus::BuildGauge()
                      .Name("palisade_cloudflare_credentials_checked_timestamp_seconds")
                      .Help("When the last credentials check was made (0: never).")
                      .Register(registry)
                      .Add({})),
      changes_(prometheus::BuildCounter()
                   .Name("palisade_cloudflare_permission_changes_total")
                   .Help("A needed permission the token lost or gained while palisaded ran, "
                         "by actuator and change (lost, gained).")
                   .Register(registry)) {
  checks_.Add({{"result", "ok"}});
  checks_.Add({{"result", "failed"}});
  for (const std::string& kind : CredentialFindingKinds()) findings_.Add({{"kind", kind}});
  absl::MutexLock lock(&mu_);
  next_check_ = clock_.TimeNow() + options_.interval;
}

CredentialMonitor::~CredentialMonitor() { Stop(); }

void CredentialMonitor::SetExpiry(std::optional<absl::Time> expires_on) {
  expiry_.Set(expires_on ? static_cast<double>(absl::ToUnixSeconds(*expires_on)) : 0);
}

absl::StatusOr<CredentialReport> CredentialMonitor::CheckAtStart(
    std::optional<absl::Time> known_expiry) {
  SetExpiry(known_expiry);
  if (absl::Status s = CheckNow(); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  return *report_;
}

void CredentialMonitor::Started(const std::vector<std::string>& actuators) {
  absl::MutexLock lock(&mu_);
  started_.emplace();
  for (const std::string& a : actuators) (*started_)[a] = true;
  if (report_) {
    const CredentialReport report = *report_;
    Apply(report, *checked_, /*compare=*/false);
  } else {
    // No check made yet (Cloudflare unreachable at start): what was started runs.
    for (const std::string& a : actuators) enabled_.Add({{"actuator", a}}).Set(1);
  }
}

absl::Status CredentialMonitor::CheckNow() {
  absl::MutexLock check(&check_mu_);
  const absl::Time now = clock_.TimeNow();
  absl::StatusOr<CredentialReport> report =
      CheckCredentials(client_, options_.needs, now, options_.account_owned);
  std::vector<std::string> gained;
  {
    absl::MutexLock lock(&mu_);
    next_check_ = now + options_.interval;
    if (!report.ok()) {
      checks_.Add({{"result", "failed"}}).Increment();
      const std::string error(report.status().message());
      if (error != error_) {  // one line per distinct failure, not one per interval
        std::cerr << "palisaded: cloudflare: credentials check not made (" << error
                  << "); the last report stands" << std::endl;
      }
      error_ = error;
      return report.status();
    }
    checks_.Add({{"result", "ok"}}).Increment();
    checked_at_.Set(static_cast<double>(absl::ToUnixSeconds(now)));
    if (report_) {
      // Log what is new since the last check (at start every finding is logged by the caller).
      const auto before = FindingKeys(*report_);
      for (const CredentialFinding& f : report->findings) {
        if (before.count({f.kind, f.actuator})) continue;
        std::cerr << "palisaded: cloudflare: credentials (check at " << At(now) << "): "
                  << f.kind << (f.actuator.empty() ? "" : " (" + f.actuator + ")") << ": "
                  << f.detail << std::endl;
      }
    }
    error_.clear();
    gained = Apply(*report, now, /*compare=*/true);
  }
  // Outside mu_ (the callee takes its own locks), still one check at a time.
  if (options_.on_gained) {
    for (const std::string& actuator : gained) options_.on_gained(actuator);
  }
  return absl::OkStatus();
}

std::vector<std::string> CredentialMonitor::Apply(const CredentialReport& report,
                                                  absl::Time now, bool compare) {
  std::vector<std::string> gained;
  for (const std::string& kind : CredentialFindingKinds()) {
    findings_.Add({{"kind", kind}}).Set(report.Count(kind));
  }
  SetExpiry(report.expires_on);
  // Whether the token had each permission at the previous check.
  std::map<std::string, bool> had;
  if (compare && report_) {
    for (const ActuatorState& a : report_->actuators) had[a.actuator] = a.enabled;
  }
  states_.clear();
  for (const ActuatorState& a : report.actuators) {
    const bool has = a.enabled;
    if (auto h = had.find(a.actuator); h != had.end() && h->second != has) {
      changes_.Add({{"actuator", a.actuator}, {"change", has ? "gained" : "lost"}}).Increment();
      if (has) gained.push_back(a.actuator);
      std::cerr << "palisaded: cloudflare: credentials (check at " << At(now) << "): the token "
                << (has ? "has the permission again for " : "LOST the permission for ")
                << a.actuator << (has ? "" : ": " + a.reason) << std::endl;
    }
    ActuatorState s{a.actuator, has, has ? "" : a.reason};
    const bool started = !started_ || started_->count(a.actuator) > 0;
    if (started_ && started && !has) {
      s.reason = absl::StrCat(
          a.reason, " (found by the check at ", At(now),
          "; the actuator still runs and Cloudflare refuses its calls: they wait in the "
          "outbox until the token has the permission again)");
    } else if (!started) {
      s.enabled = false;
      s.reason = has ? absl::StrCat("the token has the permission now (check at ", At(now),
                                    ") but the actuator was not started: restart palisaded to "
                                    "start it")
                     : a.reason;
    }
    enabled_.Add({{"actuator", a.actuator}}).Set(s.enabled ? 1 : 0);
    states_[a.actuator] = std::move(s);
  }
  report_ = report;
  checked_ = now;
  return gained;
}

bool CredentialMonitor::Tick() {
  {
    absl::MutexLock lock(&mu_);
    if (clock_.TimeNow() < next_check_) return false;
  }
  (void)CheckNow();
  return true;
}

absl::Time CredentialMonitor::next_check() const {
  absl::MutexLock lock(&mu_);
  return next_check_;
}

CredentialStatus CredentialMonitor::status() const {
  absl::MutexLock lock(&mu_);
  CredentialStatus out;
  out.report = report_;
  out.checked = checked_;
  out.error = error_;
  if (report_) {
    for (const ActuatorState& a : report_->actuators) {
      auto s = states_.find(a.actuator);
      out.actuators.push_back(s == states_.end() ? a : s->second);
    }
  }
  return out;
}

void CredentialMonitor::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    while (!stopping_.WaitForNotificationWithTimeout(options_.poll)) Tick();
  });
}

void CredentialMonitor::Stop() {
  if (!stopping_.HasBeenNotified()) stopping_.Notify();
  if (thread_.joinable()) thread_.join();
}

}  // namespace palisade
