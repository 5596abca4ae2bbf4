// For tests: the value of a Prometheus counter, summed over its series that carry the given
// labels (all of them when none are given).
// Thread-safety: as prometheus::Registry::Collect.
#ifndef PALISADE_SERVICES_COMMON_METRICS_FOR_TESTS_H_
#define PALISADE_SERVICES_COMMON_METRICS_FOR_TESTS_H_

#include <map>
#include <string>

#include "prometheus/registry.h"

namespace palisade {
namespace testing {

inline double CounterSum(prometheus::Registry& registry, const std::string& name,
                         const std::map<std::string, std::string>& labels = {}) {
  double sum = 0;
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      size_t matched = 0;
      for (const auto& l : m.label) {
        auto want = labels.find(l.name);
        if (want != labels.end() && want->second == l.value) ++matched;
      }
      if (matched == labels.size()) sum += m.counter.value;
    }
  }
  return sum;
}

}  // namespace testing
}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_METRICS_FOR_TESTS_H_
