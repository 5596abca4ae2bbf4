#include "services/store/store.h"

#include <algorithm>
#include <atomic>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"
#include "sqlite3.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::IsOkAndHolds;
using ::palisade::testing::StatusIs;
using ::testing::HasSubstr;
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
    OffenceRow off{"203.0.113.7", 2, absl::FromUnixSeconds(1000), 1};
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
  auto offences = (*store)->LoadOffences(absl::InfinitePast(), 100);
  ASSERT_THAT(*offences, SizeIs(1));
  EXPECT_EQ((*offences)[0].count, 2u);
}

// An offence row keeps until when its count stands (the memories of the rules that counted it),
// so a restart escalates as without one; a row that does not know reads back as not known.
TEST(StoreTest, AnOffenceRowKeepsUntilWhenItsCountStands) {
  const std::string path = Path("counted_until.db");
  const absl::Time last = absl::FromUnixSeconds(1000);
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    OffenceRow known{"203.0.113.7", 3, last, 1, last + absl::Hours(24 * 30)};
    ASSERT_THAT((*store)->RecordDecision(D("d1"), &known, std::nullopt), IsOk());
    OffenceRow guessed{"203.0.113.8", 1, last - absl::Seconds(1), 2};
    ASSERT_THAT((*store)->RecordDecision(D("d2"), &guessed, std::nullopt), IsOk());
  }
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  auto offences = (*store)->LoadOffences(absl::InfinitePast(), 10);
  ASSERT_THAT(offences, IsOk());
  ASSERT_THAT(*offences, SizeIs(2));
  EXPECT_EQ((*offences)[0].target, "203.0.113.7");
  EXPECT_EQ((*offences)[0].counted_until, last + absl::Hours(24 * 30));
  EXPECT_EQ((*offences)[1].counted_until, absl::InfinitePast());
}

// The offence history is kept for good, so a restart loads only what escalation can still use:
// the offenders of the memory (since), the latest first, at most `limit` (the table's cap). It
// loaded every row ever written, a spike of memory as large as the history before the table
// forgot them.
TEST(StoreTest, LoadOffencesTakesTheLatestSinceUpToALimit) {
  auto store = Store::Open(Path("offences.db"));
  ASSERT_THAT(store, IsOk());
  for (int i = 0; i < 10; ++i) {
    OffenceRow off{absl::StrCat("203.0.113.", i), 1, absl::FromUnixSeconds(1000 * (i + 1)),
                   i + 1};
    ASSERT_THAT((*store)->RecordDecision(D(absl::StrCat("d", i)), &off, std::nullopt), IsOk());
  }
  auto all = (*store)->LoadOffences(absl::InfinitePast(), 100);
  ASSERT_THAT(all, IsOk());
  EXPECT_THAT(*all, SizeIs(10));
  auto recent = (*store)->LoadOffences(absl::FromUnixSeconds(5000), 3);
  ASSERT_THAT(recent, IsOk());
  ASSERT_THAT(*recent, SizeIs(3));
  EXPECT_EQ((*recent)[0].target, "203.0.113.9");
  EXPECT_EQ((*recent)[2].target, "203.0.113.7");
  auto since = (*store)->LoadOffences(absl::FromUnixSeconds(8000), 100);
  ASSERT_THAT(since, IsOk());
  EXPECT_THAT(*since, SizeIs(3));
}

