// `palisadectl ship --follow` (issue 14 §1): follows files on a remote host as palisaded's file
// inputs do (services/inputs/file_follower.h: tail -F, rotation by rename and by copytruncate,
// a partial last line held) and sends their lines over the Ingest stream.
//
// Exactness: every batch holds the lines of one file and carries its origin (LogBatch.origin:
// shipper id, path, the file's device and inode, a fingerprint of its first line (of at most its
// first 1 MiB, what the server takes), and the offset after each line).
// The local checkpoint (--state_file) advances only when the server acked a batch, and is
// written atomically (temp file, fsync, rename, fsync of the directory) once all that was sent
// is acked, or at most every state_interval while more is in flight (an fsync per ack held
// a bulk ship to a few dozen batches a second). After a dropped
// connection the batches not acked are sent again (with new sequence numbers on the new
// stream); after a restart, even a kill -9, the files are read again from the checkpoint. The
// server (services/server/ship_dedup.h) drops what it took already, so a line counts once.
//
// Bounds: at most max_in_flight batches of batch_lines lines and about max_batch_bytes (each line
// cut at max_line_bytes, a JSON record at max_record_bytes) are
// held, sent or waiting for their ack, whatever the files' sizes and however long the server is
// away; the files are not read further meanwhile. A line cut so is sent flagged (LogRecord.cut):
// its end is the cap's, which the server must not take for its writer's, whatever its own cap.
//
// Thread-safety: Run() once, from one thread; Stop() from any thread (a signal thread).
#ifndef PALISADE_SERVICES_CLI_FOLLOW_SHIPPER_H_
#define PALISADE_SERVICES_CLI_FOLLOW_SHIPPER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "palisade/v1/state.pb.h"
#include "services/cli/shipper.h"  // DefaultShipperId

namespace palisade {

struct FollowOptions {
  // Made absolute (the server keys positions by path); then at most 1024 bytes and UTF-8, as
  // the server requires of origin.path.
  std::vector<std::string> paths;
  std::string state_file;          // required
  // Names this host to the server ([A-Za-z0-9._:-]{1,128}); default: the host name.
  std::string shipper_id;
  // The batches' source: the daemon keeps per source the year of year-less stamps, the event
  // time its sweep ages windows by and the zone, and labels metrics with it. Default:
  // "<shipper_id>:<path>" (DefaultSource), so that hosts following the same path keep their
  // own. Not in the state file (positions are kept by path), so changing it re-sends nothing.
  std::string source;
  palisade::v1::LogFormat format = palisade::v1::LOG_FORMAT_SYSLOG;
  // With format json: the mapping (palisaded's json_formats) that reads the lines.
  std::string json_format;
  uint32_t batch_lines = 1000;
  uint32_t max_in_flight = 8;
  size_t max_line_bytes = 64 * 1024;
  // With a JSON format, a record is read whole up to this many bytes (palisaded's
  // engine.max_record_bytes): a client's long headers must not cut the status off.
  size_t max_record_bytes = 8 << 20;
  // A batch ends once its lines reach this many bytes, so it stays under the server's
  // api.max_message_bytes (16 MiB by default) whatever the lines' length: a batch the server
  // refuses for its size would be sent again forever.
  size_t max_batch_bytes = size_t{4} << 20;
  // How often files are looked at when they had nothing new.
  absl::Duration poll_interval = absl::Milliseconds(200);
  // Reconnects wait backoff_min, doubling up to backoff_max.
  absl::Duration backoff_min = absl::Milliseconds(100);
  absl::Duration backoff_max = absl::Seconds(10);
  // The state file is written (with an fsync) when every batch sent is acked, else at most this
  // often: a crash resends at most this much, which the server drops.
  absl::Duration state_interval = absl::Seconds(1);
  // On Stop(), how long the batches in flight may take to be acked before the shipper leaves
  // (what is not acked is sent again next time).
  absl::Duration drain_timeout = absl::Seconds(5);
  std::string bearer_token;  // "authorization: Bearer ..." when set; never logged
  // Reconnects, errors and, with verbose, a status line every `status_every`.
  std::function<void(const std::string&)> log;
  bool verbose = false;
  absl::Duration status_every = absl::Seconds(10);
};

// Where one followed file was acked: the follower's checkpoint, and the fingerprint of that
// file's first line, of its first 1 MiB at most (what the server tells files apart by, with
// device and inode; empty until that line was read).
struct FollowPosition {
  palisade::v1::FileCheckpoint checkpoint;
  std::string first_line_fingerprint;
  uint32_t first_line_bytes = 0;
};

struct FollowSummary {
  uint64_t lines_read = 0;      // taken from the files (resends after a restart included)
  uint64_t lines_acked = 0;     // in acked batches
  uint64_t accepted = 0;        // ... taken by the server's pipeline
  uint64_t malformed = 0;
  uint64_t duplicates = 0;      // ... dropped by the server as taken before
  uint64_t detections = 0;
  uint64_t batches_acked = 0;
  uint64_t resent_batches = 0;  // sent again on a new stream
  uint64_t reconnects = 0;
  uint64_t lag_bytes = 0;       // written to the files and not acked yet, at the end
  uint64_t rotations = 0;
  uint64_t truncations = 0;
};

class FollowShipper {
 public:
  explicit FollowShipper(FollowOptions options) : options_(std::move(options)) {}

  // Follows and ships until Stop(). kInvalidArgument for bad options (no state file, no
  // paths, a bad shipper id, a path over 1024 bytes or not UTF-8, a source or json_format not
  // UTF-8), before anything is sent; kFailedPrecondition when the state file cannot be
  // written. A server that cannot be reached or ends the stream otherwise is retried with
  // backoff: the shipper runs as a service. A refusal that sending again cannot cure
  // (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED) ends the run with the server's code,
  // naming the file whose batch was refused; the state file keeps what was acked.
  absl::StatusOr<FollowSummary> Run(palisade::v1::Ingest::StubInterface& stub);
  void Stop() { stop_.Notify(); }

  // The state file's positions (by path); empty when it does not exist. kDataLoss naming the
  // file when it does not parse.
  static absl::StatusOr<std::map<std::string, FollowPosition>> ReadState(const std::string& path);
  // Writes the positions atomically (temp + fsync + rename + fsync of the directory).
  static absl::Status WriteState(const std::string& path, const std::string& shipper_id,
                                 const std::map<std::string, FollowPosition>& files);

 private:
  FollowOptions options_;
  absl::Notification stop_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLI_FOLLOW_SHIPPER_H_
