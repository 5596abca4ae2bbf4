#include "services/cluster/decision_log.h"

#include <nats/nats.h>

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "services/cluster/message_size.h"
#include "services/common/proto_time.h"

namespace palisade::cluster {
namespace {

using palisade::v1::Decision;

// The messages' first line (written here: a few words in front of a protobuf; the proto
// schema's field numbers belong to the API):
//   "U1 <change>\n" + Decision                         an update
//   "S1 <state id> <i> <n>\n" + ListDecisionsResponse  chunk i (1-based) of n of a full state
//   "W1\n" + ListDecisionsResponse                      a target's waiting claims (EncodeWaiting)
constexpr absl::string_view kUpdateTag = "U1 ";
constexpr absl::string_view kStateTag = "S1 ";
constexpr absl::string_view kWaitingTag = "W1";
//   "W1 end <state id>\n"                              a state's snapshots ended
constexpr absl::string_view kWaitingEndTag = "W1 end ";

// Bounds on a snapshot, which anyone who can publish on the subject can forge and a mirror
// charges to its active budget: a claim's texts (cut to it when encoded), and its claims (at
// most one of each kind a table merges them into: origin, action, actuator, dry run).
constexpr size_t kMaxWaitingTextBytes = 1024;
constexpr int kMaxWaitingClaims =
    2 * palisade::v1::Action_MAX * palisade::v1::Actuator_MAX * 2;

// `s` cut to at most kMaxWaitingTextBytes, on a UTF-8 character's boundary (a proto string
// must stay valid UTF-8).
std::string CutWaitingText(const std::string& s) {
  if (s.size() <= kMaxWaitingTextBytes) return s;
  size_t n = kMaxWaitingTextBytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

bool ParseChange(absl::string_view name, DecisionChange* out) {
  for (DecisionChange c : {DecisionChange::kCreated, DecisionChange::kExtended,
                           DecisionChange::kExpired, DecisionChange::kWithdrawn}) {
    if (DecisionChangeName(c) == name) {
      *out = c;
      return true;
    }
  }
  return false;
}

// Splits "header\nbody".
bool SplitMessage(absl::string_view msg, absl::string_view* header, absl::string_view* body) {
  const size_t nl = msg.find('\n');
  if (nl == absl::string_view::npos || nl > 256) return false;
  *header = msg.substr(0, nl);
  *body = msg.substr(nl + 1);
  return true;
}

// Room in a message for what goes with one decision: an update's first line, or a state
// chunk's first line and its framing.
constexpr size_t kDecisionFraming = 512;

// Cuts `d`'s evidence so that it serializes to at most `max` bytes (see CutEvidence): true
// when it was cut. It may still be over (its other fields alone are).
bool FitDecision(Decision* d, size_t max) {
  const size_t size = d->ByteSizeLong();
  if (size <= max) return false;
  std::vector<std::string*> lines;
  size_t evidence = 0;
  for (std::string& line : *d->mutable_evidence()) {
    lines.push_back(&line);
    evidence += line.size();
  }
  // Each byte cut from a line shortens the message by at least one.
  const size_t over = size - max;
  return CutEvidence(lines, evidence > over ? evidence - over : 0) > 0;
}

}  // namespace

StreamSpec DecisionLogStreamSpec(int replicas, absl::Duration duplicate_window) {
  return {.name = kDecisionStream,
          .subjects = {kDecisionSubjects},
          .replicas = replicas,
          .duplicate_window = duplicate_window};
}

std::string UpdateId(const DecisionUpdate& update) {
  const std::string& id = update.decision.id();
  switch (update.change) {
    case DecisionChange::kCreated:
      return absl::StrCat(id, ":c");
    case DecisionChange::kExtended:
      // The count of extensions grows by one with each: each extension is its own change.
      return absl::StrCat(id, ":x", update.decision.extensions());
    case DecisionChange::kExpired:
      return absl::StrCat(id, ":e");
    case DecisionChange::kWithdrawn:
      return absl::StrCat(id, ":w");
    case DecisionChange::kStale:
    case DecisionChange::kForwarded:
    case DecisionChange::kRefused:
      break;
  }
  return "";
}

std::string EncodeUpdate(const DecisionUpdate& update) {
  // The decision only: `secret` (a leaked token a revocation carries) never leaves the writer.
  return absl::StrCat(kUpdateTag, DecisionChangeName(update.change), "\n",
                      update.decision.SerializeAsString());
}

std::string EncodeWaiting(const WaitingClaims& waiting) {
  // Decisions as the API's message carries them: the first names the target and the decision
  // the claims wait behind (its id), each next one is a claim (what a decision made of it
  // would carry).
  palisade::v1::ListDecisionsResponse m;
  Decision* head = m.add_decisions();
  head->mutable_target()->set_value(waiting.target);
  head->set_id(waiting.decision_id);
  for (const WaitingClaimRow& c : waiting.claims) {
    Decision* d = m.add_decisions();
    d->set_origin(static_cast<palisade::v1::Origin>(c.origin));
    d->set_action(static_cast<palisade::v1::Action>(c.action));
    d->set_actuator(static_cast<palisade::v1::Actuator>(c.actuator));
    d->set_dry_run(c.dry_run);
    *d->mutable_expiry() = ToProtoTime(c.expiry);
    d->set_rule_id(CutWaitingText(c.rule_id));
    d->set_reason(CutWaitingText(c.reason));
    d->set_offence(c.offence);
  }
  return absl::StrCat(kWaitingTag, "\n", m.SerializeAsString());
}

bool DecodeWaiting(absl::string_view message, WaitingClaims* out) {
  absl::string_view header, body;
  if (!SplitMessage(message, &header, &body) || header != kWaitingTag) return false;
  palisade::v1::ListDecisionsResponse m;
  if (!m.ParseFromArray(body.data(), static_cast<int>(body.size())) || m.decisions_size() < 1 ||
      m.decisions_size() - 1 > kMaxWaitingClaims) {
    return false;
  }
  *out = {};
  out->target = m.decisions(0).target().value();
  out->decision_id = m.decisions(0).id();
  for (int i = 1; i < m.decisions_size(); ++i) {
    const Decision& d = m.decisions(i);
    // Anyone who can publish on the subject can send one: a time no Timestamp holds, a kind of
    // claim no writer makes (each unknown number would be a kind of its own), or texts over
    // the bound, are refused.
    absl::StatusOr<absl::Time> expiry = CheckedProtoTime(d.expiry());
    if (!expiry.ok()) return false;
    if ((d.origin() != palisade::v1::ORIGIN_RULE && d.origin() != palisade::v1::ORIGIN_MANUAL) ||
        d.action() == palisade::v1::ACTION_UNSPECIFIED ||
        !palisade::v1::Action_IsValid(d.action()) ||
        d.actuator() == palisade::v1::ACTUATOR_UNSPECIFIED ||
        !palisade::v1::Actuator_IsValid(d.actuator()) ||
        d.rule_id().size() > kMaxWaitingTextBytes || d.reason().size() > kMaxWaitingTextBytes) {
      return false;
    }
    out->claims.push_back({out->target, out->decision_id, d.origin(), d.action(), d.actuator(),
                           d.dry_run(), *expiry, d.rule_id(), d.reason(), d.offence()});
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// DecisionLogWriter

absl::StatusOr<std::unique_ptr<DecisionLogWriter>> DecisionLogWriter::Start(
    NatsClient& nats, DecisionLogWriterOptions options) {
  if (options.node_id.empty()) return absl::InvalidArgumentError("decision log: node_id is empty");
  if (!options.state) {
    return absl::InvalidArgumentError(
        "decision log: no state provider (the writer's full state after take-over or overflow)");
  }
  auto w = std::unique_ptr<DecisionLogWriter>(new DecisionLogWriter(nats, std::move(options)));
  w->thread_ = std::thread([self = w.get()] { self->Run(); });
  return w;
}

DecisionLogWriter::DecisionLogWriter(NatsClient& nats, DecisionLogWriterOptions options)
    : nats_(nats),
      options_(std::move(options)),
      // A random incarnation for the states' ids: a restarted writer numbers them from 0 again.
      id_prefix_(absl::StrCat(options_.node_id, ":", absl::Hex(absl::BitGen()()), ":")) {}

DecisionLogWriter::~DecisionLogWriter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

DecisionTable::Listener DecisionLogWriter::Listener() {
  return [this](const DecisionUpdate& u) { Enqueue(u); };
}

DecisionTable::SetListener DecisionLogWriter::SetListener() {
  return [this](const std::vector<DecisionUpdate>& set) { EnqueueSet(set); };
}

DecisionTable::ClaimsSetListener DecisionLogWriter::ClaimsSetListener() {
  return [this](const std::vector<DecisionUpdate>& set, const std::vector<WaitingClaims>& w) {
    EnqueueSet(set, w);
  };
}

bool DecisionLogWriter::Enqueue(const DecisionUpdate& update) {
  std::vector<Item> items(1);
  if (!MakeItem(update, &items[0])) return true;  // stale: nothing was decided
  return Push(std::move(items));
}

bool DecisionLogWriter::EnqueueSet(const std::vector<DecisionUpdate>& set,
                                   const std::vector<WaitingClaims>& waiting) {
  std::vector<Item> items;
  std::vector<const DecisionUpdate*> updates;  // updates[i]: items[i]'s
  items.reserve(set.size() + waiting.size());
  updates.reserve(set.size());
  for (const DecisionUpdate& u : set) {
    items.emplace_back();
    if (!MakeItem(u, &items.back())) {
      items.pop_back();
    } else {
      updates.push_back(&u);
    }
  }
  if (items.empty() && waiting.empty()) return true;
  // Only the runs that end a decision and create its successor on one target are marked, each
  // as a set of its own: the table makes a replaced decision's withdrawal and its replacement
  // (or an ended decision and the claim reinstated behind it) one after the other, and replicas
  // hand a set on whole (one mirror call), so a mirror's listeners never hear the one without
  // the other. A run starts at a withdrawal or expiry and closes at the next creation on that
  // target; a creation and its extensions go alone: a burst from one address is its creation
  // and thousands of extensions, and held as one set a mirror sat on exactly the attacker's ban
  // until the burst's last message. The table's whole change set (an ingest batch of up to
  // 10,000 detections, or a whole sweep) is never one set for the same reason.
  const auto same_target = [&](size_t a, size_t b) {
    const palisade::v1::Target& ta = updates[a]->decision.target();
    const palisade::v1::Target& tb = updates[b]->decision.target();
    return ta.kind() == tb.kind() && ta.value() == tb.value();
  };
  const auto ends = [&](size_t i) {
    return updates[i]->change == DecisionChange::kWithdrawn ||
           updates[i]->change == DecisionChange::kExpired;
  };
  for (size_t begin = 0, end = 0; begin < items.size(); begin = end) {
    end = begin + 1;
    if (!ends(begin)) continue;
    while (end < items.size() && same_target(begin, end) && ends(end)) ++end;
    if (end < items.size() && same_target(begin, end) &&
        updates[end]->change == DecisionChange::kCreated) {
      ++end;
    }
    const size_t n = end - begin;
    if (n == 1) continue;
    std::string set_id;
    {
      absl::MutexLock lock(&mu_);
      set_id = absl::StrCat(id_prefix_, "set", set_count_++);
    }
    for (size_t i = 0; i < n; ++i) {
      items[begin + i].set = absl::StrCat(set_id, " ", i + 1, " ", n);
    }
  }
  // After the updates: a snapshot names the decision its claims wait behind, which a mirror
  // must hold by then (a claim reinstated behind an ended decision waits behind its successor).
  for (const WaitingClaims& w : waiting) {
    Item& item = items.emplace_back();
    item.waiting = true;
    {
      absl::MutexLock lock(&mu_);
      item.id = absl::StrCat(id_prefix_, "w", waiting_count_++);
    }
    item.data = EncodeWaiting(w);
    item.cost = Cost(item.data.size());
  }
  return Push(std::move(items));
}

bool DecisionLogWriter::MakeItem(const DecisionUpdate& update, Item* item) {
  std::string id = UpdateId(update);
  if (id.empty()) return false;
  std::string data = EncodeUpdate(update);
  // Over NATS' payload limit it could never be published: its evidence is cut to fit (what the
  // replicas hold; the edge hears the update whole). One that does not fit even so is skipped
  // by the writer thread, refused for its size.
  const size_t limit = MaxMessageBytes(nats_.connection());
  if (data.size() > limit) {
    DecisionUpdate fitted = update;
    if (FitDecision(&fitted.decision, limit - std::min(limit, kDecisionFraming))) {
      evidence_cut_.fetch_add(1);
      data = EncodeUpdate(fitted);
    }
  }
  const bool held = static_cast<bool>(options_.published);
  item->state = false;
  item->id = std::move(id);
  item->data = std::move(data);
  item->update = held ? update : DecisionUpdate{};
  item->cost = Cost(item->data.size() +
                    (held ? update.decision.ByteSizeLong() + update.secret.size() : 0));
  return true;
}

bool DecisionLogWriter::Push(std::vector<Item> items) {
  if (fenced_) {
    dropped_.fetch_add(items.size());  // another writer took over: nothing more goes out
    return false;
  }
  size_t cost = 0;
  for (const Item& item : items) cost += item.cost;
  absl::MutexLock lock(&mu_);
  if (queued_bytes_ + cost > options_.max_queued_bytes) {
    // Replicas must not miss a change silently: everything waiting but the one in flight (the
    // writer thread holds it) is dropped, and a full state takes its place, which covers them
    // and these. Erasing at a deque's end leaves the front's reference valid.
    size_t dropped = items.size();
    const size_t keep = queue_.empty() ? 0 : 1;
    for (size_t i = keep; i < queue_.size(); ++i) {
      if (!queue_[i].state) ++dropped;
      if (queue_[i].state) --states_queued_;
      queued_bytes_ -= queue_[i].cost;
    }
    queue_.erase(queue_.begin() + keep, queue_.end());
    dropped_.fetch_add(dropped);
    queue_.push_back({.state = true, .cost = Cost(0), .ticket = next_ticket_++});
    ++states_queued_;
    queued_bytes_ += Cost(0);
    return false;
  }
  queued_bytes_ += cost;
  for (Item& item : items) {
    item.ticket = next_ticket_++;
    queue_.push_back(std::move(item));
  }
  return true;
}

void DecisionLogWriter::PublishState() {
  absl::MutexLock lock(&mu_);
  queued_bytes_ += Cost(0);
  queue_.push_back({.state = true, .cost = Cost(0), .ticket = next_ticket_++});
  ++states_queued_;
}

size_t DecisionLogWriter::queued_bytes() const {
  absl::MutexLock lock(&mu_);
  return queued_bytes_;
}

bool DecisionLogWriter::WaitUntilPublished(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const uint64_t target = next_ticket_;
  auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return done_through_ >= target || gave_up_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  return done_through_ >= target;
}

bool DecisionLogWriter::Backoff(absl::Duration* backoff, const absl::Status& failed) {
  failures_.fetch_add(1);
  absl::MutexLock lock(&mu_);
  last_error_ = std::string(failed.message());
  if (stopping_) return false;
  auto stop = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_; };
  mu_.AwaitWithTimeout(absl::Condition(&stop), *backoff);
  *backoff = std::min(2 * *backoff, options_.retry_max);
  return true;
}

bool DecisionLogWriter::ReadLastSequence() {
  absl::Duration backoff = options_.retry_min;
  for (;;) {
    absl::StatusOr<NatsClient::StreamState> st = nats_.State(options_.stream);
    if (st.ok()) {
      last_sequence_ = st->last_sequence;
      last_known_ = true;
      return true;
    }
    if (!Backoff(&backoff, st.status())) return false;
  }
}

DecisionLogWriter::Outcome DecisionLogWriter::PublishWithRetry(const std::string& subject,
                                                               const std::string& data,
                                                               const std::string& id,
                                                               NatsClient::Ack* ack, bool retake,
                                                               const std::string& set) {
  absl::Duration backoff = options_.retry_min;
  while (true) {
    if (!last_known_ && !ReadLastSequence()) return Outcome::kGaveUp;
    // js_Publish directly: NatsClient::Publish sets no expected last sequence.
    jsPubOptions opts;
    jsPubOptions_Init(&opts);
    opts.MsgId = id.c_str();
    opts.MaxWait = absl::ToInt64Milliseconds(nats_.timeout());
    opts.ExpectLastSeq = last_sequence_;  // 0 (an empty stream): no expectation
    jsPubAck* pa = nullptr;
    jsErrCode err = static_cast<jsErrCode>(0);
    natsStatus s = NATS_OK;
    if (set.empty()) {
      s = js_Publish(&pa, nats_.jetstream(), subject.c_str(), data.data(),
                     static_cast<int>(data.size()), &opts, &err);
    } else {
      // One of a change set: the header tells replicas to hand the set on whole.
      natsMsg* msg = nullptr;
      s = natsMsg_Create(&msg, subject.c_str(), nullptr, data.data(),
                         static_cast<int>(data.size()));
      if (s == NATS_OK) s = natsMsgHeader_Set(msg, kSetHeader, set.c_str());
      if (s == NATS_OK) s = js_PublishMsg(&pa, nats_.jetstream(), msg, &opts, &err);
      if (msg != nullptr) natsMsg_Destroy(msg);
    }
    if (s == NATS_OK) {
      *ack = {pa->Sequence, pa->Duplicate};
      jsPubAck_Destroy(pa);
      // A duplicate's sequence is its first copy's: older when re-publishing adopted changes,
      // or the stream's newest when this writer's own earlier attempt was stored and its ack
      // lost (libnats also resends what it buffered while reconnecting): take the later.
      last_sequence_ = std::max(last_sequence_, ack->sequence);
      took_over_ = true;
      absl::MutexLock lock(&mu_);
      last_error_.clear();
      return Outcome::kStored;
    }
    if (RefusedForItsSize(s, err)) {
      // Sending it again would be refused again: the caller skips it.
      failures_.fetch_add(1);
      absl::MutexLock lock(&mu_);
      last_error_ = std::string(
          NatsError(s, absl::StrCat("decision log: a message of ", data.size(), " bytes (", id,
                                    ") refused for its size, skipped; publishing to ", subject))
              .message());
      return Outcome::kRefused;
    }
    if (err == JSStreamWrongLastSequenceErr) {
      if (!took_over_) {
        // Taking over: another publish slipped in since the last sequence was read (a former
        // writer's last words). Read it again; a state is taken again to cover them.
        last_known_ = false;
        if (retake) return Outcome::kMoved;
        continue;
      }
      fenced_ = true;
      absl::MutexLock lock(&mu_);
      last_error_ =
          absl::StrCat("decision log: fenced: another writer appended to ", options_.stream,
                       " after sequence ", last_sequence_, "; this node publishes no more");
      return Outcome::kGaveUp;
    }
    if (!Backoff(&backoff, NatsError(s, absl::StrCat("decision log: publishing to ", subject)))) {
      return Outcome::kGaveUp;
    }
  }
}

std::string DecisionLogWriter::last_error() const {
  absl::MutexLock lock(&mu_);
  return last_error_;
}

absl::Status DecisionLogWriter::PublishStateNow() {
  for (;;) {
    // Taking over: the former writer's last words must be in the table before it is taken,
    // and none may land between the read of the stream's end and this state (else retaken).
    const bool taking_over = !took_over_;
    if (taking_over) {
      if (!ReadLastSequence()) {
        return absl::UnavailableError("decision log: stopped while reading the stream's end");
      }
      if (options_.wait_applied && last_sequence_ > 0 &&
          !options_.wait_applied(last_sequence_)) {
        // A state taken now would erase what this node has not read: never taken over so.
        absl::Duration backoff = options_.retry_min;
        if (!Backoff(&backoff, absl::UnavailableError(absl::StrCat(
                                   "decision log: not taking over before this node applied ",
                                   options_.stream, " through ", last_sequence_)))) {
          return absl::UnavailableError("decision log: stopped while catching up");
        }
        continue;
      }
    }
    uint64_t start = 0;
    switch (PublishStateTaken(taking_over, &start)) {
      case Outcome::kStored:
        states_.fetch_add(1);
        Compact(start);
        return absl::OkStatus();
      case Outcome::kGaveUp:
        return absl::UnavailableError("decision log: stopped or fenced while publishing a state");
      case Outcome::kRefused:
        return absl::ResourceExhaustedError(
            "decision log: a chunk of a full state was refused for its size; state skipped");
      case Outcome::kMoved:
        break;  // the stream moved while taking over: read its end, take the state again
    }
  }
}

void DecisionLogWriter::Compact(uint64_t state_start) {
  const uint64_t before = last_state_start_;
  last_state_start_ = state_start;
  if (!options_.compact || before <= 1) return;
  // Everything before the previous state: every replica reads on from one of the two states.
  jsOptions o;
  jsOptions_Init(&o);
  o.Stream.Purge.Sequence = before;
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s = js_PurgeStream(nats_.jetstream(), options_.stream.c_str(), &o, &err);
  if (s != NATS_OK) {
    // The next state tries again (from its own previous one): nothing is lost, the log only
    // stays longer meanwhile.
    absl::MutexLock lock(&mu_);
    last_error_ = std::string(
        NatsError(s, absl::StrCat("decision log: compacting ", options_.stream, " before ", before))
            .message());
    return;
  }
  compactions_.fetch_add(1);
}

DecisionLogWriter::Outcome DecisionLogWriter::PublishStateTaken(bool taking_over,
                                                                uint64_t* start) {
  std::vector<Decision> all = options_.state();
  // Chunks under max_chunk_bytes and NATS' payload limit; a decision larger than that is alone
  // in its chunk, its evidence cut to fit the limit (as an update's). One that does not fit
  // even so is left out (counted): it would hold back the whole state, for good.
  const size_t limit = MaxMessageBytes(nats_.connection());
  const size_t max_decision = limit - std::min(limit, kDecisionFraming);
  const size_t max_chunk = std::min(options_.max_chunk_bytes, max_decision);
  std::vector<palisade::v1::ListDecisionsResponse> chunks(1);
  size_t bytes = 0;
  for (Decision& d : all) {
    if (FitDecision(&d, max_decision)) evidence_cut_.fetch_add(1);
    const size_t size = d.ByteSizeLong() + 8;
    if (size > max_decision + 8) {
      refused_.fetch_add(1);
      continue;
    }
    if (bytes > 0 && bytes + size > max_chunk) {
      chunks.emplace_back();
      bytes = 0;
    }
    *chunks.back().add_decisions() = std::move(d);
    bytes += size;
  }
  const std::string state_id = absl::StrCat(id_prefix_, "state", state_count_++);
  for (size_t i = 0; i < chunks.size(); ++i) {
    const std::string data = absl::StrCat(kStateTag, state_id, " ", i + 1, " ", chunks.size(), "\n",
                                          chunks[i].SerializeAsString());
    NatsClient::Ack ack;
    const Outcome o = PublishWithRetry(kDecisionStateSubject, data,
                                       absl::StrCat(state_id, ":", i + 1), &ack,
                                       /*retake=*/taking_over && i == 0);
    if (o != Outcome::kStored) return o;
    if (i == 0) *start = ack.sequence;
  }
  // The claims waiting behind its decisions, after it: a mirror that applied the state
  // (dropping the claims it held) takes them from these. One refused for its size is skipped.
  if (options_.waiting) {
    const std::vector<WaitingClaims> waiting = options_.waiting();
    for (size_t i = 0; i < waiting.size(); ++i) {
      NatsClient::Ack ack;
      const Outcome o = PublishWithRetry(kDecisionWaitingSubject, EncodeWaiting(waiting[i]),
                                         absl::StrCat(state_id, ":w", i + 1), &ack);
      if (o == Outcome::kRefused) {
        refused_.fetch_add(1);
        continue;
      }
      if (o != Outcome::kStored) return o;
      waiting_published_.fetch_add(1);
    }
    // Their end: a mirror drops the claims it held from before the state only for targets no
    // snapshot named, and only now (a writer dying before its last snapshot leaves them).
    NatsClient::Ack ack;
    const Outcome o =
        PublishWithRetry(kDecisionWaitingSubject, absl::StrCat(kWaitingEndTag, state_id, "\n"),
                         absl::StrCat(state_id, ":wend"), &ack);
    if (o != Outcome::kStored) return o;
  }
  return Outcome::kStored;
}

void DecisionLogWriter::Run() {
  while (true) {
    const Item* item = nullptr;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, and all published
      // Only this thread pops; Enqueue erases only behind the front and pushes at the back.
      item = &queue_.front();
    }
    bool ok = false;
    bool refused = false;  // for its size: skipped (counted), the next goes on
    NatsClient::Ack ack;
    if (item->state) {
      const absl::Status s = PublishStateNow();
      refused = s.code() == absl::StatusCode::kResourceExhausted;
      ok = s.ok() || refused;
    } else if (item->waiting) {
      const Outcome o = PublishWithRetry(kDecisionWaitingSubject, item->data, item->id, &ack);
      refused = o == Outcome::kRefused;
      ok = o == Outcome::kStored || refused;
      if (o == Outcome::kStored) waiting_published_.fetch_add(1);
    } else {
      const Outcome o =
          PublishWithRetry(kDecisionSubject, item->data, item->id, &ack, false, item->set);
      refused = o == Outcome::kRefused;
      ok = o == Outcome::kStored || refused;
      // Heard before the next is published: the edge acts in the log's order. Not one the log
      // refused: the edge acts only on what every node reads.
      if (o == Outcome::kStored && options_.published) options_.published(item->update);
    }
    if (refused) refused_.fetch_add(1);
    absl::MutexLock lock(&mu_);
    if (!ok) {
      // Stopping while NATS refuses, or fenced: what is left is lost, and counted.
      for (const Item& i : queue_) dropped_.fetch_add(i.state ? 0 : 1);
      gave_up_ = true;
      queue_.clear();
      states_queued_ = 0;
      queued_bytes_ = 0;
      return;
    }
    if (item->waiting) {
      // Not an update: neither counted in published() nor toward the next state.
    } else if (!item->state) {
      if (!refused) {
        published_.fetch_add(1);
        if (ack.duplicate) duplicates_.fetch_add(1);
        ++since_state_;
      }
    } else {
      if (!refused) since_state_ = 0;
      --states_queued_;
    }
    done_through_ = item->ticket + 1;
    queued_bytes_ -= item->cost;
    queue_.pop_front();
    if (options_.state_every > 0 && since_state_ >= options_.state_every &&
        states_queued_ == 0) {
      // So that the log can be compacted (and stream limits trimming old updates always leave
      // a state within reach). One waiting is enough: it is taken when its turn comes.
      since_state_ = 0;
      queued_bytes_ += Cost(0);
      queue_.push_back({.state = true, .cost = Cost(0), .ticket = next_ticket_++});
      ++states_queued_;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// DecisionReplica

absl::StatusOr<std::unique_ptr<DecisionReplica>> DecisionReplica::Start(
    NatsClient& nats, DecisionReplicaOptions options) {
  if (!options.apply) return absl::InvalidArgumentError("decision replica: no apply callback");
  auto r = std::unique_ptr<DecisionReplica>(new DecisionReplica(nats, std::move(options)));
  r->applied_through_ = r->options_.start_after;
  r->read_through_ = r->options_.start_after;
  r->thread_ = std::thread([self = r.get()] { self->Run(); });
  return r;
}

DecisionReplica::DecisionReplica(NatsClient& nats, DecisionReplicaOptions options)
    : nats_(nats), options_(std::move(options)) {}

DecisionReplica::~DecisionReplica() {
  stopping_ = true;
  thread_.join();
  if (sub_ != nullptr) natsSubscription_Destroy(sub_);
}

bool DecisionReplica::WaitUntilApplied(uint64_t sequence, absl::Duration timeout) {
  // Polled: the replica thread does not signal (it is the only writer of applied_through_).
  const absl::Time deadline = absl::Now() + timeout;
  // A change set held whole up to there is handed on should the stream give nothing more.
  for (uint64_t w = wanted_.load(); w < sequence && !wanted_.compare_exchange_weak(w, sequence);) {
  }
  while (read_through_.load() < sequence) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

std::string DecisionReplica::last_error() const {
  absl::MutexLock lock(&mu_);
  return last_error_;
}

std::string DecisionReplica::last_refusal() const {
  absl::MutexLock lock(&mu_);
  return last_refusal_;
}

void DecisionReplica::SetError(std::string e) {
  absl::MutexLock lock(&mu_);
  last_error_ = std::move(e);
}

absl::Status DecisionReplica::Subscribe(uint64_t after) {
  if (sub_ != nullptr) {
    natsSubscription_Destroy(sub_);
    sub_ = nullptr;
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = options_.stream.c_str();
  // An ordered consumer: no acknowledgements, and libnats recreates it from the last sequence
  // it delivered after a gap, a missed heartbeat or a lost server.
  so.Ordered = true;
  if (after == 0) {
    so.Config.DeliverPolicy = js_DeliverAll;
  } else {
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = after + 1;
  }
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s =
      js_SubscribeSync(&sub_, nats_.jetstream(), kDecisionSubjects, nullptr, &so, &err);
  if (s != NATS_OK) {
    sub_ = nullptr;
    return NatsError(s,
                     absl::StrCat("decision replica: reading ", options_.stream, " after ", after));
  }
  return absl::OkStatus();
}

namespace {

struct StreamBounds {
  uint64_t first = 0, last = 0;
};

absl::StatusOr<StreamBounds> Bounds(NatsClient& nats, const std::string& stream) {
  jsStreamInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetStreamInfo(&info, nats.jetstream(), stream.c_str(), nullptr, &err);
  if (s != NATS_OK) return NatsError(s, absl::StrCat("decision replica: reading stream ", stream));
  StreamBounds b{info->State.FirstSeq, info->State.LastSeq};
  jsStreamInfo_Destroy(info);
  return b;
}

struct StateHeader {
  std::string id;
  uint64_t index = 0, count = 0;
};

bool ParseStateHeader(absl::string_view header, StateHeader* out) {
  if (!absl::ConsumePrefix(&header, kStateTag)) return false;
  std::vector<absl::string_view> f = absl::StrSplit(header, ' ');
  return f.size() == 3 && !f[0].empty() && absl::SimpleAtoi(f[1], &out->index) &&
         absl::SimpleAtoi(f[2], &out->count) && out->index >= 1 && out->index <= out->count &&
         (out->id = std::string(f[0]), true);
}

struct SetHeader {
  std::string id;
  uint64_t index = 0, count = 0;
};

// The message's kSetHeader, if it has one that parses and marks a set of two or more.
bool ReadSetHeader(natsMsg* msg, SetHeader* out) {
  const char* value = nullptr;
  if (natsMsgHeader_Get(msg, kSetHeader, &value) != NATS_OK || value == nullptr) return false;
  std::vector<absl::string_view> f = absl::StrSplit(value, ' ');
  return f.size() == 3 && !f[0].empty() && absl::SimpleAtoi(f[1], &out->index) &&
         absl::SimpleAtoi(f[2], &out->count) && out->count > 1 && out->index >= 1 &&
         out->index <= out->count && (out->id = std::string(f[0]), true);
}

}  // namespace

absl::StatusOr<uint64_t> DecisionReplica::FindState() {
  absl::StatusOr<StreamBounds> bounds = Bounds(nats_, options_.stream);
  if (!bounds.ok()) return bounds.status();
  natsMsg* msg = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetLastMsg(&msg, nats_.jetstream(), options_.stream.c_str(),
                                     kDecisionStateSubject, nullptr, &err);
  if (s == NATS_NOT_FOUND || err == JSNoMessageFoundErr) {
    return absl::DataLossError(absl::StrCat("decision replica: ", options_.stream,
                                            " holds no full state; waiting for the writer's"));
  }
  if (s != NATS_OK) return NatsError(s, "decision replica: reading the last full state");
  const uint64_t seq = natsMsg_GetSequence(msg);
  absl::string_view header, body;
  StateHeader h;
  const bool parsed =
      SplitMessage(absl::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)), &header,
                   &body) &&
      ParseStateHeader(header, &h);
  natsMsg_Destroy(msg);
  // The writer publishes a state's chunks one after another: the first is count-1 before the
  // last. A state whose last chunk is not its last (its writer died or was fenced after the
  // first ones) replaces nothing: the next writer's state is waited for.
  if (!parsed || seq < h.count) {
    return absl::DataLossError(absl::StrCat("decision replica: the last full state (sequence ", seq,
                                            ") cannot be read; waiting for another"));
  }
  if (h.index != h.count) {
    return absl::DataLossError(absl::StrCat(
        "decision replica: the last full state was cut off (chunk ", h.index, " of ", h.count,
        " at sequence ", seq, "); waiting for the writer's next state"));
  }
  const uint64_t start = seq - (h.count - 1);
  if (start < bounds->first) {
    return absl::DataLossError(absl::StrCat(
        "decision replica: the last full state starts at sequence ", start,
        " but the stream's first is ", bounds->first, "; waiting for the writer's next state"));
  }
  return start - 1;
}

void DecisionReplica::Run() {
  uint64_t position = options_.start_after;  // the last sequence read
  bool need_state = false;
  // The chunks of a state being read.
  StateHeader pending;
  std::vector<Decision> pending_decisions;
  uint64_t pending_after = 0;  // the sequence before the pending state's first chunk
  std::string last_state_id;  // the last state applied (its snapshots' end names it)
  Clock& clock = options_.clock != nullptr ? *options_.clock : RealClock::Get();
  absl::Time pending_since;  // the pending state's last chunk, on `clock`
  // A state dropped for its age: read again from its first chunk if the next message read is
  // its next chunk (its writer went on).
  StateHeader aged;
  uint64_t aged_after = 0;
  absl::Time progress = absl::Now();  // the last message, or the last check for a stall
  // The updates of a change set held until its last (see the header).
  struct HeldSet {
    SetHeader header;  // its id and count, and the index of the last update held
    std::vector<DecisionUpdate> updates;
    size_t bytes = 0;
    uint64_t last = 0;  // the sequence of the last update held
  } held_set;
  // Hands on what the held set holds, as one change (one update alone as an update); `done`:
  // the set ends here (else the rest of it, when it comes, is held as its remainder).
  auto hand_on_set = [&](bool done) {
    if (!held_set.updates.empty()) {
      ReplicatedChange c;
      c.sequence = held_set.last;
      const size_t n = held_set.updates.size();
      if (n == 1) {
        c.change = held_set.updates[0].change;
        c.decision = std::move(held_set.updates[0].decision);
      } else {
        c.kind = ReplicatedChange::Kind::kSet;
        c.set = std::move(held_set.updates);
      }
      held_set.updates.clear();
      held_set.bytes = 0;
      options_.apply(c);
      updates_.fetch_add(n);
      // Updates end any state being read: none is pending while a set is held.
      applied_through_ = c.sequence;
      if (c.sequence > read_through_.load()) read_through_ = c.sequence;
    }
    if (done) held_set = {};
  };
  auto wait = [&] {
    const absl::Time until = absl::Now() + options_.retry;
    while (!stopping_ && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
  };
  auto clear_pending = [&] {
    pending = {};
    pending_decisions.clear();
    pending_decisions.shrink_to_fit();
    pending_bytes_ = 0;
    pending_count_ = 0;
  };
  // Drops the pending state (its content never in `why`: anyone may have published it).
  auto drop_pending = [&](const std::string& why) {
    const std::string reason =
        absl::StrCat("decision replica: dropped the full state at sequences ", pending_after + 1,
                     " to ", position, " (chunk ", pending.index, " of ", pending.count, "): ", why,
                     "; the rest of its chunks are skipped");
    clear_pending();
    pending_dropped_.fetch_add(1);
    {
      absl::MutexLock lock(&mu_);
      last_refusal_ = reason;
    }
    if (options_.log) options_.log(reason);
  };
  while (!stopping_) {
    if (!pending.id.empty() && clock.TimeNow() - pending_since >= options_.max_pending_state_age) {
      aged = pending;
      aged_after = pending_after;
      drop_pending(absl::StrCat("its next chunk did not come; it waited ",
                                absl::FormatDuration(options_.max_pending_state_age),
                                " (max_pending_state_age)"));
    }
    if (sub_ == nullptr) {
      // What a set held so far is handed on: its rest, if it comes after the consumer is made
      // again, follows as its remainder.
      hand_on_set(/*done=*/false);
      // A consumer lost inside a state's chunks: read again from its first chunk. Made again
      // after the last chunk read, it would find the rest without their first chunks and skip
      // the state whole (and what only the state carried with it).
      if (!pending.id.empty()) position = pending_after;
      // Likewise for a state dropped for its age just before (NATS away mid-publish).
      if (pending.id.empty() && !aged.id.empty()) position = aged_after;
      if (need_state) {
        absl::StatusOr<uint64_t> from = FindState();
        if (!from.ok()) {
          awaiting_state_ = from.status().code() == absl::StatusCode::kDataLoss;
          SetError(std::string(from.status().message()));
          wait();
          continue;
        }
        awaiting_state_ = false;
        position = *from;
        need_state = false;
      } else {
        absl::StatusOr<StreamBounds> b = Bounds(nats_, options_.stream);
        if (!b.ok()) {
          SetError(std::string(b.status().message()));
          wait();
          continue;
        }
        // From the start (position 0): the stream's first message is a state's first chunk
        // once the writer compacted it, so reading from there is reading from a state.
        if (position > 0 && b->first > position + 1 && b->last > position) {
          fell_behind_.fetch_add(1);
          SetError(absl::StrCat("decision replica: fell behind: needs sequence ", position + 1,
                                " but ", options_.stream, " begins at ", b->first,
                                "; rebuilding from the last full state"));
          need_state = true;
          continue;
        }
      }
      absl::Status s = Subscribe(position);
      if (!s.ok()) {
        SetError(std::string(s.message()));
        wait();
        continue;
      }
      clear_pending();
      aged = {};
      progress = absl::Now();
    }
    natsMsg* msg = nullptr;
    const natsStatus s = natsSubscription_NextMsg(&msg, sub_, 200);
    if (s == NATS_TIMEOUT) {
      // A set held while the stream gives nothing more: its writer was cut off mid-set (or is
      // slow). Handed on for a caller waiting for it, or after `stall` in any case.
      if (!held_set.updates.empty() &&
          (wanted_.load() > read_through_.load() || absl::Now() - progress >= options_.stall)) {
        hand_on_set(/*done=*/false);
      }
      if (absl::Now() - progress < options_.stall) continue;
      progress = absl::Now();
      absl::StatusOr<StreamBounds> b = Bounds(nats_, options_.stream);
      if (b.ok() && b->last > position) {
        // The stream went on without us: the consumer is gone (its server died), whatever
        // libnats believes. Made again from the last sequence read; nothing is skipped.
        resubscribed_.fetch_add(1);
        SetError(absl::StrCat("decision replica: no message for ",
                              absl::FormatDuration(options_.stall), " while ", options_.stream,
                              " holds up to ", b->last, "; reading again after ", position));
        natsSubscription_Destroy(sub_);
        sub_ = nullptr;
      }
      continue;
    }
    progress = absl::Now();
    if (s != NATS_OK) {
      SetError(std::string(NatsError(s, "decision replica: reading").message()));
      natsSubscription_Destroy(sub_);
      sub_ = nullptr;
      wait();
      continue;
    }
    jsMsgMetaData* meta = nullptr;
    uint64_t seq = 0;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
      seq = meta->Sequence.Stream;
      jsMsgMetaData_Destroy(meta);
    }
    if (seq == 0 || seq <= position) {  // not a stream message, or one already read
      natsMsg_Destroy(msg);
      continue;
    }
    if (position > 0 && seq > position + 1) {
      // What came between is gone from the stream (limits, a purge): rebuild from a state.
      // (Nothing read yet: the first message is where the compacted stream begins.)
      natsMsg_Destroy(msg);
      fell_behind_.fetch_add(1);
      SetError(absl::StrCat("decision replica: fell behind: needed sequence ", position + 1,
                            ", the stream gave ", seq, "; rebuilding from the last full state"));
      natsSubscription_Destroy(sub_);
      sub_ = nullptr;
      need_state = true;
      continue;
    }
    position = seq;
    const absl::string_view data(natsMsg_GetData(msg),
                                 static_cast<size_t>(natsMsg_GetDataLength(msg)));
    absl::string_view header, body;
    StateHeader h;
    bool ok = SplitMessage(data, &header, &body);
    bool holding = false;  // this message is held with its set, not applied yet
    // A state's chunk, or a message that does not parse: the set held ends before it.
    if (!ok || !absl::StartsWith(header, kUpdateTag)) hand_on_set(/*done=*/true);
    if (ok && absl::StartsWith(header, kUpdateTag)) {
      ReplicatedChange c;
      c.sequence = seq;
      ok = ParseChange(header.substr(kUpdateTag.size()), &c.change) &&
           c.decision.ParseFromArray(body.data(), static_cast<int>(body.size()));
      SetHeader sh;
      const bool in_set = ok && ReadSetHeader(msg, &sh);
      // Another set's, or no set's: the one held ends before it.
      if (!in_set || sh.id != held_set.header.id || sh.count != held_set.header.count ||
          sh.index <= held_set.header.index) {
        hand_on_set(/*done=*/true);
      }
      if (ok) {
        // An update inside a state's chunks: that state is incomplete (a writer cut off).
        clear_pending();
      }
      if (in_set) {
        held_set.header = sh;
        // What it holds in memory, not its bytes on the wire: an empty evidence line is 2 bytes
        // there and a string's 32 (and its pointer's 8) here.
        held_set.bytes += c.decision.SpaceUsedLong() + 64;
        held_set.last = seq;
        held_set.updates.push_back({c.change, std::move(c.decision)});
        holding = true;
        if (sh.index == sh.count) {
          hand_on_set(/*done=*/true);
          holding = false;
        } else if (held_set.bytes > options_.max_held_set_bytes) {
          hand_on_set(/*done=*/false);
          holding = false;
        }
      } else if (ok) {
        options_.apply(c);
        updates_.fetch_add(1);
      }
    } else if (ok && absl::StartsWith(header, kWaitingEndTag)) {
      // The end of the snapshots of the last state applied here; another state's (one this
      // replica skipped, or began after) says nothing of the claims its mirror holds.
      clear_pending();  // inside a state's chunks: that state is incomplete
      if (header.substr(kWaitingEndTag.size()) == last_state_id) {
        ReplicatedChange c;
        c.kind = ReplicatedChange::Kind::kWaitingEnd;
        c.sequence = seq;
        options_.apply(c);
      }
    } else if (ok && header == kWaitingTag) {
      ReplicatedChange c;
      c.kind = ReplicatedChange::Kind::kWaiting;
      c.sequence = seq;
      ok = DecodeWaiting(data, &c.waiting);
      if (ok) {
        clear_pending();  // inside a state's chunks: that state is incomplete
        options_.apply(c);
      }
    } else if (ok && ParseStateHeader(header, &h)) {
      if (!aged.id.empty() && h.id == aged.id && h.count == aged.count &&
          h.index == aged.index + 1) {
        // The next chunk of a state dropped for its age: its writer went on (NATS was away
        // mid-publish). Read again from its first chunk, which the stream still holds.
        natsMsg_Destroy(msg);
        position = aged_after;
        aged = {};
        natsSubscription_Destroy(sub_);
        sub_ = nullptr;
        continue;
      }
      palisade::v1::ListDecisionsResponse chunk;
      ok = chunk.ParseFromArray(body.data(), static_cast<int>(body.size()));
      if (ok) {
        if (h.index == 1) {
          clear_pending();
          pending = {h.id, 0, h.count};
          pending_after = seq - 1;
        }
        if (pending.id == h.id && pending.count == h.count && pending.index + 1 == h.index) {
          const size_t bytes = chunk.SpaceUsedLong();
          const size_t count = static_cast<size_t>(chunk.decisions_size());
          pending.index = h.index;
          if (pending_bytes_ + bytes > options_.max_pending_state_bytes) {
            drop_pending(absl::StrCat("its decisions would take ", pending_bytes_ + bytes,
                                      " bytes, over max_pending_state_bytes (",
                                      options_.max_pending_state_bytes, ")"));
          } else if (pending_count_ + count > options_.max_pending_state_decisions) {
            drop_pending(absl::StrCat("it would hold ", pending_count_ + count,
                                      " decisions, over max_pending_state_decisions (",
                                      options_.max_pending_state_decisions, ")"));
          } else {
            pending_bytes_ += bytes;
            pending_count_ += count;
            pending_since = clock.TimeNow();
            for (Decision& d : *chunk.mutable_decisions()) {
              pending_decisions.push_back(std::move(d));
            }
          }
          if (!pending.id.empty() && h.index == h.count) {
            ReplicatedChange c;
            c.kind = ReplicatedChange::Kind::kState;
            c.sequence = seq;
            c.state = std::move(pending_decisions);
            last_state_id = std::string(h.id);
            clear_pending();
            options_.apply(c);
            states_.fetch_add(1);
          }
        } else {
          // A chunk without its predecessors (the state began before where this replica
          // started, or was dropped): the state is skipped; the updates around it carry the
          // same changes.
          clear_pending();
        }
      }
    } else {
      ok = false;
    }
    if (!ok) malformed_.fetch_add(1);
    natsMsg_Destroy(msg);
    if (holding) {
      // Applied (and counted as read) once its set is handed on.
      aged = {};
      SetError("");
      continue;
    }
    aged = {};  // only the very next message may go on with a state dropped for its age
    // Not inside a state: a position kept there would resume after its first chunks and skip
    // the rest (the view never reset), losing what a rebuild from that state was to restore.
    if (pending.id.empty()) applied_through_ = seq;
    if (seq > read_through_.load()) read_through_ = seq;
    SetError("");
  }
}

// ---------------------------------------------------------------------------------------------
// DecisionView

void DecisionView::Apply(const ReplicatedChange& change) {
  absl::MutexLock lock(&mu_);
  if (change.kind == ReplicatedChange::Kind::kState) {
    by_id_.clear();
    for (const Decision& d : change.state) by_id_[d.id()] = d;
    // The writer's snapshots follow, one per target, then their end: the ones held before go
    // (Waiting never named them past a state: the writer names its claims again).
    waiting_.clear();
    waiting_bytes_ = 0;
    waiting_pending_ = true;
    waiting_overflow_ = false;
    return;
  }
  if (change.kind == ReplicatedChange::Kind::kSet) {
    for (const DecisionUpdate& u : change.set) {
      by_id_[u.decision.id()] = u.decision;
      EndWaitingLocked(u.decision);
    }
    return;
  }
  if (change.kind == ReplicatedChange::Kind::kWaiting) {
    const WaitingClaims& w = change.waiting;
    EraseWaitingLocked(w.target);
    // Kept only behind an active decision on its target, as a mirror's table keeps them: one
    // snapshot per active decision at most, whatever is forged on the subject.
    auto d = by_id_.find(w.decision_id);
    if (w.claims.empty() || d == by_id_.end() || !d->second.active() ||
        d->second.target().value() != w.target) {
      return;
    }
    // Claims of one kind merged, as a table merges them (DecisionTable::CoverLocked): the
    // longest expiry and the highest offence, the last one's rule and reason; an expired one
    // skipped first, as there (it would name the merged claim's rule and reason).
    const absl::Time now = clock_.TimeNow();
    WaitingClaims merged{w.target, w.decision_id, {}};
    for (const WaitingClaimRow& c : w.claims) {
      if (c.expiry <= now) continue;
      auto like = std::find_if(merged.claims.begin(), merged.claims.end(),
                               [&c](const WaitingClaimRow& m) {
                                 return m.origin == c.origin && m.action == c.action &&
                                        m.actuator == c.actuator && m.dry_run == c.dry_run;
                               });
      if (like == merged.claims.end()) {
        merged.claims.push_back(c);
        continue;
      }
      like->expiry = std::max(like->expiry, c.expiry);
      like->offence = std::max(like->offence, c.offence);
      like->rule_id = c.rule_id;
      like->reason = c.reason;
    }
    if (merged.claims.empty()) return;
    // Under the cap: anyone who can publish on the subject can forge a maximal one for every
    // active decision. One refused leaves its target's claims unknown here: incomplete until
    // a later state's snapshots end with none refused (a node stepping down drops none of its
    // own meanwhile).
    const size_t bytes = DecisionTable::WaitingBytes(merged);
    if (bytes > max_waiting_bytes_ - std::min(max_waiting_bytes_, waiting_bytes_)) {
      waiting_overflow_ = true;
      return;
    }
    waiting_bytes_ += bytes;
    waiting_[w.target] = std::move(merged);
    return;
  }
  if (change.kind == ReplicatedChange::Kind::kWaitingEnd) {
    waiting_pending_ = false;
    waiting_known_ = true;
    return;
  }
  // Every update carries the whole decision as it now is.
  by_id_[change.decision.id()] = change.decision;
  EndWaitingLocked(change.decision);
}

void DecisionView::EraseWaitingLocked(const std::string& target) {
  auto it = waiting_.find(target);
  if (it == waiting_.end()) return;
  waiting_bytes_ -= std::min(waiting_bytes_, DecisionTable::WaitingBytes(it->second));
  waiting_.erase(it);
}

void DecisionView::EndWaitingLocked(const Decision& d) {
  // The writer decides what follows it, and names the claims left waiting on the target again
  // (a snapshot after the change set): these wait behind nothing now.
  if (d.active()) return;
  auto it = waiting_.find(d.target().value());
  if (it != waiting_.end() && it->second.decision_id == d.id()) {
    EraseWaitingLocked(d.target().value());
  }
}

absl::StatusOr<Decision> DecisionView::Get(absl::string_view id) const {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return absl::NotFoundError(absl::StrCat("no decision ", id));
  return it->second;
}

std::vector<Decision> DecisionView::List(bool active_only) const {
  std::vector<Decision> out;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, d] : by_id_) {
      if (!active_only || d.active()) out.push_back(d);
    }
  }
  std::sort(out.begin(), out.end(), [](const Decision& a, const Decision& b) {
    return std::make_tuple(a.start().seconds(), a.start().nanos(), a.id()) <
           std::make_tuple(b.start().seconds(), b.start().nanos(), b.id());
  });
  return out;
}

std::vector<WaitingClaims> DecisionView::Waiting(bool* complete) const {
  absl::MutexLock lock(&mu_);
  *complete = waiting_known_ && !waiting_pending_ && !waiting_overflow_;
  std::vector<WaitingClaims> out;
  out.reserve(waiting_.size());
  for (const auto& [target, w] : waiting_) out.push_back(w);
  return out;
}

size_t DecisionView::waiting_bytes() const {
  absl::MutexLock lock(&mu_);
  return waiting_bytes_;
}

bool DecisionView::waiting_overflow() const {
  absl::MutexLock lock(&mu_);
  return waiting_overflow_;
}

size_t DecisionView::active_count() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [id, d] : by_id_) n += d.active() ? 1 : 0;
  return n;
}

}  // namespace palisade::cluster
