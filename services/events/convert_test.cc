#include "services/events/convert.h"

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

using google::protobuf::FieldDescriptor;
using palisade::v1::Decision;

// Sets every field of `m` (recursively, one element per repeated field) to a non-default value.
void FillEveryField(google::protobuf::Message* m) {
  const google::protobuf::Reflection* r = m->GetReflection();
  const google::protobuf::Descriptor* d = m->GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) {
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) r->AddString(m, f, "x" + f->name());
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) FillEveryField(r->AddMessage(m, f));
      continue;
    }
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        r->SetString(m, f, "v" + f->name());
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        r->SetBool(m, f, true);
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(m, f, 7);
        break;
      case FieldDescriptor::CPPTYPE_INT32:
        r->SetInt32(m, f, 7);
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(m, f, 7);
        break;
      case FieldDescriptor::CPPTYPE_ENUM:
        r->SetEnumValue(m, f, 1);
        break;
      case FieldDescriptor::CPPTYPE_MESSAGE:
        FillEveryField(r->MutableMessage(m, f));
        break;
      default:
        ADD_FAILURE() << "unhandled field type in " << f->full_name();
    }
  }
}

// The decision event copies the decision field by field, leaving out only the evidence: a field
// added to Decision and forgotten there fails this test.
TEST(ConvertTest, DecisionEventCarriesEveryFieldButTheEvidence) {
  DecisionUpdate update;
  update.change = DecisionChange::kCreated;
  FillEveryField(&update.decision);
  ASSERT_GT(update.decision.evidence_size(), 0);
  palisade::v1::Event event;
  ASSERT_TRUE(DecisionEventFrom(update, &event));
  Decision expected = update.decision;
  expected.clear_evidence();
  std::string diff;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(expected, event.decision().decision())) << diff;
  EXPECT_EQ(event.correlation_id(), update.decision.id());
  EXPECT_EQ(event.decision().change(), "created");
}

TEST(ConvertTest, StaleDecisionsMakeNoEventAndDetectionsKeepTheirLines) {
  DecisionUpdate stale;
  stale.change = DecisionChange::kStale;
  palisade::v1::Event event;
  EXPECT_FALSE(DecisionEventFrom(stale, &event));

  Detection detection;
  detection.rule_id = "ssh";
  detection.key = "203.0.113.7";
  detection.evidence = {"line 1", "line 2"};
  detection.feeds = {"drop"};
  palisade::v1::Event d = DetectionEventFrom("web-1", std::move(detection), stale);
  EXPECT_TRUE(d.correlation_id().empty());  // a stale detection made no decision
  EXPECT_EQ(d.detection().outcome(), "stale");  // but says so
  EXPECT_THAT(d.detection().evidence(), ::testing::ElementsAre("line 1", "line 2"));
  EXPECT_THAT(d.detection().feeds(), ::testing::ElementsAre("drop"));
  EXPECT_EQ(d.detection().source(), "web-1");
}

// Audit of itself: an outcome carrying an alert becomes an alert event (kind, target, rule,
// evidence, advice); one without makes none.
TEST(ConvertTest, AnAlertOutcomeMakesAnAlertEvent) {
  ActionOutcome o;
  o.outcome = "refused";
  o.actuator = palisade::v1::ACTUATOR_TOKEN_REVOCATION;
  o.decision.set_id("d9");
  o.decision.set_rule_id("cloudflare-token-misuse");
  o.decision.mutable_target()->set_kind(palisade::v1::TARGET_KIND_TOKEN_ID);
  o.decision.mutable_target()->set_value("0123456789abcdef0123456789abcdef");
  o.decision.add_evidence("{\"actor\":{\"ip_address\":\"203.0.113.50\"}}");
  palisade::v1::Event e;
  EXPECT_FALSE(AlertEventFrom(o, &e));
  o.alert = "own_token_misuse";
  ASSERT_TRUE(AlertEventFrom(o, &e));
  EXPECT_EQ(e.kind(), palisade::v1::EVENT_KIND_ALERT);
  EXPECT_EQ(e.correlation_id(), "d9");
  EXPECT_EQ(e.rule_id(), "cloudflare-token-misuse");
  EXPECT_EQ(e.alert().kind(), "own_token_misuse");
  EXPECT_EQ(e.alert().target().value(), "0123456789abcdef0123456789abcdef");
  EXPECT_THAT(e.alert().evidence(), ::testing::ElementsAre(::testing::HasSubstr("203.0.113.50")));
  EXPECT_THAT(e.alert().detail(), ::testing::HasSubstr("not revoked"));
  EXPECT_THAT(e.alert().detail(), ::testing::HasSubstr("palisadectl cloudflare rotate"));
}

}  // namespace
}  // namespace palisade
