#!/usr/bin/env bash
# Install (as root) or check (otherwise) the Debian packages Tessera needs.
#   scripts/system-deps.sh build   — what pip needs to build the pinned wheels (pyscard: swig, libpcsclite)
#   scripts/system-deps.sh test    — plus the real components the test suite drives: pcscd + vpcd,
#                                    opensc, SoftHSMv2, Chromium, systemd (systemd-analyze checks the agent's unit)
# Exit status: 0 when everything is there (or was installed), 1 when something is missing and we
# could not install it (not root) — with the apt-get command to run printed.
set -euo pipefail
level=${1:-build}
build_pkgs=(gcc python3-dev python3-venv swig libpcsclite-dev pkg-config)
test_pkgs=(pcscd vsmartcard-vpcd pcsc-tools opensc softhsm2 chromium systemd)
pkgs=("${build_pkgs[@]}")
[ "$level" = test ] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # On hosts with systemd, installing pcscd enables its socket unit; the tests run their own pcscd.
  command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1 \
    && systemctl stop pcscd.socket pcscd >/dev/null 2>&1 || true
  exit 0
fi
echo "Missing Debian packages: ${missing[*]}" >&2
echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
[ "$level" = test ] && echo "(tests needing them skip unless TESSERA_REQUIRE_SERVICES=1)" >&2
exit 1
