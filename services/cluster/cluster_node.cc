#include "services/cluster/cluster_node.h"

#include <nats/nats.h>

#include <algorithm>
#include <iostream>
#include <optional>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "services/cluster/message_size.h"
#include "services/common/proto_time.h"

namespace palisade::cluster {
namespace {

constexpr char kAddKind[] = "decisions.add";
constexpr char kDeleteKind[] = "decisions.delete";
constexpr char kDetectionKind[] = "detections.apply";

// A detection on the command channel: a palisade.v1.Event with its rule id and the detection
// (target, event time, evidence, feeds), at most `max` bytes when its evidence can be cut to
// fit (`*cut` says whether it was: see message_size.h). Never a token secret.
std::string EncodeDetection(const Detection& d, size_t max, bool* cut) {
  palisade::v1::Event e;
  e.set_kind(palisade::v1::EVENT_KIND_DETECTION);
  e.set_rule_id(d.rule_id);
  palisade::v1::DetectionEvent* det = e.mutable_detection();
  det->mutable_target()->set_kind(d.kind);
  det->mutable_target()->set_value(d.key);
  *det->mutable_event_time() = ToProtoTime(d.time);
  for (const std::string& line : d.evidence) det->add_evidence(line);
  for (const std::string& f : d.feeds) det->add_feeds(f);
  std::string body = e.SerializeAsString();
  *cut = false;
  if (body.size() > max) {
    // Over NATS' payload limit no writer could ever be sent it, and the detection would be
    // lost (an attacker padding its lines would evade the ban): its evidence is cut instead.
    std::vector<std::string*> lines;
    size_t evidence = 0;
    for (std::string& line : *det->mutable_evidence()) {
      lines.push_back(&line);
      evidence += line.size();
    }
    const size_t over = body.size() - max;  // each byte cut shortens the body by at least one
    if (CutEvidence(lines, evidence > over ? evidence - over : 0) > 0) {
      *cut = true;
      body = e.SerializeAsString();
    }
  }
  return body;
}

// A fresh JetStream cluster elects its meta leader a moment after it forms, and servers may
// still be starting: setup is tried again for a while (kFailedPrecondition, a stream made by
// someone else with other settings, is final).
const absl::Status& StatusOf(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

template <typename F>
auto Retried(F f, absl::Duration for_how_long) -> decltype(f()) {
  const absl::Time deadline = absl::Now() + for_how_long;
  for (;;) {
    auto r = f();
    const absl::StatusCode code = StatusOf(r).code();
    if (code == absl::StatusCode::kOk || code == absl::StatusCode::kFailedPrecondition ||
        code == absl::StatusCode::kInvalidArgument || absl::Now() >= deadline) {
      return r;
    }
    absl::SleepFor(absl::Milliseconds(250));
  }
}

}  // namespace

ClusterNode::ClusterNode(ClusterNodeOptions options, DecisionTable& table,
                         prometheus::Registry& registry)
    : options_(std::move(options)),
      table_(table),
      clock_(options_.clock != nullptr ? *options_.clock : RealClock::Get()),
      // The writer's waiting claims under its table's active budget, which charges them here
      // too once mirrored (palisaded sets the limits before the cluster starts).
      view_(table.limits().max_active_bytes, clock_),
      writer_gauge_(prometheus::BuildGauge()
                        .Name("palisade_cluster_writer_held")
                        .Help("1 while this node holds the edge-writer lease and writes to "
                              "Cloudflare, else 0.")
                        .Register(registry)
                        .Add({})),
      owned_gauge_(prometheus::BuildGauge()
                       .Name("palisade_cluster_partitions_owned")
                       .Help("Match-stream partitions this node owns (counts the windows of).")
                       .Register(registry)
                       .Add({})),
      partitions_gauge_(prometheus::BuildGauge()
                            .Name("palisade_cluster_partitions")
                            .Help("Match-stream partitions configured (cluster.partitions).")
                            .Register(registry)
                            .Add({})),
      live_gauge_(prometheus::BuildGauge()
                      .Name("palisade_cluster_live_nodes")
                      .Help("Nodes whose membership lease is live, as of this node's last tick.")
                      .Register(registry)
                      .Add({})),
      lag_gauge_(prometheus::BuildGauge()
                     .Name("palisade_cluster_replica_lag_messages")
                     .Help("Messages of the decision stream this node has not applied yet.")
                     .Register(registry)
                     .Add({})),
      connected_gauge_(prometheus::BuildGauge()
                           .Name("palisade_cluster_nats_connected")
                           .Help("1 while the NATS connection is up, else 0.")
                           .Register(registry)
                           .Add({})),
      ticks_ok_(prometheus::BuildCounter()
                    .Name("palisade_cluster_ticks_total")
                    .Help("Lease ticks, by result (error: NATS refused or was away).")
                    .Register(registry)
                    .Add({{"result", "ok"}})),
      ticks_failed_(prometheus::BuildCounter()
                        .Name("palisade_cluster_ticks_total")
                        .Help("Lease ticks, by result (error: NATS refused or was away).")
                        .Register(registry)
                        .Add({{"result", "error"}})),
      forward_family_(prometheus::BuildCounter()
                          .Name("palisade_cluster_detections_forwarded_total")
                          .Help("Detections this node sent to the edge writer, by result (sent, "
                                "dropped: the queue was full, refused: the writer refused it).")
                          .Register(registry)),
      writer_changes_(prometheus::BuildCounter()
                          .Name("palisade_cluster_writer_changes_total")
                          .Help("Times this node started or stopped being the edge writer.")
                          .Register(registry)
                          .Add({})),
      evidence_cut_counter_(prometheus::BuildCounter()
                                .Name("palisade_cluster_detection_evidence_cut_total")
                                .Help("Detections this node sent to the edge writer with their "
                                      "evidence cut to fit NATS' payload limit.")
                                .Register(registry)
                                .Add({})) {
  partitions_gauge_.Set(options_.partitions);
  absl::BitGen bits;
  forward_prefix_ = absl::StrCat(options_.node_id, ":", absl::Uniform<uint64_t>(bits), ":d");
}

absl::StatusOr<std::unique_ptr<ClusterNode>> ClusterNode::Start(ClusterNodeOptions options,
                                                                DecisionTable& table,
                                                                prometheus::Registry& registry) {
  if (options.partitions == 0) {
    return absl::InvalidArgumentError("cluster: partitions must be at least 1");
  }
  if (options.nats.name.empty()) options.nats.name = options.node_id;
  std::unique_ptr<ClusterNode> node(new ClusterNode(std::move(options), table, registry));
  const ClusterNodeOptions& o = node->options_;
  absl::StatusOr<std::unique_ptr<NatsClient>> nats = NatsClient::Connect(o.nats);
  if (!nats.ok()) return nats.status();
  node->nats_ = *std::move(nats);
  const absl::Duration setup = std::max(absl::Seconds(60), 4 * o.lease_term);
  absl::Status stream = Retried(
      [&] { return node->nats_->EnsureStream(DecisionLogStreamSpec(o.replicas)); }, setup);
  if (!stream.ok()) return stream;
  LeaseOptions lo;
  lo.node_id = o.node_id;
  lo.replicas = o.replicas;
  lo.term = o.lease_term;
  lo.skew = o.lease_skew;
  lo.clock = &node->clock_;
  absl::StatusOr<std::unique_ptr<LeaseTable>> leases =
      Retried([&] { return LeaseTable::Open(*node->nats_, lo); }, setup);
  if (!leases.ok()) return leases.status();
  node->leases_ = *std::move(leases);
  // One process per node id: another live one with this id refuses this start (before any
  // lease is claimed, so this node's Stop releases nothing of the other's).
  if (absl::Status presence = node->ClaimPresenceAtStart(setup); !presence.ok()) {
    return presence;
  }
  node->holds_presence_ = true;
  node->ownership_ = std::make_unique<Ownership>(*node->leases_, o.node_id, o.partitions);
  if (o.on_connected) {
    if (absl::Status s = o.on_connected(*node->nats_); !s.ok()) return s;
  }
  CommandClientOptions co;
  co.node_id = o.node_id;
  node->client_ = std::make_unique<CommandClient>(node->nats_->connection(), co);

  // The writer's log hears the table only while this node writes; a mirrored change is not
  // the writer's (writing_ is false then).
  ClusterNode* self = node.get();
  // Each change set as one (DecisionLogWriter::EnqueueSet), so that mirrors hear it as one;
  // with the snapshots of the claims it left waiting, so that mirrors hold them too and a
  // take-over decides them when the decision they wait behind ends.
  node->listener_id_ = table.AddClaimsSetListener(
      [self](const std::vector<DecisionUpdate>& set, const std::vector<WaitingClaims>& waiting) {
        if (!self->writing_.load()) return;
        absl::MutexLock lock(&self->writer_mu_);
        if (self->log_writer_ != nullptr) self->log_writer_->EnqueueSet(set, waiting);
      });
  DecisionReplicaOptions ro;
  // Where this node stopped reading the log, if its table (restored from the store) holds what
  // it had read: the view starts as that table.
  ro.start_after = node->ResumePosition();
  node->applied_position_ = ro.start_after;
  if (ro.start_after > 0) {
    ReplicatedChange held;
    held.kind = ReplicatedChange::Kind::kState;
    held.sequence = ro.start_after;
    held.state = table.List({});
    node->view_.Apply(held);
  }
  ro.apply = [self](const ReplicatedChange& c) {
    {
      absl::MutexLock mirror(&self->mirror_mu_);
      self->view_.Apply(c);
      if (c.kind == ReplicatedChange::Kind::kState) self->stepped_down_overflowed_ = false;
      bool mirrored = true;
      if (self->writing_.load()) {
        // The writer's own changes, read back (its table holds them); but until its first
        // publish is stored, another writer's last words, which its take-over state must hold
        // (wait_applied).
        absl::MutexLock lock(&self->writer_mu_);
        mirrored = self->log_writer_ != nullptr && !self->log_writer_->took_over();
      }
      if (mirrored && c.kind == ReplicatedChange::Kind::kState) {
        // The writer's waiting claims follow its state (kWaiting, then kWaitingEnd): the
        // table's own are marked stale, and go at the end unless a snapshot replaced them (a
        // writer dying in between leaves them). Not while coming to write: the state may be
        // this node's own take-over state, read back before its publish was acknowledged, and
        // its claims (the table's) follow it unread.
        self->table_.MirrorState(c.state, /*mark_stale=*/!self->writing_.load());
      } else if (mirrored && c.kind == ReplicatedChange::Kind::kSet) {
        self->table_.MirrorAll(c.set);  // heard in one call, as on the writer
      } else if (mirrored && c.kind == ReplicatedChange::Kind::kWaiting) {
        self->table_.MirrorWaiting({c.waiting});
      } else if (mirrored && c.kind == ReplicatedChange::Kind::kWaitingEnd) {
        // As the state's marks; not after a step-down on an overflowed view (the table
        // never had the snapshot it refused, and would drop the claims it names).
        if (!self->writing_.load() && !self->stepped_down_overflowed_) {
          self->table_.MirrorWaitingEnd();
        }
      } else if (mirrored) {
        self->table_.Mirror(c.change, c.decision);
      }
    }
    // Kept before a state until its snapshots' end (see before_state_). A writer publishes a
    // state, its snapshots and their end one after the other: an update after the state means
    // no end comes for it (its writer died or was fenced), and reading the state again would
    // undo the updates after it for a moment.
    if (c.kind == ReplicatedChange::Kind::kState) {
      self->before_state_ = self->applied_position_;
    } else if (c.kind != ReplicatedChange::Kind::kWaiting) {
      self->before_state_.reset();
    }
    self->applied_position_ = c.sequence;
    self->KeepPosition(self->before_state_.value_or(c.sequence));
  };
  ro.log = [self](const std::string& m) { self->Log(m); };
  absl::StatusOr<std::unique_ptr<DecisionReplica>> replica =
      DecisionReplica::Start(*node->nats_, std::move(ro));
  if (!replica.ok()) return replica.status();
  node->replica_ = *std::move(replica);
  // Until this node writes, what it detects is the writer's to decide.
  table.SetForward([self](const Detection& d) { self->ForwardDetection(d); });
  node->forwarder_ = std::thread([self] { self->RunForwarder(); });
  node->Tick();
  if (node->options_.run_thread) node->thread_ = std::thread([self] { self->Run(); });
  node->started_ = true;
  return node;
}

ClusterNode::~ClusterNode() { Stop(); }

void ClusterNode::Stop() {
  {
    absl::MutexLock lock(&stop_mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  stopping_.Notify();
  if (thread_.joinable()) thread_.join();
  if (started_ && options_.stopping) options_.stopping();
  if (writing_.load()) StepDown("stopping");
  // A node that found another process with its id releases nothing: the leases are that
  // process's now (they are held by node id).
  if (ownership_ != nullptr && !duplicate_.load()) {
    if (absl::Status s = ownership_->ReleaseAll(); !s.ok()) {
      Log(absl::StrCat("cluster: leases not released (others take over after the term): ",
                       s.message()));
    }
  }
  if (holds_presence_ && !duplicate_.load()) {
    if (absl::Status s = leases_->ReleasePresence(); !s.ok()) {
      Log(absl::StrCat("cluster: presence not released (a restart with node_id ", options_.node_id,
                       " waits for it to run out): ", s.message()));
    }
  }
  if (options_.partitions_changed && !counting_.empty()) {
    options_.partitions_changed({}, counting_);
    counting_.clear();
  }
  {
    absl::MutexLock lock(&forward_mu_);
    forward_stopping_ = true;
  }
  if (forwarder_.joinable()) forwarder_.join();
  table_.SetForward(nullptr);
  // The table outlives the node: its listener must not (also when Start failed part way).
  if (listener_id_ != 0) table_.RemoveListener(listener_id_);
  replica_.reset();
}

void ClusterNode::Run() {
  const absl::Duration every = options_.lease_term / 3;
  absl::Time next = clock_.TimeNow() + every;
  // Waits in short real-time steps and ticks when the injected clock says so: a simulated clock
  // moved forward makes the next tick come at once.
  for (;;) {
    RunPosted();
    if (options_.poll) {
      const absl::Time polled = absl::Now();
      options_.poll();
      // A poll with nothing to wait on (no partition owned) returns at once: no busy loop.
      const absl::Duration rest = absl::Milliseconds(20) - (absl::Now() - polled);
      if (rest > absl::ZeroDuration() ? stopping_.WaitForNotificationWithTimeout(rest)
                                      : stopping_.HasBeenNotified()) {
        return;
      }
    } else if (stopping_.WaitForNotificationWithTimeout(std::min(every, absl::Milliseconds(200)))) {
      return;
    }
    if (clock_.TimeNow() < next) continue;
    Tick();
    next = clock_.TimeNow() + every;
  }
}

void ClusterNode::RunOnThread(std::function<void()> task) {
  absl::MutexLock lock(&posted_mu_);
  posted_.push_back(std::move(task));
}

void ClusterNode::RunPosted() {
  std::vector<std::function<void()>> tasks;
  {
    absl::MutexLock lock(&posted_mu_);
    tasks.swap(posted_);
  }
  for (std::function<void()>& task : tasks) task();
}

void ClusterNode::Tick() {
  RunPosted();
  // Another process uses this node id (see OnDuplicate): nothing is renewed any more.
  if (duplicate_.load()) return;
  // The rule set gate: a node whose rules differ from the cluster's owns no partition (their
  // matches would wait for it, unopened, while the others could count them).
  std::string error;
  bool may_own = !ownership_->gated();
  if (options_.may_own_partitions) {
    const absl::Status gate = options_.may_own_partitions();
    if (gate.ok()) {
      may_own = true;
    } else if (gate.code() == absl::StatusCode::kFailedPrecondition) {
      may_own = false;
      error = std::string(gate.message());
    } else {
      error = absl::StrCat("rule set check: ", gate.message());  // as before, until it answers
    }
  }
  // Each lease the tick claims holds for the term from its claim, which is after this: a tick
  // whose requests were slow must not count its leases from its end.
  const absl::Time started = clock_.TimeNow();
  // The presence first: while another process holds it, this one renews nothing.
  const absl::Status presence = leases_->ClaimPresence();
  if (presence.code() == absl::StatusCode::kFailedPrecondition) {
    OnDuplicate(presence);
    return;
  }
  absl::StatusOr<Ownership::Change> change =
      presence.ok() ? ownership_->Tick(may_own) : absl::StatusOr<Ownership::Change>(presence);
  const absl::Time now = clock_.TimeNow();
  if (change.ok()) {
    ticks_ok_.Increment();
    last_good_tick_ = started;
    live_gauge_.Set(static_cast<double>(change->live_nodes));
  } else {
    ticks_failed_.Increment();
    if (!error.empty()) error += "; ";
    error += absl::StrCat("lease tick: ", change.status().message());
  }
  // Leases held are only ours while renewed within the term: past it, another node may hold
  // them, so this one stops acting on them even if NATS is away and cannot say so.
  const bool fresh = now - last_good_tick_ < options_.lease_term;
  bool fenced = false;
  {
    absl::MutexLock lock(&writer_mu_);
    fenced = log_writer_ != nullptr && log_writer_->fenced();
  }
  const bool want = fresh && ownership_->writer() && !fenced;
  bool start_edge = false;
  if (want && !writing_.load()) {
    BecomeWriter();
  } else if (want && !edge_started_) {
    // The take-over state stored since (all its chunks): the edge may start.
    absl::MutexLock lock(&writer_mu_);
    start_edge = log_writer_ != nullptr && log_writer_->states_published() > 0;
  } else if (!want && writing_.load()) {
    StepDown(fenced ? "another writer appended to the decision log"
                    : !fresh ? "leases not renewed within the term" : "lease lost");
  }
  if (start_edge) StartEdge();
  const std::set<uint32_t> wanted = fresh ? ownership_->owned() : std::set<uint32_t>{};
  std::set<uint32_t> gained, lost;
  std::set_difference(wanted.begin(), wanted.end(), counting_.begin(), counting_.end(),
                      std::inserter(gained, gained.end()));
  std::set_difference(counting_.begin(), counting_.end(), wanted.begin(), wanted.end(),
                      std::inserter(lost, lost.end()));
  if ((!gained.empty() || !lost.empty()) && options_.partitions_changed) {
    options_.partitions_changed(gained, lost);
  }
  counting_ = wanted;
  owned_gauge_.Set(static_cast<double>(wanted.size()));
  writer_gauge_.Set(edge_started_ ? 1 : 0);
  connected_gauge_.Set(natsConnection_Status(nats_->connection()) == NATS_CONN_STATUS_CONNECTED);
  if (absl::StatusOr<NatsClient::StreamState> st = nats_->State(kDecisionStream); st.ok()) {
    const uint64_t applied = replica_->applied_through();
    lag_gauge_.Set(st->last_sequence > applied ? st->last_sequence - applied : 0);
  }
  absl::MutexLock lock(&status_mu_);
  if (!error.empty() && error != last_error_) Log(absl::StrCat("cluster: ", error));
  last_error_ = error;
  owned_ = wanted;
  gated_ = ownership_->gated();
}

absl::Status ClusterNode::ClaimPresenceAtStart(absl::Duration setup) {
  const absl::Time deadline =
      clock_.TimeNow() + (options_.wait_out_presence ? options_.lease_term + options_.lease_skew
                                                     : absl::ZeroDuration());
  std::optional<LeaseTable::Holder> first;  // the other instance's presence as first read
  for (;;) {
    absl::Status s = Retried([&] { return leases_->ClaimPresence(); }, setup);
    if (s.code() != absl::StatusCode::kFailedPrecondition) return s;
    absl::StatusOr<std::optional<LeaseTable::Holder>> other = leases_->PresenceHolder();
    if (other.ok() && other->has_value()) {
      if (!first.has_value()) {
        first = **other;
        if (clock_.TimeNow() < deadline) {
          Log(absl::StrCat(
              "cluster: node_id ", options_.node_id, " is held by another instance until ",
              absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", first->until, absl::UTCTimeZone()),
              "; waiting for it to run out (a process that crashed), at most ",
              absl::FormatDuration(deadline - clock_.TimeNow())));
        }
      } else if ((*other)->node != first->node || (*other)->until != first->until) {
        return s;  // renewed or taken meanwhile: another process is alive with this id
      }
    }
    const absl::Time now = clock_.TimeNow();
    if (now >= deadline) return s;
    clock_.SleepFor(std::min(absl::Seconds(1), deadline - now));
  }
}

void ClusterNode::OnDuplicate(const absl::Status& why) {
  duplicate_.store(true);
  const std::string error =
      absl::StrCat(why.message(),
                   "; this process renews and acts on none of its leases any more (they are the "
                   "other's): stop it, or give it its own node_id, and start it again");
  Log(error);
  if (writing_.load()) StepDown("another process uses this node_id");
  if (options_.partitions_changed && !counting_.empty()) {
    options_.partitions_changed({}, counting_);
  }
  counting_.clear();
  owned_gauge_.Set(0);
  writer_gauge_.Set(0);
  absl::MutexLock lock(&status_mu_);
  last_error_ = error;
  owned_.clear();
}

namespace {
// The store's snapshot of where the replica stopped: "v1 <the stream's creation, unix ns>
// <sequence>".
constexpr char kPositionSnapshot[] = "cluster:decision_log";
}  // namespace

uint64_t ClusterNode::ResumePosition() {
  if (options_.store == nullptr) return 0;
  jsStreamInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetStreamInfo(&info, nats_->jetstream(), kDecisionStream, nullptr, &err);
  if (s != NATS_OK) {
    // Without the stream's identity no position is kept either (KeepPosition): the next start
    // reads the log from its start, as one with no store.
    Log(absl::StrCat("cluster: reading the decision log from its start: ",
                     NatsError(s, absl::StrCat("reading stream ", kDecisionStream)).message()));
    return 0;
  }
  log_created_ = info->Created;
  const uint64_t last = info->State.LastSeq;
  jsStreamInfo_Destroy(info);
  absl::StatusOr<std::string> blob = options_.store->LoadSnapshot(kPositionSnapshot);
  if (!blob.ok()) {
    Log(absl::StrCat("cluster: reading the decision log from its start: the position kept in "
                     "the store cannot be read: ", blob.status().message()));
    return 0;
  }
  if (blob->empty()) return 0;  // never kept: a first start
  std::vector<absl::string_view> f = absl::StrSplit(*blob, ' ');
  int64_t created = 0;
  uint64_t sequence = 0;
  if (f.size() != 3 || f[0] != "v1" || !absl::SimpleAtoi(f[1], &created) ||
      !absl::SimpleAtoi(f[2], &sequence)) {
    Log(absl::StrCat("cluster: reading the decision log from its start: the position kept in "
                     "the store (snapshot ", kPositionSnapshot, ") does not parse"));
    return 0;
  }
  // A stream made again since (deleted by an operator) numbers its messages from 1 again: a
  // position in the old one would skip the new one's first messages.
  if (created != log_created_ || sequence > last) {
    Log(absl::StrCat("cluster: reading the decision log from its start: the position kept (",
                     sequence, ") is of another ", kDecisionStream, " stream than this one (made ",
                     absl::FormatTime(absl::FromUnixNanos(log_created_)), ", last sequence ",
                     last, ")"));
    return 0;
  }
  return sequence;
}

void ClusterNode::KeepPosition(uint64_t sequence) {
  if (options_.store == nullptr || log_created_ == 0) return;
  // Only once the store holds the table as of this change: resumed past a change the store
  // refused (it waits in memory), a restart would never read it again.
  if (table_.unwritten() > 0) return;
  const absl::Status s = options_.store->SaveSnapshot(
      kPositionSnapshot, absl::StrCat("v1 ", log_created_, " ", sequence));
  // Said once per run of failures: a restart reads again from the last position kept.
  if (!s.ok() && !position_failing_) {
    Log(absl::StrCat("cluster: the decision log's position is not kept in the store (a restart "
                     "reads again from the last one kept): ", s.message()));
  }
  position_failing_ = !s.ok();
}

bool ClusterNode::CatchUp(absl::Duration timeout) {
  absl::StatusOr<NatsClient::StreamState> st = nats_->State(kDecisionStream);
  if (!st.ok()) return false;
  return replica_->WaitUntilApplied(st->last_sequence, timeout);
}

void ClusterNode::BecomeWriter() {
  // The former writer's last words first: the table should be the log's before it decides
  // (the log writer's take-over state waits for them in any case: wait_applied). Here, and for
  // the state below, at most a sixth of a term each: this thread renews the leases every third,
  // and a take-over that blocked it a whole term lost them again on a loaded machine.
  CatchUp(options_.lease_term / 6);
  table_.SetForward(nullptr);  // this node decides now
  if (options_.before_log_writer) options_.before_log_writer();
  DecisionLogWriterOptions wo;
  wo.node_id = options_.node_id;
  wo.state = [this] { return table_.List({}); };
  wo.waiting = [this] { return table_.Waiting(); };
  wo.published = options_.edge_update;
  wo.wait_applied = [this](uint64_t sequence) {
    // A replica that can read on only from a writer's next state (the log purged) would wait
    // for this one: its table is then the best there is.
    return replica_->WaitUntilApplied(sequence, options_.lease_term / 3) ||
           replica_->awaiting_state();
  };
  absl::StatusOr<std::unique_ptr<DecisionLogWriter>> w = DecisionLogWriter::Start(*nats_, wo);
  if (!w.ok()) {
    table_.SetForward([this](const Detection& d) { ForwardDetection(d); });
    Log(absl::StrCat("cluster: cannot start the decision log writer: ", w.status().message()));
    return;
  }
  std::shared_ptr<DecisionLogWriter> writer;
  {
    // Writing from now on, not before: until its log writer is installed, the replica mirrors
    // into the table what it reads (a former writer's last words), which the take-over state
    // is taken from. Writing without a log writer, the replica skipped them as this node's own,
    // and the state, taken once the replica read them, erased them.
    absl::MutexLock lock(&writer_mu_);
    log_writer_ = *std::move(w);
    writing_.store(true);
    log_writer_->PublishState();
    writer = log_writer_;
  }
  writer_changes_.Increment();
  // The edge starts once the take-over state is stored (its reconciler must see the table the
  // log holds, the former writer's last words included): now, or at a later tick.
  if (!writer->WaitUntilPublished(options_.lease_term / 6)) {
    Log(absl::StrCat("cluster: node ", options_.node_id,
                     " holds the writer lease; its edge starts once the decision log takes its "
                     "state (", writer->last_error(), ")"));
    return;
  }
  StartEdge();
}

void ClusterNode::StartEdge() {
  edge_started_ = true;
  // The edge first (writer_started), then the commands that make decisions for it.
  Log(absl::StrCat("cluster: node ", options_.node_id, " is the edge writer"));
  if (options_.writer_started) options_.writer_started();
  CommandServerOptions so;
  so.handle = [this](absl::string_view kind, absl::string_view body) { return Handle(kind, body); };
  absl::StatusOr<std::unique_ptr<CommandServer>> server =
      CommandServer::Start(nats_->connection(), std::move(so));
  if (!server.ok()) {
    Log(absl::StrCat("cluster: cannot serve commands: ", server.status().message()));
  } else {
    command_server_ = *std::move(server);
  }
}

void ClusterNode::StepDown(const std::string& why) {
  command_server_.reset();  // answers no more commands (the one running finishes)
  if (edge_started_ && options_.writer_stopped) options_.writer_stopped();
  edge_started_ = false;
  std::shared_ptr<DecisionLogWriter> w;
  {
    // Not writing once the log writer is gone (as in BecomeWriter): what the replica reads from
    // here on is mirrored into the table, not skipped as this node's own.
    absl::MutexLock lock(&writer_mu_);
    w = std::move(log_writer_);
    writing_.store(false);
  }
  table_.SetForward([this](const Detection& d) { ForwardDetection(d); });
  w.reset();  // publishes what it holds (unless fenced)
  // The table becomes the log's again. While it wrote, this node's table was the truth and the
  // replica did not mirror into it; a writer fenced by another holds changes the log never
  // took, and lacks the other's. Once the replica read the log's end, the table is set to what
  // the log holds (a node that cannot read it keeps its table: the best there is). Not when
  // stopping: the table is not served any more.
  if (!stopping_.HasBeenNotified() && CatchUp(options_.lease_term / 6)) {
    absl::MutexLock mirror(&mirror_mu_);
    // Its waiting claims too, as any mirror takes a state's: its own marked stale, replaced by
    // the snapshots the log holds (a new writer's, which the replica read and skipped while
    // this node wrote), and dropped where none is named once the view holds all of them.
    table_.MirrorState(view_.List(), /*mark_stale=*/true);
    bool complete = false;
    table_.MirrorWaiting(view_.Waiting(&complete));
    if (complete) table_.MirrorWaitingEnd();
    stepped_down_overflowed_ = view_.waiting_overflow();
  }
  writer_changes_.Increment();
  Log(absl::StrCat("cluster: node ", options_.node_id, " stopped writing: ", why));
}

absl::StatusOr<std::string> ClusterNode::Handle(absl::string_view kind, absl::string_view body) {
  absl::StatusOr<palisade::v1::Decision> d;
  if (kind == kAddKind) {
    palisade::v1::AddDecisionRequest req;
    if (!req.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
      return absl::InvalidArgumentError("decisions.add: the request does not parse");
    }
    d = table_.AddManual(req);
  } else if (kind == kDeleteKind) {
    palisade::v1::DeleteDecisionRequest req;
    if (!req.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
      return absl::InvalidArgumentError("decisions.delete: the request does not parse");
    }
    d = table_.Withdraw(req.id());
  } else if (kind == kDetectionKind) {
    return ApplyDetection(body);
  } else if (options_.handle_command) {
    return options_.handle_command(kind, body);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown command kind \"", kind, "\""));
  }
  if (!d.ok()) return d.status();
  // Answered once the stream holds it, so the caller's replica can wait for it.
  std::shared_ptr<DecisionLogWriter> w;
  {
    absl::MutexLock lock(&writer_mu_);
    w = log_writer_;
  }
  if (w != nullptr && !w->WaitUntilPublished(options_.command_deadline)) {
    return absl::UnavailableError(absl::StrCat(
        "decision ", d->id(), " made, but the decision log did not take it: ", w->last_error()));
  }
  return d->SerializeAsString();
}

absl::StatusOr<std::string> ClusterNode::ApplyDetection(absl::string_view body) {
  palisade::v1::Event e;
  if (!e.ParseFromArray(body.data(), static_cast<int>(body.size())) || !e.has_detection()) {
    return absl::InvalidArgumentError("detections.apply: the detection does not parse");
  }
  std::shared_ptr<const RuleSet> rules = options_.rules ? options_.rules() : nullptr;
  const CompiledRule* rule = nullptr;
  if (rules != nullptr) {
    for (const auto& r : rules->rules()) {
      if (r->proto.id() == e.rule_id()) rule = r.get();
    }
  }
  if (rule == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "detections.apply: rule \"", e.rule_id(), "\" is not loaded on the writer (node ",
        options_.node_id, "): the nodes' rule sets differ"));
  }
  Detection d;
  d.rule = rule;
  d.rule_id = e.rule_id();
  d.kind = e.detection().target().kind();
  d.key = e.detection().target().value();
  d.time = FromProtoTime(e.detection().event_time());
  d.evidence.assign(e.detection().evidence().begin(), e.detection().evidence().end());
  d.feeds.assign(e.detection().feeds().begin(), e.detection().feeds().end());
  // A repeat of a detection applied here whose change the log did not take: applied again only
  // if the table lost its decision since (a state mirrored while this node did not write).
  const size_t fingerprint = absl::Hash<absl::string_view>{}(body);
  std::string reply;
  bool repeat = false;
  {
    absl::MutexLock lock(&unconfirmed_mu_);
    auto it = unconfirmed_.find(fingerprint);
    if (it != unconfirmed_.end() &&
        !table_.List({.target = d.key, .active_only = true}).empty()) {
      reply = it->second;
      repeat = true;
    }
  }
  if (!repeat) {
    std::vector<DecisionUpdate> updates = table_.ApplyAll({d});
    if (updates.empty()) return std::string();  // stale: nothing decided, nothing to store
    if (options_.decided) options_.decided(d, updates[0]);
    reply = absl::StrCat(DecisionChangeName(updates[0].change), " ", updates[0].decision.id());
  }
  // Taken once the log holds it: a writer fenced by another publishes nothing more, and what it
  // decided would be lost though its sender was told it was taken.
  std::shared_ptr<DecisionLogWriter> w;
  {
    absl::MutexLock lock(&writer_mu_);
    w = log_writer_;
  }
  const bool stored = w != nullptr && w->WaitUntilPublished(options_.lease_term / 3);
  absl::MutexLock lock(&unconfirmed_mu_);
  if (stored) {
    unconfirmed_.erase(fingerprint);
    return reply;
  }
  if (unconfirmed_.insert({fingerprint, reply}).second) {
    unconfirmed_order_.push_back(fingerprint);
    if (unconfirmed_order_.size() > kMaxUnconfirmed) {
      unconfirmed_.erase(unconfirmed_order_.front());
      unconfirmed_order_.pop_front();
    }
  }
  return absl::UnavailableError(absl::StrCat(
      "detections.apply: decided (", reply, "), but the decision log did not take it: ",
      w != nullptr ? w->last_error() : "node " + options_.node_id + " stopped writing"));
}

