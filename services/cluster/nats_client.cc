#include "services/cluster/nats_client.h"

#include <nats/nats.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/common/fingerprint.h"

namespace palisade::cluster {

absl::Status NatsError(int status, absl::string_view what) {
  const auto s = static_cast<natsStatus>(status);
  natsStatus last = NATS_OK;
  const char* detail = nats_GetLastError(&last);
  std::string text = absl::StrCat(what, ": ", natsStatus_GetText(s));
  // libnats' last error adds the server's reason ("wrong last sequence: 7", "stream not found").
  if (detail != nullptr && *detail != '\0' && last == s) absl::StrAppend(&text, " (", detail, ")");
  switch (s) {
    case NATS_NO_SERVER:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_TIMEOUT:
    case NATS_NO_RESPONDERS:
    case NATS_STALE_CONNECTION:
      return absl::UnavailableError(text);
    case NATS_NOT_FOUND:
      return absl::NotFoundError(text);
    case NATS_INVALID_ARG:
      return absl::InvalidArgumentError(text);
    default:
      return absl::InternalError(text);
  }
}

std::string RedactedServerUrl(absl::string_view url) {
  const size_t scheme = url.find("://");
  const size_t host = scheme == absl::string_view::npos ? 0 : scheme + 3;
  // A NATS server URL is scheme://[credentials@]host:port: whatever is before its last '@' is
  // credentials, a password holding '/', '?' or '#' unencoded too.
  const size_t at = url.rfind('@');
  if (at == absl::string_view::npos || at < host) return std::string(url);
  return absl::StrCat(url.substr(0, host), "***", url.substr(at));
}

absl::StatusOr<std::unique_ptr<NatsClient>> NatsClient::Connect(const NatsOptions& options) {
  if (options.servers.empty()) return absl::InvalidArgumentError("nats: no servers configured");
  // A server's URL may carry a user and password or a token: never in an error.
  std::vector<std::string> shown;
  for (const std::string& u : options.servers) shown.push_back(RedactedServerUrl(u));
  std::string where = absl::StrCat("nats: connecting to ", absl::StrJoin(shown, ","));
  // libnats reads the credentials file when it connects: name it (never its content), a token
  // typed where its path goes only by its fingerprint.
  if (!options.credentials_file.empty()) {
    std::string shown;
    if (!RedactTokenShapes(options.credentials_file, &shown)) shown = options.credentials_file;
    absl::StrAppend(&where, " with credentials_file \"", shown, "\"");
  }
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s != NATS_OK) return NatsError(s, where);
  std::vector<const char*> urls;
  for (const std::string& u : options.servers) urls.push_back(u.c_str());
  s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, absl::ToInt64Milliseconds(options.timeout));
  if (s == NATS_OK && !options.name.empty()) s = natsOptions_SetName(opts, options.name.c_str());
  // After a first connection, reconnect for ever: a node outlives NATS outages (issue 17).
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK && !options.ca_file.empty()) {
    s = natsOptions_SetSecure(opts, true);
    if (s == NATS_OK) s = natsOptions_LoadCATrustedCertificates(opts, options.ca_file.c_str());
    if (s != NATS_OK) {
      natsOptions_Destroy(opts);
      return NatsError(s, absl::StrCat(where, ": cannot load ca_file \"", options.ca_file, "\""));
    }
  }
  if (s == NATS_OK && !options.credentials_file.empty()) {
    s = natsOptions_SetUserCredentialsFromFiles(opts, options.credentials_file.c_str(), nullptr);
    if (s != NATS_OK) {
      natsOptions_Destroy(opts);
      return NatsError(s, where);
    }
  }
  auto client = std::unique_ptr<NatsClient>(new NatsClient());
  client->timeout_ = options.timeout;
  if (s == NATS_OK) s = natsConnection_Connect(&client->nc_, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) return NatsError(s, where);
  jsOptions js_opts;
  jsOptions_Init(&js_opts);
  js_opts.Wait = absl::ToInt64Milliseconds(options.timeout);
  s = natsConnection_JetStream(&client->js_, client->nc_, &js_opts);
  if (s != NATS_OK) return NatsError(s, absl::StrCat(where, ": JetStream"));
  return client;
}

