#include "services/fail2ban/fail2ban_import.h"

#include <cstring>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/text_format.h"
#include "re2/re2.h"
#include "services/common/status_macros.h"
#include "services/engine/rule_set.h"

namespace palisade {
namespace {

// One physical line of a value, with where it was written.
struct ValueLine {
  std::string text;
  std::string file;
  int line = 0;
};
using Section = std::map<std::string, std::vector<ValueLine>>;
using Sections = std::map<std::string, Section>;

// Stands for __prefix_line during interpolation, so that we can tell the filter used it.
constexpr char kPrefixMarker[] = "\x01";
constexpr int kMaxIncludeDepth = 10;
constexpr int kMaxExpandDepth = 40;

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Parses one INI file into `out` (later keys override earlier ones). Its [INCLUDES] before files
// are read first and after files last, as fail2ban's ConfigReader does.
absl::Status ReadConfig(const std::string& path, const std::string& included_from,
                        int included_line, int depth, Sections* out) {
  if (depth > kMaxIncludeDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat(included_from, ":", included_line, ": includes nest deeper than ",
                     kMaxIncludeDepth, " (a loop?)"));
  }
  std::ifstream in(path);
  if (!in) {
    if (absl::EndsWith(path, ".local")) return absl::OkStatus();  // optional, as in fail2ban
    if (included_from.empty()) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
    return absl::NotFoundError(absl::StrCat(included_from, ":", included_line,
                                            ": included file ", path, " cannot be read"));
  }
  Sections own;
  std::string section;
  std::vector<ValueLine>* last_value = nullptr;  // the value being continued
  std::string raw;
  int n = 0;
  while (std::getline(in, raw)) {
    ++n;
    if (!raw.empty() && raw.back() == '\r') raw.pop_back();
    absl::string_view stripped = absl::StripAsciiWhitespace(raw);
    if (stripped.empty() || stripped[0] == '#' || stripped[0] == ';') continue;
    bool indented = raw[0] == ' ' || raw[0] == '\t';
    if (indented && last_value != nullptr) {
      // A continuation line: one more entry of a multi-line value.
      last_value->push_back({std::string(stripped), path, n});
      continue;
    }
    if (stripped[0] == '[') {
      if (stripped.back() != ']') {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": unterminated section"));
      }
      section = std::string(stripped.substr(1, stripped.size() - 2));
      last_value = nullptr;
      continue;
    }
    size_t eq = stripped.find_first_of("=:");
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", n, ": expected 'name = value', got '", stripped, "'"));
    }
    if (section.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": option outside a section"));
    }
    std::string key(absl::StripAsciiWhitespace(stripped.substr(0, eq)));
    std::string value(absl::StripAsciiWhitespace(stripped.substr(eq + 1)));
    auto& lines = own[section][key];
    lines.clear();
    lines.push_back({value, path, n});
    last_value = &lines;
  }

  auto include = [&](const char* which) -> absl::Status {
    auto sec = own.find("INCLUDES");
    if (sec == own.end()) return absl::OkStatus();
    auto it = sec->second.find(which);
    if (it == sec->second.end()) return absl::OkStatus();
    for (const ValueLine& v : it->second) {
      for (absl::string_view name : absl::StrSplit(v.text, ' ', absl::SkipWhitespace())) {
        std::string file = name[0] == '/' ? std::string(name)
                                          : absl::StrCat(DirName(path), "/", name);
        RETURN_IF_ERROR(ReadConfig(file, v.file, v.line, depth + 1, out));
      }
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(include("before"));
  for (auto& [name, options] : own) {
    if (name == "INCLUDES") continue;
    for (auto& [key, lines] : options) (*out)[name][key] = lines;
  }
  RETURN_IF_ERROR(include("after"));
  return absl::OkStatus();
}

// Option lookup and interpolation over a filter's merged sections.
class Interpolator {
 public:
  Interpolator(const Sections& sections, const std::map<std::string, std::string>& params)
      : sections_(sections) {
    for (const auto& [k, v] : params) params_[k] = {{v, "(parameter)", 0}};
  }

  // The lines of option `name` ("key" or "section/key"); nullptr when unknown.
  const std::vector<ValueLine>* Find(absl::string_view name) const {
    size_t slash = name.find('/');
    if (slash != absl::string_view::npos) {
      const std::vector<ValueLine>* v =
          In(std::string(name.substr(0, slash)), std::string(name.substr(slash + 1)));
      return v != nullptr ? v : In("DEFAULT", std::string(name.substr(slash + 1)));
    }
    std::string key(name);
    auto p = params_.find(key);
    if (p != params_.end()) return &p->second;
    for (const char* s : {"Init", "Definition", "DEFAULT"}) {
      if (const std::vector<ValueLine>* v = In(s, key)) return v;
    }
    return nullptr;
  }

  // Expands `%(name)s` and option tags `<name>` in `text`; unknown tags (<HOST>, <F-USER>) stay.
  absl::StatusOr<std::string> Expand(absl::string_view text, int depth = 0) const {
    if (depth > kMaxExpandDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat("interpolation nests deeper than ", kMaxExpandDepth, " (a loop?)"));
    }
    std::string out;
    size_t i = 0;
    while (i < text.size()) {
      if (text[i] == '%' && i + 1 < text.size() && text[i + 1] == '(') {
        size_t close = text.find(")s", i);
        if (close != absl::string_view::npos) {
          absl::string_view name = text.substr(i + 2, close - i - 2);
          const std::vector<ValueLine>* v = Find(name);
          if (v == nullptr) {
            return absl::InvalidArgumentError(absl::StrCat("%(", name, ")s is not defined"));
          }
          ASSIGN_OR_RETURN(std::string value, Expand(Joined(*v), depth + 1));
          out += value;
          i = close + 2;
          continue;
        }
      }
      if (text[i] == '<' && !(i >= 2 && text.substr(i - 2, 2) == "?P")) {
        // Expand the tag's name first: <lt_<logtype>/__prefix_line>.
        size_t close = FindTagEnd(text, i);
        if (close != absl::string_view::npos) {
          ASSIGN_OR_RETURN(std::string name, Expand(text.substr(i + 1, close - i - 1), depth + 1));
          const std::vector<ValueLine>* v =
              name.find_first_of("<>") == std::string::npos ? Find(name) : nullptr;
          if (v != nullptr) {
            ASSIGN_OR_RETURN(std::string value, Expand(Joined(*v), depth + 1));
            out += value;
          } else {
            absl::StrAppend(&out, "<", name, ">");
          }
          i = close + 1;
          continue;
        }
      }
      out += text[i++];
    }
    return out;
  }

  // Expands a list option (failregex): a line that is a single reference to a multi-line option
  // becomes that option's lines, each keeping the file and line it was written on.
  absl::Status ExpandList(const std::vector<ValueLine>& lines, int depth,
                          std::vector<ValueLine>* out) const {
    if (depth > kMaxExpandDepth) {
      return absl::InvalidArgumentError("interpolation nests too deep (a loop?)");
    }
    for (const ValueLine& l : lines) {
      absl::string_view t = l.text;
      std::string ref;
      if (absl::StartsWith(t, "%(") && absl::EndsWith(t, ")s") &&
          t.find(")s") == t.size() - 2) {
        ref = std::string(t.substr(2, t.size() - 4));
      } else if (t.size() > 2 && t[0] == '<' && FindTagEnd(t, 0) == t.size() - 1) {
        ASSIGN_OR_RETURN(ref, Expand(t.substr(1, t.size() - 2), depth + 1));
      }
      if (!ref.empty()) {
        if (const std::vector<ValueLine>* v = Find(ref)) {
          RETURN_IF_ERROR(ExpandList(*v, depth + 1, out));
          continue;
        }
      }
      absl::StatusOr<std::string> expanded = Expand(t, depth + 1);
      if (!expanded.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(l.file, ":", l.line, ": ", expanded.status().message()));
      }
      for (absl::string_view piece : absl::StrSplit(*expanded, '\n', absl::SkipWhitespace())) {
        out->push_back({std::string(absl::StripAsciiWhitespace(piece)), l.file, l.line});
      }
    }
    return absl::OkStatus();
  }

 private:
  const std::vector<ValueLine>* In(const std::string& section, const std::string& key) const {
    auto s = sections_.find(section);
    if (s == sections_.end()) return nullptr;
    auto k = s->second.find(key);
    return k == s->second.end() ? nullptr : &k->second;
  }
  static std::string Joined(const std::vector<ValueLine>& v) {
    std::vector<std::string> texts;
    for (const ValueLine& l : v) texts.push_back(l.text);
    return absl::StrJoin(texts, "\n");
  }
  // The '>' closing the tag opened at `open`, counting nested tags; npos when it is no tag (a
  // character that cannot be in an option name comes first).
  static size_t FindTagEnd(absl::string_view text, size_t open) {
    int level = 0;
    for (size_t j = open; j < text.size(); ++j) {
      char c = text[j];
      if (c == '<') {
        ++level;
      } else if (c == '>') {
        if (--level == 0) return j;
      } else if (!absl::ascii_isalnum(c) && c != '_' && c != '-' && c != '/' && c != '.') {
        return absl::string_view::npos;
      }
    }
    return absl::string_view::npos;
  }

  const Sections& sections_;
  std::map<std::string, std::vector<ValueLine>> params_;
};

