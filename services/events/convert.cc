#include "services/events/convert.h"

#include "services/common/proto_time.h"

namespace palisade {

bool DecisionEventFrom(const DecisionUpdate& update, palisade::v1::Event* out) {
  if (update.change == DecisionChange::kStale) return false;
  out->set_kind(palisade::v1::EVENT_KIND_DECISION);
  out->set_correlation_id(update.decision.id());
  out->set_rule_id(update.decision.rule_id());
  out->set_origin(update.decision.origin());
  auto* body = out->mutable_decision();
  body->set_change(std::string(DecisionChangeName(update.change)));
  *body->mutable_decision() = update.decision;
  return true;
}

palisade::v1::Event DetectionEventFrom(absl::string_view source, const Detection& detection,
                                       const DecisionUpdate& update) {
  palisade::v1::Event e;
  e.set_kind(palisade::v1::EVENT_KIND_DETECTION);
  if (update.change != DecisionChange::kStale) e.set_correlation_id(update.decision.id());
  e.set_rule_id(detection.rule_id);
  e.set_origin(palisade::v1::ORIGIN_RULE);
  auto* body = e.mutable_detection();
  body->mutable_target()->set_kind(detection.kind);
  body->mutable_target()->set_value(detection.key);
  *body->mutable_event_time() = ToProtoTime(detection.time);
  for (const std::string& line : detection.evidence) body->add_evidence(line);  // redacted
  body->set_source(std::string(source));
  for (const std::string& f : detection.feeds) body->add_feeds(f);
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

}  // namespace palisade