namespace {
// A queued detection's bytes against max_forward_queue_bytes: its id, its body, the queue's own.
size_t ForwardCost(const std::pair<std::string, std::string>& queued) {
  return queued.first.size() + queued.second.size() + 64;
}
}  // namespace

std::string ClusterNode::EncodeForWriter(const Detection& detection) {
  bool cut = false;
  std::string body = EncodeDetection(detection, MaxMessageBytes(nats_->connection()), &cut);
  if (cut) {
    evidence_cut_.fetch_add(1);
    evidence_cut_counter_.Increment();
  }
  return body;
}

void ClusterNode::ForwardDetection(const Detection& detection) {
  std::string body = EncodeForWriter(detection);
  absl::MutexLock lock(&forward_mu_);
  const size_t cost = forward_prefix_.size() + 20 + body.size() + 64;  // at most ForwardCost
  if (forward_queue_.size() >= options_.max_forward_queue ||
      forward_bytes_ + cost > options_.max_forward_queue_bytes) {
    forward_dropped_.fetch_add(1);
    forward_family_.Add({{"result", "dropped"}}).Increment();
    return;
  }
  forward_queue_.emplace_back(absl::StrCat(forward_prefix_, forward_next_++), std::move(body));
  forward_bytes_ += ForwardCost(forward_queue_.back());
}

