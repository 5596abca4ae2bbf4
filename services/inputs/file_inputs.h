// palisaded's file inputs (issue 14 §1): the config's `inputs { files { ... } }`, each a set of
// paths or globs followed by a FileFollower, read by one thread that hands batches of lines to a
// sink (the daemon's Pipeline::ProcessBatch, the same path gRPC batches take).
//
// Exactness across restarts: a batch's lines are counted once the sink returned OK, and the
// position after them is what Checkpoints() reports. Consistent(fn) runs `fn` while no batch is
// in flight, so the daemon saves the engine's windows and these positions as one snapshot: after
// a restart (or a kill -9) the windows come back as they were at that snapshot and every file is
// read on from the position that matches them, so no line is lost and none is counted twice.
// A batch the sink refuses is kept and offered again on the next round (nothing skipped).
//
// Errors (permission denied, a read failing) are logged through `log` and counted in
// palisade_input_errors_total{input}, and retried every round; they never stop the thread.
// Metrics per input: lines, bytes, rotations, truncations, errors, lag in bytes.
//
// Thread-safety: Start/Stop from one thread; Consistent and Checkpoints from any thread.
#ifndef PALISADE_SERVICES_INPUTS_FILE_INPUTS_H_
#define PALISADE_SERVICES_INPUTS_FILE_INPUTS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "palisade/v1/state.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/inputs/file_follower.h"

namespace palisade {

struct FileInputsOptions {
  absl::Duration poll_interval = absl::Milliseconds(50);
  uint32_t batch_lines = 1000;
  size_t max_line_bytes = 16 * 1024;
  // Where each file stood at the last snapshot (EngineSnapshot.inputs).
  std::vector<palisade::v1::FileCheckpoint> checkpoints;
  std::function<void(const std::string&)> log;
};

using BatchSink = std::function<absl::Status(const palisade::v1::LogBatch&)>;

// An input's name: [a-z0-9_-]{1,64} (a metric label and a key of saved positions).
bool ValidInputName(const std::string& name);

class FileInputs {
 public:
  // Validates the inputs (names, formats, paths): kInvalidArgument naming the input; a file
  // that exists but cannot be read is refused (kPermissionDenied, naming the input and the
  // path); one that does not exist yet is waited for.
  static absl::StatusOr<std::unique_ptr<FileInputs>> Create(
      const palisade::v1::InputsConfig& config, FileInputsOptions options, BatchSink sink,
      prometheus::Registry& registry);
  ~FileInputs();

  // Starts / stops the reading thread. Stop waits for the batch in flight.
  void Start();
  void Stop();

  // One round over every file (what the thread does each poll_interval): finds new files of
  // the globs, reads and delivers new lines. Returns the lines delivered.
  size_t PollOnce();

  // Runs `fn` with every file's position while no batch is in flight.
  void Consistent(const std::function<void(const std::vector<palisade::v1::FileCheckpoint>&)>& fn);
  std::vector<palisade::v1::FileCheckpoint> Checkpoints();

 private:
  struct File {
    std::unique_ptr<FileFollower> follower;
    // The batch being built, or one the sink refused (offered again while it has records).
    // Kept between rounds: its LogRecords and their strings are reused, so a line costs a copy
    // into a string that already has room, not a malloc and a free (see PERFORMANCE.md).
    palisade::v1::LogBatch held;
    // The position after the last line the sink took (what a snapshot may say).
    palisade::v1::FileCheckpoint taken;
  };
  struct Input {
    palisade::v1::FileInput config;
    palisade::v1::LogFormat format;
    std::map<std::string, File> files;  // by path
    prometheus::Counter* lines = nullptr;
    prometheus::Counter* bytes = nullptr;
    prometheus::Counter* rotations = nullptr;
    prometheus::Counter* truncations = nullptr;
    prometheus::Counter* errors = nullptr;
    prometheus::Gauge* lag = nullptr;
    // What the followers' running totals were when last published.
    std::map<std::string, FollowerStats> published;
  };

  FileInputs(FileInputsOptions options, BatchSink sink) : options_(std::move(options)),
                                                          sink_(std::move(sink)) {}
  // Adds followers for paths (and glob matches) not followed yet.
  void DiscoverLocked(Input& input) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t PollFileLocked(Input& input, const std::string& path, File& file)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked(Input& input, const std::string& path, const File& file)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Log(const std::string& message) const;

  FileInputsOptions options_;
  BatchSink sink_;
  absl::Mutex mu_;  // held across a round: a batch in flight excludes Consistent
  std::vector<Input> inputs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> last_error_ ABSL_GUARDED_BY(mu_);  // path -> message
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_INPUTS_FILE_INPUTS_H_
