#include "services/cluster/command_channel.h"

#include <nats/nats.h>

#include <utility>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "services/cluster/nats_client.h"

namespace palisade::cluster {
namespace {

constexpr absl::string_view kRequestTag = "C1 ";
constexpr size_t kMaxIdBytes = 128;
constexpr size_t kMaxKindBytes = 64;

std::string ErrorReply(const absl::Status& s) {
  return absl::StrCat("ERR ", static_cast<int>(s.code()), "\n", s.message());
}

// The reply's body, or the status it carries.
absl::StatusOr<std::string> ParseReply(absl::string_view reply) {
  if (absl::ConsumePrefix(&reply, "OK\n")) return std::string(reply);
  int code = 0;
  const size_t nl = reply.find('\n');
  absl::string_view head = reply.substr(0, nl);
  if (absl::ConsumePrefix(&head, "ERR ") && absl::SimpleAtoi(head, &code) && code > 0 &&
      code <= static_cast<int>(absl::StatusCode::kUnauthenticated) &&
      nl != absl::string_view::npos) {
    return absl::Status(static_cast<absl::StatusCode>(code), reply.substr(nl + 1));
  }
  return absl::InternalError("command channel: the writer's reply cannot be read");
}

}  // namespace

absl::StatusOr<std::unique_ptr<CommandServer>> CommandServer::Start(natsConnection* nc,
                                                                    CommandServerOptions options) {
  if (nc == nullptr) return absl::InvalidArgumentError("command channel: no connection");
  if (!options.handle) return absl::InvalidArgumentError("command channel: no handler");
  auto server = std::unique_ptr<CommandServer>(new CommandServer(std::move(options)));
  server->nc_ = nc;
  server->gate_ = std::make_shared<Gate>();
  {
    absl::MutexLock lock(&server->gate_->mu);
    server->gate_->server = server.get();
  }
  // libnats' share of the gate: freed once the subscription is done and its handler returned;
  // if that cannot be arranged, never freed (a few bytes) rather than freed under a last call.
  auto* closure = new std::shared_ptr<Gate>(server->gate_);
  const natsStatus s =
      natsConnection_QueueSubscribe(&server->sub_, nc, server->options_.subject.c_str(),
                                    "palisade-writer", &CommandServer::OnMessage, closure);
  if (s != NATS_OK) {
    delete closure;
    server->sub_ = nullptr;
    return NatsError(s, absl::StrCat("command channel: serving ", server->options_.subject));
  }
  natsSubscription_SetOnCompleteCB(
      server->sub_, [](void* c) { delete static_cast<std::shared_ptr<Gate>*>(c); }, closure);
  // The server learns of the subscription asynchronously: a round trip makes sure that it
  // routes commands here once Start returns (without it a command sent at once found "no
  // responders", which the test saw).
  const natsStatus f = natsConnection_FlushTimeout(nc, 5'000);
  if (f != NATS_OK) {
    return NatsError(f, absl::StrCat("command channel: serving ", server->options_.subject));
  }
  return server;
}

CommandServer::~CommandServer() {
  if (sub_ == nullptr) return;
  // Connected: drain, so the commands already received are answered. Not connected (NATS
  // away, the reason a writer often steps down): a drain cannot complete without a server and
  // would hold the caller (the node's thread) its 30 s; the commands not answered are retried
  // by their callers under the same id.
  const bool connected = natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED;
  if (connected && natsSubscription_Drain(sub_) == NATS_OK) {
    natsSubscription_WaitForDrainCompletion(sub_, 30'000);
  } else {
    natsSubscription_Unsubscribe(sub_);
  }
  // The command being carried out finishes (with its reply) before this object goes; a call
  // libnats still makes afterwards finds no server.
  {
    absl::MutexLock lock(&gate_->mu);
    gate_->server = nullptr;
  }
  natsSubscription_Destroy(sub_);
}

void CommandServer::OnMessage(natsConnection* nc, natsSubscription*, natsMsg* msg, void* g) {
  Gate* gate = static_cast<std::shared_ptr<Gate>*>(g)->get();
  absl::MutexLock lock(&gate->mu);
  CommandServer* server = gate->server;
  if (server == nullptr) {  // stopped: the caller retries with the next writer
    natsMsg_Destroy(msg);
    return;
  }
  const char* reply_to = natsMsg_GetReply(msg);
  const std::string reply = server->Handle(
      absl::string_view(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg))));
  // A command sent without a reply subject is carried out and not answered.
  if (reply_to != nullptr && *reply_to != '\0') {
    natsConnection_Publish(nc, reply_to, reply.data(), static_cast<int>(reply.size()));
  }
  natsMsg_Destroy(msg);
}

std::string CommandServer::Handle(absl::string_view request) {
  if (request.size() > options_.max_request_bytes) {
    refused_.fetch_add(1);
    return ErrorReply(
        absl::InvalidArgumentError(absl::StrCat("command channel: a request of ", request.size(),
                                                " bytes is over ", options_.max_request_bytes)));
  }
  const size_t nl = request.find('\n');
  absl::string_view header = request.substr(0, nl);
  std::vector<absl::string_view> f;
  if (nl != absl::string_view::npos && absl::ConsumePrefix(&header, kRequestTag)) {
    f = absl::StrSplit(header, ' ');
  }
  if (f.size() != 2 || f[0].empty() || f[0].size() > kMaxIdBytes || f[1].empty() ||
      f[1].size() > kMaxKindBytes) {
    refused_.fetch_add(1);
    return ErrorReply(absl::InvalidArgumentError(
        "command channel: a request is \"C1 <id> <kind>\\n<body>\" (id <= 128 bytes, kind <= "
        "64)"));
  }
  const std::string id(f[0]);
  {
    absl::MutexLock lock(&mu_);
    auto it = replies_.find(id);
    if (it != replies_.end()) {
      repeated_.fetch_add(1);
      return it->second;
    }
  }
  absl::StatusOr<std::string> out = options_.handle(f[1], request.substr(nl + 1));
  handled_.fetch_add(1);
  std::string reply = out.ok() ? absl::StrCat("OK\n", *out) : ErrorReply(out.status());
  // Not completed yet: the retry is carried out again (the header's comment).
  if (out.status().code() != absl::StatusCode::kUnavailable) Remember(id, reply);
  return reply;
}

void CommandServer::Remember(const std::string& id, const std::string& reply) {
  absl::MutexLock lock(&mu_);
  replies_[id] = reply;
  order_.push_back(id);
  reply_bytes_ += id.size() + reply.size();
  while (!order_.empty() &&
         (order_.size() > options_.remember || reply_bytes_ > options_.remember_bytes)) {
    auto it = replies_.find(order_.front());
    reply_bytes_ -= order_.front().size() + it->second.size();
    replies_.erase(it);
    order_.pop_front();
  }
}

CommandClient::CommandClient(natsConnection* nc, CommandClientOptions options)
    : nc_(nc),
      options_(std::move(options)),
      id_prefix_(absl::StrCat(options_.node_id, ":", absl::Hex(absl::BitGen()()), ":")) {}

absl::StatusOr<std::string> CommandClient::Call(absl::string_view kind, absl::string_view body,
                                                absl::Duration deadline) {
  return CallWithId(absl::StrCat(id_prefix_, next_.fetch_add(1)), kind, body, deadline);
}

absl::StatusOr<std::string> CommandClient::CallWithId(const std::string& id, absl::string_view kind,
                                                      absl::string_view body,
                                                      absl::Duration deadline) {
  if (id.empty() || id.size() > kMaxIdBytes || id.find_first_of(" \n") != std::string::npos ||
      kind.empty() || kind.size() > kMaxKindBytes ||
      kind.find_first_of(" \n") != absl::string_view::npos) {
    return absl::InvalidArgumentError("command channel: bad command id or kind");
  }
  const std::string request = absl::StrCat(kRequestTag, id, " ", kind, "\n", body);
  const absl::Time until = absl::Now() + deadline;
  absl::Status last;
  while (true) {
    attempts_.fetch_add(1);
    const absl::Duration wait = std::min(options_.attempt_timeout, until - absl::Now());
    natsMsg* reply = nullptr;
    const natsStatus s = natsConnection_Request(
        &reply, nc_, options_.subject.c_str(), request.data(), static_cast<int>(request.size()),
        std::max<int64_t>(1, absl::ToInt64Milliseconds(wait)));
    if (s == NATS_OK) {
      absl::StatusOr<std::string> out = ParseReply(absl::string_view(
          natsMsg_GetData(reply), static_cast<size_t>(natsMsg_GetDataLength(reply))));
      natsMsg_Destroy(reply);
      return out;
    }
    if (s == NATS_MAX_PAYLOAD) {
      // Never sendable, whoever writes: said at once, for good (its body never in the text).
      return absl::InvalidArgumentError(
          absl::StrCat("command channel: a ", kind, " command of ", request.size(),
                       " bytes is over NATS' payload limit; not sent"));
    }
    // No responders (no writer now), a lost reply, NATS away: the same id again, so a command
    // the writer already carried out is answered from its memory, not done twice.
    last = NatsError(s, absl::StrCat("command channel: ", kind, " on ", options_.subject));
    if (absl::Now() + options_.retry >= until) break;
    absl::SleepFor(options_.retry);
  }
  return absl::UnavailableError(
      absl::StrCat("command channel: no edge writer answered ", kind, " on ", options_.subject,
                   " within ", absl::FormatDuration(deadline), " (last: ", last.message(), ")"));
}

}  // namespace palisade::cluster
