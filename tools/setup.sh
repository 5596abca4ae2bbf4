#!/usr/bin/env bash
# Installs, from Debian's packages, everything Palisade needs to build and test.
# Idempotent: it only calls apt-get when a package is missing. Both README commands call it.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap
  g++
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libre2-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcurl4-openssl-dev libsqlite3-dev
  libcpp-httplib-dev nlohmann-json3-dev zlib1g-dev gzip libtcmalloc-minimal4
  libgoogle-perftools-dev
  python3-grpcio python3-protobuf python3-yaml
  fail2ban
  libsystemd-dev systemd-journal-remote
  curl ca-certificates openssl
  rsyslog rsyslog-openssl
  nginx-light
  prometheus
  clang-14 libclang-rt-14-dev
  crowdsec crowdsec-custom-bouncer crowdsec-firewall-bouncer nftables
  nats-server libnats-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  # crowdsec's postinst registers with the Central API (the network) unless this file is non-empty
  # (README.Debian); the tests only run its Local API on loopback with their own config.
  if [[ " ${missing[*]} " == *" crowdsec "* ]] && [ ! -s /etc/crowdsec/online_api_credentials.yaml ]; then
    $SUDO mkdir -p /etc/crowdsec
    echo "# Palisade: no Central API registration" | $SUDO tee /etc/crowdsec/online_api_credentials.yaml >/dev/null
  fi
  $SUDO apt-get update -qq
  # crowdsec before its bouncers: a bouncer configured first leaves a pending registration that
  # crowdsec's postinst ends with `deb-systemd-invoke start`, which fails where systemd is not
  # running (containers without a policy-rc.d); configured after it, they register with cscli.
  if [[ " ${missing[*]} " == *" crowdsec "* ]]; then
    $SUDO apt-get install -y -qq --no-install-recommends crowdsec >/dev/null
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
