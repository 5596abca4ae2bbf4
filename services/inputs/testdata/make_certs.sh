#!/usr/bin/env bash
# Makes a throwaway test PKI in $1 with Debian's openssl: ca.{pem,key}, a server certificate for
# 127.0.0.1/localhost (server.{pem,key}), a client certificate the CA signed (client.{pem,key})
# and one signed by another CA (stranger.{pem,key}). Test-only: the keys live in the test's
# temporary directory and die with it; nothing is checked in.
set -euo pipefail
dir="$1"
mkdir -p "$dir"
cd "$dir"
days=2
subj() { echo "/CN=$1"; }
ca() {  # name
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -subj "$(subj "palisade test $1")" -keyout "$1.key" -out "$1.pem" 2>/dev/null
}
leaf() {  # name ca ext
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$(subj "$1.palisade.test")" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca
ca other
leaf server ca "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:server.palisade.test
extendedKeyUsage=serverAuth"
leaf client ca "subjectAltName=DNS:client.palisade.test
extendedKeyUsage=clientAuth"
leaf stranger other "subjectAltName=DNS:stranger.palisade.test
extendedKeyUsage=clientAuth"
