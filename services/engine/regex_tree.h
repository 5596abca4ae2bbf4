// A parse tree of RE2 syntax: just enough structure for the rule compiler's analyses (where a
// key group sits, required literals, start bytes) and for SetDfa, which runs a
// Set's patterns over ASCII text. Patterns reach ParseRegex only after RE2 compiled them, so it
// may assume well-formed input; anything it does not know is an error, never a pass.
//
// A one-character piece (kChars) carries two views of what it matches: `chars`, the bytes it may
// match, widened where the parser does not model RE2 exactly (Unicode classes, a case-folded
// negated class: the cautious side for the analyses), and `atom`, its exact RE2 syntax with the
// flags in force, from which a caller that needs exactness asks RE2 (SetDfa does, for ASCII).
//
// Thread-safety: pure functions; ReNode trees are plain values.
#ifndef PALISADE_SERVICES_ENGINE_REGEX_TREE_H_
#define PALISADE_SERVICES_ENGINE_REGEX_TREE_H_

#include <bitset>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace palisade {
namespace retree {

using CharSet = std::bitset<256>;

struct ReNode {
  enum Kind { kChars, kBeginText, kEndText, kEmptyWidth, kConcat, kAlternate, kRepeat, kGroup };
  Kind kind = kConcat;
  CharSet chars;         // kChars: the bytes this one-byte piece matches
  std::string atom;      // kChars: RE2 syntax for exactly this piece, with its flags
  int min = 1;           // kRepeat
  int max = 1;           // kRepeat; -1: unbounded
  bool capture = false;  // kGroup
  std::string name;      // kGroup: the capture's name, if any
  std::vector<ReNode> subs;
  size_t begin = 0;  // the piece's text in the pattern
  size_t end = 0;
};

CharSet Range(int lo, int hi);
CharSet Digits();
CharSet Spaces();
CharSet Word();
CharSet All();
// `s` with both cases of every ASCII letter it holds.
CharSet Fold(CharSet s);

// The tree of `pattern`; kInvalidArgument naming the offset for syntax it does not model.
absl::StatusOr<ReNode> ParseRegex(absl::string_view pattern);

}  // namespace retree
}  // namespace palisade

#endif  // PALISADE_SERVICES_ENGINE_REGEX_TREE_H_