NatsClient::~NatsClient() {
  if (js_ != nullptr) jsCtx_Destroy(js_);
  if (nc_ != nullptr) natsConnection_Destroy(nc_);
}

namespace {

std::vector<std::string> Subjects(const jsStreamConfig& c) {
  std::vector<std::string> out;
  for (int i = 0; i < c.SubjectsLen; ++i) out.emplace_back(c.Subjects[i]);
  std::sort(out.begin(), out.end());
  return out;
}

std::string List(const std::vector<std::string>& v) {
  return absl::StrCat("[", absl::StrJoin(v, ","), "]");
}

}  // namespace

absl::Status NatsClient::EnsureStream(const StreamSpec& spec) {
  std::vector<const char*> subjects;
  for (const std::string& sub : spec.subjects) subjects.push_back(sub.c_str());
  jsStreamConfig want;
  jsStreamConfig_Init(&want);
  want.Name = spec.name.c_str();
  want.Subjects = subjects.data();
  want.SubjectsLen = static_cast<int>(subjects.size());
  want.Replicas = spec.replicas;
  want.MaxAge = absl::ToInt64Nanoseconds(spec.max_age);
  want.MaxBytes = spec.max_bytes > 0 ? spec.max_bytes : -1;  // -1: no limit (NATS' own)
  want.Discard = js_DiscardOld;
  want.Duplicates = absl::ToInt64Nanoseconds(spec.duplicate_window);
  want.Storage = spec.memory_storage ? js_MemoryStorage : js_FileStorage;

  jsStreamInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&info, js_, spec.name.c_str(), nullptr, &err);
  if (s == NATS_NOT_FOUND || err == JSStreamNotFoundErr) {
    s = js_AddStream(&info, js_, &want, nullptr, &err);
    if (s != NATS_OK) return NatsError(s, absl::StrCat("nats: creating stream ", spec.name));
    jsStreamInfo_Destroy(info);
    return absl::OkStatus();
  }
  if (s != NATS_OK) return NatsError(s, absl::StrCat("nats: reading stream ", spec.name));
  const jsStreamConfig& have = *info->Config;
  std::vector<std::string> diffs;
  std::vector<std::string> want_subjects(spec.subjects);
  std::sort(want_subjects.begin(), want_subjects.end());
  if (Subjects(have) != want_subjects) {
    diffs.push_back(
        absl::StrCat("subjects ", List(Subjects(have)), " (want ", List(want_subjects), ")"));
  }
  if (have.Replicas != want.Replicas) {
    diffs.push_back(absl::StrCat("replicas ", have.Replicas, " (want ", want.Replicas, ")"));
  }
  if (have.MaxAge != want.MaxAge) {
    diffs.push_back(absl::StrCat("max_age ", absl::FormatDuration(absl::Nanoseconds(have.MaxAge)),
                                 " (want ", absl::FormatDuration(spec.max_age), ")"));
  }
  if (have.MaxBytes != want.MaxBytes) {
    auto bytes = [](int64_t b) { return b <= 0 ? std::string("none") : absl::StrCat(b); };
    diffs.push_back(
        absl::StrCat("max_bytes ", bytes(have.MaxBytes), " (want ", bytes(want.MaxBytes), ")"));
  }
  if (have.Duplicates != want.Duplicates) {
    diffs.push_back(absl::StrCat("duplicate_window ",
                                 absl::FormatDuration(absl::Nanoseconds(have.Duplicates)),
                                 " (want ", absl::FormatDuration(spec.duplicate_window), ")"));
  }
  if (have.Storage != want.Storage) {
    diffs.push_back(absl::StrCat("storage ", have.Storage == js_MemoryStorage ? "memory" : "file",
                                 " (want ", spec.memory_storage ? "memory" : "file", ")"));
  }
  jsStreamInfo_Destroy(info);
  if (diffs.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "nats: stream ", spec.name, " exists with other settings: ", absl::StrJoin(diffs, ", "),
      "; Palisade does not change a stream it did not make: delete it or fix the config"));
}