// An offence is written to its row (OffenceRow::id): the same row again updates it, another row
// of the same target is a row of its own (an offender forgotten and back), and one without a
// number is refused with the transaction it was in.
TEST(StoreTest, OffencesAreWrittenToTheirRows) {
  auto store = Store::Open(Path("offence_rows.db"));
  ASSERT_THAT(store, IsOk());
  EXPECT_THAT((*store)->LastOffenceId(), IsOkAndHolds(0));
  const absl::Time t = absl::FromUnixSeconds(1'700'000'000);
  OffenceRow a{"203.0.113.1", 1, t, 1}, b{"203.0.113.2", 1, t, 2};
  ASSERT_THAT((*store)->RecordDecision(D("d1"), &a, std::nullopt), IsOk());
  ASSERT_THAT((*store)->RecordDecision(D("d2"), &b, std::nullopt), IsOk());
  a.count = 2;
  a.last = t + absl::Minutes(5);
  ASSERT_THAT((*store)->RecordDecision(D("d1"), &a, std::nullopt), IsOk());
  OffenceRow again{"203.0.113.1", 1, t + absl::Hours(24), 3};
  ASSERT_THAT((*store)->RecordDecision(D("d3"), &again, std::nullopt), IsOk());
  auto rows = (*store)->LoadOffences(absl::InfinitePast(), 10);
  ASSERT_THAT(rows, IsOk());
  ASSERT_THAT(*rows, SizeIs(3));
  EXPECT_EQ((*rows)[0].id, 3);  // the latest first
  EXPECT_EQ((*rows)[1].id, 1);
  EXPECT_EQ((*rows)[1].count, 2u);
  EXPECT_EQ((*rows)[1].last, t + absl::Minutes(5));
  EXPECT_EQ((*rows)[2].id, 2);
  EXPECT_THAT((*store)->LastOffenceId(), IsOkAndHolds(3));
  OffenceRow unnumbered{"198.51.100.4", 1, t, 0};
  EXPECT_THAT((*store)->RecordDecision(D("d4"), &unnumbered, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no row id")));
  auto decisions = (*store)->LoadDecisions(false);
  ASSERT_THAT(decisions, IsOk());
  EXPECT_THAT(*decisions, SizeIs(3));  // d4's decision went with its transaction
}

// The state file is bounded by its retention: ended decisions that ended before it and have
// nothing left to do at the edge (no operation, no edge record), and offences last seen before
// it, are deleted, at most `limit` rows of each per call. An attacker who makes a ban a minute
// for a year made the file grow for good.
TEST(StoreTest, PruneDeletesWhatEndedBeforeTheRetention) {
  auto store = Store::Open(Path("prune.db"));
  ASSERT_THAT(store, IsOk());
  auto decision = [](const std::string& id, bool active, int64_t expiry) {
    palisade::v1::Decision d = D(id, active);
    d.mutable_expiry()->set_seconds(expiry);
    return d;
  };
  for (int i = 0; i < 5; ++i) {  // ended long ago, nothing pending: pruned
    OffenceRow off{absl::StrCat("203.0.113.", i), 1, absl::FromUnixSeconds(1000 + i), i + 1};
    ASSERT_THAT((*store)->RecordDecision(decision(absl::StrCat("old", i), false, 1000 + i), &off,
                                         std::nullopt),
                IsOk());
  }
  // Ended long ago but its remove is still queued: kept (the outbox needs its row).
  ASSERT_THAT((*store)->RecordDecision(decision("pending", false, 1000), nullptr, false), IsOk());
  // Ended long ago, its edge record left (a remove that failed for good): kept.
  int64_t apply = *(*store)->RecordDecision(decision("edge", true, 1000), nullptr, true);
  ASSERT_THAT((*store)->CompleteApply(apply, {"edge", 1, "rule-1", "", false}), IsOk());
  ASSERT_THAT((*store)->RecordDecision(decision("edge", false, 1000), nullptr, std::nullopt),
              IsOk());
  // Active, expired on paper (the sweep will end it): kept. Ended recently: kept.
  ASSERT_THAT((*store)->RecordDecision(decision("active", true, 1000), nullptr, std::nullopt),
              IsOk());
  OffenceRow recent{"198.51.100.1", 3, absl::FromUnixSeconds(9000), 10};
  ASSERT_THAT((*store)->RecordDecision(decision("recent", false, 9000), &recent, std::nullopt),
              IsOk());

  absl::StatusOr<Store::Pruned> pruned = (*store)->Prune(absl::FromUnixSeconds(5000), 3);
  ASSERT_THAT(pruned, IsOk());
  EXPECT_EQ(pruned->decisions, 3);
  EXPECT_EQ(pruned->offences, 3);
  pruned = (*store)->Prune(absl::FromUnixSeconds(5000), 3);
  ASSERT_THAT(pruned, IsOk());
  EXPECT_EQ(pruned->decisions, 2);
  EXPECT_EQ(pruned->offences, 2);
  std::set<std::string> left;
  auto decisions = (*store)->LoadDecisions(false);
  ASSERT_THAT(decisions, IsOk());
  for (const auto& d : *decisions) left.insert(d.id());
  EXPECT_THAT(left, ::testing::ElementsAre("active", "edge", "pending", "recent"));
  auto offences = (*store)->LoadOffences(absl::InfinitePast(), 100);
  ASSERT_THAT(*offences, SizeIs(1));
  EXPECT_EQ((*offences)[0].target, "198.51.100.1");
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

// One decision by its id (the dispatcher's Restore follows a chain of replacements link by
// link): that row only, so that another corrupt row does not make it fail.
TEST(StoreTest, LoadDecisionReadsOneRowByItsId) {
  const std::string path = Path("one-decision.db");
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  palisade::v1::Decision ended = D("d1", false);
  ended.set_replaced_by("d2");
  ASSERT_THAT((*store)->RecordDecision(ended, nullptr, std::nullopt), IsOk());
  ASSERT_THAT((*store)->RecordDecision(D("d2"), nullptr, std::nullopt), IsOk());
  ASSERT_THAT((*store)->RecordDecision(D("bad", false), nullptr, std::nullopt), IsOk());
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "UPDATE decisions SET proto = x'ffffffff' "
                           "WHERE CAST(id AS TEXT) = 'bad'",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  absl::StatusOr<palisade::v1::Decision> d1 = (*store)->LoadDecision("d1");
  ASSERT_THAT(d1, IsOk());
  EXPECT_EQ(d1->id(), "d1");
  EXPECT_FALSE(d1->active());
  EXPECT_EQ(d1->replaced_by(), "d2");
  absl::StatusOr<palisade::v1::Decision> d2 = (*store)->LoadDecision("d2");
  ASSERT_THAT(d2, IsOk());
  EXPECT_TRUE(d2->active());
  EXPECT_THAT((*store)->LoadDecision("none").status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT((*store)->LoadDecision("bad").status(), StatusIs(absl::StatusCode::kDataLoss));
  // All of them at once meets the corrupt row.
  EXPECT_THAT((*store)->LoadDecisions(false).status(), StatusIs(absl::StatusCode::kDataLoss));
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

// A database written by schema version 1 (before bouncers): its tables exactly as version 1
// made them, with a decision and two offences in it.
void WriteVersion1(const std::string& path) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  palisade::v1::Decision d = D("old");
  const std::string blob = d.SerializeAsString();
  std::string hex;
  for (unsigned char c : blob) {
    static const char* kHex = "0123456789abcdef";
    hex += kHex[c >> 4];
    hex += kHex[c & 15];
  }
  char* err = nullptr;
  const std::string sql = R"sql(
      CREATE TABLE decisions (id TEXT PRIMARY KEY, target TEXT NOT NULL, active INTEGER NOT NULL,
        expiry_ms INTEGER NOT NULL, proto BLOB NOT NULL);
      CREATE INDEX decisions_active ON decisions(active);
      CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, decision_id TEXT NOT NULL,
        apply INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        not_before_ms INTEGER NOT NULL DEFAULT 0);
      CREATE TABLE edges (decision_id TEXT PRIMARY KEY, actuator INTEGER NOT NULL,
        edge_id TEXT NOT NULL, container TEXT NOT NULL, foreign_object INTEGER NOT NULL);
      CREATE TABLE offences (target TEXT PRIMARY KEY, count INTEGER NOT NULL,
        last_ms INTEGER NOT NULL);
      CREATE TABLE snapshots (name TEXT PRIMARY KEY, blob BLOB NOT NULL);
      PRAGMA user_version = 1;
      INSERT INTO offences VALUES('203.0.113.7', 3, 5000);
      INSERT INTO offences VALUES('198.51.100.9', 1, 4000);
      INSERT INTO decisions VALUES(CAST('old' AS BLOB), '203.0.113.7', 1, 0, X')sql" +
                          hex + "');";
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_close(db);
}

int UserVersion(const std::string& path) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, nullptr);
  int v = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : -1;
  sqlite3_finalize(q);
  sqlite3_close(db);
  return v;
}

// Version 2 added bouncers; version 3 keyed the offences by row numbers (they keep theirs);
// version 4 keeps until when an offence row's count stands; version 5 keeps the claims waiting
// behind decisions.
TEST(StoreTest, AVersion1FileMigratesKeepingItsDecisionsAndOffences) {
  const std::string path = Path("v1.db");
  WriteVersion1(path);
  ASSERT_EQ(UserVersion(path), 1);
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    auto decisions = (*store)->LoadDecisions(true);
    ASSERT_THAT(decisions, IsOk());
    ASSERT_THAT(*decisions, SizeIs(1));
    EXPECT_EQ((*decisions)[0].id(), "old");
    auto offences = (*store)->LoadOffences(absl::InfinitePast(), 10);
    ASSERT_THAT(offences, IsOk());
    ASSERT_THAT(*offences, SizeIs(2));
    EXPECT_EQ((*offences)[0].target, "203.0.113.7");
    EXPECT_EQ((*offences)[0].count, 3u);
    EXPECT_EQ((*offences)[0].last, absl::FromUnixMillis(5000));
    // Version 4: until when the count stands is not known for rows written before.
    EXPECT_EQ((*offences)[0].counted_until, absl::InfinitePast());
    EXPECT_EQ((*offences)[0].id, 1);
    EXPECT_EQ((*offences)[1].id, 2);
    EXPECT_THAT((*store)->LastOffenceId(), IsOkAndHolds(2));
    EXPECT_THAT(*(*store)->LoadBouncers(), SizeIs(0));
    ASSERT_THAT((*store)->AddBouncer({"fw", std::string(32, 'h'), absl::FromUnixSeconds(10)}),
                IsOk());
    EXPECT_THAT(*(*store)->LoadWaitingClaims(absl::InfinitePast()), SizeIs(0));
    WaitingClaimRow claim;
    claim.target = "203.0.113.7";
    claim.origin = palisade::v1::ORIGIN_MANUAL;
    claim.expiry = absl::FromUnixSeconds(20000);
    ASSERT_THAT((*store)->RecordDecisions({}, {{"203.0.113.7", "d1", {claim}}}), IsOk());
  }
  EXPECT_EQ(UserVersion(path), Store::kSchemaVersion);
  auto store = Store::Open(path);  // opening a migrated file again migrates nothing
  ASSERT_THAT(store, IsOk());
  EXPECT_THAT(*(*store)->LoadBouncers(), SizeIs(1));
  EXPECT_THAT(*(*store)->LoadWaitingClaims(absl::InfinitePast()), SizeIs(1));
}

// The claims waiting behind a target's decision (schema version 5) are written with the change
// set, all of a target's at once (they replace the ones stored; none: deleted), in the same
// transaction as the decisions (a refused decision leaves the claims as they were); a load
// takes those still due, in the order written; Prune deletes the ones long over.
TEST(StoreTest, WaitingClaimsReplaceTheirTargetsAndGoWithTheirTransaction) {
  const std::string path = Path("waiting.db");
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  const auto claim = [](const std::string& target, int origin, int64_t expiry,
                        const std::string& reason) {
    WaitingClaimRow c;
    c.target = target;
    c.origin = origin;
    c.action = palisade::v1::ACTION_CHALLENGE;
    c.actuator = palisade::v1::ACTUATOR_ACCESS_RULE;
    c.dry_run = origin == palisade::v1::ORIGIN_RULE;
    c.expiry = absl::FromUnixSeconds(expiry);
    c.rule_id = origin == palisade::v1::ORIGIN_RULE ? "probe" : "";
    c.reason = reason;
    return c;
  };
  const std::string a = "203.0.113.7", b = "198.51.100.9";
  palisade::v1::Decision d = D("d1");
  ASSERT_THAT((*store)->RecordDecisions(
                  {{&d, std::nullopt, true}},
                  {{a, "d1", {claim(a, palisade::v1::ORIGIN_MANUAL, 9000, "the operator's"),
                              claim(a, palisade::v1::ORIGIN_RULE, 8000, "")}},
                   {b, "d0", {claim(b, palisade::v1::ORIGIN_MANUAL, 1000, "over")}}}),
              IsOk());
  absl::StatusOr<std::vector<WaitingClaimRow>> loaded =
      (*store)->LoadWaitingClaims(absl::FromUnixSeconds(1000));
  ASSERT_THAT(loaded, IsOk());
  ASSERT_THAT(*loaded, SizeIs(2));  // b's is over
  EXPECT_EQ((*loaded)[0].target, a);
  EXPECT_EQ((*loaded)[0].decision_id, "d1");  // the decision they wait behind
  EXPECT_EQ((*loaded)[0].origin, palisade::v1::ORIGIN_MANUAL);
  EXPECT_EQ((*loaded)[0].action, palisade::v1::ACTION_CHALLENGE);
  EXPECT_EQ((*loaded)[0].actuator, palisade::v1::ACTUATOR_ACCESS_RULE);
  EXPECT_FALSE((*loaded)[0].dry_run);
  EXPECT_EQ((*loaded)[0].expiry, absl::FromUnixSeconds(9000));
  EXPECT_EQ((*loaded)[0].reason, "the operator's");
  EXPECT_EQ((*loaded)[1].rule_id, "probe");
  EXPECT_TRUE((*loaded)[1].dry_run);
  // A target's claims as they now are replace its rows; none left: its rows go.
  ASSERT_THAT((*store)->RecordDecisions(
                  {}, {{a, "d1", {claim(a, palisade::v1::ORIGIN_RULE, 8500, "")}}, {b, "", {}}}),
              IsOk());
  loaded = (*store)->LoadWaitingClaims(absl::InfinitePast());
  ASSERT_THAT(*loaded, SizeIs(1));
  EXPECT_EQ((*loaded)[0].expiry, absl::FromUnixSeconds(8500));
  // A decision the store refuses takes the claims of its transaction with it.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "CREATE TRIGGER refuse BEFORE INSERT ON decisions "
                           "BEGIN SELECT RAISE(ABORT, 'no'); END;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  palisade::v1::Decision d2 = D("d2");
  EXPECT_THAT((*store)->RecordDecisions({{&d2, std::nullopt, true}}, {{a, "d2", {}}}),
              StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(*(*store)->LoadWaitingClaims(absl::InfinitePast()), SizeIs(1));
  // Retention: a claim over before the cutoff goes.
  absl::StatusOr<Store::Pruned> pruned = (*store)->Prune(absl::FromUnixSeconds(8000), 10);
  ASSERT_THAT(pruned, IsOk());
  EXPECT_EQ(pruned->waiting_claims, 0);
  pruned = (*store)->Prune(absl::FromUnixSeconds(9000), 10);
  ASSERT_THAT(pruned, IsOk());
  EXPECT_EQ(pruned->waiting_claims, 1);
  EXPECT_THAT(*(*store)->LoadWaitingClaims(absl::InfinitePast()), SizeIs(0));
}

TEST(StoreTest, RefusesAFileFromANewerSchema) {
  const std::string path = Path("newer.db");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    const std::string newer =
        absl::StrCat("PRAGMA user_version = ", Store::kSchemaVersion + 1);
    ASSERT_EQ(sqlite3_exec(db, newer.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  EXPECT_THAT(Store::Open(path), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(StoreTest, Bouncers) {
  const std::string path = Path("bouncers.db");
  {
    auto store = Store::Open(path);
    ASSERT_THAT(store, IsOk());
    BouncerRow fw{"fw", std::string(32, 'a'), absl::FromUnixSeconds(100)};
    ASSERT_THAT((*store)->AddBouncer(fw), IsOk());
    EXPECT_THAT((*store)->AddBouncer(fw), StatusIs(absl::StatusCode::kAlreadyExists));
    ASSERT_THAT((*store)->AddBouncer({"nginx", std::string(32, 'b'), absl::FromUnixSeconds(101)}),
                IsOk());
    ASSERT_THAT((*store)->RecordPull("fw", absl::FromUnixSeconds(200), "127.0.0.1",
                                     "crowdsec-firewall-bouncer/v0.0.25", 42),
                IsOk());
    ASSERT_THAT((*store)->DeleteBouncer("nginx"), IsOk());
    EXPECT_THAT((*store)->DeleteBouncer("nginx"), StatusIs(absl::StatusCode::kNotFound));
  }
  auto store = Store::Open(path);
  auto rows = (*store)->LoadBouncers();
  ASSERT_THAT(rows, IsOk());
  ASSERT_THAT(*rows, SizeIs(1));
  EXPECT_EQ((*rows)[0].name, "fw");
  EXPECT_EQ((*rows)[0].key_hash, std::string(32, 'a'));
  EXPECT_EQ((*rows)[0].created, absl::FromUnixSeconds(100));
  EXPECT_EQ((*rows)[0].last_pull, absl::FromUnixSeconds(200));
  EXPECT_EQ((*rows)[0].address, "127.0.0.1");
  EXPECT_EQ((*rows)[0].user_agent, "crowdsec-firewall-bouncer/v0.0.25");
  EXPECT_EQ((*rows)[0].position, 42);
}

BouncerChangeRow Change(const std::string& id, int64_t seq, bool deleted, int64_t at_s) {
  BouncerChangeRow r;
  r.decision_id = id;
  r.num = seq;
  r.seq = seq;
  r.deleted = deleted;
  r.at = absl::FromUnixSeconds(at_s);
  r.scope = "Ip";
  r.value = "203.0.113." + std::to_string(seq);
  r.type = "ban";
  r.origin = "crowdsec";
  r.scenario = "sshd-bf";
  r.until = absl::FromUnixSeconds(at_s + 3600);
  return r;
}

TEST(StoreTest, BouncerChangeLogKeepsTheLatestChangePerDecisionAndTrims) {
  const std::string path = Path("log.db");
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  ASSERT_THAT(
      (*store)->RecordBouncerChanges({Change("a", 1, false, 100), Change("b", 2, false, 100),
                                      Change("c", 3, false, 100), Change("d", 4, false, 100)},
                                     4),
      IsOk());
  BouncerChangeRow a_deleted = Change("a", 5, true, 200);
  a_deleted.num = 1;
  ASSERT_THAT((*store)->RecordBouncerChanges(
                  {a_deleted, Change("b", 6, true, 300), Change("c", 7, true, 400)}, 7),
              IsOk());
  auto all = (*store)->LoadBouncerChanges(0, false);
  ASSERT_THAT(all, IsOk());
  ASSERT_THAT(*all, SizeIs(4));  // one row per decision: a's deletion replaced its creation
  EXPECT_EQ((*all)[0].decision_id, "d");
  EXPECT_EQ((*all)[1].decision_id, "a");
  EXPECT_EQ((*all)[1].num, 1);
  EXPECT_TRUE((*all)[1].deleted);
  EXPECT_EQ((*all)[1].until, absl::FromUnixSeconds(3800));
  EXPECT_THAT(*(*store)->LoadBouncerChanges(5, false), SizeIs(2));
  EXPECT_THAT(*(*store)->LoadBouncerChanges(0, true), SizeIs(1));
  EXPECT_EQ((*store)->LoadBouncerLogMeta()->last_seq, 7);

  // Served through 5: a's deletion goes, nothing else; trimmed_through stays (all were served).
  EXPECT_EQ(*(*store)->TrimBouncerChanges(5, absl::InfinitePast(), 1000), 1);
  EXPECT_EQ((*store)->LoadBouncerLogMeta()->trimmed_through, 0);
  // By age: b's deletion (at 300) is older than 350; c's is not.
  EXPECT_EQ(*(*store)->TrimBouncerChanges(0, absl::FromUnixSeconds(350), 1000), 1);
  EXPECT_EQ((*store)->LoadBouncerLogMeta()->trimmed_through, 6);
  // By count: at most 0 deletions kept; the live decision d stays whatever happens.
  EXPECT_EQ(*(*store)->TrimBouncerChanges(0, absl::InfinitePast(), 0), 1);
  EXPECT_EQ((*store)->LoadBouncerLogMeta()->trimmed_through, 7);
  auto left = (*store)->LoadBouncerChanges(0, false);
  ASSERT_THAT(*left, SizeIs(1));
  EXPECT_EQ((*left)[0].decision_id, "d");
}

// A stream pull at position 0 without startup (a bouncer whose first answer's record was lost
// in a crash) is owed the deletions logged after the bouncer's registration only. It read every
// row of the log (up to max_deletions deletions, under the store's lock) and dropped the older
// ones in C++; the query now leaves them out. Trim keeps the deletions from the first one logged
// after such a bouncer's registration (FirstBouncerDeletionAfter).
TEST(StoreTest, BouncerChangesSinceARegistrationLeaveOlderDeletionsOut) {
  auto store = Store::Open(Path("log-since.db"));
  ASSERT_THAT(store, IsOk());
  ASSERT_THAT((*store)->RecordBouncerChanges(
                  {Change("a", 1, false, 100), Change("b", 2, true, 200), Change("c", 3, true, 300),
                   Change("d", 4, false, 400), Change("e", 5, true, 500)},
                  5),
              IsOk());
  auto ids = [](const absl::StatusOr<std::vector<BouncerChangeRow>>& rows) {
    std::vector<std::string> out;
    if (rows.ok()) {
      for (const BouncerChangeRow& r : *rows) out.push_back(r.decision_id);
    }
    return out;
  };
  // Registered at 250: b's deletion (at 200) is not loaded; the live rows all are.
  EXPECT_EQ(ids((*store)->LoadBouncerChanges(0, absl::FromUnixSeconds(250))),
            (std::vector<std::string>{"a", "c", "d", "e"}));
  // A deletion logged in the registration's millisecond is not after it.
  EXPECT_EQ(ids((*store)->LoadBouncerChanges(0, absl::FromUnixSeconds(300))),
            (std::vector<std::string>{"a", "d", "e"}));
  // Above a position, as ever.
  EXPECT_EQ(ids((*store)->LoadBouncerChanges(3, absl::FromUnixSeconds(250))),
            (std::vector<std::string>{"d", "e"}));
  // The bool form is unchanged: every row, or the live ones.
  EXPECT_THAT(*(*store)->LoadBouncerChanges(0, false), SizeIs(5));
  EXPECT_EQ(ids((*store)->LoadBouncerChanges(0, true)), (std::vector<std::string>{"a", "d"}));
  // Trim's bound: the first deletion logged after a registration (0: none).
  EXPECT_THAT((*store)->FirstBouncerDeletionAfter(absl::FromUnixSeconds(150)), IsOkAndHolds(2));
  EXPECT_THAT((*store)->FirstBouncerDeletionAfter(absl::FromUnixSeconds(250)), IsOkAndHolds(3));
  EXPECT_THAT((*store)->FirstBouncerDeletionAfter(absl::FromUnixSeconds(500)), IsOkAndHolds(0));
}

// A VFS over the default one that records, for the tests of checkpoints below, which threads
// sync the database file (in WAL mode only a checkpoint writes and syncs it; a commit that
// starts the WAL over syncs the WAL's new header) and how far the WAL file was ever written.
struct SyncRecorder {
  static SyncRecorder* active;
  // Set: every read of a file fails (SQLITE_IOERR_READ), as on a failing disk.
  std::atomic<bool> fail_reads{false};
  absl::Mutex mu;
  std::vector<std::thread::id> syncs ABSL_GUARDED_BY(mu);  // of the database file
  int64_t wal_bytes ABSL_GUARDED_BY(mu) = 0;
  const std::thread::id test_thread = std::this_thread::get_id();
  // With `hold_checkpoint` set, the first write to the database file from a thread other than
  // the test's (the checkpointer copying the WAL) sets `holding` and waits for `release`.
  bool hold_checkpoint ABSL_GUARDED_BY(mu) = false;
  bool holding ABSL_GUARDED_BY(mu) = false;
  bool release ABSL_GUARDED_BY(mu) = false;
  sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
  sqlite3_vfs vfs = *real;
  sqlite3_io_methods methods = {};

  struct File {
    sqlite3_file base;
    sqlite3_file* real;
    bool wal;
  };
  static sqlite3_file* Real(sqlite3_file* f) { return reinterpret_cast<File*>(f)->real; }

  SyncRecorder() {
    active = this;
    vfs.zName = "sync-recorder";
    vfs.szOsFile = static_cast<int>(sizeof(File)) + real->szOsFile;
    vfs.xOpen = [](sqlite3_vfs*, const char* name, sqlite3_file* f, int flags, int* out) {
      File* file = reinterpret_cast<File*>(f);
      file->real = reinterpret_cast<sqlite3_file*>(file + 1);
      file->wal = name != nullptr && absl::EndsWith(name, "-wal");
      int rc = active->real->xOpen(active->real, name, file->real, flags, out);
      file->base.pMethods = file->real->pMethods != nullptr ? &active->methods : nullptr;
      return rc;
    };
    methods.iVersion = 3;
    methods.xClose = [](sqlite3_file* f) { return Real(f)->pMethods->xClose(Real(f)); };
    methods.xRead = [](sqlite3_file* f, void* p, int n, sqlite3_int64 at) {
      if (active->fail_reads) return SQLITE_IOERR_READ;
      return Real(f)->pMethods->xRead(Real(f), p, n, at);
    };
    methods.xWrite = [](sqlite3_file* f, const void* p, int n, sqlite3_int64 at) {
      absl::MutexLock lock(&active->mu);
      if (reinterpret_cast<File*>(f)->wal) {
        active->wal_bytes = std::max<int64_t>(active->wal_bytes, at + n);
      } else if (active->hold_checkpoint && std::this_thread::get_id() != active->test_thread) {
        active->hold_checkpoint = false;
        active->holding = true;
        active->mu.Await(absl::Condition(&active->release));
      }
      return Real(f)->pMethods->xWrite(Real(f), p, n, at);
    };
    methods.xTruncate = [](sqlite3_file* f, sqlite3_int64 n) {
      return Real(f)->pMethods->xTruncate(Real(f), n);
    };
    methods.xSync = [](sqlite3_file* f, int flags) {
      if (!reinterpret_cast<File*>(f)->wal) {
        absl::MutexLock lock(&active->mu);
        active->syncs.push_back(std::this_thread::get_id());
      }
      return Real(f)->pMethods->xSync(Real(f), flags);
    };
    methods.xFileSize = [](sqlite3_file* f, sqlite3_int64* n) {
      return Real(f)->pMethods->xFileSize(Real(f), n);
    };
    methods.xLock = [](sqlite3_file* f, int l) { return Real(f)->pMethods->xLock(Real(f), l); };
    methods.xUnlock = [](sqlite3_file* f, int l) { return Real(f)->pMethods->xUnlock(Real(f), l); };
    methods.xCheckReservedLock = [](sqlite3_file* f, int* out) {
      return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
    };
    methods.xFileControl = [](sqlite3_file* f, int op, void* arg) {
      return Real(f)->pMethods->xFileControl(Real(f), op, arg);
    };
    methods.xSectorSize = [](sqlite3_file* f) { return Real(f)->pMethods->xSectorSize(Real(f)); };
    methods.xDeviceCharacteristics = [](sqlite3_file* f) {
      return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
    };
    methods.xShmMap = [](sqlite3_file* f, int region, int size, int extend, void volatile** p) {
      return Real(f)->pMethods->xShmMap(Real(f), region, size, extend, p);
    };
    methods.xShmLock = [](sqlite3_file* f, int offset, int n, int flags) {
      return Real(f)->pMethods->xShmLock(Real(f), offset, n, flags);
    };
    methods.xShmBarrier = [](sqlite3_file* f) { Real(f)->pMethods->xShmBarrier(Real(f)); };
    methods.xShmUnmap = [](sqlite3_file* f, int del) {
      return Real(f)->pMethods->xShmUnmap(Real(f), del);
    };
    methods.xFetch = [](sqlite3_file* f, sqlite3_int64 at, int n, void** p) {
      return Real(f)->pMethods->xFetch(Real(f), at, n, p);
    };
    methods.xUnfetch = [](sqlite3_file* f, sqlite3_int64 at, void* p) {
      return Real(f)->pMethods->xUnfetch(Real(f), at, p);
    };
    sqlite3_vfs_register(&vfs, /*makeDflt=*/1);
  }
  ~SyncRecorder() {
    sqlite3_vfs_unregister(&vfs);
    sqlite3_vfs_register(real, /*makeDflt=*/1);
    active = nullptr;
  }
  // Whether a thread other than the test's (the checkpointer) synced the database: for Await.
  static bool SyncedByAnotherThread(SyncRecorder* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu) {
    return std::count(r->syncs.begin(), r->syncs.end(), r->test_thread) <
           static_cast<std::ptrdiff_t>(r->syncs.size());
  }
  int SyncsOn(std::thread::id thread) {
    absl::MutexLock lock(&mu);
    return static_cast<int>(std::count(syncs.begin(), syncs.end(), thread));
  }
  int64_t WalBytes() {
    absl::MutexLock lock(&mu);
    return wal_bytes;
  }
};
SyncRecorder* SyncRecorder::active = nullptr;

// Every row of `table` in `path`, as text (ORDER BY its first column).
std::vector<std::string> Rows(const std::string& path, const std::string& table) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, absl::StrCat("SELECT * FROM ", table, " ORDER BY 1").c_str(),
                               -1, &q, nullptr),
            SQLITE_OK);
  std::vector<std::string> rows;
  while (sqlite3_step(q) == SQLITE_ROW) {
    std::string row;
    for (int c = 0; c < sqlite3_column_count(q); ++c) {
      absl::StrAppend(&row, sqlite3_column_type(q, c), ":",
                      absl::string_view(static_cast<const char*>(sqlite3_column_blob(q, c)),
                                        sqlite3_column_bytes(q, c)),
                      "|");
    }
    rows.push_back(std::move(row));
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
  return rows;
}

// The extension hint (an UPDATE in place) stores what the whole write stores, whether the rows
// are there as the hint says or not: a decision and an offence never stored, a row whose
// active flag or target differs from the hinted decision's.
TEST(StoreTest, AnExtensionHintStoresWhatTheWholeWriteStores) {
  auto decision = [](const std::string& id, const std::string& target, bool active,
                     int64_t expiry, const std::string& evidence) {
    palisade::v1::Decision d = D(id, active);
    d.mutable_target()->set_value(target);
    d.mutable_expiry()->set_seconds(expiry);
    d.add_evidence(evidence);
    return d;
  };
  struct Step {
    palisade::v1::Decision d;
    std::optional<OffenceRow> offence;
    bool extension;
  };
  const absl::Time t = absl::FromUnixSeconds(1'700'000'000);
  const std::vector<std::vector<Step>> transactions = {
      {{decision("d1", "203.0.113.1", true, 100, "a"), OffenceRow{"203.0.113.1", 1, t, 1}, false},
       {decision("d3", "203.0.113.3", true, 100, "c"), OffenceRow{"203.0.113.3", 1, t, 3}, false},
       {decision("d4", "203.0.113.4", false, 100, "d"), std::nullopt, false}},
      // As stored: updated in place.
      {{decision("d1", "203.0.113.1", true, 200, "a2"),
        OffenceRow{"203.0.113.1", 1, t + absl::Seconds(5), 1}, true},
       // Never stored (a lost creation write): written whole, with its offence.
       {decision("d2", "203.0.113.2", true, 300, "b"), OffenceRow{"203.0.113.2", 4, t, 2}, true},
       // Another target than the row's, another active flag than the row's.
       {decision("d3", "198.51.100.3", true, 400, "c2"), OffenceRow{"198.51.100.3", 2, t, 4},
        true},
       {decision("d4", "203.0.113.4", true, 500, "d2"), std::nullopt, true}},
      {{decision("d1", "203.0.113.1", true, 600, "a3"),
        OffenceRow{"203.0.113.1", 1, t + absl::Seconds(9), 1}, true}},
  };
  std::vector<std::string> paths;
  for (bool hints : {false, true}) {
    paths.push_back(Path(hints ? "hinted.db" : "whole.db"));
    auto store = Store::Open(paths.back());
    ASSERT_THAT(store, IsOk());
    for (const std::vector<Step>& steps : transactions) {
      std::vector<Store::Change> changes;
      for (const Step& step : steps) {
        changes.push_back({&step.d, step.offence, std::nullopt, hints && step.extension});
      }
      ASSERT_THAT((*store)->RecordDecisions(changes), IsOk());
    }
    auto active = (*store)->LoadDecisions(true);
    ASSERT_THAT(active, IsOk());
    EXPECT_THAT(*active, SizeIs(4)) << "hints " << hints;
  }
  for (const char* table : {"decisions", "offences"}) {
    const std::vector<std::string> whole = Rows(paths[0], table);
    EXPECT_THAT(whole, SizeIs(4)) << table;
    EXPECT_EQ(Rows(paths[1], table), whole) << table;
  }
}

// Writes `transactions` ingest-like batch transactions of 20 decisions, each decision with 2 KiB
// of evidence: ~12 WAL pages a transaction.
void WriteBatches(Store& store, int transactions, int first = 0) {
  const std::string evidence(2048, 'x');
  for (int t = first; t < first + transactions; ++t) {
    std::vector<palisade::v1::Decision> decisions;
    for (int i = 0; i < 20; ++i) {
      decisions.push_back(D(absl::StrCat("d", t, "-", i)));
      decisions.back().set_reason(evidence);
    }
    std::vector<Store::Change> changes;
    for (const auto& d : decisions) changes.push_back({&d, std::nullopt, true});
    ASSERT_THAT(store.RecordDecisions(changes), IsOk());
  }
}

// The checkpointer's tests count WAL pages against a threshold of 1,000 (SQLite's own; the
// default is 4,000) and the writer's of 10,000.
Store::Options ThousandPageCheckpoints() {
  Store::Options options;
  options.checkpoint_pages = 1000;
  options.writer_checkpoint_pages = 10000;
  return options;
}

// A commit never runs a checkpoint (SQLite's automatic one, past 1000 WAL pages, copied the WAL
// into the database and synced both in the committing thread, 4-8 ms of ingest's batch commit):
// the store's checkpointer thread does, and copies the rest when the store closes.
TEST(StoreTest, CommitsLeaveCheckpointsToTheCheckpointer) {
  SyncRecorder recorder;
  const std::string path = Path("checkpoints.db");
  const std::thread::id me = std::this_thread::get_id();
  {
    auto store = Store::Open(path, ThousandPageCheckpoints());
    ASSERT_THAT(store, IsOk());
    const int opening = recorder.SyncsOn(me);
    // ~3,000 WAL pages: three times the checkpoint threshold, well below the writer's own.
    WriteBatches(**store, 250);
    ASSERT_EQ(recorder.SyncsOn(me), opening);
    // The checkpointer was asked as the WAL passed 1000 pages: it syncs, in its own time.
    absl::MutexLock lock(&recorder.mu);
    recorder.mu.Await(absl::Condition(&SyncRecorder::SyncedByAnotherThread, &recorder));
  }
  // The last connection copied the WAL into the database and deleted it.
  EXPECT_FALSE(std::ifstream(path + "-wal").good());
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  EXPECT_THAT(*(*store)->LoadDecisions(true), SizeIs(250 * 20));
}

// SQLite syncs the database after a checkpoint only when the copy reached the end of the WAL as
// it is then. A checkpoint that copied every frame it saw while commits added more, with no
// request after it (the checkpointer is asked again only every eighth of the threshold), left
// the database unsynced and the checkpointer waiting for the next commit: after a burst's last
// commits, for ever (CommitsLeaveCheckpointsToTheCheckpointer hung ~1 run in 10). Made to happen
// every time: the checkpointer's first write to the database waits until one more batch, far
// from asking again, is committed.
TEST(StoreTest, ACheckpointOvertakenByACommitIsTriedAgain) {
  SyncRecorder recorder;
  const std::string path = Path("overtaken.db");
  auto store = Store::Open(path, ThousandPageCheckpoints());
  ASSERT_THAT(store, IsOk());
  {
    absl::MutexLock lock(&recorder.mu);
    recorder.hold_checkpoint = true;
  }
  // Batches until the WAL passes the threshold (1,000 pages of 4 KiB, frames of 4,120 bytes
  // after a 32-byte header): that commit asks the checkpointer.
  int batches = 0;
  while (recorder.WalBytes() < 32 + 1000 * int64_t{4120}) {
    ASSERT_NO_FATAL_FAILURE(WriteBatches(**store, 1, batches++));
    ASSERT_LT(batches, 1000);
  }
  {
    absl::MutexLock lock(&recorder.mu);
    ASSERT_TRUE(recorder.mu.AwaitWithTimeout(absl::Condition(&recorder.holding),
                                             absl::Seconds(120)))
        << "the checkpointer never wrote to the database";
  }
  ASSERT_NO_FATAL_FAILURE(WriteBatches(**store, 1, batches));
  absl::MutexLock lock(&recorder.mu);
  recorder.release = true;
  EXPECT_TRUE(recorder.mu.AwaitWithTimeout(
      absl::Condition(&SyncRecorder::SyncedByAnotherThread, &recorder),
      absl::Seconds(120)))
      << "the database was never synced after the overtaken checkpoint";
}

// A checkpoint held back (here by a reader's snapshot from before the commits) is tried again
// without waiting for another commit: a burst of commits that stops is still copied whole and
// the database synced. (The checkpointer used to wait for the next commit's request, so the
// WAL of a burst stayed uncopied, and the test above could wait for ever: 1 run in ~5.)
TEST(StoreTest, AnUnfinishedCheckpointIsTriedAgainWithoutANewCommit) {
  SyncRecorder recorder;
  const std::string path = Path("pinned.db");
  auto store = Store::Open(path, ThousandPageCheckpoints());
  ASSERT_THAT(store, IsOk());
  sqlite3* reader = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &reader), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM decisions;", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  // ~1,800 WAL pages: the checkpointer is asked, and cannot copy past the reader's snapshot.
  WriteBatches(**store, 150);
  ASSERT_EQ(sqlite3_exec(reader, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(reader);
  // No commit from here on. The wait is bounded only so that the old code fails instead of
  // hanging; the retry comes after 100 ms.
  absl::MutexLock lock(&recorder.mu);
  EXPECT_TRUE(recorder.mu.AwaitWithTimeout(
      absl::Condition(&SyncRecorder::SyncedByAnotherThread, &recorder),
      absl::Seconds(120)))
      << "the checkpointer never copied the WAL whole";
}

// When the checkpointer falls behind (here: never asked), the committing thread checkpoints
// past writer_checkpoint_pages, so the WAL stays bounded.
TEST(StoreTest, TheWriterCheckpointsWhenTheCheckpointerFallsBehind) {
  SyncRecorder recorder;
  Store::Options options;
  options.checkpoint_pages = 1 << 30;
  options.writer_checkpoint_pages = 200;
  auto store = Store::Open(Path("behind.db"), options);
  ASSERT_THAT(store, IsOk());
  WriteBatches(**store, 250);
  EXPECT_GT(recorder.SyncsOn(std::this_thread::get_id()), 0);
  // 200 pages and the transaction that passed them, with the WAL's frame headers.
  EXPECT_LT(recorder.WalBytes(), 300 * (4096 + 24));
}

}  // namespace

// A read that fails (a disk error, a lock held too long) is an error, never the end of the rows:
// each Load read SQLite's error as "no more rows" and answered what it had read so far, so a
// start-up meeting one took the saved windows as absent (files re-read from their start, their
// lines counted twice), the active decisions or the outbox as empty or short, and the last
// offence id as 0.
TEST(StoreTest, AReadThatFailsIsAnErrorNotAShortAnswer) {
  SyncRecorder recorder;
  const std::string path = Path("failing-reads.db");
  auto store = Store::Open(path);
  ASSERT_THAT(store, IsOk());
  OffenceRow off{"203.0.113.7", 2, absl::FromUnixSeconds(1000), 1};
  ASSERT_THAT((*store)->RecordDecision(D("d1"), &off, true), IsOk());
  ASSERT_THAT((*store)->SaveSnapshot("windows", std::string(64 << 10, 'w')), IsOk());
  ASSERT_THAT((*store)->AddBouncer(BouncerRow{"b1", "hash"}), IsOk());
  // Every statement asked once, so that it is prepared before reads fail (a failed prepare was
  // already an error).
  auto ask_everything = [&store]() {
    std::vector<absl::Status> answers = {
        (*store)->LoadSnapshot("windows").status(),
        (*store)->LoadDecisions(true).status(),
        (*store)->LoadDecisions(false).status(),
        (*store)->LoadDecision("d1").status(),
        (*store)->LoadOffences(absl::InfinitePast(), 100).status(),
        (*store)->LastOffenceId().status(),
        (*store)->LoadOutbox().status(),
        (*store)->LoadEdges().status(),
        (*store)->LoadBouncers().status(),
        (*store)->LoadBouncerChanges(0, false).status(),
        (*store)->LoadBouncerLogMeta().status(),
    };
    return answers;
  };
  for (const absl::Status& s : ask_everything()) ASSERT_THAT(s, IsOk());
  // Another connection writes, so the store's own must read the pages again.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "UPDATE snapshots SET blob = zeroblob(70000)", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  sqlite3_close(other);

  recorder.fail_reads = true;
  const std::vector<absl::Status> failed = ask_everything();
  recorder.fail_reads = false;
  for (size_t i = 0; i < failed.size(); ++i) {
    EXPECT_FALSE(failed[i].ok()) << "question " << i << " answered as if it had read everything";
    EXPECT_THAT(failed[i].message(), HasSubstr("store: ")) << i;
  }
  // The reads work again once the disk does.
  absl::StatusOr<std::string> windows = (*store)->LoadSnapshot("windows");
  ASSERT_THAT(windows, IsOk());
  EXPECT_EQ(windows->size(), 70000u);
  EXPECT_THAT(*(*store)->LoadDecisions(true), SizeIs(1));
  EXPECT_EQ(*(*store)->LastOffenceId(), 1);
}

}  // namespace palisade
