#include "services/engine/regex_tree.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "re2/re2.h"

namespace palisade {
namespace retree {

CharSet Range(int lo, int hi) {
  CharSet s;
  for (int c = lo; c <= hi; ++c) s.set(c);
  return s;
}
CharSet Digits() { return Range('0', '9'); }
CharSet Spaces() {
  CharSet s;
  for (char c : {' ', '\t', '\n', '\f', '\r', '\v'}) s.set(static_cast<unsigned char>(c));
  return s;
}
CharSet Word() { return Range('0', '9') | Range('A', 'Z') | Range('a', 'z') | Range('_', '_'); }
CharSet All() { return CharSet().set(); }

CharSet Fold(CharSet s) {
  for (int c = 'a'; c <= 'z'; ++c) {
    if (s[c] || s[c - 'a' + 'A']) {
      s.set(c);
      s.set(c - 'a' + 'A');
    }
  }
  return s;
}


namespace {

class ReParser {
 public:
  explicit ReParser(absl::string_view re) : re_(re) {}

  absl::StatusOr<ReNode> Parse() {
    Flags flags;
    absl::StatusOr<ReNode> root = ParseAlternate(flags);
    if (!root.ok()) return root;
    if (pos_ != re_.size()) return Error("unbalanced ')'");
    return root;
  }

 private:
  struct Flags {
    bool fold = false;
    bool multi_line = false;
    bool dot_nl = false;
  };

  absl::Status Error(absl::string_view why) const {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot analyse the pattern at offset ", pos_, ": ", why));
  }
  bool More() const { return pos_ < re_.size(); }
  char Peek() const { return re_[pos_]; }

  absl::StatusOr<ReNode> ParseAlternate(Flags& flags) {
    ReNode alt;
    alt.kind = ReNode::kAlternate;
    alt.begin = pos_;
    while (true) {
      absl::StatusOr<ReNode> seq = ParseConcat(flags);
      if (!seq.ok()) return seq;
      alt.subs.push_back(*std::move(seq));
      if (More() && Peek() == '|') {
        ++pos_;
        continue;
      }
      break;
    }
    alt.end = pos_;
    if (alt.subs.size() == 1) return std::move(alt.subs[0]);
    return alt;
  }

  absl::StatusOr<ReNode> ParseConcat(Flags& flags) {
    ReNode seq;
    seq.kind = ReNode::kConcat;
    seq.begin = pos_;
    while (More() && Peek() != '|' && Peek() != ')') {
      const size_t start = pos_;
      std::vector<ReNode> atoms;
      absl::Status s = ParseAtom(flags, atoms);
      if (!s.ok()) return s;
      if (atoms.size() == 1) {
        ParseQuantifier(atoms[0], start);
      } else if (More() && (Peek() == '*' || Peek() == '+' || Peek() == '?' || Peek() == '{')) {
        // A quantifier after \Q..\E applies to its last character only.
        if (atoms.empty()) return Error("quantifier after nothing");
        ParseQuantifier(atoms.back(), atoms.back().begin);
      }
      for (ReNode& a : atoms) seq.subs.push_back(std::move(a));
    }
    seq.end = pos_;
    return seq;
  }

  // Wraps `atom` in a kRepeat when a quantifier follows.
  void ParseQuantifier(ReNode& atom, size_t start) {
    if (!More()) return;
    int min = 0;
    int max = 0;
    const char c = Peek();
    if (c == '*') {
      min = 0, max = -1, ++pos_;
    } else if (c == '+') {
      min = 1, max = -1, ++pos_;
    } else if (c == '?') {
      min = 0, max = 1, ++pos_;
    } else if (c == '{') {
      // {n}, {n,}, {n,m}; anything else is a literal '{' (as RE2 reads it).
      size_t p = pos_ + 1;
      auto number = [&](int* out) {
        size_t q = p;
        int v = 0;
        while (q < re_.size() && absl::ascii_isdigit(re_[q]) && q - p < 5) {
          v = v * 10 + (re_[q++] - '0');
        }
        // RE2 reads no number with a leading zero ("{01,4}" is literal text: found by
        // tests/fuzz:set_dfa_fuzz).
        if (q == p || (q - p > 1 && re_[p] == '0')) return false;
        p = q;
        *out = v;
        return true;
      };
      if (!number(&min)) return;
      max = min;
      if (p < re_.size() && re_[p] == ',') {
        ++p;
        if (!number(&max)) max = -1;
      }
      if (p >= re_.size() || re_[p] != '}') return;
      pos_ = p + 1;
    } else {
      return;
    }
    if (More() && Peek() == '?') ++pos_;  // lazy: the same reach
    ReNode rep;
    rep.kind = ReNode::kRepeat;
    rep.min = min;
    rep.max = max;
    rep.begin = start;
    rep.end = pos_;
    rep.subs.push_back(std::move(atom));
    atom = std::move(rep);
  }