// fail2ban's address tags, in the shape the shipped packs use (rules/sshd.textproto): the
// key-anchoring analysis reads it, and the engine parses the capture as an address anyway.
constexpr char kIpGroup[] = "(?P<ip>[0-9A-Fa-f:.]+)";
constexpr char kIp4Group[] = "(?P<ip>[0-9.]+)";
constexpr char kIp6Group[] = "(?P<ip>[0-9A-Fa-f:.]+)";
// The time stamps fail2ban cuts from the start of a non-syslog line before matching:
// "2012/04/09 11:53:29", ISO 8601, "[09/Apr/2012:11:53:29 +0200]".
constexpr char kLeadingDate[] =
    "(?:\\d{4}[-/]\\d{2}[-/]\\d{2}[ T]\\d{2}:\\d{2}:\\d{2}(?:[.,]\\d+)?(?:Z|[+-]\\d{2}:?\\d{2})?"
    "|\\[\\d{2}/\\w{3}/\\d{4}:\\d{2}:\\d{2}:\\d{2} [+-]\\d{4}\\])?";

// Why `re` uses Python-only syntax RE2 lacks; empty when it does not.
std::string PythonOnlyConstruct(absl::string_view re) {
  bool in_class = false;
  for (size_t i = 0; i < re.size(); ++i) {
    char c = re[i];
    if (c == '\\') {
      if (i + 1 < re.size() && !in_class && re[i + 1] >= '1' && re[i + 1] <= '9') {
        return absl::StrCat("back-reference \\", std::string(1, re[i + 1]));
      }
      ++i;
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
      continue;
    }
    if (c == '[') {
      in_class = true;
      if (i + 1 < re.size() && re[i + 1] == '^') ++i;
      if (i + 1 < re.size() && re[i + 1] == ']') ++i;  // a literal ] first in the class
      continue;
    }
    absl::string_view rest = re.substr(i);
    if (absl::StartsWith(rest, "(?=")) return "look-ahead (?=...)";
    if (absl::StartsWith(rest, "(?!")) return "negative look-ahead (?!...)";
    if (absl::StartsWith(rest, "(?<=")) return "look-behind (?<=...)";
    if (absl::StartsWith(rest, "(?<!")) return "negative look-behind (?<!...)";
    if (absl::StartsWith(rest, "(?P=")) return "named back-reference (?P=name)";
    if (absl::StartsWith(rest, "(?>")) return "atomic group (?>...)";
    if (absl::StartsWith(rest, "(?(")) return "conditional group (?(name)...)";
    if ((c == '*' || c == '+' || c == '?' || c == '}') && i + 1 < re.size() && re[i + 1] == '+' &&
        !(i > 0 && re[i - 1] == '(')) {
      return absl::StrCat("possessive quantifier ", std::string(1, c), "+");
    }
  }
  return "";
}

