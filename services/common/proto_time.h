// Conversions between absl::Time/Duration and google.protobuf.Timestamp/Duration.
// FromProtoTime trusts its input; a Timestamp that comes from a client goes through
// CheckedProtoTime first, which refuses what google.protobuf.Timestamp itself calls invalid.
// Thread-safety: free functions, no state.
#ifndef PALISADE_SERVICES_COMMON_PROTO_TIME_H_
#define PALISADE_SERVICES_COMMON_PROTO_TIME_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace palisade {

inline google::protobuf::Timestamp ToProtoTime(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t s = absl::ToUnixSeconds(t);
  ts.set_seconds(s);
  ts.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(s))));
  return ts;
}

inline absl::Time FromProtoTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// A client's Timestamp as absl::Time, or kInvalidArgument when it is not a valid Timestamp:
// nanos outside 0..999,999,999 (a negative fraction is written as seconds - 1 plus a positive
// nanos) or seconds outside 0001-01-01..9999-12-31, the range google.protobuf.Timestamp defines.
// Such a time would otherwise move an event by up to ±2 s per field or overflow absl::Time's
// civil conversions.
inline absl::StatusOr<absl::Time> CheckedProtoTime(const google::protobuf::Timestamp& ts) {
  constexpr int64_t kMinSeconds = -62'135'596'800;  // 0001-01-01T00:00:00Z
  constexpr int64_t kMaxSeconds = 253'402'300'799;  // 9999-12-31T23:59:59Z
  if (ts.nanos() < 0 || ts.nanos() > 999'999'999) {
    return absl::InvalidArgumentError(
        absl::StrCat("timestamp nanos ", ts.nanos(), " outside 0..999999999"));
  }
  if (ts.seconds() < kMinSeconds || ts.seconds() > kMaxSeconds) {
    return absl::InvalidArgumentError(
        absl::StrCat("timestamp seconds ", ts.seconds(), " outside years 1..9999"));
  }
  return FromProtoTime(ts);
}

inline google::protobuf::Duration ToProtoDuration(absl::Duration d) {
  google::protobuf::Duration out;
  const int64_t s = absl::IDivDuration(d, absl::Seconds(1), &d);
  out.set_seconds(s);
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
  return out;
}

inline absl::Duration FromProtoDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_PROTO_TIME_H_
