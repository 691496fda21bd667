#!/usr/bin/env bash
# Install the real ops tools the tests run: Prometheus + promtool, Alertmanager (+ amtool), faketime, Chromium, and
# docker-compose (only to validate docker-compose.yml offline; no engine is needed or started).
# Debian packages; idempotent; needs root (or sudo).
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
  || need+=(prometheus-alertmanager)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# libfaketime: an end-to-end test runs a worker with its clock ahead, to a campaign's midnight.
command -v faketime >/dev/null 2>&1 || need+=(faketime)
# Headless Chromium: the live page's end-to-end test drives it (Playwright with its executable_path).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# policy-rc.d 101: install without starting the packaged services (tests start their own on 127.0.0.1)
printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
$sudo chmod +x /usr/sbin/policy-rc.d
trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
