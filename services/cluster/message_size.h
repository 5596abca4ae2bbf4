// What keeps the cluster's messages under NATS' payload limit (issue 17; docs/CLUSTER.md,
// "NATS"). A server refuses a message over its max_payload (1 MiB by default) and libnats does
// not even send it, so such a message can never be published, however often it is tried. The
// messages that carry evidence (a match, a detection, a decision) have it cut to fit where they
// are encoded: every line kept, the longest cut first, each cut marked as the engine marks its
// own (" [N bytes cut]"). A message that does not fit even so (no evidence to cut) is refused
// for good by its sender: skipped and counted, never retried.
#ifndef PALISADE_SERVICES_CLUSTER_MESSAGE_SIZE_H_
#define PALISADE_SERVICES_CLUSTER_MESSAGE_SIZE_H_

#include <cstddef>
#include <string>
#include <vector>

typedef struct __natsConnection natsConnection;

namespace palisade::cluster {

// Room kept under the payload limit for what a message carries besides its body: its headers
// (a de-duplication id, an expected last sequence) and a command's first line.
inline constexpr size_t kMessageHeaderRoom = 4096;

// The most bytes of body one message on `nc` may carry: the server's max_payload less
// kMessageHeaderRoom (1 MiB less it while the connection has not learned the server's).
size_t MaxMessageBytes(natsConnection* nc);

// Whether a publish failed for the message's own size, so that sending it again can never
// succeed: over the connection's payload limit (`nats_status` NATS_MAX_PAYLOAD, libnats refused
// it before sending) or over the stream's largest message (JetStream error 10054, `js_error`).
bool RefusedForItsSize(int nats_status, int js_error);

// Cuts `lines` so that their bytes add up to at most `budget`: each line keeps an equal share
// of the budget, what shorter lines leave of theirs going to the longer ones, so the longest
// are cut first and every line stays. A line is cut on a UTF-8 boundary (evidence lines are
// proto3 strings, which must be valid UTF-8 to parse) and ends with " [N bytes cut]" when its
// share has room for it. Returns the bytes cut in all (0: the lines fit already).
size_t CutEvidence(const std::vector<std::string*>& lines, size_t budget);

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_MESSAGE_SIZE_H_