// RE2 equivalents of Python syntax; appends what it rewrote to `notes`.
std::string Rewrite(std::string re, std::vector<std::string>* notes) {
  if (absl::StrContains(re, "\\Z")) {
    absl::StrReplaceAll({{"\\Z", "\\z"}}, &re);
    notes->push_back("\\Z -> \\z");
  }
  static const LazyRE2 kEmptyMin = {"\\{,(\\d+)\\}"};
  if (RE2::GlobalReplace(&re, *kEmptyMin, "{0,\\1}") > 0) notes->push_back("{,n} -> {0,n}");
  return re;
}

// Turns fail2ban tags into RE2 groups; a non-empty return is the reason to refuse.
std::string ConvertTags(std::string* re) {
  for (const char* tag : {"F-NOFAIL", "F-MLFID", "F-MLFGAINED", "F-ID"}) {
    if (absl::StrContains(*re, absl::StrCat("<", tag, ">"))) {
      return absl::StrCat("<", tag,
                          "> needs session correlation, unsupported until issue 13 §1 lands");
    }
  }
  if (absl::StrContains(*re, "<DNS>")) return "<DNS>: host names are not keys, only addresses";
  if (absl::StrContains(*re, "<SKIPLINES>")) return "<SKIPLINES>: multi-line matching";
  absl::StrReplaceAll({{"<F-MLFFORGET>", ""}, {"</F-MLFFORGET>", ""}}, re);
  int hosts = 0;
  for (const auto& [tag, group] : {std::pair<const char*, const char*>{"<HOST>", kIpGroup},
                                   {"<ADDR>", kIpGroup},
                                   {"<IP4>", kIp4Group},
                                   {"<IP6>", kIp6Group}}) {
    for (size_t at; (at = re->find(tag)) != std::string::npos; ++hosts) {
      re->replace(at, strlen(tag), group);
    }
  }
  if (hosts > 1) return "more than one address tag: which one is the key is ambiguous";
  std::string name;
  static const LazyRE2 kOpen = {"<F-([A-Za-z0-9_]+)>"};
  while (RE2::PartialMatch(*re, *kOpen, &name)) {
    std::string lower = absl::AsciiStrToLower(name);
    if (lower == "ip") return "<F-IP> would clash with the address group";
    absl::StrReplaceAll({{absl::StrCat("<F-", name, ">"), absl::StrCat("(?P<", lower, ">")},
                         {absl::StrCat("</F-", name, ">"), ")"}},
                        re);
  }
  if (absl::StrContains(*re, "</F-")) return "an </F-...> tag without its opening tag";
  return "";
}

