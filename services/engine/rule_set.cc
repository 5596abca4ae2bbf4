#include "services/engine/rule_set.h"

#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/time_util.h"

namespace palisade {
namespace {

using palisade::v1::LogFormat;
using palisade::v1::Rule;
using palisade::v1::TargetKind;

class CollectingErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectingErrors(absl::string_view file) : file_(file) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (first_.empty()) first_ = absl::StrCat(file_, ":", line + 1, ":", column + 1, ": ", message);
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string file_;
  std::string first_;
};

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

bool ValidId(absl::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

std::string BaseName(absl::string_view path) {
  size_t slash = path.rfind('/');
  absl::string_view base = slash == absl::string_view::npos ? path : path.substr(slash + 1);
  size_t dot = base.find('.');
  return std::string(dot == absl::string_view::npos ? base : base.substr(0, dot));
}

absl::Status RuleError(const LoadedPack& pack, absl::string_view rule_id, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(pack.file, ": rule \"", rule_id, "\": ", why));
}

absl::StatusOr<std::unique_ptr<CompiledRule>> CompileRule(const LoadedPack& pack, const Rule& rule,
                                                          const CidrSets& sets) {
  auto out = std::make_unique<CompiledRule>();
  out->proto = rule;
  out->pack = pack.pack.name();
  if (out->proto.key().empty()) out->proto.set_key("ip");
  if (out->proto.key_kind() == TargetKind::TARGET_KIND_UNSPECIFIED) {
    out->proto.set_key_kind(TargetKind::TARGET_KIND_IP);
  }
  const TargetKind kind = out->proto.key_kind();
  if (kind != TargetKind::TARGET_KIND_IP && kind != TargetKind::TARGET_KIND_PATH &&
      kind != TargetKind::TARGET_KIND_TOKEN_FINGERPRINT &&
      kind != TargetKind::TARGET_KIND_TOKEN_ID) {
    return RuleError(pack, rule.id(),
                     "key_kind must be TARGET_KIND_IP, TARGET_KIND_PATH, "
                     "TARGET_KIND_TOKEN_FINGERPRINT or TARGET_KIND_TOKEN_ID");
  }
  // The actuator follows from the key unless the rule names one; the pair must make sense.
  using palisade::v1::Actuator;
  auto* decision = out->proto.mutable_decision();
  if (decision->actuator() == Actuator::ACTUATOR_UNSPECIFIED) {
    decision->set_actuator(kind == TargetKind::TARGET_KIND_IP ? Actuator::ACTUATOR_ACCESS_RULE
                           : kind == TargetKind::TARGET_KIND_PATH
                               ? Actuator::ACTUATOR_RATE_LIMIT
                               : Actuator::ACTUATOR_TOKEN_REVOCATION);
  }
  const Actuator actuator = decision->actuator();
  const bool fits =
      actuator == Actuator::ACTUATOR_NONE ||
      ((actuator == Actuator::ACTUATOR_ACCESS_RULE || actuator == Actuator::ACTUATOR_IP_LIST) &&
       kind == TargetKind::TARGET_KIND_IP) ||
      (actuator == Actuator::ACTUATOR_RATE_LIMIT && kind == TargetKind::TARGET_KIND_PATH) ||
      (actuator == Actuator::ACTUATOR_TOKEN_REVOCATION &&
       (kind == TargetKind::TARGET_KIND_TOKEN_FINGERPRINT ||
        kind == TargetKind::TARGET_KIND_TOKEN_ID));
  if (!fits) {
    return RuleError(
        pack, rule.id(),
        absl::StrCat("decision.actuator ", palisade::v1::Actuator_Name(actuator),
                     " cannot act on a ", palisade::v1::TargetKind_Name(kind), " key"));
  }
  if (rule.formats().empty()) return RuleError(pack, rule.id(), "no formats");
  for (int f : rule.formats()) {
    if (f == LogFormat::LOG_FORMAT_UNSPECIFIED) {
      return RuleError(pack, rule.id(), "format LOG_FORMAT_UNSPECIFIED is not a format");
    }
  }
  if (rule.patterns().empty()) return RuleError(pack, rule.id(), "no patterns");

  const RE2::Options options = PalisadeRe2Options();
  for (int i = 0; i < rule.patterns_size(); ++i) {
    auto re = std::make_unique<RE2>(rule.patterns(i), options);
    if (!re->ok()) {
      return RuleError(pack, rule.id(),
                       absl::StrCat("pattern ", i + 1, " does not compile: ", re->error()));
    }
    const auto& groups = re->NamedCapturingGroups();
    auto it = groups.find(out->proto.key());
    if (it == groups.end()) {
      return RuleError(pack, rule.id(),
                       absl::StrCat("pattern ", i + 1, " has no (?P<", out->proto.key(),
                                    ">...) group for the key"));
    }
    out->key_group.push_back(it->second);
    out->submatches.push_back(it->second + 1);
    out->patterns.push_back(std::move(re));
  }
  for (int c = 0; c < rule.conditions_size(); ++c) {
    const palisade::v1::Condition& cond = rule.conditions(c);
    const int kinds = !cond.in_set().empty() + !cond.not_in_set().empty() +
                      !cond.in_feed().empty() + !cond.not_in_feed().empty();
    if (kinds != 1) {
      return RuleError(pack, rule.id(),
                       absl::StrCat("condition ", c + 1,
                                    ": set exactly one of in_set, not_in_set, in_feed, "
                                    "not_in_feed"));
    }
    CompiledCondition compiled;
    if (!cond.in_feed().empty() || !cond.not_in_feed().empty()) {
      // Feeds come and go at run time; an unknown feed is simply empty.
      compiled.feed = cond.in_feed().empty() ? cond.not_in_feed() : cond.in_feed();
      compiled.inside = !cond.in_feed().empty();
    } else {
      const std::string& set_name = cond.in_set().empty() ? cond.not_in_set() : cond.in_set();
      auto set = sets.find(set_name);
      if (set == sets.end()) {
        return RuleError(pack, rule.id(),
                         absl::StrCat("condition ", c + 1, ": CIDR set \"", set_name,
                                      "\" is not defined (add it to the config's cidr_sets)"));
      }
      compiled.set = &set->second;
      compiled.inside = !cond.in_set().empty();
    }
    for (size_t p = 0; p < out->patterns.size(); ++p) {
      const auto& groups = out->patterns[p]->NamedCapturingGroups();
      auto g = groups.find(cond.group());
      if (g == groups.end()) {
        return RuleError(pack, rule.id(),
                         absl::StrCat("condition ", c + 1, ": pattern ", p + 1, " has no (?P<",
                                      cond.group(), ">...) group"));
      }
      compiled.group.push_back(g->second);
      out->submatches[p] = std::max(out->submatches[p], g->second + 1);
    }
    out->conditions.push_back(compiled);
  }
  for (int i = 0; i < rule.ignore_patterns_size(); ++i) {
    auto re = std::make_unique<RE2>(rule.ignore_patterns(i), options);
    if (!re->ok()) {
      return RuleError(pack, rule.id(),
                       absl::StrCat("ignore pattern ", i + 1, " does not compile: ", re->error()));
    }
    out->ignores.push_back(std::move(re));
  }

  out->count = rule.threshold().count();
  if (out->count == 0) return RuleError(pack, rule.id(), "threshold.count must be >= 1");
  out->window = FromProto(rule.threshold().window());
  if (out->count > 1 && out->window <= absl::ZeroDuration()) {
    return RuleError(pack, rule.id(), "threshold.window must be > 0 when count > 1");
  }
  if (out->count > 10000) return RuleError(pack, rule.id(), "threshold.count must be <= 10000");
  if (rule.decision().action() == palisade::v1::Action::ACTION_UNSPECIFIED) {
    return RuleError(pack, rule.id(), "decision.action is required");
  }
  out->duration = FromProto(rule.decision().duration());
  if (out->duration <= absl::ZeroDuration()) {
    return RuleError(pack, rule.id(), "decision.duration must be > 0: every decision expires");
  }
  const auto& esc = rule.decision().escalation();
  if (esc.factor() < 0 || esc.factor() > 100) {
    return RuleError(pack, rule.id(), "decision.escalation.factor must be in [0, 100]");
  }
  return out;
}

}  // namespace

