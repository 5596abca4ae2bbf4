// The file inputs on two or three threads (FileInputsOptions::threads: batches read ahead and
// prematched on the others) give the one-thread result: the same decisions (in the same order,
// with the same evidence and times), the same per-rule matches and malformed lines, and the same
// positions after every round, on generated sshd and nginx files (fixed seed) followed by one
// FileInputs with every shipped pack loaded, written in three parts, with hostile lines mixed in
// and batches the sink refuses (offered again with what was read after them).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rules/shipped_packs.h"
#include "services/common/clock.h"
#include "services/decisions/decision_table.h"
#include "services/engine/rule_set.h"
#include "services/inputs/file_inputs.h"
#include "services/pipeline/pipeline.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

struct Outcome {
  std::vector<std::string> decisions;    // created, in order, without their random ids
  std::vector<std::string> checkpoints;  // after every round: input, file, offset, fingerprint
  std::vector<uint64_t> matches_per_rule;
  uint64_t malformed = 0;
  uint64_t lines = 0;
  int refused = 0;
};

class FileInputsThreadsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::shared_ptr<const RuleSet>> set = CompileShippedPacks();
    ASSERT_TRUE(set.ok()) << set.status();
    rules_ = new std::shared_ptr<const RuleSet>(*set);
    CorpusOptions options;
    options.lines = 20'000;
    options.seed = 7;
    sshd_ = new std::vector<std::string>(WithHostileLines(GenerateSshd(options).lines));
    nginx_ = new std::vector<std::string>(WithHostileLines(GenerateNginx(options).lines));
    end_ = options.start + options.step * static_cast<int64_t>(options.lines);
  }

  // Follows the two files, written in three parts, to their end on `threads` threads; the sink
  // refuses its calls number `refuse` (counted from 1).
  Outcome Follow(uint32_t threads, const std::vector<int>& refuse) {
    const std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/threads", threads, "_",
                                         refuse.size());
    std::system(absl::StrCat("rm -rf ", dir, " && mkdir -p ", dir).c_str());
    palisade::v1::InputsConfig config;
    auto* auth = config.add_files();
    auth->set_name("auth");
    auth->set_format("syslog");
    auth->add_paths(dir + "/auth.log");
    auto* web = config.add_files();
    web->set_name("web");
    web->set_format("combined");
    web->add_paths(dir + "/access.log");

    Outcome out;
    SimulatedClock clock(end_);
    prometheus::Registry registry;
    DecisionTable table(clock);
    table.AddListener([&out](const DecisionUpdate& u) {
      if (u.change != DecisionChange::kCreated) return;
      palisade::v1::Decision d = u.decision;
      d.clear_id();  // random, as are the ids a replacement names
      d.clear_replaces();
      d.clear_replaced_by();
      out.decisions.push_back(d.DebugString());
    });
    PipelineOptions pipeline_options;
    pipeline_options.time_zone = absl::UTCTimeZone();
    Pipeline pipeline(*rules_, pipeline_options, clock, table, registry);
    LineSink sink = PipelineLineSink(pipeline);
    int calls = 0;
    sink.process = [&, process = sink.process](const LineBatch& batch) {
      ++calls;
      if (std::find(refuse.begin(), refuse.end(), calls) != refuse.end()) {
        ++out.refused;
        return absl::UnavailableError("refused for the test");
      }
      out.lines += batch.lines.size();
      return process(batch);
    };
    FileInputsOptions options;
    options.batch_lines = 97;
    options.threads = threads;
    absl::StatusOr<std::unique_ptr<FileInputs>> inputs =
        FileInputs::Create(config, options, std::move(sink), registry);
    EXPECT_TRUE(inputs.ok()) << inputs.status();
    if (!inputs.ok()) return out;

    const size_t expected = sshd_->size() + nginx_->size();
    for (int part = 0; part < 3; ++part) {
      for (const auto& [name, lines] : {std::make_pair("auth.log", sshd_),
                                        std::make_pair("access.log", nginx_)}) {
        std::ofstream file(dir + "/" + name, std::ios::app | std::ios::binary);
        for (size_t i = lines->size() * part / 3; i < lines->size() * (part + 1) / 3; ++i) {
          file << (*lines)[i] << '\n';
        }
      }
      // Rounds until a round reads nothing more (a refused batch is offered again next round).
      for (int round = 0; round < 1000; ++round) {
        const size_t n = (*inputs)->PollOnce();
        for (const palisade::v1::FileCheckpoint& c : (*inputs)->Checkpoints()) {
          out.checkpoints.push_back(absl::StrCat(round, " ", c.input(), " ",
                                                 c.path().substr(dir.size()), " ", c.offset(),
                                                 " ", c.fingerprint_bytes()));
        }
        if (n == 0 && out.refused == static_cast<int>(refuse.size()) &&
            (part < 2 || out.lines == expected)) {
          break;
        }
      }
    }
    out.matches_per_rule = pipeline.matches_per_rule();
    out.malformed = pipeline.lines_malformed();
    return out;
  }

  static std::shared_ptr<const RuleSet>* rules_;
  static std::vector<std::string>* sshd_;
  static std::vector<std::string>* nginx_;
  static absl::Time end_;
};

