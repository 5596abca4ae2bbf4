// The injectable clock. Only RealClock reads absl::Now(); everything that needs time takes a
// Clock&, and tests drive a SimulatedClock instead of sleeping.
// Thread-safety: both implementations are safe to call from any thread.
#ifndef PALISADE_SERVICES_COMMON_CLOCK_H_
#define PALISADE_SERVICES_COMMON_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace palisade {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time TimeNow() = 0;
  // Waits `d`. The real clock sleeps; the simulated one just moves time forward, so retry and
  // backoff paths are tested without sleeping.
  virtual void SleepFor(absl::Duration d) = 0;
};

class RealClock final : public Clock {
 public:
  absl::Time TimeNow() override { return absl::Now(); }
  void SleepFor(absl::Duration d) override { absl::SleepFor(d); }
  // A process-wide instance, for the composition root.
  static RealClock& Get() {
    static RealClock* clock = new RealClock();
    return *clock;
  }
};

class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(absl::Time start = absl::FromUnixSeconds(1'767'225'600))  // 2026-01-01
      : now_(start) {}

  absl::Time TimeNow() override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void SleepFor(absl::Duration d) override { Advance(d); }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    absl::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

// Real time shifted by an offset that can be moved forward: the emulator binary's clock, so a
// test or demo can make an hour pass at once through the emulator's admin endpoint.
class OffsetClock final : public Clock {
 public:
  absl::Time TimeNow() override {
    absl::MutexLock lock(&mu_);
    return absl::Now() + offset_;
  }
  void SleepFor(absl::Duration d) override { absl::SleepFor(d); }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    offset_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Duration offset_ ABSL_GUARDED_BY(mu_);
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_CLOCK_H_