RE2::Options PalisadeRe2Options() {
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(8 << 20);
  return options;
}

bool CompiledRule::AppliesToProgram(absl::string_view program) const {
  if (proto.programs().empty()) return true;
  for (const std::string& p : proto.programs()) {
    if (p == program) return true;
  }
  return false;
}

absl::StatusOr<LoadedPack> ParseRulePack(absl::string_view text, absl::string_view file) {
  LoadedPack out;
  out.file = std::string(file);
  google::protobuf::TextFormat::Parser parser;
  CollectingErrors errors(file);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &out.pack)) {
    return absl::InvalidArgumentError(errors.first().empty() ? absl::StrCat(file, ": parse error")
                                                             : errors.first());
  }
  if (out.pack.name().empty()) out.pack.set_name(BaseName(file));
  return out;
}

absl::StatusOr<LoadedPack> LoadRulePackFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open rule pack"));
  std::stringstream buf;
  buf << in.rdbuf();
  return ParseRulePack(buf.str(), path);
}

absl::StatusOr<std::shared_ptr<const RuleSet>> RuleSet::Compile(
    const std::vector<LoadedPack>& packs, const CidrSets& sets) {
  std::shared_ptr<RuleSet> set(new RuleSet());
  set->sets_ = sets;
  absl::flat_hash_set<std::string> ids;
  absl::flat_hash_set<std::string> pack_names;
  for (const LoadedPack& pack : packs) {
    if (!pack_names.insert(pack.pack.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(pack.file, ": pack name \"", pack.pack.name(), "\" is loaded twice"));
    }
    set->pack_names_.push_back(pack.pack.name());
    for (int i = 0; i < pack.pack.rules_size(); ++i) {
      const Rule& rule = pack.pack.rules(i);
      if (!ValidId(rule.id())) {
        return absl::InvalidArgumentError(absl::StrCat(
            pack.file, ": rule ", i + 1, ": id \"", rule.id(), "\" must match [a-z0-9_-]{1,64}"));
      }
      if (!ids.insert(rule.id()).second) {
        return RuleError(pack, rule.id(), "duplicate rule id");
      }
      absl::StatusOr<std::unique_ptr<CompiledRule>> compiled = CompileRule(pack, rule, set->sets_);
      if (!compiled.ok()) return compiled.status();
      set->rules_.push_back(*std::move(compiled));
    }
  }

  // One Set per format over all the patterns that apply to it.
  const int max_format = palisade::v1::LogFormat_MAX;
  set->by_format_.resize(max_format + 1);
  RE2::Options set_options = PalisadeRe2Options();
  set_options.set_max_mem(64 << 20);
  for (int f = 1; f <= max_format; ++f) {
    auto index = std::make_unique<FormatIndex>();
    for (bool anchored : {true, false}) {
      SetPart part;
      part.set = std::make_unique<RE2::Set>(set_options,
                                            anchored ? RE2::ANCHOR_START : RE2::UNANCHORED);
      for (size_t r = 0; r < set->rules_.size(); ++r) {
        const CompiledRule& rule = *set->rules_[r];
        bool applies = false;
        for (int rf : rule.proto.formats()) applies |= rf == f;
        if (!applies) continue;
        for (int p = 0; p < rule.proto.patterns_size(); ++p) {
          const std::string& pattern = rule.proto.patterns(p);
          if ((!pattern.empty() && pattern[0] == '^') != anchored) continue;
          std::string error;
          if (part.set->Add(pattern, &error) < 0) {
            return absl::InvalidArgumentError(absl::StrCat(
                "rule \"", rule.id(), "\": pattern ", p + 1, " rejected by RE2::Set: ", error));
          }
          part.entries.emplace_back(static_cast<int>(r), p);
        }
      }
      if (part.entries.empty()) continue;
      if (!part.set->Compile()) {
        return absl::ResourceExhaustedError(
            absl::StrCat("the patterns for ", palisade::v1::LogFormat_Name(f),
                         " do not fit the regex memory budget; split or simplify them"));
      }
      index->parts.push_back(std::move(part));
    }
    if (!index->parts.empty()) set->by_format_[f] = std::move(index);
  }
  return std::shared_ptr<const RuleSet>(std::move(set));
}

const RuleSet::FormatIndex* RuleSet::ForFormat(palisade::v1::LogFormat format) const {
  int f = static_cast<int>(format);
  if (f <= 0 || f >= static_cast<int>(by_format_.size())) return nullptr;
  return by_format_[f].get();
}

}  // namespace palisade