  // A one-character piece spelled re_[begin, pos_), or `quoted` (a character of \Q..\E).
  ReNode Chars(CharSet set, size_t begin, const Flags& flags, const char* quoted = nullptr) const {
    ReNode n;
    n.kind = ReNode::kChars;
    n.chars = flags.fold ? Fold(set) : set;
    n.begin = begin;
    n.end = pos_;
    const std::string text = quoted != nullptr ? RE2::QuoteMeta(re2::StringPiece(quoted, 1))
                                               : std::string(re_.substr(begin, pos_ - begin));
    n.atom = absl::StrCat("(?", flags.fold ? "i" : "", flags.dot_nl ? "s" : "", ":", text, ")");
    return n;
  }

  ReNode Marker(ReNode::Kind kind, size_t begin) const {
    ReNode n;
    n.kind = kind;
    n.begin = begin;
    n.end = pos_;
    return n;
  }

  // Parses one atom into `out` (none for a flag group such as "(?i)", several for \Q..\E).
  absl::Status ParseAtom(Flags& flags, std::vector<ReNode>& out) {
    const size_t start = pos_;
    const char c = re_[pos_++];
    switch (c) {
      case '(':
        return ParseGroup(flags, start, out);
      case '[': {
        absl::StatusOr<CharSet> set = ParseClass();
        if (!set.ok()) return set.status();
        out.push_back(Chars(*set, start, flags));
        return absl::OkStatus();
      }
      case '.': {
        CharSet set = All();
        if (!flags.dot_nl) set.reset('\n');
        out.push_back(Chars(set, start, flags));
        return absl::OkStatus();
      }
      case '^':
        out.push_back(Marker(flags.multi_line ? ReNode::kEmptyWidth : ReNode::kBeginText, start));
        return absl::OkStatus();
      case '$':
        out.push_back(Marker(flags.multi_line ? ReNode::kEmptyWidth : ReNode::kEndText, start));
        return absl::OkStatus();
      case '\\':
        return ParseEscapeAtom(flags, start, out);
      case '*':
      case '+':
      case '?':
        return Error("quantifier after nothing");
      default:
        out.push_back(Literal(start, flags, /*quoted=*/false));
        return absl::OkStatus();
    }
  }

  // The literal character starting at `start` (pos_ just past its first byte): one piece, or
  // for a character of several UTF-8 bytes a group of one piece per byte, so that a quantifier
  // after it takes the whole character, as RE2 reads `Ն?` (found by tests/fuzz:set_dfa_fuzz:
  // the quantifier took the last byte alone). `quoted`: a character of \Q..\E.
  ReNode Literal(size_t start, const Flags& flags, bool quoted) {
    const unsigned char lead = static_cast<unsigned char>(re_[start]);
    const size_t length = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    auto byte = [&](size_t at) {
      ReNode n = Chars(CharSet().set(static_cast<unsigned char>(re_[at])), at, flags,
                       quoted ? &re_[at] : nullptr);
      n.end = at + 1;
      return n;
    };
    if (length == 1) return byte(start);
    ReNode group;
    group.kind = ReNode::kGroup;
    group.begin = start;
    ReNode seq;
    seq.kind = ReNode::kConcat;
    seq.begin = start;
    seq.subs.push_back(byte(start));
    while (seq.subs.size() < length && More() &&
           (static_cast<unsigned char>(Peek()) & 0xc0) == 0x80) {
      seq.subs.push_back(byte(pos_++));
    }
    seq.end = group.end = pos_;
    group.subs.push_back(std::move(seq));
    return group;
  }