absl::Status ClusterNode::SendDetection(const std::string& id, const Detection& detection,
                                       absl::Duration deadline) {
  absl::StatusOr<std::string> reply = client_->CallWithId(
      absl::StrCat("det:", id), kDetectionKind, EncodeForWriter(detection),
      deadline > absl::ZeroDuration() ? deadline : options_.command_deadline);
  if (reply.ok()) {
    forwarded_.fetch_add(1);
    forward_family_.Add({{"result", "sent"}}).Increment();
  }
  return reply.status();
}

void ClusterNode::RunForwarder() {
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(forward_mu_) {
    return forward_stopping_ || !forward_queue_.empty();
  };
  for (;;) {
    std::pair<std::string, std::string> next;
    {
      absl::MutexLock lock(&forward_mu_);
      forward_mu_.Await(absl::Condition(&ready));
      if (forward_stopping_) return;
      next = forward_queue_.front();
    }
    // In order, each until a writer takes it: retried under the same id while none answers.
    absl::StatusOr<std::string> reply = client_->CallWithId(
        next.first, kDetectionKind, next.second,
        std::min(options_.command_deadline, absl::Seconds(5)));
    if (!reply.ok() && reply.status().code() == absl::StatusCode::kUnavailable) {
      if (stopping_.WaitForNotificationWithTimeout(absl::Seconds(1))) return;
      continue;
    }
    if (reply.ok()) {
      forwarded_.fetch_add(1);
      forward_family_.Add({{"result", "sent"}}).Increment();
    } else {
      forward_family_.Add({{"result", "refused"}}).Increment();
      Log(absl::StrCat("cluster: the writer refused a detection: ", reply.status().message()));
    }
    absl::MutexLock lock(&forward_mu_);
    forward_bytes_ -= ForwardCost(forward_queue_.front());
    forward_queue_.pop_front();
  }
}

