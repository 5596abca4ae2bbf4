// httplib's task queue with a bounded backlog, for every HTTP server palisaded runs on
// cpp-httplib (the Logpush destination, the bouncer API, /metrics with TLS or auth): `threads`
// workers and at most `queue` accepted connections waiting for one. When the backlog is full the accepting thread waits, so
// further connections wait in the kernel's listen backlog instead of as file descriptors and
// closures in memory (httplib 0.11's ThreadPool queues without a bound: a flood of idle
// connections would grow it without end). On shutdown the workers finish what is queued, as
// ThreadPool does.
//
// Thread-safe: enqueue may be called from any thread (httplib calls it from the accept loop).
#ifndef PALISADE_SERVICES_COMMON_BOUNDED_TASK_QUEUE_H_
#define PALISADE_SERVICES_COMMON_BOUNDED_TASK_QUEUE_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "httplib.h"

namespace palisade {

class BoundedTaskQueue : public httplib::TaskQueue {
 public:
  BoundedTaskQueue(size_t threads, size_t queue) : max_queue_(queue == 0 ? 1 : queue) {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
  }
  ~BoundedTaskQueue() override {
    if (!threads_.empty() && !shutdown_) shutdown();
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    has_room_.wait(lock, [&] { return jobs_.size() < max_queue_ || shutdown_; });
    jobs_.push_back(std::move(fn));
    if (jobs_.size() > most_queued_) most_queued_ = jobs_.size();
    has_job_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    has_job_.notify_all();
    has_room_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }
  // The longest the backlog has been (for tests: never above `queue`).
  size_t most_queued() {
    std::lock_guard<std::mutex> lock(mu_);
    return most_queued_;
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        has_job_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        has_room_.notify_one();
      }
      fn();
    }
  }

  const size_t max_queue_;
  std::mutex mu_;
  std::condition_variable has_job_, has_room_;
  std::deque<std::function<void()>> jobs_;
  size_t most_queued_ = 0;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_BOUNDED_TASK_QUEUE_H_