std::shared_ptr<const RuleSet>* FileInputsThreadsTest::rules_ = nullptr;
std::vector<std::string>* FileInputsThreadsTest::sshd_ = nullptr;
std::vector<std::string>* FileInputsThreadsTest::nginx_ = nullptr;
absl::Time FileInputsThreadsTest::end_;

void ExpectSame(const Outcome& one, const Outcome& many, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(one.lines, many.lines);
  EXPECT_EQ(one.refused, many.refused);
  EXPECT_EQ(one.malformed, many.malformed);
  EXPECT_EQ(one.matches_per_rule, many.matches_per_rule);
  EXPECT_EQ(one.decisions.size(), many.decisions.size());
  EXPECT_TRUE(one.decisions == many.decisions);
  EXPECT_EQ(one.checkpoints.size(), many.checkpoints.size());
  EXPECT_TRUE(one.checkpoints == many.checkpoints);
}

TEST_F(FileInputsThreadsTest, TwoAndThreeThreadsDecideAndCheckpointAsOne) {
  const Outcome one = Follow(1, {});
  // Every line of both files once, and something decided from each.
  EXPECT_EQ(one.lines, sshd_->size() + nginx_->size());
  EXPECT_GT(one.decisions.size(), 10u);
  EXPECT_GT(one.malformed, 0u);
  ExpectSame(one, Follow(2, {}), "2 threads");
  ExpectSame(one, Follow(3, {}), "3 threads");
}

TEST_F(FileInputsThreadsTest, RefusedBatchesAreOfferedAgainInOrder) {
  // The 3rd, 10th and 11th batches refused once each: on several threads the batches read
  // after them wait with them, and nothing is lost, taken twice or taken out of order.
  const std::vector<int> refuse = {3, 10, 11, 40};
  const Outcome one = Follow(1, refuse);
  EXPECT_EQ(one.refused, 4);
  EXPECT_EQ(one.lines, sshd_->size() + nginx_->size());
  // The same decisions as without refusals; their order may differ (the other file's batches
  // go on while one file's wait).
  Outcome plain = Follow(1, {});
  std::vector<std::string> sorted = one.decisions;
  std::sort(sorted.begin(), sorted.end());
  std::sort(plain.decisions.begin(), plain.decisions.end());
  EXPECT_TRUE(sorted == plain.decisions);
  ExpectSame(one, Follow(2, refuse), "2 threads");
  ExpectSame(one, Follow(3, refuse), "3 threads");
}