// Splits prefregex around <F-CONTENT>...</F-CONTENT>: the failregex goes in between.
struct Prefix {
  std::string before;
  std::string after;
};

absl::StatusOr<Prefix> SplitPrefregex(std::string pref, std::vector<std::string>* notes) {
  Prefix p;
  if (pref.empty()) return p;
  // The session id is the syslog prefix, which the line parser strips: nothing is left of it.
  static const LazyRE2 kMlfid = {"<F-MLFID>(.*?)</F-MLFID>"};
  if (RE2::Replace(&pref, *kMlfid, "\\1")) {
    notes->push_back("prefregex: <F-MLFID> dropped (no multi-line sessions yet)");
  }
  size_t open = pref.find("<F-CONTENT>");
  size_t close = pref.find("</F-CONTENT>");
  if (open == std::string::npos || close == std::string::npos || close < open) {
    return absl::InvalidArgumentError("prefregex has no <F-CONTENT>...</F-CONTENT>");
  }
  p.before = pref.substr(0, open);
  p.after = pref.substr(close + strlen("</F-CONTENT>"));
  return p;
}

RegexReport ConvertOne(const ValueLine& line, const std::string& kind, const Prefix& prefix,
                       bool syslog) {
  RegexReport r;
  r.kind = kind;
  r.file = line.file;
  r.line = line.line;
  // __prefix_line becomes nothing: the syslog parser strips it (and `prefix` is already clean).
  r.original = absl::StrReplaceAll(line.text, {{kPrefixMarker, ""}});
  auto refuse = [&](std::string reason) {
    r.outcome = RegexOutcome::kRefused;
    r.reason = std::move(reason);
    return r;
  };
  std::string re = r.original;
  if (!prefix.before.empty() || !prefix.after.empty()) {
    // The failregex matches the content: its ^ is the content's start.
    absl::string_view b = r.original;
    std::string content =
        absl::ConsumePrefix(&b, "^") ? std::string(b) : absl::StrCat("(?:.*?)", b);
    re = absl::StrCat(prefix.before, "(?:", content, ")", prefix.after);
  }
  if (std::string why = ConvertTags(&re); !why.empty()) return refuse(why);
  if (std::string why = PythonOnlyConstruct(re); !why.empty()) {
    return refuse(absl::StrCat(why, " has no RE2 equivalent"));
  }
  std::vector<std::string> rewrites;
  re = Rewrite(std::move(re), &rewrites);
  if (!syslog && absl::StartsWith(re, "^")) re = absl::StrCat("^", kLeadingDate, re.substr(1));
  RE2 compiled(re, PalisadeRe2Options());
  if (!compiled.ok()) return refuse(absl::StrCat("RE2 refuses it: ", compiled.error()));
  if (kind == "failregex") {
    if (compiled.NamedCapturingGroups().count("ip") == 0) {
      return refuse("no address tag (<HOST>/<ADDR>/<IP4>/<IP6>): nothing to key on");
    }
    absl::StatusOr<KeyPlacement> placement = AnalyzeKeyPlacement(re, "ip");
    if (!placement.ok()) return refuse(std::string(placement.status().message()));
    if (!placement->safe()) {
      return refuse(absl::StrCat("the address follows ", placement->field,
                                 " and nothing pins it to the end: a client could choose the key"));
    }
  }
  r.converted = re;
  if (!rewrites.empty()) {
    r.outcome = RegexOutcome::kRewritten;
    r.reason = absl::StrJoin(rewrites, ", ");
  }
  return r;
}

