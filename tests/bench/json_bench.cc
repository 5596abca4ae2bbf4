// JSON lines throughput (issue 14 §2): parse, and parse + match + window, per core, for the
// nginx escape=json and Cloudflare Logpush http_requests presets, against the combined line
// they stand for. The records are the generated nginx corpus (tests/corpus) rewritten as JSON
// (lines whose fields hold an escape are left out), matched by every pack under rules/ (the
// combined rules read the rendered records; cloudflare-edge's read Logpush).
//   bazel run -c opt //tests/bench:json_bench
// items_per_second is records per second on one core.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "re2/re2.h"
#include "rules/shipped_packs.h"
#include "services/engine/engine.h"
#include "services/formats/line_parser.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

using palisade::v1::LogFormat;

std::string JsonString(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

struct Fixture {
  std::shared_ptr<const RuleSet> rules;
  std::vector<std::string> combined, nginx_json, logpush;

  static const Fixture& Get() {
    static const Fixture* f = [] {
      auto* f = new Fixture();
      std::vector<LoadedPack> packs;
      for (const std::string& file : FilesIn("rules", ".textproto")) {
        auto pack = LoadRulePackFile(file);
        if (!pack.ok()) {
          std::fprintf(stderr, "%s\n", pack.status().ToString().c_str());
          std::abort();
        }
        packs.push_back(*pack);
      }
      f->rules = *RuleSet::Compile(packs, ShippedPackCidrSets());
      CorpusOptions options;
      options.lines = 200'000;
      const Corpus nginx = GenerateNginx(options);
      const RE2 re(
          R"re(^(\S+) \S+ (\S+) \[([^\]]+)\] "(\S+) (\S+) (\S+)" ([0-9]{3}) (\S+) "([^"\\]*)" "([^"\\]*)"$)re");
      std::string addr, user, time, method, uri, proto, status, bytes, referer, ua;
      for (const std::string& line : nginx.lines) {
        if (!RE2::FullMatch(line, re, &addr, &user, &time, &method, &uri, &proto, &status, &bytes,
                            &referer, &ua)) {
          continue;
        }
        auto dash = [](const std::string& v) { return v == "-" ? std::string() : v; };
        const std::string b = bytes == "-" ? "0" : bytes;
        f->combined.push_back(line);
        f->nginx_json.push_back(absl::StrCat(
            "{\"time_local\":", JsonString(time), ",\"remote_addr\":", JsonString(addr),
            ",\"remote_user\":", JsonString(dash(user)), ",\"request_method\":",
            JsonString(method), ",\"request_uri\":", JsonString(uri),
            ",\"server_protocol\":", JsonString(proto), ",\"status\":", status,
            ",\"body_bytes_sent\":", b, ",\"http_referer\":", JsonString(dash(referer)),
            ",\"http_user_agent\":", JsonString(dash(ua)), ",\"host\":\"www.example.com\"}"));
        // A Logpush record carries many more fields than a log_format: the default set's
        // size (about 30 fields).
        f->logpush.push_back(absl::StrCat(
            "{\"CacheCacheStatus\":\"dynamic\",\"CacheResponseBytes\":0,\"CacheResponseStatus\":0,"
            "\"ClientASN\":64496,\"ClientCountry\":\"xx\",\"ClientDeviceType\":\"desktop\","
            "\"ClientIP\":", JsonString(addr), ",\"ClientIPClass\":\"noRecord\","
            "\"ClientRequestBytes\":512,\"ClientRequestHost\":\"www.example.com\","
            "\"ClientRequestMethod\":", JsonString(method), ",\"ClientRequestPath\":",
            JsonString(uri.substr(0, uri.find('?'))), ",\"ClientRequestProtocol\":",
            JsonString(proto), ",\"ClientRequestReferer\":", JsonString(dash(referer)),
            ",\"ClientRequestURI\":", JsonString(uri), ",\"ClientRequestUserAgent\":",
            JsonString(dash(ua)), ",\"ClientSSLCipher\":\"AEAD-AES128-GCM-SHA256\","
            "\"ClientSSLProtocol\":\"TLSv1.3\",\"ClientSrcPort\":51234,"
            "\"EdgeColoCode\":\"FRA\",\"EdgeEndTimestamp\":1772546521100000000,"
            "\"EdgePathingOp\":\"wl\",\"EdgePathingSrc\":\"macro\",\"EdgePathingStatus\":\"nr\","
            "\"EdgeResponseBytes\":", b, ",\"EdgeResponseContentType\":\"text/html\","
            "\"EdgeResponseStatus\":", status, ",\"EdgeServerIP\":\"198.51.100.100\","
            "\"EdgeStartTimestamp\":1772546521000000000,\"OriginIP\":\"192.0.2.10\","
            "\"OriginResponseStatus\":", status, ",\"OriginResponseTime\":12000000,"
            "\"RayID\":\"7d1c2a3b4c5d6e7f\",\"WAFAction\":\"unknown\"}"));
      }
      std::fprintf(stderr, "json_bench: %zu records, %zu rules\n", f->combined.size(),
                   f->rules->rules().size());
      return f;
    }();
    return *f;
  }
};

const std::vector<std::string>& LinesFor(LogFormat f) {
  const Fixture& fx = Fixture::Get();
  return f == LogFormat::LOG_FORMAT_COMBINED     ? fx.combined
         : f == LogFormat::LOG_FORMAT_NGINX_JSON ? fx.nginx_json
                                                 : fx.logpush;
}

void BM_Parse(benchmark::State& state) {
  const LogFormat format = static_cast<LogFormat>(state.range(0));
  const std::vector<std::string>& lines = LinesFor(format);
  LineParser parser(format);
  ParsedLine out;
  const absl::Time ref = absl::FromUnixSeconds(1'772'600'000);
  size_t i = 0, bad = 0;
  for (auto _ : state) {
    bad += !parser.Parse(lines[i], ref, &out).ok();
    if (++i == lines.size()) i = 0;
  }
  if (bad > 0) state.SkipWithError("a record did not parse");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * lines[0].size());
}
BENCHMARK(BM_Parse)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->Arg(LogFormat::LOG_FORMAT_NGINX_JSON)
    ->Arg(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS)
    ->ArgName("format");

// Parse + match + window with every pack: what one ingest core does per record.
void BM_ParseMatchWindow(benchmark::State& state) {
  const LogFormat format = static_cast<LogFormat>(state.range(0));
  const std::vector<std::string>& lines = LinesFor(format);
  Engine engine(Fixture::Get().rules, EngineOptions());
  LineParser parser(format);
  ParsedLine parsed;
  std::vector<Detection> out;
  const absl::Time ref = absl::FromUnixSeconds(1'772'600'000);
  size_t i = 0;
  uint64_t matched = 0;
  absl::Duration lap;
  for (auto _ : state) {
    if (parser.Parse(lines[i], ref, &parsed).ok()) {
      matched += engine.Process(format, parsed, lines[i], *parsed.time + lap, &out).matched;
    }
    if (out.size() > 1024) out.clear();
    if (++i == lines.size()) {
      i = 0;
      lap += absl::Hours(24);
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["matched_share"] =
      static_cast<double>(matched) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_ParseMatchWindow)
    ->Arg(LogFormat::LOG_FORMAT_COMBINED)
    ->Arg(LogFormat::LOG_FORMAT_NGINX_JSON)
    ->Arg(LogFormat::LOG_FORMAT_LOGPUSH_HTTP_REQUESTS)
    ->ArgName("format");

}  // namespace
}  // namespace palisade

BENCHMARK_MAIN();
