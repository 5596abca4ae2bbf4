// Builds the stream's events from what the pipeline, the decision table and the dispatcher
// report. The correlation id of all three is the decision's id, so a SIEM can join a detection,
// its decision and the API calls that carried it.
#ifndef PALISADE_SERVICES_EVENTS_CONVERT_H_
#define PALISADE_SERVICES_EVENTS_CONVERT_H_

#include <vector>

#include "absl/strings/string_view.h"
#include "palisade/v1/palisade.pb.h"
#include "services/actions/dispatcher.h"
#include "services/decisions/decision_table.h"
#include "services/engine/engine.h"
#include "services/events/event_hub.h"

namespace palisade {

// kStale and kRefused updates make no event (nothing was decided); the detection event still
// says it (its outcome).
bool DecisionEventFrom(const DecisionUpdate& update, palisade::v1::Event* out);
// Moves the detection's evidence into the event (the detection is done with once decided).
palisade::v1::Event DetectionEventFrom(absl::string_view source, Detection&& detection,
                                       const DecisionUpdate& update);
palisade::v1::Event ActionEventFrom(const ActionOutcome& outcome);
// The alert an outcome carries (ActionOutcome::alert set), else false: its kind, the
// decision's target, rule and evidence, and what an operator should do. Never a secret.
bool AlertEventFrom(const ActionOutcome& outcome, palisade::v1::Event* out);

// What palisaded wires to the table, the pipeline and the dispatcher: each builds and publishes
// its events only when the hub is wanted (someone subscribed), so an unwatched daemon pays
// nothing for the stream.
void PublishDecision(EventHub& hub, const DecisionUpdate& update);
void PublishDetections(EventHub& hub, absl::string_view source, std::vector<Detection>& detections,
                       const std::vector<DecisionUpdate>& updates);
// The action event, then the alert event when the outcome carries one.
void PublishAction(EventHub& hub, const ActionOutcome& outcome);

}  // namespace palisade

#endif  // PALISADE_SERVICES_EVENTS_CONVERT_H_
