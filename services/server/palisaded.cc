// palisaded: the composition root. Loads the config and the rule packs (refusing to start on
// any error), wires Pipeline, DecisionTable and the gRPC services together, serves /metrics,
// sweeps expiries, and shuts down cleanly on SIGINT/SIGTERM. SIGHUP reloads the rules.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/common/huge_pages.h"
#include "services/common/proto_time.h"
#include "services/actions/token_vetter.h"
#include "services/bouncer_api/bouncer_api.h"
#include "services/cloudflare/credentials.h"
#include "services/cluster/cluster_node.h"
#include "services/cluster/feed_sync.h"
#include "services/cluster/match_router.h"
#include "services/cluster/match_stream.h"
#include "services/cluster/nats_client.h"
#include "services/cluster/partition_counter.h"
#include "services/decisions/decision_table.h"
#include "services/events/convert.h"
#include "services/events/event_hub.h"
#include "services/events/sinks.h"
#include "services/inputs/file_inputs.h"
#include "services/inputs/journal_input.h"
#include "services/inputs/logpush_receiver.h"
#include "services/inputs/syslog_receiver.h"
#include "services/pipeline/pipeline.h"
#include "services/server/api_limits.h"
#include "services/server/audit_poller.h"
#include "services/server/auth.h"
#include "services/server/config.h"
#include "services/server/metrics_https.h"
#include "services/server/edge.h"
#include "services/server/grpc_services.h"
#include "services/server/ship_dedup.h"
#include "services/store/state_lock.h"
#include "services/store/store.h"

ABSL_FLAG(std::string, config, "",
          "Config file (textproto palisade.v1.Config). Empty: embedded defaults.");
ABSL_FLAG(std::string, rules_dir, "rules", "Where the shipped packs are, for the defaults.");
ABSL_FLAG(std::string, grpc_listen, "", "Overrides the config's grpc_listen (port 0: any).");
ABSL_FLAG(std::string, metrics_listen, "", "Overrides the config's metrics_listen.");
ABSL_FLAG(std::string, state_file, "", "Overrides the config's state_file (the SQLite database).");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(5),
          "On SIGTERM, how long in-flight RPCs may finish before they are cancelled.");
ABSL_FLAG(std::string, port_file, "",
          "When set, writes 'grpc=PORT' and 'metrics=PORT' lines (and 'bouncer=PORT' with "
          "bouncer_api) here once listening.");

namespace palisade {
namespace {

constexpr char kVersion[] = "0.1.0";

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("api.tls.", what, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Takes gRPC's server reflection out of a server being built. Reflection is gRPC's own service:
// it takes no token, and its handler parses each request into a C++ protobuf before anything
// could check one (api.max_message_bytes of empty unknown fields is held ~30x in memory, on a
// handler thread of its own, outside api.max_streams). Linking the reflection library registers
// its plugin for every server at static initialization, so it is removed here, as a builder
// option, rather than by not asking for it.
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    using grpc::reflection::ProtoServerReflectionPlugin;
    auto reflection = [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
      return dynamic_cast<ProtoServerReflectionPlugin*>(p.get()) != nullptr;
    };
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(), reflection), plugins->end());
  }
};