absl::StatusOr<palisade::v1::Decision> ClusterNode::AddManual(
    const palisade::v1::AddDecisionRequest& req) {
  absl::StatusOr<std::string> reply =
      client_->Call(kAddKind, req.SerializeAsString(), options_.command_deadline);
  if (!reply.ok()) return reply.status();
  palisade::v1::Decision d;
  if (!d.ParseFromString(*reply)) {
    return absl::InternalError("decisions.add: the writer's reply does not parse");
  }
  CatchUp(options_.command_deadline);
  return d;
}

absl::StatusOr<palisade::v1::Decision> ClusterNode::Withdraw(const std::string& id) {
  palisade::v1::DeleteDecisionRequest req;
  req.set_id(id);
  absl::StatusOr<std::string> reply =
      client_->Call(kDeleteKind, req.SerializeAsString(), options_.command_deadline);
  if (!reply.ok()) return reply.status();
  palisade::v1::Decision d;
  if (!d.ParseFromString(*reply)) {
    return absl::InternalError("decisions.delete: the writer's reply does not parse");
  }
  CatchUp(options_.command_deadline);
  return d;
}

ClusterNodeStatus ClusterNode::Status() {
  ClusterNodeStatus s;
  s.node_id = options_.node_id;
  s.partitions = options_.partitions;
  s.writer = writing_.load();
  s.nats_connected =
      natsConnection_Status(nats_->connection()) == NATS_CONN_STATUS_CONNECTED;
  std::vector<std::string> errors;
  s.applied_through = replica_->applied_through();
  // Without NATS every read below would wait out its timeout (four of 5 s): say so at once.
  if (!s.nats_connected) {
    errors.push_back("not connected to NATS: leases and the decision log not read");
  } else {
    if (auto w = leases_->HolderOf(Ownership::kWriterLease); w.ok()) {
      if (w->has_value()) s.writer_node = (*w)->node;
    } else {
      errors.push_back(std::string(w.status().message()));
    }
    if (auto nodes = leases_->LiveWithPrefix("node."); nodes.ok()) {
      for (const auto& [name, holder] : *nodes) s.live_nodes.push_back(holder.node);
    } else {
      errors.push_back(std::string(nodes.status().message()));
    }
    if (auto parts = leases_->LiveWithPrefix("partition."); parts.ok()) {
      for (const auto& [name, holder] : *parts) {
        uint32_t p = 0;
        if (absl::SimpleAtoi(name.substr(name.rfind('.') + 1), &p)) {
          s.partition_owners[p] = holder.node;
        }
      }
    } else {
      errors.push_back(std::string(parts.status().message()));
    }
    if (auto st = nats_->State(kDecisionStream); st.ok()) {
      s.stream_last_sequence = st->last_sequence;
      s.replica_lag =
          st->last_sequence > s.applied_through ? st->last_sequence - s.applied_through : 0;
    } else {
      errors.push_back(std::string(st.status().message()));
    }
  }
  {
    absl::MutexLock lock(&status_mu_);
    s.owned = owned_;
    s.partitions_gated = gated_;
    if (!last_error_.empty()) errors.insert(errors.begin(), last_error_);
  }
  if (std::string r = replica_->last_error(); !r.empty()) errors.push_back("replica: " + r);
  s.last_error = absl::StrJoin(errors, "; ");
  return s;
}

void ClusterNode::Log(const std::string& m) const {
  if (options_.log) {
    options_.log(m);
  } else {
    std::cerr << "palisaded: " << m << std::endl;
  }
}

}  // namespace palisade::cluster