std::string RuleId(const std::string& filter) {
  std::string id = "f2b-";
  for (char c : absl::AsciiStrToLower(filter)) {
    id += (absl::ascii_isalnum(c) || c == '_' || c == '-') ? c : '-';
  }
  return id;
}

}  // namespace

int Fail2banImport::count(RegexOutcome outcome) const {
  int n = 0;
  for (const RegexReport& r : regexes) n += r.outcome == outcome;
  return n;
}

absl::StatusOr<Fail2banImport> ImportFail2banFilter(const std::string& path,
                                                    const Fail2banImportOptions& options) {
  Sections sections;
  RETURN_IF_ERROR(ReadConfig(path, "", 0, 0, &sections));
  // fail2ban reads name.local after name.conf.
  if (absl::EndsWith(path, ".conf")) {
    RETURN_IF_ERROR(ReadConfig(absl::StrCat(path.substr(0, path.size() - 5), ".local"), "", 0, 0,
                               &sections));
  }
  std::map<std::string, std::string> params = options.params;
  params["__prefix_line"] = kPrefixMarker;
  Interpolator interp(sections, params);

  Fail2banImport out;
  out.filter = BaseName(path);
  if (absl::EndsWith(out.filter, ".conf")) out.filter.resize(out.filter.size() - 5);

  auto scalar = [&](const char* name) -> absl::StatusOr<std::string> {
    const std::vector<ValueLine>* v = interp.Find(name);
    if (v == nullptr || v->empty()) return std::string();
    absl::StatusOr<std::string> s = interp.Expand(v->front().text);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(v->front().file, ":", v->front().line, ": ",
                                                     s.status().message()));
    }
    return *s;
  };
  ASSIGN_OR_RETURN(std::string pref, scalar("prefregex"));
  ASSIGN_OR_RETURN(out.datepattern, scalar("datepattern"));
  ASSIGN_OR_RETURN(std::string maxlines, scalar("maxlines"));
  if (!maxlines.empty() && !absl::SimpleAtoi(maxlines, &out.maxlines)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": maxlines '", maxlines,
                                                   "' is not a number"));
  }
  if (out.maxlines > 1) {
    out.notes.push_back(absl::StrCat("maxlines ", out.maxlines,
                                     ": multi-line matching is not supported, lines match alone"));
  }
  bool syslog = absl::StrContains(pref, kPrefixMarker);
  out.prefregex = absl::StrReplaceAll(pref, {{kPrefixMarker, ""}});
  ASSIGN_OR_RETURN(Prefix prefix, SplitPrefregex(out.prefregex, &out.notes));

  std::vector<ValueLine> fails, ignores;
  if (const std::vector<ValueLine>* v = interp.Find("failregex")) {
    RETURN_IF_ERROR(interp.ExpandList(*v, 0, &fails));
  }
  if (const std::vector<ValueLine>* v = interp.Find("ignoreregex")) {
    RETURN_IF_ERROR(interp.ExpandList(*v, 0, &ignores));
  }
  for (const ValueLine& l : fails) syslog = syslog || absl::StrContains(l.text, kPrefixMarker);

  palisade::v1::Rule rule;
  rule.set_id(RuleId(out.filter));
  ASSIGN_OR_RETURN(std::string daemon, scalar("_daemon"));
  if (syslog) {
    rule.add_formats(palisade::v1::LOG_FORMAT_SYSLOG);
    rule.add_formats(palisade::v1::LOG_FORMAT_SYSLOG5424);
    if (RE2::FullMatch(daemon, "[A-Za-z0-9_.-]+")) rule.add_programs(daemon);
  } else {
    rule.add_formats(palisade::v1::LOG_FORMAT_RAW);
  }
  for (const ValueLine& l : fails) {
    out.regexes.push_back(ConvertOne(l, "failregex", prefix, syslog));
    if (out.regexes.back().outcome != RegexOutcome::kRefused) {
      rule.add_patterns(out.regexes.back().converted);
    }
  }
  for (const ValueLine& l : ignores) {
    out.regexes.push_back(ConvertOne(l, "ignoreregex", prefix, syslog));
    if (out.regexes.back().outcome != RegexOutcome::kRefused) {
      rule.add_ignore_patterns(out.regexes.back().converted);
    }
  }
  if (rule.patterns_size() == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": no failregex converted (", fails.size(), " refused)"));
  }
  rule.set_description(absl::StrCat(
      "Imported from fail2ban filter ", BaseName(path), ". Threshold from fail2ban's jail "
      "defaults: maxretry ", options.maxretry, " within findtime ",
      absl::FormatDuration(options.findtime), ", bantime ", absl::FormatDuration(options.bantime),
      "."));
  rule.mutable_threshold()->set_count(options.maxretry);
  rule.mutable_threshold()->mutable_window()->set_seconds(
      absl::ToInt64Seconds(options.findtime));
  rule.mutable_decision()->set_action(palisade::v1::ACTION_BLOCK);
  rule.mutable_decision()->mutable_duration()->set_seconds(absl::ToInt64Seconds(options.bantime));
  out.pack.set_name(absl::StrCat("fail2ban-", out.filter));
  out.pack.set_description(absl::StrCat("fail2ban filter ", path, ", converted"));
  *out.pack.add_rules() = std::move(rule);
  return out;
}

