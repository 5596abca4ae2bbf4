#include "services/events/convert.h"

#include "absl/strings/str_cat.h"
#include "services/common/proto_time.h"

namespace palisade {

bool DecisionEventFrom(const DecisionUpdate& update, palisade::v1::Event* out) {
  if (update.change == DecisionChange::kStale || update.change == DecisionChange::kRefused) {
    return false;
  }
  out->set_kind(palisade::v1::EVENT_KIND_DECISION);
  out->set_correlation_id(update.decision.id());
  out->set_rule_id(update.decision.rule_id());
  out->set_origin(update.decision.origin());
  auto* body = out->mutable_decision();
  body->set_change(std::string(DecisionChangeName(update.change)));
  // Everything but the evidence, which the detection event of the same correlation id carries:
  // copying it again for every extension cost a tenth of ingest throughput.
  const palisade::v1::Decision& d = update.decision;
  palisade::v1::Decision* copy = body->mutable_decision();
  copy->set_id(d.id());
  *copy->mutable_target() = d.target();
  copy->set_action(d.action());
  copy->set_scope(d.scope());
  *copy->mutable_start() = d.start();
  *copy->mutable_expiry() = d.expiry();
  copy->set_rule_id(d.rule_id());
  copy->set_origin(d.origin());
  copy->set_offence(d.offence());
  copy->set_active(d.active());
  copy->set_extensions(d.extensions());
  copy->set_reason(d.reason());
  copy->set_dry_run(d.dry_run());
  copy->set_actuator(d.actuator());
  *copy->mutable_feeds() = d.feeds();
  // The escalation context (the offender's last offence, until when its count stands): what a
  // cluster's mirrors read to escalate as the writer would, and what a SIEM needs to tell why.
  if (d.has_offence_counted_until()) {
    *copy->mutable_offence_counted_until() = d.offence_counted_until();
  }
  if (d.has_offence_last()) *copy->mutable_offence_last() = d.offence_last();
  // A replacement and what it replaced (a block over a challenge): one episode to a SIEM.
  copy->set_replaces(d.replaces());
  copy->set_replaced_by(d.replaced_by());
  return true;
}

palisade::v1::Event DetectionEventFrom(absl::string_view source, Detection&& detection,
                                       const DecisionUpdate& update) {
  palisade::v1::Event e;
  e.set_kind(palisade::v1::EVENT_KIND_DETECTION);
  if (!update.decision.id().empty()) e.set_correlation_id(update.decision.id());
  e.set_rule_id(detection.rule_id);
  e.set_origin(palisade::v1::ORIGIN_RULE);
  auto* body = e.mutable_detection();
  body->mutable_target()->set_kind(detection.kind);
  body->mutable_target()->set_value(detection.key);
  *body->mutable_event_time() = ToProtoTime(detection.time);
  for (std::string& line : detection.evidence) body->add_evidence(std::move(line));  // redacted
  body->set_source(std::string(source));
  for (const std::string& f : detection.feeds) body->add_feeds(f);
  body->set_outcome(std::string(DecisionChangeName(update.change)));
  return e;
}

palisade::v1::Event ActionEventFrom(const ActionOutcome& outcome) {
  palisade::v1::Event e;
  e.set_kind(palisade::v1::EVENT_KIND_ACTION);
  e.set_correlation_id(outcome.decision.id());
  e.set_rule_id(outcome.decision.rule_id());
  e.set_origin(outcome.decision.origin());
  auto* body = e.mutable_action();
  body->set_outcome(outcome.outcome);
  body->set_actuator(outcome.actuator);
  body->set_operation(outcome.operation);
  *body->mutable_target() = outcome.decision.target();
  body->set_attempt(static_cast<uint32_t>(outcome.attempt));
  body->set_detail(outcome.detail);
  return e;
}

bool AlertEventFrom(const ActionOutcome& outcome, palisade::v1::Event* out) {
  if (outcome.alert.empty()) return false;
  palisade::v1::Event& e = *out;
  e.set_kind(palisade::v1::EVENT_KIND_ALERT);
  e.set_correlation_id(outcome.decision.id());
  e.set_rule_id(outcome.decision.rule_id());
  e.set_origin(outcome.decision.origin());
  auto* body = e.mutable_alert();
  body->set_kind(outcome.alert);
  *body->mutable_target() = outcome.decision.target();
  if (outcome.alert == "own_token_misuse") {
    body->set_detail(absl::StrCat(
        "palisaded's own API token ", outcome.decision.target().value(),
        " was used from an address outside the expected ones (the evidence is the audit "
        "record). It is not revoked: if the address is a host of yours, add it to the token's IP "
        "filter and to the cidr set; if not, the token is stolen: roll it now (palisadectl "
        "cloudflare rotate) and narrow its IP filter"));
  } else {
    body->set_detail(outcome.detail);
  }
  *body->mutable_evidence() = outcome.decision.evidence();
  return true;
}

void PublishDecision(EventHub& hub, const DecisionUpdate& update) {
  if (!hub.wanted()) return;
  palisade::v1::Event e;
  if (DecisionEventFrom(update, &e)) hub.Publish(std::move(e));
}

void PublishDetections(EventHub& hub, absl::string_view source, std::vector<Detection>& detections,
                       const std::vector<DecisionUpdate>& updates) {
  if (!hub.wanted()) return;
  for (size_t i = 0; i < detections.size() && i < updates.size(); ++i) {
    hub.Publish(DetectionEventFrom(source, std::move(detections[i]), updates[i]));
  }
}

void PublishAction(EventHub& hub, const ActionOutcome& outcome) {
  if (!hub.wanted()) return;
  hub.Publish(ActionEventFrom(outcome));
  palisade::v1::Event alert;
  if (AlertEventFrom(outcome, &alert)) hub.Publish(std::move(alert));
}

}  // namespace palisade