absl::StatusOr<NatsClient::Ack> NatsClient::Publish(const std::string& subject,
                                                    absl::string_view data,
                                                    const std::string& msg_id) {
  jsPubOptions opts;
  jsPubOptions_Init(&opts);
  opts.MsgId = msg_id.c_str();
  opts.MaxWait = absl::ToInt64Milliseconds(timeout_);
  jsPubAck* ack = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s = js_Publish(&ack, js_, subject.c_str(), data.data(),
                                  static_cast<int>(data.size()), &opts, &err);
  if (s != NATS_OK) return NatsError(s, absl::StrCat("nats: publishing to ", subject));
  Ack out{ack->Sequence, ack->Duplicate};
  jsPubAck_Destroy(ack);
  return out;
}

absl::StatusOr<kvStore*> NatsClient::OpenKeyValue(const std::string& bucket, int replicas,
                                                  absl::Duration ttl, absl::string_view what) {
  kvStore* kv = nullptr;
  natsStatus s = js_KeyValue(&kv, js_, bucket.c_str());
  if (s == NATS_OK) {
    // Made before, by this build or another: with as many copies as wanted, or refused (as a
    // stream with other settings is). Its TTL is not compared: the lease bucket's follows the
    // configured term, and only clears keys of nodes gone for good.
    jsStreamInfo* info = nullptr;
    jsErrCode err = static_cast<jsErrCode>(0);
    const std::string stream = absl::StrCat("KV_", bucket);
    const natsStatus i = js_GetStreamInfo(&info, js_, stream.c_str(), nullptr, &err);
    if (i != NATS_OK) {
      kvStore_Destroy(kv);
      return NatsError(i, absl::StrCat("cluster: reading ", what, " ", bucket));
    }
    const int have = info->Config->Replicas;
    jsStreamInfo_Destroy(info);
    if (have != replicas) {
      kvStore_Destroy(kv);
      return absl::FailedPreconditionError(absl::StrCat(
          "cluster: ", what, " ", bucket, " exists with replicas ", have, " (want ", replicas,
          "); Palisade does not change a bucket it did not make: delete it (all nodes stopped) "
          "or fix the config"));
    }
  }
  if (s == NATS_NOT_FOUND) {
    kvConfig cfg;
    kvConfig_Init(&cfg);
    cfg.Bucket = bucket.c_str();
    cfg.History = 1;
    cfg.Replicas = replicas;
    if (ttl > absl::ZeroDuration()) cfg.TTL = absl::ToInt64Nanoseconds(ttl);  // libnats: ns
    s = js_CreateKeyValue(&kv, js_, &cfg);
  }
  if (s != NATS_OK) return NatsError(s, absl::StrCat("cluster: opening ", what, " ", bucket));
  return kv;
}

absl::StatusOr<NatsClient::StreamState> NatsClient::State(const std::string& stream) {
  jsStreamInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetStreamInfo(&info, js_, stream.c_str(), nullptr, &err);
  if (s != NATS_OK) return NatsError(s, absl::StrCat("nats: reading stream ", stream));
  StreamState out{info->State.Msgs, info->State.LastSeq};
  jsStreamInfo_Destroy(info);
  return out;
}

absl::StatusOr<std::optional<std::string>> KvGet(kvStore* kv, const std::string& key,
                                                 absl::string_view what) {
  kvEntry* e = nullptr;
  const natsStatus s = kvStore_Get(&e, kv, key.c_str());
  if (s == NATS_NOT_FOUND) return std::optional<std::string>();
  if (s != NATS_OK) return NatsError(s, absl::StrCat("cluster: reading ", what, " key ", key));
  std::optional<std::string> out(std::in_place, static_cast<const char*>(kvEntry_Value(e)),
                                 static_cast<size_t>(kvEntry_ValueLen(e)));
  kvEntry_Destroy(e);
  return out;
}

absl::Status KvPut(kvStore* kv, const std::string& key, absl::string_view value,
                   absl::string_view what) {
  uint64_t rev = 0;
  const natsStatus s =
      kvStore_Put(&rev, kv, key.c_str(), value.data(), static_cast<int>(value.size()));
  if (s != NATS_OK) return NatsError(s, absl::StrCat("cluster: writing ", what, " key ", key));
  return absl::OkStatus();
}

}  // namespace palisade::cluster
