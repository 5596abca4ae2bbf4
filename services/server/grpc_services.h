// The gRPC services of palisaded (palisade.v1.Ingest, Decisions, Admin, Feeds, Events) on the
// callback API.
// They translate between the wire and the Pipeline / DecisionTable, and nothing else: all
// detection logic lives behind Pipeline.
// Every method that takes a request message takes it as bytes (a raw method), checks the
// caller's token and role (Guarded::Allow), and only then parses it: gRPC's typed callback API
// parses a request before its handler runs, so a caller without a token could make palisaded
// parse api.max_message_bytes of it (unknown fields are held ~30x in memory). Bytes that do not
// parse are INVALID_ARGUMENT naming the method. The handlers (Handle*) see the parsed request
// and fill a typed response, serialized when they answer OK.
// Thread-safety: the services are called concurrently by gRPC; everything they touch is
// thread-safe.
#ifndef PALISADE_SERVICES_SERVER_GRPC_SERVICES_H_
#define PALISADE_SERVICES_SERVER_GRPC_SERVICES_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "services/actions/dispatcher.h"
#include "services/bouncer_api/bouncer_api.h"
#include "services/common/clock.h"
#include "services/common/ip.h"
#include "services/decisions/decision_table.h"
#include "services/events/event_hub.h"
#include "services/server/api_limits.h"
#include "services/server/auth.h"
#include "services/server/ship_dedup.h"
#include "services/feedmanager/feed_manager.h"
#include "services/pipeline/pipeline.h"

