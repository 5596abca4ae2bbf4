// libFuzzer target: a Logpush upload's body as the receiver handles it after the secret check
// (services/inputs/logpush_receiver.h): inflated by BoundedInflater in pieces whose sizes the
// input's first byte chooses, then cut into records, and looked at as a check upload.
// Invariants: the inflated text never passes the cap, whatever the bytes (a bomb, a cut stream,
// garbage, concatenated members); no record holds a newline or ends with a CR; none is empty;
// never more records than the cap. Seeds: tools/fuzz.sh gzips a few Logpush lines.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "services/inputs/logpush_receiver.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  constexpr size_t kCap = 1 << 20;
  constexpr size_t kMaxRecords = 10000;
  const size_t piece = 1 + data[0] % 64;
  absl::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  palisade::BoundedInflater inflater(kCap);
  std::string out;
  bool ok = true;
  while (!in.empty() && ok) {
    const absl::string_view p = in.substr(0, piece);
    in.remove_prefix(p.size());
    ok = inflater.Feed(p, &out).ok();
  }
  if (out.size() > kCap) std::abort();
  if (ok) ok = inflater.Finish().ok();
  // The receiver hands plain bodies over as they are: cut what inflated, or the input itself.
  const std::string body = ok ? out : std::string(reinterpret_cast<const char*>(data), size);
  (void)palisade::LogpushReceiver::IsCheckUpload(body);
  palisade::v1::LogBatch batch;
  constexpr size_t kHeld = 64 << 10;  // small, so that fuzzed bodies reach it
  (void)palisade::LogpushReceiver::SplitLines(body, kMaxRecords, kHeld, &batch);
  if (static_cast<size_t>(batch.records_size()) > kMaxRecords) std::abort();
  size_t held = 0;
  for (const auto& r : batch.records()) {
    if (r.line().empty() || r.line().find('\n') != std::string::npos || r.line().back() == '\r') {
      std::abort();
    }
    held += r.line().size() + palisade::LogpushReceiver::kRecordHeldBytes;
  }
  if (held > kHeld) std::abort();
  return 0;
}