std::string Fail2banPackText(const Fail2banImport& imported) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(imported.pack, &text);
  return absl::StrCat("# proto-file: proto/palisade/v1/rules.proto\n",
                      "# proto-message: palisade.v1.RulePack\n",
                      "# Generated by palisadectl rules import-fail2ban from filter '",
                      imported.filter, "'.\n", text);
}

std::string Fail2banReportText(const Fail2banImport& imported) {
  std::string out = absl::StrCat(
      imported.filter, ": ", imported.count(RegexOutcome::kConverted), " converted, ",
      imported.count(RegexOutcome::kRewritten), " rewritten, ",
      imported.count(RegexOutcome::kRefused), " refused; maxlines ", imported.maxlines,
      "; datepattern '", imported.datepattern, "'\n");
  for (const std::string& note : imported.notes) absl::StrAppend(&out, "  note: ", note, "\n");
  for (const RegexReport& r : imported.regexes) {
    const char* what = r.outcome == RegexOutcome::kConverted   ? "converted"
                       : r.outcome == RegexOutcome::kRewritten ? "rewritten"
                                                               : "refused";
    absl::StrAppend(&out, "  ", r.file, ":", r.line, ": ", r.kind, " ", what,
                    r.reason.empty() ? "" : ": ", r.reason, "\n    ", r.original, "\n");
  }
  return out;
}

}  // namespace palisade