  absl::Status ParseGroup(Flags& flags, size_t start, std::vector<ReNode>& out) {
    ReNode group;
    group.kind = ReNode::kGroup;
    group.begin = start;
    Flags inner = flags;
    if (More() && Peek() == '?') {
      ++pos_;
      if (More() && (Peek() == 'P' || Peek() == '<')) {
        if (Peek() == 'P') ++pos_;
        if (!More() || Peek() != '<') return Error("unknown group syntax");
        const size_t close = re_.find('>', pos_);
        if (close == absl::string_view::npos) return Error("unterminated group name");
        group.capture = true;
        group.name = std::string(re_.substr(pos_ + 1, close - pos_ - 1));
        pos_ = close + 1;
      } else {
        // Flags: (?flags) for the rest of the enclosing group, (?flags:re) for re.
        bool negate = false;
        while (More() && Peek() != ')' && Peek() != ':') {
          const char f = re_[pos_++];
          if (f == '-') {
            negate = true;
          } else if (f == 'i') {
            inner.fold = !negate;
          } else if (f == 'm') {
            inner.multi_line = !negate;
          } else if (f == 's') {
            inner.dot_nl = !negate;
          } else if (f == 'U') {
            // Ungreedy swaps laziness: the reach of every repetition is the same.
          } else {
            return Error("unknown flag");
          }
        }
        if (!More()) return Error("unterminated flag group");
        if (Peek() == ')') {
          ++pos_;
          flags = inner;
          return absl::OkStatus();
        }
        ++pos_;  // ':'
      }
    } else {
      group.capture = true;
    }
    absl::StatusOr<ReNode> body = ParseAlternate(inner);
    if (!body.ok()) return body.status();
    if (!More() || Peek() != ')') return Error("missing ')'");
    ++pos_;
    group.subs.push_back(*std::move(body));
    group.end = pos_;
    out.push_back(std::move(group));
    return absl::OkStatus();
  }

  // After a backslash outside a class.
  absl::Status ParseEscapeAtom(Flags& flags, size_t start, std::vector<ReNode>& out) {
    if (!More()) return Error("trailing backslash");
    const char e = Peek();
    if (e == 'A') {
      ++pos_;
      out.push_back(Marker(ReNode::kBeginText, start));
      return absl::OkStatus();
    }
    if (e == 'z') {
      ++pos_;
      out.push_back(Marker(ReNode::kEndText, start));
      return absl::OkStatus();
    }
    if (e == 'b' || e == 'B') {
      ++pos_;
      out.push_back(Marker(ReNode::kEmptyWidth, start));
      return absl::OkStatus();
    }
    if (e == 'Q') {
      ++pos_;
      size_t stop = re_.find("\\E", pos_);
      if (stop == absl::string_view::npos) stop = re_.size();
      while (pos_ < stop) {
        const size_t at = pos_++;
        out.push_back(Literal(at, flags, /*quoted=*/true));
      }
      if (pos_ < re_.size()) pos_ += 2;
      return absl::OkStatus();
    }
    absl::StatusOr<CharSet> set = ParseEscape();
    if (!set.ok()) return set.status();
    out.push_back(Chars(*set, start, flags));
    return absl::OkStatus();
  }

