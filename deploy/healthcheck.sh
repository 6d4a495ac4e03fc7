#!/usr/bin/env bash
# Container healthcheck without curl: one HTTP/1.0 GET over bash's /dev/tcp, healthy on status 200.
#   healthcheck                      GET /healthz on the port of HTTP_ADDR (default 8080)
#   healthcheck ADMIN_ADDR /metrics  GET /metrics on the port of ADMIN_ADDR (roles without HTTP_ADDR)
# The listener must accept connections on 127.0.0.1 (bound to 0.0.0.0 or loopback).
set -euo pipefail
var="${1:-HTTP_ADDR}"
path="${2:-/healthz}"
case "$var" in
HTTP_ADDR) addr="${HTTP_ADDR:-0.0.0.0:8080}" ;;
ADMIN_ADDR) addr="${ADMIN_ADDR:-127.0.0.1:9090}" ;;
*)
  echo "healthcheck: unknown address variable $var" >&2
  exit 2
  ;;
esac
port="${addr##*:}"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
read -r -t 3 _ status _ <&3
[ "$status" = 200 ] || {
  echo "healthcheck: GET $path on port $port answered ${status:-nothing}" >&2
  exit 1
}