// gRPC over TLS from api.tls; with client_ca_file, clients must present a certificate.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsCredentials(
    const palisade::v1::TlsConfig& tls) {
  absl::StatusOr<std::string> cert = ReadPem(tls.cert_file(), "cert_file");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(tls.key_file(), "key_file");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!tls.client_ca_file().empty()) {
    absl::StatusOr<std::string> ca = ReadPem(tls.client_ca_file(), "client_ca_file");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

void Log(const std::string& message) { std::cerr << "palisaded: " << message << std::endl; }

// The edge as it is now: the one built at start, or in a cluster the writer's (none while this
// node does not hold the edge-writer lease). In a cluster the dispatcher hears the writer's
// decisions through it, once the decision log holds them, so the edge can stop and start again
// with the lease.
class EdgeSlot {
 public:
  std::shared_ptr<Edge> get() const {
    absl::MutexLock lock(&mu_);
    return edge_;
  }
  void Set(std::shared_ptr<Edge> edge) {
    absl::MutexLock lock(&mu_);
    edge_ = std::move(edge);
  }
  // Stops the dispatcher hearing the table, and gives the edge up (to be destroyed).
  std::shared_ptr<Edge> Take() {
    {
      absl::MutexLock lock(&listen_mu_);
      listener_ = nullptr;
    }
    absl::MutexLock lock(&mu_);
    return std::move(edge_);
  }
  void Attach(DecisionTable::Listener listener) {
    absl::MutexLock lock(&listen_mu_);
    listener_ = std::move(listener);
  }
  void OnDecision(const DecisionUpdate& update) {
    absl::MutexLock lock(&listen_mu_);
    if (listener_) listener_(update);
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<Edge> edge_ ABSL_GUARDED_BY(mu_);
  absl::Mutex listen_mu_;
  DecisionTable::Listener listener_ ABSL_GUARDED_BY(listen_mu_);
};

cluster::ClusterNodeOptions ClusterOptions(const palisade::v1::ClusterConfig& c, Clock& clock) {
  cluster::ClusterNodeOptions o;
  o.nats.servers.assign(c.nats().servers().begin(), c.nats().servers().end());
  o.nats.ca_file = c.nats().tls().ca_file();
  o.nats.credentials_file = c.nats().credentials_file();
  o.nats.name = c.node_id();
  o.node_id = c.node_id();
  o.partitions = c.partitions();
  o.lease_term = FromProtoDuration(c.lease_term());
  o.replicas = static_cast<int>(c.replicas());
  o.clock = &clock;
  o.log = [](const std::string& m) { Log(m); };
  return o;
}

// The cluster command carrying a feed push to the writer, and the largest push it carries: the
// command channel's requests are single NATS messages (1 MiB payload), with room for its header.
constexpr char kFeedPushKind[] = "feeds.push";
constexpr size_t kMaxFeedPushCommandBytes = (1u << 20) - 4096;

// The config as the flags make it: --config's file (or the embedded defaults), with the
// listeners and state file the flags name. At start, and again at each reload.
absl::StatusOr<palisade::v1::Config> ReadConfig() {
  absl::StatusOr<palisade::v1::Config> config =
      absl::GetFlag(FLAGS_config).empty()
          ? absl::StatusOr<palisade::v1::Config>(DefaultConfig(absl::GetFlag(FLAGS_rules_dir)))
          : LoadConfigFile(absl::GetFlag(FLAGS_config));
  if (!config.ok()) return config;
  if (!absl::GetFlag(FLAGS_grpc_listen).empty()) {
    config->set_grpc_listen(absl::GetFlag(FLAGS_grpc_listen));
  }
  if (!absl::GetFlag(FLAGS_state_file).empty()) {
    config->set_state_file(absl::GetFlag(FLAGS_state_file));
  }
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    config->set_metrics_listen(absl::GetFlag(FLAGS_metrics_listen));
  }
  // The listeners as the flags made them, checked as the file's were.
  if (!absl::GetFlag(FLAGS_grpc_listen).empty() || !absl::GetFlag(FLAGS_metrics_listen).empty()) {
    const std::string file = absl::GetFlag(FLAGS_config).empty() ? "the embedded defaults"
                                                                 : absl::GetFlag(FLAGS_config);
    if (absl::Status s = CheckListeners(*config, file); !s.ok()) return s;
  }
  return config;
}

int Run() {
  absl::StatusOr<palisade::v1::Config> config = ReadConfig();
  if (!config.ok()) {
    Log(absl::StrCat("refusing to start: ", config.status().message()));
    return 2;
  }
  // Start-up and reloads compile the packs on every core (RuleSetOptions::threads).
  const int load_threads = static_cast<int>(std::thread::hardware_concurrency());
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = LoadRules(*config, load_threads);
  if (!rules.ok()) {
    Log(absl::StrCat("refusing to start: ", rules.status().message()));
    return 2;
  }

  Clock& clock = RealClock::Get();
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge()
      .Name("palisade_build_info")
      .Help("Build information; always 1.")
      .Register(*registry)
      .Add({{"version", kVersion}})
      .Set(1);
  prometheus::BuildGauge()
      .Name("palisade_start_time_seconds")
      .Help("Start time of the process, in unix seconds.")
      .Register(*registry)
      .Add({})
      .Set(absl::ToDoubleSeconds(clock.TimeNow() - absl::UnixEpoch()));

  // Who may call the API (its clients were checked with the config), and the TLS files of the
  // API and /metrics: read before anything opens a port or the database.
  absl::StatusOr<std::unique_ptr<Authorizer>> auth = Authorizer::Create(config->api(), *registry);
  if (!auth.ok()) {
    Log(absl::StrCat("refusing to start: ", auth.status().message()));
    return 2;
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (const auto& tls = config->api().tls(); !tls.cert_file().empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ssl = TlsCredentials(tls);
    if (!ssl.ok()) {
      Log(absl::StrCat("refusing to start: ", ssl.status().message()));
      return 2;
    }
    credentials = *std::move(ssl);
  }
  const bool metrics_on = config->metrics_listen() != "off";
  const bool metrics_tls = !config->metrics_tls().cert_file().empty();
  if (metrics_on && metrics_tls) {
    if (absl::Status s = CheckMetricsTls(config->metrics_tls()); !s.ok()) {
      Log(absl::StrCat("refusing to start: ", s.message()));
      return 2;
    }
  }

  // The Cloudflare secrets' files are owner-only: Edge::Start refuses others, and in a cluster
  // it runs only once this node holds the edge-writer lease. (A file not there yet is left to it.)
  if (config->cloudflare().enabled()) {
    const palisade::v1::CloudflareConfig& cf = config->cloudflare();
    for (const auto& [path, what] :
         {std::pair<std::string, const char*>{cf.token_file(), "cloudflare: token"},
          {cf.api_key_file(), "cloudflare: api key"}}) {
      if (path.empty()) continue;
      absl::Status s = CheckSecretFileMode(path, what);
      if (!s.ok() && s.code() != absl::StatusCode::kNotFound) {
        Log(absl::StrCat("refusing to start: ", s.message()));
        return 2;
      }
    }
  }

  // One daemon per state file, before anything is read or sent: a second one would resume the
  // same outbox and reconcile the edge against a state the first has moved on from.
  absl::StatusOr<StateFileLock> state_lock = StateFileLock::Acquire(config->state_file());
  if (!state_lock.ok()) {
    Log(absl::StrCat("refusing to start: ", state_lock.status().message()));
    return 2;
  }
  // Durable state first: a database that cannot be opened, or fails its integrity check,
  // refuses the start.
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(config->state_file());
  if (!store.ok()) {
    Log(absl::StrCat("refusing to start: ", store.status().message()));
    return 2;
  }
  DecisionTable table(clock, config->engine().max_evidence());
  // The default limits (ended decisions kept a day, offenders capped) but the active
  // decisions' budget, counted in /metrics.
  DecisionTableLimits decision_limits;
  decision_limits.max_active_bytes = config->decisions_memory_budget_bytes();
  const palisade::v1::Ipv6FoldingConfig& fold = config->decisions_ipv6_folding();
  decision_limits.ipv6_fold_addresses = fold.disabled() ? 0 : fold.addresses();
  decision_limits.ipv6_fold_prefix = static_cast<int>(fold.prefix_length());
  table.SetLimits(decision_limits, registry.get());
  std::set<palisade::v1::Actuator> edge_actuators;
  if (config->cloudflare().enabled()) {
    edge_actuators = {palisade::v1::ACTUATOR_ACCESS_RULE, palisade::v1::ACTUATOR_IP_LIST,
                      palisade::v1::ACTUATOR_RATE_LIMIT, palisade::v1::ACTUATOR_TOKEN_REVOCATION};
  }
  // In a cluster the table is a mirror of the writer's until this node writes: no outbox
  // operation is recorded for what it mirrors (the writer's edge has them).
  const bool clustered = config->has_cluster();
  table.SetStore(store->get(), clustered ? std::set<palisade::v1::Actuator>{} : edge_actuators);
  // No listener here reads an extension's evidence (the event stream leaves it out, the
  // dispatcher acts on creations, the bouncer API serves the target and expiry), and the store
  // gets the table's whole decision: an extension copies no evidence line (~180 instructions
  // an ingested line). A cluster's decision log replicates extensions whole: not there.
  table.SetLeanExtensions(!clustered);
  if (absl::Status s = table.Restore(); !s.ok()) {
    Log(absl::StrCat("refusing to start: ", s.message()));
    return 2;
  }
  // CrowdSec bouncers (bouncer_api): attached before anything can change the table (the
  // receivers below serve at once), so its change log misses nothing.
  std::unique_ptr<BouncerApi> bouncer_api;
  // What no decision may reach, at the edge or on a host (the guard's set: the allowlist,
  // Cloudflare's ranges, this host's addresses).
  absl::StatusOr<CidrSet> never_ban = NeverBanSet(*config);
  if (!never_ban.ok()) {
    Log(absl::StrCat("refusing to start: never-ban set: ", never_ban.status().message()));
    return 2;
  }
  if (config->has_bouncer_api()) {
    const palisade::v1::BouncerApiConfig& b = config->bouncer_api();
    if (!IsLoopbackListen(b.listen()) && b.tls().cert_file().empty() && !b.allow_plain_http()) {
      Log(absl::StrCat("refusing to start: bouncer_api.listen ", b.listen(),
                       " is not a loopback address and bouncer_api.tls is not set: the bouncers' "
                       "keys would cross the network in clear; set tls (cert_file, key_file), "
                       "or allow_plain_http on a network you trust"));
      return 2;
    }
    absl::StatusOr<std::unique_ptr<BouncerApi>> created = BouncerApi::Create(
        b, clock, store->get(), *registry, [](const std::string& m) { Log(m); });
    if (created.ok()) (*created)->SetNeverBan(*never_ban);  // before Attach serves anything
    absl::Status s = created.ok() ? (*created)->Attach(table) : created.status();
    if (s.ok()) s = (*created)->Start();
    if (!s.ok()) {
      Log(absl::StrCat("refusing to start: ", s.message()));
      return 2;
    }
    bouncer_api = *std::move(created);
    Log(absl::StrCat("bouncer API (CrowdSec LAPI v1) on port ", bouncer_api->port(),
                     b.tls().cert_file().empty() ? "" : " (TLS)"));
  }
  // Threat feeds: their last applied versions are matched from the first line on.
  FeedManagerOptions feed_options;
  feed_options.feeds.assign(config->feeds().begin(), config->feeds().end());
  feed_options.edge_max_entries = config->feed_edge_max_entries();
  table.SetNeverFold(*never_ban);  // an IPv6 fold never reaches what the guard refuses
  feed_options.never_ban = *std::move(never_ban);
  // In a cluster the writer's versions are published for the other nodes (FeedSync, made once
  // NATS is connected; the writer's feeds start only after that).
  std::atomic<cluster::FeedSync*> feed_sync_ptr{nullptr};
  feed_options.on_version = [&feed_sync_ptr](absl::string_view feed,
                                             const palisade::v1::FeedState& state) {
    if (cluster::FeedSync* sync = feed_sync_ptr.load()) sync->Publish(feed, state);
  };
  FeedManager feeds(std::move(feed_options), clock, *registry, &table, store->get());
  if (absl::Status s = feeds.Restore(); !s.ok()) {
    Log(absl::StrCat("refusing to start: ", s.message()));
    return 2;
  }
  // The event stream (Events.Watch): decision changes from the table, detections from the
  // pipeline, action outcomes from the dispatcher.
  EventHub events({}, clock, *registry);
  table.AddListener([&events](const DecisionUpdate& update) { PublishDecision(events, update); });
  PipelineOptions options;
  options.on_detections = [&events](absl::string_view source, std::vector<Detection>& detections,
                                    const std::vector<DecisionUpdate>& updates) {
    PublishDetections(events, source, detections, updates);
  };
  // A cluster node that does not write has no edge, yet a leaked token's verify needs only the
  // token itself: a client with no credential of palisaded's learns the token's id, so the node
  // sends the writer a detection by id (revoked as an audit-log one is) and the secret never
  // leaves it. (Declared before the vetter, which uses it: destroyed after it.)
  CurlTransport token_transport;
  std::unique_ptr<CloudflareClient> token_client;
  if (clustered && config->cloudflare().enabled()) {
    ClientOptions o;
    o.base_url = config->cloudflare().api_base();
    // An account token is verified on /accounts/{id}/tokens/verify: without the id, a live one
    // would be taken for "not a token".
    o.account_id = config->cloudflare().account_id();
    o.timeout = FromProtoDuration(config->cloudflare().request_timeout());
    token_client = std::make_unique<CloudflareClient>(token_transport, clock, o, Credentials{},
                                                      *registry);
  }
  // Token rules' detections are candidates until a verify says they are live tokens
  // (services/actions/token_vetter.h): random token-shaped strings make no decision. The stage
  // is built before the first batch can arrive (below, before the inputs start).
  // The edge, once started (below). Declared before the token vetter, which verifies through
  // it: the vetter (and its thread) goes first on every way out.
  EdgeSlot edge_slot;
  std::unique_ptr<TokenVetter> token_vetter;
  options.token_candidates = [&token_vetter](absl::string_view source,
                                             std::vector<Detection>& candidates,
                                             std::shared_ptr<const RuleSet> rules) {
    if (token_vetter != nullptr) token_vetter->Submit(source, candidates, std::move(rules));
  };
  options.engine.feeds = &feeds.registry();
  // The engine's caps, the allowlist, the line caps, the zones and the json_formats: as a
  // replay takes them (ApplyToPipeline; the config was validated at load).
  if (absl::Status s = ApplyToPipeline(*config, &options); !s.ok()) {
    Log(absl::StrCat("refusing to start: ", s.message()));
    return 2;
  }
  // In a cluster each match goes to the node owning its key's partition (MatchRouter), which
  // counts it (PartitionCounter below); the router comes with the cluster node, and until then
  // (and for token fingerprints, whose secret stays here) matches are counted here.
  std::atomic<cluster::MatchRouter*> router{nullptr};
  if (config->has_cluster()) {
    options.route_match = [&router](const EngineMatch& m) {
      cluster::MatchRouter* r = router.load();
      return r == nullptr ? absl::FailedPreconditionError("no router yet") : r->Route(m);
    };
  }
  const EngineOptions engine_options = options.engine;
  Pipeline pipeline(*rules, options, clock, table, *registry);
  // The token vetter exists before any input starts (file inputs, syslog, Logpush): a token
  // seen in the first lines is queued, and verified once the edge is up (until then its verify
  // answers "unknown", tried again later); the inputs' threads read it only once it is set.
  {
    // A verified token is decided like any detection, and its detection event published.
    TokenVetter::Sink decide = [&table, &events, &edge_slot, &token_client](
                                   const std::string& source, std::vector<Detection>& verified) {
      if (token_client != nullptr && edge_slot.get() == nullptr) {
        for (Detection& d : verified) {
          if (d.kind != palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT) continue;
          absl::StatusOr<TokenInfo> info = token_client->VerifyOtherToken(
              Secret(d.secret), absl::StartsWith(d.secret, "cfat_"));
          // Else (IP-restricted here, or no answer) the writer says it cannot revoke it.
          if (!info.ok()) continue;
          d.kind = palisade::v1::TARGET_KIND_TOKEN_ID;
          d.key = info->id;
          d.secret.clear();
        }
      }
      table.ApplyAll(verified, [&](const std::vector<DecisionUpdate>& updates) {
        PublishDetections(events, source, verified, updates);
      });
    };
    TokenVetter::VerifyFn verify;
    if (config->cloudflare().enabled()) {
      verify = [&edge_slot, &token_client](const std::string& secret) {
        std::shared_ptr<Edge> edge = edge_slot.get();
        if (edge != nullptr) return VerifyWithCloudflare(edge->client(), secret);
        if (token_client != nullptr) return VerifyWithCloudflare(*token_client, secret);
        return TokenVerdict::kUnknown;  // (the edge not started yet: tried again later)
      };
    } else {
      Log("cloudflare is off: token-shaped strings are counted, not decided (nothing can verify "
          "or revoke them)");
    }
    token_vetter = std::make_unique<TokenVetter>(TokenVetterOptions(), clock, std::move(verify),
                                                 std::move(decide), *registry);
    token_vetter->Start();
  }
  // The windows, and where each file input stood when they were taken.
  palisade::v1::EngineSnapshot snapshot;
  absl::StatusOr<std::string> windows = (*store)->LoadSnapshot("windows");
  if (!windows.ok()) {
    // Not "no snapshot": starting without it would read every file input from its start again
    // and count its lines twice, then save over the windows that could not be read.
    Log(absl::StrCat("refusing to start: cannot read the saved windows: ",
                     windows.status().message()));
    return 2;
  }
  if (!windows->empty()) {
    if (snapshot.ParseFromString(*windows)) {
      // This snapshot records no rule set version: windows of a rule whose key kind or
      // capture changed, and those written before they said (once, at the first restart on
      // this version), are dropped (Engine::Restore).
      const size_t dropped = pipeline.RestoreWindows(snapshot);
      if (dropped > 0) {
        Log(absl::StrCat("state: ", dropped, " saved windows dropped: their rule now counts "
                         "another key, or they were written before they said which; their "
                         "matches count again from now"));
      }
    } else {
      snapshot.Clear();
      Log("state: the saved windows do not parse; starting with none (files are read from "
          "their start)");
    }
  }
  // Where each remote shipper's followed files stood when those windows were taken.
  ShipDedup ship_dedup(ShipDedupOptions(), *registry);
  if (size_t dropped = ship_dedup.Restore(snapshot, (*auth)->client_names()); dropped > 0) {
    Log(absl::StrCat("ship dedup: ", dropped, " shipped positions dropped, no configured API "
                     "client's (renamed or removed, the anonymous one's once api.clients came, "
                     "or saved without a client before 2026-12-07): batches resent for those "
                     "files are taken again, once"));
  }
  FileInputsOptions input_options;
  input_options.checkpoints.assign(snapshot.inputs().begin(), snapshot.inputs().end());
  input_options.max_line_bytes = config->engine().max_line_bytes();
  input_options.max_record_bytes = config->engine().max_record_bytes();
  if (config->inputs().batch_lines() > 0) input_options.batch_lines = config->inputs().batch_lines();
  input_options.threads = config->inputs().threads();
  if (config->inputs().has_poll_interval()) {
    input_options.poll_interval = FromProtoDuration(config->inputs().poll_interval());
  }
  input_options.log = [](const std::string& m) { Log(m); };
  // Prematched on a second thread while the batch before is decided (PERFORMANCE.md, issue 14).
  absl::StatusOr<std::unique_ptr<FileInputs>> inputs = FileInputs::Create(
      config->inputs(), input_options, PipelineLineSink(pipeline), *registry);
  if (!inputs.ok()) {
    Log(absl::StrCat("refusing to start: ", inputs.status().message()));
    return 2;
  }
  std::vector<std::unique_ptr<SyslogReceiver>> syslog_receivers;
  for (const auto& input : config->inputs().syslog()) {
    SyslogReceiverOptions syslog_options;
    syslog_options.log = [](const std::string& m) { Log(m); };
    syslog_options.clock = &clock;
    // A sender's or relayed host's place is held at least as long as the pipeline keeps its
    // stream (longer rule windows too), so renamed hosts cannot churn through the pipeline's
    // bound; the receiver says at start when its bounds can pass the pipeline's.
    syslog_options.host_stream_idle =
        std::max(syslog_options.host_stream_idle, pipeline.stream_idle_bound());
    // ... and as long as a reload's longer windows make the pipeline keep it.
    syslog_options.stream_idle_bound = [&pipeline] { return pipeline.stream_idle_bound(); };
    syslog_options.pipeline_sender_streams = options.max_sender_streams;
    absl::StatusOr<std::unique_ptr<SyslogReceiver>> receiver = SyslogReceiver::Start(
        input, syslog_options,
        [&pipeline](const palisade::v1::LogBatch& batch) {
          return pipeline.ProcessBatch(batch).status();
        },
        *registry);
    if (!receiver.ok()) {
      Log(absl::StrCat("refusing to start: ", receiver.status().message()));
      return 2;
    }
    Log(absl::StrCat("syslog input ", input.name(), ": udp port ", (*receiver)->udp_port(),
                     ", tcp port ", (*receiver)->tcp_port(), ", tls port ",
                     (*receiver)->tls_port(), " (0: off)"));
    syslog_receivers.push_back(*std::move(receiver));
  }
  // The journal: each input opened (and sought past its saved cursor) now, read once started.
  std::vector<std::unique_ptr<JournalInput>> journal_inputs;
  {
    JournalInputOptions journal_options;
    journal_options.checkpoints.assign(snapshot.journal_cursors().begin(),
                                       snapshot.journal_cursors().end());
    journal_options.max_line_bytes = config->engine().max_line_bytes();
    journal_options.batch_lines = input_options.batch_lines;
    journal_options.wait_interval = input_options.poll_interval;
    journal_options.log = [](const std::string& m) { Log(m); };
    journal_options.clock = &clock;
    for (int i = 0; i < config->inputs().journal_size(); ++i) {
      // (Its name is unique among the inputs: checked with the config.)
      const palisade::v1::JournalInput& input = config->inputs().journal(i);
      absl::StatusOr<std::unique_ptr<JournalInput>> journal = JournalInput::Create(
          i, input, journal_options,
          [&pipeline](const palisade::v1::LogBatch& batch) {
            return pipeline.ProcessBatch(batch).status();
          },
          *registry);
      if (!journal.ok()) {
        Log(absl::StrCat("refusing to start: ", journal.status().message()));
        return 2;
      }
      journal_inputs.push_back(*std::move(journal));
    }
  }
  // Cloudflare Logpush HTTP destinations: an upload is answered after the pipeline took it.
  std::vector<std::unique_ptr<LogpushReceiver>> logpush_receivers;
  for (const auto& input : config->inputs().logpush()) {
    LogpushReceiverOptions logpush_options;
    logpush_options.log = [](const std::string& m) { Log(m); };
    logpush_options.clock = &clock;
    // Records cut where the pipeline would cut them (0: the receiver's default, the same 8 MiB).
    logpush_options.max_record_bytes = config->engine().max_record_bytes();
    absl::StatusOr<std::unique_ptr<LogpushReceiver>> receiver = LogpushReceiver::Start(
        input, logpush_options,
        [&pipeline](const palisade::v1::LogBatch& batch) {
          return pipeline.ProcessBatch(batch).status();
        },
        *registry);
    if (!receiver.ok()) {
      Log(absl::StrCat("refusing to start: ", receiver.status().message()));
      return 2;
    }
    Log(absl::StrCat("logpush input ", input.name(), ": port ", (*receiver)->port()));
    logpush_receivers.push_back(*std::move(receiver));
  }
  Log(absl::StrCat("state: ", config->state_file(), ", ", table.active_count(),
                   " active decisions restored"));

  // The edge: Cloudflare client, token check, dispatcher and actuators. In a cluster, only
  // while this node holds the edge-writer lease (the ClusterNode below starts and stops it).
  // (edge_slot is declared above, with the token vetter that reads it.)
  // Starts the edge; in a cluster its dispatcher hears the table through the slot.
  auto start_edge = [&]() -> absl::Status {
    absl::StatusOr<std::unique_ptr<Edge>> started = Edge::Start(
        *config, clock, *registry, table, store->get(), ReadsAuditLogs(**rules),
        clustered ? Edge::AttachListener([&edge_slot](DecisionTable::Listener l) {
          edge_slot.Attach(std::move(l));
        })
                  : nullptr);
    if (!started.ok()) return started.status();
    std::shared_ptr<Edge> edge = *std::move(started);
    edge->dispatcher().SetObserver(
        [&events](const ActionOutcome& outcome) { PublishAction(events, outcome); });
    Log(absl::StrCat("cloudflare: acting on zone ", config->cloudflare().zone_id(),
                     config->cloudflare().dry_run() ? " (dry run)" : "", "; ",
                     edge->dispatcher().pending(), " operations resumed from the outbox"));
    edge_slot.Set(std::move(edge));
    return absl::OkStatus();
  };
  // In a cluster the dispatcher hears the table through the decision log (the cluster node's
  // edge_update, below): the edge acts only on what the log holds.
  if (!clustered && config->cloudflare().enabled()) {
    if (absl::Status s = start_edge(); !s.ok()) {
      Log(absl::StrCat("refusing to start: ", s.message()));
      return 2;
    }
  }
  // Audit records reach the rules that revoke tokens by id only through this poller
  // (LOG_FORMAT_CLOUDFLARE_AUDIT, which an ingest client may not ship): started when the loaded
  // rules read them, on the edge's verified client. A cluster's nodes do not poll (left to the
  // edge writer, not done yet).
  const bool reads_audit_logs = ReadsAuditLogs(**rules);  // a reload may not change it
  std::unique_ptr<AuditPoller> audit_poller;
  if (reads_audit_logs && (clustered || !config->cloudflare().enabled())) {
    // Loud, as the operator who loaded the pack expects token misuse to be caught.
    Log(absl::StrCat(
        "WARNING: the loaded rules read Cloudflare audit logs (LOG_FORMAT_CLOUDFLARE_AUDIT), but ",
        clustered ? "a cluster's nodes do not poll them (not supported yet)"
                  : "cloudflare is not enabled, so nothing polls them",
        ": those rules (rules/cloudflare-audit.textproto) detect nothing"));
  }
  if (!clustered && config->cloudflare().enabled() && reads_audit_logs) {
    AuditPollerOptions o;
    o.interval = FromProtoDuration(config->cloudflare().audit_logs_interval());
    audit_poller = std::make_unique<AuditPoller>(
        edge_slot.get()->client(),
        [&pipeline](const palisade::v1::LogBatch& batch) {
          BatchSender own;
          own.audit_records = true;
          return pipeline.ProcessBatch(batch, own).status();
        },
        store->get(), clock, o, *registry);
    if (absl::Status s = audit_poller->Restore(); !s.ok()) {
      Log(absl::StrCat("refusing to start: audit logs: ", s.message()));
      return 2;
    }
    // Before Start: the poller's thread moves the position.
    Log(absl::StrCat("cloudflare: reading the audit logs every ", absl::FormatDuration(o.interval),
                     " from ", absl::FormatTime(audit_poller->since())));
    audit_poller->Start();
  }


  // SIEM sinks follow the event stream on threads of their own.
  std::vector<std::unique_ptr<SinkRunner>> sinks;
  for (const palisade::v1::SinkConfig& sink : config->sinks()) {
    absl::StatusOr<std::unique_ptr<SinkOutput>> output = SinkRunner::OutputFor(sink);
    if (!output.ok()) {
      Log(absl::StrCat("refusing to start: sink \"", sink.name(), "\": ", output.status().message()));
      return 2;
    }
    sinks.push_back(std::make_unique<SinkRunner>(sink, *std::move(output), events, *registry));
  }

  // After the edge and the sinks: a restored feed's entries go out through the dispatcher.
  // In a cluster only the edge writer pulls and syncs feeds (started with the writer lease);
  // every node follows the versions it publishes.
  if (!clustered) feeds.Start();

  // Ingress caps (api.max_*): records per batch, streams per process, message size.
  ApiLimits::Options limit_options;
  limit_options.max_records_per_batch = config->api().max_records_per_batch();
  limit_options.max_streams = config->api().max_streams();
  limit_options.max_message_bytes = config->api().max_message_bytes();
  ApiLimits limits(limit_options, *registry);
  std::map<std::string, uint64_t> push_caps;
  // Who may push: the operator's pulled source, or entries that go to the edge past the
  // blast-radius guard's budget, are the admin's unless the feed lets ingest clients push.
  std::map<std::string, std::string> admin_only;
  for (const palisade::v1::FeedConfig& feed : config->feeds()) {
    push_caps[feed.name()] = feed.max_bytes();
    if (!feed.url().empty()) {
      admin_only[feed.name()] = "is pulled from its url";
    } else if (feed.to_edge() && !feed.ingest_may_push()) {
      admin_only[feed.name()] =
          "goes to the edge (set ingest_may_push to let ingest clients push it)";
    }
  }
  IngestService ingest(pipeline, limits, &ship_dedup);
  FeedsService feeds_service(feeds, limits, std::move(push_caps), std::move(admin_only));
  EventsService events_service(events, limits);
  DecisionsService decisions(table);
  // A cluster node: the decision log read into the table on every node, the edge started and
  // stopped with the edge-writer lease, manual bans and unbans carried out by the writer.
  std::unique_ptr<cluster::ClusterNode> cluster_node;
  std::unique_ptr<cluster::MatchPublisher> match_publisher;
  std::unique_ptr<cluster::MatchRouter> match_router;
  std::unique_ptr<cluster::PartitionCounter> partition_counter;
  std::unique_ptr<cluster::FeedSync> feed_sync;
  // On every way out, the feeds stop handing versions to feed_sync before it goes.
  absl::Cleanup forget_feed_sync = [&feed_sync_ptr] { feed_sync_ptr.store(nullptr); };
  // On a start refused after the node joined (a port taken), the node stops before what its
  // hooks use is destroyed (its stopping hook snapshots the partition counter's windows).
  absl::Cleanup stop_node_first = [&cluster_node] {
    if (cluster_node) cluster_node->Stop();
  };
  std::atomic<cluster::ClusterNode*> node_ptr{nullptr};  // set once the node started
  if (clustered) {
    cluster::ClusterNodeOptions co = ClusterOptions(config->cluster(), clock);
    // The decision log's position is kept beside the table it was applied to: a restart resumes
    // after it, over the restored table, instead of replaying the log from its oldest state.
    co.store = store->get();
    // Detections other nodes send are decided under the writer's rules (the running ones).
    co.rules = [&pipeline] { return pipeline.rules(); };
    // Recidive: what the writer decides for other nodes counts as its own decisions do.
    co.decided = [&pipeline](const Detection& d, const DecisionUpdate& u) {
      pipeline.FeedDecisions("cluster", {d}, {u});
    };
    // The match stream: this node publishes its matches, and counts its partitions' (their
    // detections go to the writer under their own id, so a repeat after a take-over is one).
    co.on_connected = [&](cluster::NatsClient& nats) -> absl::Status {
      const palisade::v1::ClusterConfig& cc = config->cluster();
      cluster::StreamSpec spec;
      spec.name = "PALISADE_MATCHES";
      spec.subjects = {"palisade.matches.*"};
      spec.replicas = static_cast<int>(cc.replicas());
      // Bounded: a take-over needs only the matches since the partition's last snapshot.
      spec.max_age = FromProtoDuration(cc.matches_max_age());
      spec.max_bytes = static_cast<int64_t>(cc.matches_max_bytes());
      if (absl::Status s = nats.EnsureStream(spec); !s.ok()) return s;
      cluster::MatchPublisherOptions po;
      po.node_id = cc.node_id();
      po.partitions = cc.partitions();
      absl::StatusOr<std::unique_ptr<cluster::MatchPublisher>> publisher =
          cluster::MatchPublisher::Start(nats, po);
      if (!publisher.ok()) return publisher.status();
      match_publisher = *std::move(publisher);
      const std::string version = cluster::RuleSetVersion(**rules);
      match_router = std::make_unique<cluster::MatchRouter>(
          *match_publisher, cluster::MatchRouterOptions{cc.node_id(), version});
      cluster::PartitionCounterOptions pco;
      pco.node_id = cc.node_id();
      pco.partitions = cc.partitions();
      pco.replicas = static_cast<int>(cc.replicas());
      pco.rules = *rules;
      pco.rule_set_version = version;
      pco.engine = engine_options;
      pco.clock = &clock;
      absl::StatusOr<std::unique_ptr<cluster::PartitionCounter>> counter =
          cluster::PartitionCounter::Open(
              nats, pco,
              [&node_ptr, &config](const cluster::ClusterDetection& d) -> absl::Status {
                cluster::ClusterNode* n = node_ptr.load();
                if (n == nullptr) return absl::UnavailableError("cluster node starting");
                // Within a tick (the node's thread polls): a refusal is offered again.
                return n->SendDetection(d.id, d.detection,
                                        FromProtoDuration(config->cluster().lease_term()) / 3);
              });
      if (!counter.ok()) return counter.status();
      partition_counter = *std::move(counter);
      router.store(match_router.get());
      // Threat feeds: the published versions read now (a node started later matches the
      // cluster's feeds from its first line) and then every second.
      if (config->feeds_size() > 0) {
        cluster::FeedSyncOptions fo;
        fo.replicas = static_cast<int>(cc.replicas());
        fo.node_id = cc.node_id();
        for (const palisade::v1::FeedConfig& f : config->feeds()) fo.feeds.push_back(f.name());
        fo.apply = [&feeds](absl::string_view feed, const palisade::v1::FeedState& state) {
          return feeds.Follow(feed, state);
        };
        fo.log = [](const std::string& m) { Log(m); };
        fo.metrics = registry.get();
        absl::StatusOr<std::unique_ptr<cluster::FeedSync>> sync =
            cluster::FeedSync::Open(nats, std::move(fo));
        if (!sync.ok()) return sync.status();
        feed_sync = *std::move(sync);
        feed_sync_ptr.store(feed_sync.get());
      }
      return absl::OkStatus();
    };
    // The rule set gate: a node whose rules differ from the writer's (the cluster's) holds no
    // partition lease, so the others count its partitions (ClusterNode::Tick).
    co.may_own_partitions = [&]() -> absl::Status {
      return partition_counter != nullptr ? partition_counter->CheckRuleSet() : absl::OkStatus();
    };
    co.partitions_changed = [&](const std::set<uint32_t>& gained, const std::set<uint32_t>& lost) {
      cluster::Ownership::Change change;
      change.gained = gained;
      change.lost = lost;
      if (absl::Status s = partition_counter->Apply(change); !s.ok()) {
        Log(absl::StrCat("cluster: partitions not opened: ", s.message()));
      }
    };
    // Before a clean stop hands the partitions over: their windows saved, nothing replayed.
    co.stopping = [&] {
      if (absl::Status s = partition_counter->SnapshotAll(); !s.ok()) {
        Log(absl::StrCat("cluster: windows not saved before the hand-over: ", s.message()));
      }
    };
    // A failing Poll (the writer away) fails every 20 ms: logged first, then once a minute.
    auto poll_log = std::make_shared<cluster::LogThrottle>(clock);
    // The publisher's queue, where matches wait while NATS is away (bounded in bytes; what it
    // could not keep is dropped and counted), read on each poll.
    prometheus::Gauge& queued_gauge = prometheus::BuildGauge()
                                          .Name("palisade_cluster_matches_queued_bytes")
                                          .Help("Matches this node made and has not yet had "
                                                "acknowledged by NATS, in bytes (bounded).")
                                          .Register(*registry)
                                          .Add({});
    auto& published_family = prometheus::BuildCounter()
                                 .Name("palisade_cluster_matches_total")
                                 .Help("Matches this node routed to their partitions, by "
                                       "result (published: acknowledged by the stream; "
                                       "dropped: the queue was full).")
                                 .Register(*registry);
    prometheus::Counter& published_counter = published_family.Add({{"result", "published"}});
    prometheus::Counter& dropped_counter = published_family.Add({{"result", "dropped"}});
    auto seen = std::make_shared<std::pair<uint64_t, uint64_t>>(0, 0);  // published, dropped
    // What this node's partitions read: a refused match is not read again (another rule set
    // version, e.g. a node not reloaded yet; or unreadable, of another partition, a bad key).
    auto& taken_family = prometheus::BuildCounter()
                             .Name("palisade_cluster_matches_taken_total")
                             .Help("Matches this node's partitions read, by result (counted, "
                                   "a take-over's replay included; refused_version: of another "
                                   "rule set; refused_invalid: unreadable, of an unknown rule "
                                   "or another partition, a bad key). A refused match is not "
                                   "counted later.")
                             .Register(*registry);
    prometheus::Counter& counted_counter = taken_family.Add({{"result", "counted"}});
    prometheus::Counter& refused_version_counter =
        taken_family.Add({{"result", "refused_version"}});
    prometheus::Counter& refused_invalid_counter =
        taken_family.Add({{"result", "refused_invalid"}});
    auto taken = std::make_shared<cluster::PartitionCounter::Stats>();
    co.poll = [&, poll_log, seen, taken] {
      if (match_publisher != nullptr) {
        queued_gauge.Set(static_cast<double>(match_publisher->queued_bytes()));
        const uint64_t published = match_publisher->published();
        const uint64_t dropped = match_publisher->dropped();
        published_counter.Increment(static_cast<double>(published - seen->first));
        dropped_counter.Increment(static_cast<double>(dropped - seen->second));
        *seen = {published, dropped};
      }
      if (absl::StatusOr<size_t> polled = partition_counter->Poll(); !polled.ok()) {
        std::string line = poll_log->Note(
            absl::StrCat("cluster: counting partitions: ", polled.status().message()));
        if (!line.empty()) Log(line);
      }
      const cluster::PartitionCounter::Stats now = partition_counter->stats();
      counted_counter.Increment(static_cast<double>(now.counted - taken->counted));
      refused_version_counter.Increment(
          static_cast<double>(now.refused_version - taken->refused_version));
      refused_invalid_counter.Increment(
          static_cast<double>(now.refused_invalid - taken->refused_invalid));
      *taken = now;
    };
    co.writer_started = [&] {
      // The cluster's rules are the writer's: a node with others owns no partition.
      if (absl::Status s = partition_counter->PublishRuleSet(); !s.ok()) {
        Log(absl::StrCat("cluster: rule set version not published: ", s.message()));
      }
      table.SetStore(store->get(), edge_actuators);
      if (config->cloudflare().enabled()) {
        if (absl::Status s = start_edge(); !s.ok()) {
          Log(absl::StrCat("cluster: this node writes but its edge did not start: ", s.message()));
        }
      }
      // After the edge: the feeds' versions (followed or restored) synced into decisions, and
      // the pulls and expiries run here, published for the other nodes.
      feeds.Start();
    };
    co.edge_update = [&edge_slot](const DecisionUpdate& u) { edge_slot.OnDecision(u); };
    // Feeds pushed on any node: carried out by the writer (FeedManager::PushHere).
    co.handle_command = [&feeds](absl::string_view kind,
                                 absl::string_view body) -> absl::StatusOr<std::string> {
      if (kind != kFeedPushKind) {
        return absl::InvalidArgumentError(absl::StrCat("unknown command kind \"", kind, "\""));
      }
      palisade::v1::FeedChunk push;
      if (!push.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
        return absl::InvalidArgumentError("feeds.push: the push does not parse");
      }
      absl::StatusOr<palisade::v1::PushFeedResponse> r =
          feeds.PushHere(push.feed(), push.mode(), push.format(), push.force(), push.data());
      if (!r.ok()) return r.status();
      return r->SerializeAsString();
    };
    const absl::Duration command_deadline = co.command_deadline;
    co.writer_stopped = [&] {
      feeds.Stop();  // no pulls or expiries off the writer
      edge_slot.Take().reset();  // the dispatcher, outbox and reconciler stop
      table.SetStore(store->get(), {});
    };
    absl::StatusOr<std::unique_ptr<cluster::ClusterNode>> node =
        cluster::ClusterNode::Start(std::move(co), table, *registry);
    if (!node.ok()) {
      Log(absl::StrCat("refusing to start: cluster: ", node.status().message()));
      return 2;
    }
    cluster_node = *std::move(node);
    cluster::ClusterNode* n = cluster_node.get();
    node_ptr.store(n);
    decisions.SetWriter(
        [n](const palisade::v1::AddDecisionRequest& req) { return n->AddManual(req); },
        [n](const std::string& id) { return n->Withdraw(id); });
    feeds.SetPushForward([n, &feeds, command_deadline](const palisade::v1::FeedChunk& push)
                             -> absl::StatusOr<palisade::v1::PushFeedResponse> {
      std::string body = push.SerializeAsString();
      if (body.size() > kMaxFeedPushCommandBytes) {
        // Over what one NATS message carries: the writer applies it where it is pushed.
        if (n->writer()) {
          return feeds.PushHere(push.feed(), push.mode(), push.format(), push.force(),
                                push.data());
        }
        return absl::ResourceExhaustedError(absl::StrCat(
            "feed \"", push.feed(), "\": a push of ", push.data().size(), " bytes is over the ",
            kMaxFeedPushCommandBytes, " bytes a node forwards to the cluster's edge writer (NATS' "
            "1 MiB payload); push it to the writer (palisadectl cluster status names it) or in "
            "smaller ADD pushes"));
      }
      absl::StatusOr<std::string> reply = n->commands().Call(kFeedPushKind, body, command_deadline);
      if (!reply.ok()) return reply.status();
      palisade::v1::PushFeedResponse out;
      if (!out.ParseFromString(*reply)) {
        return absl::InternalError("feeds.push: the writer's answer does not parse");
      }
      return out;
    });
    // The servers as they may be shown: a user and password (or a token) in a URL are not.
    std::vector<std::string> servers;
    for (const std::string& url : config->cluster().nats().servers()) {
      servers.push_back(cluster::RedactedServerUrl(url));
    }
    Log(absl::StrCat("cluster: node ", config->cluster().node_id(), " on ",
                     absl::StrJoin(servers, ","), ", ",
                     config->cluster().partitions(), " partitions, ",
                     n->writer() ? "the edge writer" : "not the edge writer"));
  }
  // In a cluster the dispatcher comes and goes with the writer lease: Admin does not hold it.
  std::shared_ptr<Edge> fixed_edge = clustered ? nullptr : edge_slot.get();
  // A reload (SIGHUP, Admin.ReloadRules; one at a time, Admin's lock) reads the config again and
  // applies its rule_files, cidr_sets and allowlist, or nothing: a config that changed any
  // other field, or that does not load, is refused whole and the running rules stay. In a
  // cluster the allowlist needs a restart too (each partition's engine holds a copy), and on
  // the node's thread the router's version and the partitions' rules follow, and the writer
  // publishes the new version (nodes whose reload failed keep their rules and are gated off the
  // partitions).
  auto running = std::make_shared<palisade::v1::Config>(*config);
  cluster::ClusterNode* reload_node = cluster_node.get();
  auto reload_rules = [running, load_threads, reload_node, reads_audit_logs, &match_router,
                       &partition_counter, &feeds, &table, &edge_slot,
                       &bouncer_api]() -> absl::StatusOr<AdminService::RuleReload> {
    absl::StatusOr<palisade::v1::Config> next = ReadConfig();
    if (!next.ok()) return next.status();
    std::vector<std::string> restart = FieldsNeedingRestart(*running, *next);
    const bool allowlist_changed =
        !std::equal(running->allowlist().begin(), running->allowlist().end(),
                    next->allowlist().begin(), next->allowlist().end());
    if (reload_node != nullptr && allowlist_changed) restart.push_back("allowlist");
    if (!restart.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the config changed ", absl::StrJoin(restart, ", "),
          ", which only a restart applies (a reload applies rule_files, cidr_sets and "
          "allowlist); nothing of it was applied"));
    }
    absl::StatusOr<CidrSet> allowlist = CidrSet::Parse(
        std::vector<std::string>(next->allowlist().begin(), next->allowlist().end()));
    if (!allowlist.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("allowlist: ", allowlist.status().message()));
    }
    absl::StatusOr<std::shared_ptr<const RuleSet>> r = LoadRules(*next, load_threads);
    if (!r.ok()) return r.status();
    // The audit-log poller and the token's audit_logs permission are settled at start.
    if (ReadsAuditLogs(**r) != reads_audit_logs) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the new rules ", reads_audit_logs ? "no longer read" : "read",
          " Cloudflare audit logs (LOG_FORMAT_CLOUDFLARE_AUDIT), which only a restart applies "
          "(it starts or stops the audit-log poller); nothing of it was applied"));
    }
    // The feeds, IPv6 folding and the edge's guard judge by the new allowlist too: a feed
    // still listing an address now allowlisted does not decide it again (the table withdraws
    // its decision: SetRules), no range holding it is folded, no IP list item covering it goes
    // out; and an address taken off it is sent again (its refused bans too).
    absl::StatusOr<CidrSet> never_ban = allowlist_changed ? NeverBanSet(*next) : CidrSet();
    if (!never_ban.ok()) return never_ban.status();
    if (allowlist_changed) {
      table.SetNeverFold(*never_ban);
      if (std::shared_ptr<Edge> edge = edge_slot.get()) edge->SetNeverBan(*never_ban);
      if (bouncer_api) bouncer_api->SetNeverBan(*never_ban);
      feeds.SetNeverBan(*std::move(never_ban));
    }
    *running = *std::move(next);
    AdminService::RuleReload reload(*r, allowlist_changed ? std::optional<CidrSet>(*allowlist)
                                                          : std::nullopt);
    if (reload_node == nullptr) return reload;
    std::shared_ptr<const RuleSet> rules = *r;
    reload_node->RunOnThread([rules, reload_node, &match_router, &partition_counter] {
      absl::StatusOr<std::string> v = cluster::ApplyRuleReload(
          rules, *match_router, *partition_counter, reload_node->writer());
      Log(v.ok() ? absl::StrCat("cluster: rule set ", *v, reload_node->writer()
                                                            ? " (published as the cluster's)"
                                                            : "")
                 : std::string(v.status().message()));
    });
    return reload;
  };
  AdminService admin(
      pipeline, table, clock, reload_rules, *registry, kVersion,
      fixed_edge ? &fixed_edge->dispatcher() : nullptr);
  admin.SetBouncerApi(bouncer_api.get());
  if (cluster_node) {
    cluster::ClusterNode* n = cluster_node.get();
    admin.SetClusterStatus([n](palisade::v1::StatusResponse* status) {
      const cluster::ClusterNodeStatus s = n->Status();
      palisade::v1::ClusterStatus* out = status->mutable_cluster();
      out->set_node_id(s.node_id);
      out->set_nats_connected(s.nats_connected);
      out->set_writer(s.writer);
      out->set_writer_node(s.writer_node);
      for (const std::string& node : s.live_nodes) out->add_live_nodes(node);
      out->set_partitions(s.partitions);
      for (const auto& [p, node] : s.partition_owners) {
        palisade::v1::ClusterPartition* owner = out->add_partition_owners();
        owner->set_partition(p);
        owner->set_node(node);
      }
      for (uint32_t p : s.owned) out->add_owned(p);
      out->set_log_last_sequence(s.stream_last_sequence);
      out->set_log_applied(s.applied_through);
      out->set_replica_lag(s.replica_lag);
      out->set_detections_forwarded(n->detections_forwarded());
      out->set_detections_dropped(n->detections_dropped());
      out->set_last_error(s.last_error);
    });
  }
  if (config->cloudflare().enabled()) {
    // The credentials check as of its last run (at start, then every check_interval), and
    // palisadectl cloudflare rotate (never in a cluster: the config refuses rotation there).
    admin.SetCredentialStatus([&edge_slot](palisade::v1::StatusResponse* status) {
      if (std::shared_ptr<Edge> e = edge_slot.get()) e->FillCredentialStatus(status);
    });
    admin.SetTokenRoller([&edge_slot]() -> absl::StatusOr<palisade::v1::RotateTokenResponse> {
      std::shared_ptr<Edge> e = edge_slot.get();
      if (e == nullptr) {
        return absl::FailedPreconditionError(
            "cluster: this node is not the edge writer; rotate the token on the writer "
            "(palisadectl cluster status names it)");
      }
      absl::StatusOr<RollReport> rolled = e->RotateToken();
      if (!rolled.ok()) return rolled.status();
      palisade::v1::RotateTokenResponse out;
      out.set_token_id(rolled->token_id);
      *out.mutable_rolled_at() = ToProtoTime(rolled->rolled_at);
      if (rolled->expires_on) *out.mutable_expires() = ToProtoTime(*rolled->expires_on);
      out.set_expires_read(rolled->expiry_read);
      *out.mutable_next_roll() = ToProtoTime(rolled->next_roll);
      return out;
    });
  }

  std::unique_ptr<prometheus::Exposer> exposer;
  int metrics_port = 0;
  std::unique_ptr<MetricsHttpsServer> metrics_https;
  // A listener others can reach says who may read it (CheckListeners, with the config).
  const bool metrics_exposed = metrics_on && !IsLoopbackListen(config->metrics_listen());
  if (metrics_exposed && !metrics_tls) {
    Log("warning: /metrics takes bearer tokens over plain HTTP on a non-loopback address: "
        "anyone on the path can read them; set metrics_tls as well");
  }
  if (metrics_on && (metrics_tls || !config->metrics_auth().token_sha256().empty())) {
    absl::StatusOr<std::unique_ptr<MetricsHttpsServer>> https = MetricsHttpsServer::Start(
        config->metrics_listen(), config->metrics_tls(), config->metrics_auth(), registry);
    if (!https.ok()) {
      Log(absl::StrCat("refusing to start: ", https.status().message()));
      return 2;
    }
    metrics_https = *std::move(https);
    metrics_port = metrics_https->port();
  } else if (metrics_on) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(config->metrics_listen());
    } catch (const std::exception& e) {
      Log(absl::StrCat("refusing to start: cannot serve metrics on ", config->metrics_listen(),
                       ": ", e.what()));
      return 2;
    }
    exposer->RegisterCollectable(registry);
    std::vector<int> ports = exposer->GetListeningPorts();
    metrics_port = ports.empty() ? 0 : ports[0];
  }

  // Plain gRPC beyond loopback is allowed (a service mesh may carry the TLS), but its bearer
  // tokens travel in clear on any other path: said once, as for /metrics.
  if (!IsLoopbackListen(config->grpc_listen()) && config->api().tls().cert_file().empty()) {
    Log("warning: gRPC takes bearer tokens over plain text on a non-loopback address: anyone "
        "on the path can read them; set api.tls unless a mesh encrypts the path");
  }
  // Who may call the API (made above; without clients, CheckListeners allowed only loopback).
  for (Guarded* service : std::initializer_list<Guarded*>{&ingest, &decisions, &admin,
                                                          &feeds_service, &events_service}) {
    service->set_authorizer(auth->get());
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Server reflection is served only without api.clients (loopback only, where every call is
  // allowed anyway): with clients, a caller without a token must make palisaded parse nothing.
  if ((*auth)->enabled()) builder.SetOption(std::make_unique<WithoutReflection>());
  int grpc_port = 0;
  builder.AddListeningPort(config->grpc_listen(), credentials, &grpc_port);
  // Bounded resources: message size, concurrent streams per connection (api.max_*; streams per
  // process are counted by ApiLimits), handler threads.
  builder.SetMaxReceiveMessageSize(static_cast<int>(config->api().max_message_bytes()));
  builder.SetMaxSendMessageSize(16 << 20);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             static_cast<int>(config->api().max_streams_per_connection()));
  grpc::ResourceQuota quota("palisaded");
  quota.SetMaxThreads(64);
  builder.SetResourceQuota(quota);
  builder.RegisterService(&ingest);
  builder.RegisterService(&decisions);
  builder.RegisterService(&admin);
  builder.RegisterService(&feeds_service);
  builder.RegisterService(&events_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    Log(absl::StrCat("refusing to start: cannot listen on ", config->grpc_listen()));
    return 2;
  }
  Log(absl::StrCat("version ", kVersion, ", ", (*rules)->rules().size(), " rules loaded"));
  Log(absl::StrCat("gRPC on port ", grpc_port, ", metrics on port ", metrics_port));
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    const std::string path = absl::GetFlag(FLAGS_port_file);
    {
      std::ofstream out(path + ".tmp");
      out << "grpc=" << grpc_port << "\nmetrics=" << metrics_port << "\n";
      if (bouncer_api) out << "bouncer=" << bouncer_api->port() << "\n";
    }
    std::rename((path + ".tmp").c_str(), path.c_str());
  }

  // Expiry sweep.
  absl::Notification stopping;
  const absl::Duration sweep = FromProtoDuration(config->sweep_interval());
  // The windows and the file inputs' positions, taken while no file batch is in flight: a
  // restart reads every file on from exactly the lines these windows hold.
  auto save_windows = [&] {
    // No journal batch in flight either: the journal cursors match the windows too.
    JournalsHeld journals(journal_inputs);
    (*inputs)->Consistent([&](const std::vector<palisade::v1::FileCheckpoint>& positions) {
      // And no follow-mode batch in flight either: the shippers' positions match too.
      ship_dedup.Consistent([&](const std::vector<palisade::v1::ShippedPosition>& shipped) {
        palisade::v1::EngineSnapshot snap = pipeline.SnapshotWindows();
        for (const auto& p : positions) *snap.add_inputs() = p;
        for (const auto& c : journals.cursors()) *snap.add_journal_cursors() = c;
        for (const auto& p : shipped) *snap.add_shipped() = p;
        absl::Status s = (*store)->SaveSnapshot("windows", snap.SerializeAsString());
        if (!s.ok()) Log(std::string(s.message()));
      });
    });
  };
  const absl::Duration snapshot_interval = config->has_snapshot_interval()
                                               ? FromProtoDuration(config->snapshot_interval())
                                               : absl::Seconds(30);
  (*inputs)->Start();
  for (auto& j : journal_inputs) j->Start();
  if (!journal_inputs.empty()) {
    Log(absl::StrCat(journal_inputs.size(), " journal input(s) read, ",
                     snapshot.journal_cursors_size(), " cursor(s) restored"));
  }
  if (config->inputs().files_size() > 0) {
    Log(absl::StrCat(config->inputs().files_size(), " file input(s) followed, ",
                     input_options.checkpoints.size(), " position(s) restored"));
  }
  // The state file's retention: every hour, ended decisions and offences older than
  // state_retention go, 10,000 rows of each a transaction (a short write lock), at most ten a run.
  auto& pruned_family = prometheus::BuildCounter()
                            .Name("palisade_store_pruned_rows_total")
                            .Help("Rows deleted from the state file past state_retention, by what "
                                  "(ended decisions, offences).")
                            .Register(*registry);
  prometheus::Counter& pruned_decisions = pruned_family.Add({{"what", "decision"}});
  prometheus::Counter& pruned_offences = pruned_family.Add({{"what", "offence"}});
  const absl::Duration retention = FromProtoDuration(config->state_retention());
  auto prune_state = [&] {
    constexpr int64_t kRows = 10'000;
    for (int run = 0; run < 10; ++run) {
      absl::StatusOr<Store::Pruned> pruned = (*store)->Prune(clock.TimeNow() - retention, kRows);
      if (!pruned.ok()) {
        Log(absl::StrCat("state file retention: ", pruned.status().message()));
        return;
      }
      pruned_decisions.Increment(static_cast<double>(pruned->decisions));
      pruned_offences.Increment(static_cast<double>(pruned->offences));
      if (pruned->decisions < kRows && pruned->offences < kRows) return;
    }
  };
  std::thread sweeper([&] {
    absl::Time last_snapshot = clock.TimeNow();
    absl::Time last_prune = absl::InfinitePast();
    while (!stopping.WaitForNotificationWithTimeout(sweep)) {
      for (const auto& d : table.ExpireDue()) {
        Log(absl::StrCat("decision ", d.id(), " on ", d.target().value(), " expired"));
      }
      pipeline.ExpireWindows();
      if (clock.TimeNow() - last_prune >= absl::Hours(1)) {
        prune_state();
        last_prune = clock.TimeNow();
      }
      if (clock.TimeNow() - last_snapshot > snapshot_interval) {
        save_windows();
        last_snapshot = clock.TimeNow();
      }
    }
  });

  // Signals: SIGINT/SIGTERM stop, SIGHUP reloads. They are blocked in every thread and taken
  // here with sigwait, so no handler runs in an arbitrary thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      absl::StatusOr<std::shared_ptr<const RuleSet>> reloaded = admin.Reload();
      Log(reloaded.ok() ? absl::StrCat("rules reloaded: ", (*reloaded)->rules().size(), " rules")
                        : std::string(reloaded.status().message()));
      continue;
    }
    Log(absl::StrCat("signal ", sig, ": shutting down"));
    break;
  }
  stopping.Notify();
  const absl::Time t0 = absl::Now();
  (*inputs)->Stop();
  for (auto& j : journal_inputs) j->Stop();
  for (auto& r : syslog_receivers) r->Stop();
  for (auto& r : logpush_receivers) r->Stop();
  if (audit_poller) audit_poller->Stop();  // before the edge whose client it reads with
  if (bouncer_api) bouncer_api->Stop();
  server->Shutdown(std::chrono::system_clock::now() +
                   absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_shutdown_grace)));
  sweeper.join();
  feeds.Stop();
  sinks.clear();  // after the last events were published
  save_windows();
  token_vetter.reset();  // before the client it verifies with
  // A cluster node stops writing (its edge with it) and hands its leases over at once.
  if (cluster_node) {
    router.store(nullptr);
    cluster_node->Stop();  // its thread (the counter's polls) ends first; leases released
    feed_sync_ptr.store(nullptr);
    feed_sync.reset();
  }
  edge_slot.Take().reset();
  exposer.reset();
  metrics_https.reset();
  Log(absl::StrCat("stopped in ",
                   absl::FormatDuration(absl::Trunc(absl::Now() - t0, absl::Milliseconds(1)))));
  return 0;
}

}  // namespace
}  // namespace palisade

int main(int argc, char** argv) {
  // tcmalloc's heap in 2 MiB-aligned regions (services/common/huge_pages.h), which the kernel
  // backs with huge pages where its policy says so, without the stalls of asking for them. A
  // build without tcmalloc (the sanitizers') has none, and needs none.
  palisade::BackHeapWithRegions().IgnoreError();
  // Abseil's deadlock detector (on in Debian's build of Abseil) costs several hundred
  // instructions per lock and unlock, on every line's path (the clock, the decision table). It
  // is a debugging aid: the tests keep it on, the binaries turn it off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Block the signals before any thread starts, so they all inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  absl::SetProgramUsageMessage("palisaded --config=FILE  (or no flag: embedded defaults)");
  absl::ParseCommandLine(argc, argv);
  return palisade::Run();
}