// The daemon's main path for a line longer than the cap: the follower keeps one byte past the
// cap, so the pipeline sees the line as longer, cuts it and flags it (ParsedLine::cut). Cut to
// exactly the cap by the follower, it was a whole line to the engine, and a ~16 KiB GitLab user
// name ending in a forged ` ip=V` right at the cap chose the banned address.
TEST(FileInputsCutTest, AForgedTailAtTheCapIsNoKey) {
  const std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/cut");
  std::system(absl::StrCat("rm -rf ", dir, " && mkdir -p ", dir).c_str());
  std::vector<LoadedPack> packs;
  absl::StatusOr<LoadedPack> pack = LoadRulePackFile("rules/webapps.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  packs.push_back(*std::move(pack));
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile(packs);
  ASSERT_TRUE(rules.ok()) << rules.status();
  palisade::v1::InputsConfig config;
  auto* gitlab = config.add_files();
  gitlab->set_name("gitlab");
  gitlab->set_format("raw");
  gitlab->add_paths(dir + "/application.log");

  const absl::Time t0 = absl::FromUnixSeconds(1'772'546'521);  // 2026-03-03T14:02:01Z
  SimulatedClock clock(t0 + absl::Seconds(5));
  prometheus::Registry registry;
  DecisionTable table(clock);
  std::vector<std::string> banned;
  table.AddListener([&banned](const DecisionUpdate& u) {
    if (u.change == DecisionChange::kCreated) banned.push_back(u.decision.target().value());
  });
  PipelineOptions pipeline_options;
  pipeline_options.time_zone = absl::UTCTimeZone();
  Pipeline pipeline(*rules, pipeline_options, clock, table, registry);
  FileInputsOptions options;  // max_line_bytes as the pipeline's (16 KiB)
  ASSERT_EQ(options.max_line_bytes, pipeline_options.max_line_bytes);
  LineSink sink = PipelineLineSink(pipeline);
  size_t read = 0;
  sink.process = [&read, process = sink.process](const LineBatch& batch) {
    read += batch.lines.size();
    return process(batch);
  };
  absl::StatusOr<std::unique_ptr<FileInputs>> inputs =
      FileInputs::Create(config, options, std::move(sink), registry);
  ASSERT_TRUE(inputs.ok()) << inputs.status();

  // The line's first max_line_bytes bytes end in the forged tail; its real tail follows.
  const std::string head = "2026-03-03T14:02:01.123Z: Failed Login: username=";
  const std::string forged = " ip=198.51.100.66";
  const std::string line = head +
                           std::string(options.max_line_bytes - head.size() - forged.size(), 'A') +
                           forged + " ip=203.0.113.5";
  {
    std::ofstream file(dir + "/application.log", std::ios::app | std::ios::binary);
    for (int i = 0; i < 5; ++i) file << line << '\n';
  }
  for (int round = 0; round < 10 && (*inputs)->PollOnce() > 0; ++round) {
  }
  EXPECT_EQ(read, 5u);
  EXPECT_TRUE(banned.empty()) << "banned " << banned[0];
  // Still counted as cut by the input (the rest dropped), and by the pipeline, which cut them.
  auto counter = [&registry](const std::string& name) {
    double sum = 0;
    for (const auto& family : registry.Collect()) {
      if (family.name != name) continue;
      for (const auto& metric : family.metric) sum += metric.counter.value;
    }
    return sum;
  };
  EXPECT_EQ(counter("palisade_input_lines_cut_total"), 5.0);
  EXPECT_EQ(counter("palisade_ingest_lines_truncated_total"), 5.0);

  // The same rule does decide on whole lines read the same way (the path above is live).
  {
    std::ofstream file(dir + "/application.log", std::ios::app | std::ios::binary);
    for (int i = 0; i < 5; ++i) file << head << "alice ip=203.0.113.5\n";
  }
  for (int round = 0; round < 10 && (*inputs)->PollOnce() > 0; ++round) {
  }
  EXPECT_EQ(banned, std::vector<std::string>{"203.0.113.5"});
}

}  // namespace
}  // namespace palisade
