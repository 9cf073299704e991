#!/usr/bin/env bash
# nginx and HAProxy from the distribution's packages, for `make replicas` / `make test-replicas` on a fresh
# machine (Debian/Ubuntu: apt-get; as root or through sudo). Does nothing when both are installed.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
if have nginx && have haproxy; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install nginx and haproxy with your package manager (needed by make replicas / make test-replicas)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
# nginx-light: nginx with the upstream hash, gRPC and HTTP/2 modules and little else (Debian); else nginx.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nginx-light haproxy \
    || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nginx haproxy
