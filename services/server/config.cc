#include "services/server/config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "services/common/ip.h"

namespace palisade {
namespace {

class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  explicit FirstError(std::string file) : file_(std::move(file)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (first_.empty()) first_ = absl::StrCat(file_, ":", line + 1, ":", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string file_;
  std::string first_;
};

absl::Status CheckListen(const std::string& file, const std::string& field,
                         const std::string& value) {
  if (value == "off" && field == "metrics_listen") return absl::OkStatus();
  size_t colon = value.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(value.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": ", field, ": \"", value, "\" is not host:port (e.g. 127.0.0.1:50051)"));
  }
  return absl::OkStatus();
}

}  // namespace

palisade::v1::Config DefaultConfig(const std::string& rules_dir) {
  palisade::v1::Config config;
  config.set_grpc_listen("127.0.0.1:50051");
  config.set_metrics_listen("127.0.0.1:9464");
  config.add_rule_files(absl::StrCat(rules_dir, "/sshd.textproto"));
  config.add_rule_files(absl::StrCat(rules_dir, "/nginx.textproto"));
  config.add_rule_files(absl::StrCat(rules_dir, "/cloudflare-tokens.textproto"));
  config.mutable_engine()->set_max_keys_per_rule(1'000'000);
  config.mutable_engine()->set_max_evidence(5);
  config.mutable_engine()->set_max_line_bytes(16384);
  config.mutable_sweep_interval()->set_seconds(1);
  return config;
}

absl::StatusOr<palisade::v1::Config> ParseConfig(const std::string& text, const std::string& file,
                                                 const std::string& base_dir) {
  palisade::v1::Config config;
  google::protobuf::TextFormat::Parser parser;
  FirstError errors(file);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(errors.first().empty() ? file + ": parse error"
                                                             : errors.first());
  }
  palisade::v1::Config defaults = DefaultConfig("");
  if (config.grpc_listen().empty()) config.set_grpc_listen(defaults.grpc_listen());
  if (config.metrics_listen().empty()) config.set_metrics_listen(defaults.metrics_listen());
  auto* engine = config.mutable_engine();
  if (engine->max_keys_per_rule() == 0) engine->set_max_keys_per_rule(1'000'000);
  if (engine->max_evidence() == 0) engine->set_max_evidence(5);
  if (engine->max_line_bytes() == 0) engine->set_max_line_bytes(16384);
  if (engine->max_evidence() > 100) {
    return absl::InvalidArgumentError(file + ": engine.max_evidence must be <= 100");
  }
  if (engine->max_line_bytes() < 64) {
    return absl::InvalidArgumentError(file + ": engine.max_line_bytes must be >= 64");
  }
  if (!config.has_sweep_interval()) config.mutable_sweep_interval()->set_seconds(1);
  if (config.sweep_interval().seconds() < 0 ||
      (config.sweep_interval().seconds() == 0 && config.sweep_interval().nanos() < 1'000'000)) {
    return absl::InvalidArgumentError(file + ": sweep_interval must be >= 1ms");
  }
  absl::Status s = CheckListen(file, "grpc_listen", config.grpc_listen());
  if (!s.ok()) return s;
  s = CheckListen(file, "metrics_listen", config.metrics_listen());
  if (!s.ok()) return s;
  for (int i = 0; i < config.allowlist_size(); ++i) {
    absl::StatusOr<Cidr> c = Cidr::Parse(config.allowlist(i));
    if (!c.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": allowlist[", i, "]: ", c.status().message()));
    }
  }
  if (config.rule_files().empty()) {
    return absl::InvalidArgumentError(file + ": rule_files: at least one rule pack is required");
  }
  for (std::string& f : *config.mutable_rule_files()) {
    if (!f.empty() && f[0] != '/' && !base_dir.empty()) f = absl::StrCat(base_dir, "/", f);
  }
  return config;
}

absl::StatusOr<palisade::v1::Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open config file"));
  std::stringstream buf;
  buf << in.rdbuf();
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  return ParseConfig(buf.str(), path, dir);
}

absl::StatusOr<std::shared_ptr<const RuleSet>> LoadRules(const palisade::v1::Config& config) {
  std::vector<LoadedPack> packs;
  for (const std::string& f : config.rule_files()) {
    absl::StatusOr<LoadedPack> pack = LoadRulePackFile(f);
    if (!pack.ok()) return pack.status();
    packs.push_back(*std::move(pack));
  }
  return RuleSet::Compile(packs);
}

}  // namespace palisade