  // An escape that stands for a set of bytes (inside or outside a class), after the backslash.
  absl::StatusOr<CharSet> ParseEscape() {
    if (!More()) return Error("trailing backslash");
    const char e = re_[pos_++];
    switch (e) {
      case 'd':
        return Digits();
      case 'D':
        return ~Digits();
      case 's':
        return Spaces() & ~CharSet().set('\v');
      case 'S':
        return ~(Spaces() & ~CharSet().set('\v'));
      case 'w':
        return Word();
      case 'W':
        return ~Word();
      case 'C':
        return All();
      case 'p':
      case 'P':
        // Unicode classes: taken as reaching every byte (the cautious side for this check).
        if (More() && Peek() == '{') {
          const size_t close = re_.find('}', pos_);
          if (close == absl::string_view::npos) return Error("unterminated \\p{");
          pos_ = close + 1;
        } else if (More()) {
          ++pos_;
        }
        return All();
      case 'n':
        return CharSet().set('\n');
      case 't':
        return CharSet().set('\t');
      case 'r':
        return CharSet().set('\r');
      case 'f':
        return CharSet().set('\f');
      case 'v':
        return CharSet().set('\v');
      case 'a':
        return CharSet().set('\a');
      case 'x': {
        int value = 0;
        if (More() && Peek() == '{') {
          const size_t close = re_.find('}', pos_);
          if (close == absl::string_view::npos) return Error("unterminated \\x{");
          for (size_t i = pos_ + 1; i < close; ++i) value = value * 16 + HexValue(re_[i]);
          pos_ = close + 1;
        } else {
          for (int i = 0; i < 2 && More(); ++i) value = value * 16 + HexValue(re_[pos_++]);
        }
        return value < 256 ? CharSet().set(value) : All();
      }
      default:
        if (e >= '0' && e <= '7') {
          int value = e - '0';
          for (int i = 0; i < 2 && More() && Peek() >= '0' && Peek() <= '7'; ++i) {
            value = value * 8 + (re_[pos_++] - '0');
          }
          return CharSet().set(value & 0xff);
        }
        if (absl::ascii_isalnum(e))
          return Error(absl::StrCat("unknown escape \\", std::string(1, e)));
        return CharSet().set(static_cast<unsigned char>(e));
    }
  }

  static int HexValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return 0;
  }

  // After '['.
  absl::StatusOr<CharSet> ParseClass() {
    CharSet set;
    bool negated = false;
    if (More() && Peek() == '^') {
      negated = true;
      ++pos_;
    }
    bool first = true;
    while (More() && (Peek() != ']' || first)) {
      first = false;
      if (re_.substr(pos_, 2) == "[:") {
        const size_t close = re_.find(":]", pos_);
        if (close == absl::string_view::npos) return Error("unterminated [:class:]");
        const absl::string_view name = re_.substr(pos_ + 2, close - pos_ - 2);
        pos_ = close + 2;
        if (name == "digit") {
          set |= Digits();
        } else if (name == "space") {
          set |= Spaces();
        } else if (name == "alpha") {
          set |= Range('A', 'Z') | Range('a', 'z');
        } else if (name == "alnum") {
          set |= Digits() | Range('A', 'Z') | Range('a', 'z');
        } else if (name == "xdigit") {
          set |= Digits() | Range('A', 'F') | Range('a', 'f');
        } else {
          set |= All();  // cautious
        }
        continue;
      }
      int lo;
      if (Peek() == '\\') {
        ++pos_;
        absl::StatusOr<CharSet> esc = ParseEscape();
        if (!esc.ok()) return esc.status();
        if (esc->count() != 1) {
          set |= *esc;
          continue;
        }
        lo = FirstOf(*esc);
      } else {
        lo = static_cast<unsigned char>(re_[pos_++]);
      }
      if (pos_ + 1 < re_.size() && Peek() == '-' && re_[pos_ + 1] != ']') {
        ++pos_;
        int hi;
        if (Peek() == '\\') {
          ++pos_;
          absl::StatusOr<CharSet> esc = ParseEscape();
          if (!esc.ok()) return esc.status();
          if (esc->count() != 1) return Error("range to a class");
          hi = FirstOf(*esc);
        } else {
          hi = static_cast<unsigned char>(re_[pos_++]);
        }
        if (hi < lo) return Error("inverted range");
        set |= Range(lo, hi);
      } else {
        set.set(lo);
      }
    }
    if (!More()) return Error("missing ']'");
    ++pos_;
    return negated ? ~set : set;
  }

  static int FirstOf(const CharSet& s) {
    for (int c = 0; c < 256; ++c) {
      if (s[c]) return c;
    }
    return 0;
  }

  absl::string_view re_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<ReNode> ParseRegex(absl::string_view pattern) { return ReParser(pattern).Parse(); }

}  // namespace retree
}  // namespace palisade
