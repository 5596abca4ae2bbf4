// A credential kept out of every log line, metric and error message: Secret has no stream
// operator and no implicit conversion, so it cannot be formatted by accident. Only the HTTP
// layer reads value().
#ifndef PALISADE_SERVICES_CLOUDFLARE_SECRET_H_
#define PALISADE_SERVICES_CLOUDFLARE_SECRET_H_

#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace palisade {

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  const std::string& value() const { return value_; }
  bool empty() const { return value_.empty(); }

 private:
  std::string value_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLOUDFLARE_SECRET_H_