namespace palisade {

grpc::Status ToGrpcStatus(const absl::Status& s);

// Ship takes its batches as bytes (a raw method): their records are counted on the wire and a
// batch over api.max_records_per_batch is refused before it is parsed. A batch with an origin
// (`palisadectl ship --follow`) goes through `dedup` when set: what was taken before is acked
// and dropped; an invalid origin ends the stream with INVALID_ARGUMENT (counted).
class IngestService final
    : public palisade::v1::Ingest::WithRawCallbackMethod_Ship<palisade::v1::Ingest::Service>,
      public Guarded {
 public:
  IngestService(Pipeline& pipeline, ApiLimits& limits, ShipDedup* dedup = nullptr)
      : pipeline_(pipeline), limits_(limits), dedup_(dedup) {}
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Ship(
      grpc::CallbackServerContext* context) override;

 private:
  Pipeline& pipeline_;
  ApiLimits& limits_;
  ShipDedup* const dedup_;
};

class DecisionsService final : public palisade::v1::Decisions::WithRawCallbackMethod_List<
                                   palisade::v1::Decisions::WithRawCallbackMethod_Get<
                                       palisade::v1::Decisions::WithRawCallbackMethod_Add<
                                           palisade::v1::Decisions::WithRawCallbackMethod_Delete<
                                               palisade::v1::Decisions::Service>>>>,
                               public Guarded {
 public:
  explicit DecisionsService(DecisionTable& table) : table_(table) {}
  // Cluster (issue 17): manual bans and unbans are the edge writer's, carried out through the
  // command channel (ClusterNode::AddManual / Withdraw). Unset: the local table. Set once,
  // before the server serves.
  using AddFn = std::function<absl::StatusOr<palisade::v1::Decision>(
      const palisade::v1::AddDecisionRequest&)>;
  using WithdrawFn = std::function<absl::StatusOr<palisade::v1::Decision>(const std::string&)>;
  void SetWriter(AddFn add, WithdrawFn withdraw) {
    add_ = std::move(add);
    withdraw_ = std::move(withdraw);
  }
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context,
                                const grpc::ByteBuffer* request,
                                grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Add(grpc::CallbackServerContext* context,
                                const grpc::ByteBuffer* request,
                                grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;

 private:
  // The methods once the caller is allowed and the request parsed (see the top).
  absl::Status HandleList(const palisade::v1::ListDecisionsRequest& request,
                          palisade::v1::ListDecisionsResponse* response);
  absl::Status HandleGet(const palisade::v1::GetDecisionRequest& request,
                         palisade::v1::Decision* response);
  absl::Status HandleAdd(const palisade::v1::AddDecisionRequest& request,
                         palisade::v1::Decision* response);
  absl::Status HandleDelete(const palisade::v1::DeleteDecisionRequest& request,
                            palisade::v1::Decision* response);

  DecisionTable& table_;
  AddFn add_;
  WithdrawFn withdraw_;
};

class AdminService final
    : public palisade::v1::Admin::WithRawCallbackMethod_Status<
          palisade::v1::Admin::WithRawCallbackMethod_ReloadRules<
              palisade::v1::Admin::WithRawCallbackMethod_TestRules<
                  palisade::v1::Admin::WithRawCallbackMethod_ReleaseHeld<
                      palisade::v1::Admin::WithRawCallbackMethod_AddBouncer<
                          palisade::v1::Admin::WithRawCallbackMethod_ListBouncers<
                              palisade::v1::Admin::WithRawCallbackMethod_DeleteBouncer<
                                  palisade::v1::Admin::WithRawCallbackMethod_RotateToken<
                                      palisade::v1::Admin::Service>>>>>>>>,
      public Guarded {
 public:
  // What a reload applies: the compiled packs and, when the reload read one (palisaded reads
  // its config file again), the allowlist; without one the engine keeps its own.
  struct RuleReload {
    RuleReload(std::shared_ptr<const RuleSet> r,  // NOLINT: a loader may return the rules alone
               std::optional<CidrSet> a = std::nullopt)
        : rules(std::move(r)), allowlist(std::move(a)) {}
    std::shared_ptr<const RuleSet> rules;
    std::optional<CidrSet> allowlist;
  };
  // `reload` loads and compiles the configured packs (all or nothing).
  using RuleLoader = std::function<absl::StatusOr<RuleReload>()>;

  // `dispatcher` is null when Cloudflare is not enabled.
  AdminService(Pipeline& pipeline, DecisionTable& table, Clock& clock, RuleLoader reload,
               prometheus::Registry& registry, std::string version,
               Dispatcher* dispatcher = nullptr);

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ReloadRules(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* TestRules(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ReleaseHeld(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;

  // Shared with the SIGHUP handler: reloads and records the outcome. One reload at a time
  // (read, compile, apply): the last to read the packs is the last applied.
  absl::StatusOr<std::shared_ptr<const RuleSet>> Reload() ABSL_LOCKS_EXCLUDED(reload_mu_);

  // CrowdSec bouncers (config bouncer_api). Unset: the bouncer RPCs are FAILED_PRECONDITION.
  // Set once, before the server serves.
  void SetBouncerApi(BouncerApi* bouncers) { bouncers_ = bouncers; }
  grpc::ServerUnaryReactor* AddBouncer(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListBouncers(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteBouncer(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;

  // Adds what Status says about the Cloudflare credentials (credential_findings,
  // actuator_states, cloudflare_token_expires, credentials_checked; Edge::FillCredentialStatus).
  // Set once, before the server serves; called concurrently.
  using CredentialStatusFill = std::function<void(palisade::v1::StatusResponse*)>;
  void SetCredentialStatus(CredentialStatusFill fill) { credential_status_ = std::move(fill); }
  // Adds StatusResponse.cluster (a cluster node's view; ClusterNode::Status). Set once, before
  // the server serves; called concurrently.
  void SetClusterStatus(CredentialStatusFill fill) { cluster_status_ = std::move(fill); }
  // Rolls the service's own token (Edge::RotateToken, converted). Unset: Cloudflare is off.
  using TokenRoller = std::function<absl::StatusOr<palisade::v1::RotateTokenResponse>()>;
  void SetTokenRoller(TokenRoller roll) { roll_token_ = std::move(roll); }

  grpc::ServerUnaryReactor* RotateToken(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;

 private:
  // The methods once the caller is allowed and the request parsed (see the top).
  absl::Status HandleStatus(const palisade::v1::StatusRequest& request,
                            palisade::v1::StatusResponse* response);
  absl::Status HandleReloadRules(const palisade::v1::ReloadRulesRequest& request,
                                 palisade::v1::ReloadRulesResponse* response);
  absl::Status HandleTestRules(const palisade::v1::TestRulesRequest& request,
                               palisade::v1::TestRulesResponse* response);
  absl::Status HandleReleaseHeld(const palisade::v1::ReleaseHeldRequest& request,
                                 palisade::v1::ReleaseHeldResponse* response);
  absl::Status HandleAddBouncer(const palisade::v1::AddBouncerRequest& request,
                                palisade::v1::AddBouncerResponse* response);
  absl::Status HandleListBouncers(const palisade::v1::ListBouncersRequest& request,
                                  palisade::v1::ListBouncersResponse* response);
  absl::Status HandleDeleteBouncer(const palisade::v1::DeleteBouncerRequest& request,
                                   palisade::v1::DeleteBouncerResponse* response);
  absl::Status HandleRotateToken(const palisade::v1::RotateTokenRequest& request,
                                 palisade::v1::RotateTokenResponse* response);

  Pipeline& pipeline_;
  DecisionTable& table_;
  Clock& clock_;
  RuleLoader reload_;
  absl::Mutex reload_mu_;
  const absl::Time started_;
  const std::string version_;
  prometheus::Counter& reload_ok_;
  prometheus::Counter& reload_failed_;
  Dispatcher* dispatcher_;
  BouncerApi* bouncers_ = nullptr;
  CredentialStatusFill credential_status_;
  CredentialStatusFill cluster_status_;
  TokenRoller roll_token_;
};

// Push streams its chunks in: none is read before the handler has checked the token (the ingest
// role; the first chunk's header may ask for the admin role: force, or a feed kept for admins). A push
// is applied only once the chunk marked last (FeedChunk.last) has come and the stream ended.
class FeedsService final
    : public palisade::v1::Feeds::WithCallbackMethod_Push<
          palisade::v1::Feeds::WithRawCallbackMethod_List<
              palisade::v1::Feeds::WithRawCallbackMethod_Get<palisade::v1::Feeds::Service>>>,
      public Guarded {
 public:
  // `push_caps`: each configured feed's max_bytes. A push names its feed on its first chunk: an
  // unknown feed is refused then (NOT_FOUND), and a push is refused as soon as it passes its
  // feed's cap (RESOURCE_EXHAUSTED), so nothing unwanted is buffered. `admin_only`: the feeds
  // only the admin role may push, each with why ("is pulled from its url"), said in the refusal.
  FeedsService(FeedManager& feeds, ApiLimits& limits, std::map<std::string, uint64_t> push_caps,
               std::map<std::string, std::string> admin_only);
  grpc::ServerReadReactor<palisade::v1::FeedChunk>* Push(
      grpc::CallbackServerContext* context, palisade::v1::PushFeedResponse* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context,
                                const grpc::ByteBuffer* request,
                                grpc::ByteBuffer* response) override;

 private:
  // The methods once the caller is allowed and the request parsed (see the top).
  absl::Status HandleList(const palisade::v1::ListFeedsRequest& request,
                          palisade::v1::ListFeedsResponse* response);
  absl::Status HandleGet(const palisade::v1::GetFeedRequest& request,
                         palisade::v1::GetFeedResponse* response);

  FeedManager& feeds_;
  ApiLimits& limits_;
  const std::map<std::string, uint64_t> push_caps_;
  // The feeds a push to needs the admin role, and why (see the constructor).
  const std::map<std::string, std::string> admin_only_;
};

// How long a Watch may stay stuck before it is ended and its slot freed (a client that does
// not read: gRPC's flow control then holds the write, whose completion never comes).
struct EventsServiceOptions {
  // A write of an event pending this long: the client reads nothing.
  absl::Duration write_stall = absl::Minutes(2);
  // Once the queue overflowed (the call is over), the in-flight write has this long to
  // complete and carry RESOURCE_EXHAUSTED; past it the call is cancelled.
  absl::Duration overflow_grace = absl::Seconds(10);
};

class EventsService final
    : public palisade::v1::Events::WithRawCallbackMethod_Watch<palisade::v1::Events::Service>,
      public Guarded {
 public:
  using Options = EventsServiceOptions;
  EventsService(EventHub& hub, ApiLimits& limits, Options options = Options())
      : hub_(hub), limits_(limits), options_(options) {}
  // The request (a WatchRequest) as bytes; the events are written serialized.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Watch(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request) override;

 private:
  EventHub& hub_;
  ApiLimits& limits_;
  const Options options_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_SERVER_GRPC_SERVICES_H_
