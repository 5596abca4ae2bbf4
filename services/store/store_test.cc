#include "services/store/store.h"

#include <fstream>

#include "sqlite3.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::SizeIs;

std::string Path(const std::string& name) {
  std::string p = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::remove(p.c_str());
  std::remove((p + "-wal").c_str());
  std::remove((p + "-shm").c_str());
  return p;
}

palisade::v1::Decision D(const std::string& id, bool active = true) {
  palisade::v1::Decision d;
  d.set_id(id);
  d.mutable_target()->set_value("203.0.113.7");
  d.set_active(active);
  d.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  return d;
}

TEST(StoreTest, DecisionAndItsOperationSurviveAReopen) {
  const std::string path = Path("a.db");
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    OffenceRow off{"203.0.113.7", 2, absl::FromUnixSeconds(1000)};
    absl::StatusOr<int64_t> seq = (*store)->RecordDecision(D("d1"), &off, true);
    ASSERT_THAT(seq, IsOk());
    EXPECT_GT(*seq, 0);
    ASSERT_THAT((*store)->RecordDecision(D("d2"), nullptr, std::nullopt), IsOk());
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  EXPECT_THAT(*(*store)->LoadDecisions(true), SizeIs(2));
  auto outbox = (*store)->LoadOutbox();
  ASSERT_THAT(outbox, IsOk());
  ASSERT_THAT(*outbox, SizeIs(1));
  EXPECT_EQ((*outbox)[0].decision.id(), "d1");
  EXPECT_TRUE((*outbox)[0].apply);
  auto offences = (*store)->LoadOffences();
  ASSERT_THAT(*offences, SizeIs(1));
  EXPECT_EQ((*offences)[0].count, 2u);
}

TEST(StoreTest, CompletingMovesTheOperationToTheEdgeAndBack) {
  auto store = Store::Open(Path("b.db"));
  ASSERT_THAT(store, IsOk());
  int64_t apply = *(*store)->RecordDecision(D("d1"), nullptr, true);
  ASSERT_THAT((*store)->CompleteApply(apply, {"d1", 1, "rule-1", "", false}), IsOk());
  EXPECT_THAT(*(*store)->LoadOutbox(), SizeIs(0));
  auto edges = (*store)->LoadEdges();
  ASSERT_THAT(*edges, SizeIs(1));
  EXPECT_EQ((*edges)[0].id, "rule-1");
  int64_t remove = *(*store)->RecordDecision(D("d1", false), nullptr, false);
  ASSERT_THAT((*store)->Reschedule(remove, 2, absl::FromUnixSeconds(5000)), IsOk());
  auto outbox = (*store)->LoadOutbox();
  ASSERT_THAT(*outbox, SizeIs(1));
  EXPECT_FALSE((*outbox)[0].apply);
  EXPECT_EQ((*outbox)[0].attempts, 2);
  EXPECT_EQ((*outbox)[0].not_before, absl::FromUnixSeconds(5000));
  ASSERT_THAT((*store)->CompleteRemove(remove, "d1"), IsOk());
  EXPECT_THAT(*(*store)->LoadEdges(), SizeIs(0));
  EXPECT_THAT(*(*store)->LoadDecisions(true), SizeIs(0));
  EXPECT_THAT(*(*store)->LoadDecisions(false), SizeIs(1));
}

TEST(StoreTest, Snapshots) {
  auto store = Store::Open(Path("c.db"));
  ASSERT_THAT(store, IsOk());
  EXPECT_EQ(*(*store)->LoadSnapshot("windows"), "");
  ASSERT_THAT((*store)->SaveSnapshot("windows", std::string("\\0bin\\xff", 5)), IsOk());
  EXPECT_EQ(*(*store)->LoadSnapshot("windows"), std::string("\\0bin\\xff", 5));
}

TEST(StoreTest, RefusesACorruptFile) {
  const std::string path = Path("d.db");
  std::ofstream(path) << "this is not a database at all, not even close";
  EXPECT_FALSE(Store::Open(path).ok());
}

// A COMMIT can fail (a deferred constraint, SQLITE_BUSY, a full disk) and SQLite then leaves the
// transaction open: without a ROLLBACK every later BEGIN fails and nothing is durable again.
TEST(StoreTest, AFailedCommitIsRolledBackAndLaterTransactionsWork) {
  const std::string path = Path("e.db");
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  {
    // A second connection adds a trigger that breaks a deferred foreign key for decision "bad":
    // the statements succeed and only the COMMIT fails. (The store binds text as blobs.)
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    ASSERT_EQ(sqlite3_exec(db, R"sql(
        CREATE TABLE parent(id TEXT PRIMARY KEY);
        CREATE TABLE child(p TEXT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TRIGGER break_bad AFTER INSERT ON decisions WHEN CAST(NEW.id AS TEXT) = 'bad'
          BEGIN INSERT INTO child VALUES('missing'); END;)sql",
                           nullptr, nullptr, &err),
              SQLITE_OK)
        << (err ? err : "");
    sqlite3_close(db);
  }
  EXPECT_THAT((*store)->RecordDecision(D("bad"), nullptr, true),
              StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(*(*store)->LoadDecisions(false), SizeIs(0));
  absl::StatusOr<int64_t> seq = (*store)->RecordDecision(D("good"), nullptr, true);
  ASSERT_THAT(seq, IsOk());
  ASSERT_THAT((*store)->CompleteApply(*seq, {"good", 1, "rule-1", "", false}), IsOk());
  auto decisions = (*store)->LoadDecisions(false);
  ASSERT_THAT(*decisions, SizeIs(1));
  EXPECT_EQ((*decisions)[0].id(), "good");
  EXPECT_THAT(*(*store)->LoadEdges(), SizeIs(1));
}

}  // namespace
}  // namespace palisade
