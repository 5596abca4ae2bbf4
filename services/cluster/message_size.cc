#include "services/cluster/message_size.h"

#include <nats/nats.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace palisade::cluster {
namespace {

// A cut line's marker, " [N bytes cut]", takes at most this much (N up to 11 digits): the
// engine's room for its own.
constexpr size_t kMarkerRoom = 24;

// The most of `line` that fits in `max` bytes without splitting a UTF-8 sequence.
absl::string_view CutUtf8(absl::string_view line, size_t max) {
  if (line.size() <= max) return line;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(line[n]) & 0xc0) == 0x80) --n;
  return line.substr(0, n);
}

}  // namespace

size_t MaxMessageBytes(natsConnection* nc) {
  int64_t max = nc != nullptr ? natsConnection_GetMaxPayload(nc) : 0;
  if (max <= 0) max = int64_t{1} << 20;  // not learned yet: NATS' default
  const size_t payload = static_cast<size_t>(max);
  // A server configured with a tiny max_payload still leaves half of it to the body.
  return payload > 2 * kMessageHeaderRoom ? payload - kMessageHeaderRoom : payload / 2;
}

bool RefusedForItsSize(int nats_status, int js_error) {
  return nats_status == NATS_MAX_PAYLOAD || js_error == JSStreamMessageExceedsMaximumErr;
}

size_t CutEvidence(const std::vector<std::string*>& lines, size_t budget) {
  std::vector<size_t> sizes;
  size_t total = 0;
  for (const std::string* line : lines) {
    sizes.push_back(line->size());
    total += line->size();
  }
  if (total <= budget) return 0;
  // The share of every line longer than it: what the shorter lines leave of the budget, evenly.
  // Some line is longer than its even share, since the lines do not fit.
  std::sort(sizes.begin(), sizes.end());
  size_t left = budget;
  size_t share = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const size_t even = left / (sizes.size() - i);
    if (sizes[i] > even) {
      share = even;
      break;
    }
    left -= sizes[i];
  }
  size_t cut = 0;
  for (std::string* line : lines) {
    const size_t before = line->size();
    if (before <= share) continue;
    if (share > kMarkerRoom) {
      const absl::string_view head = CutUtf8(*line, share - kMarkerRoom);
      *line = absl::StrCat(head, " [", before - head.size(), " bytes cut]");
    } else {
      line->resize(CutUtf8(*line, share).size());
    }
    cut += before - line->size();
  }
  return cut;
}

}  // namespace palisade::cluster
