#!/usr/bin/env bash
# Installs the system packages the build, tests and benchmarks use, on a fresh Debian machine. Idempotent and quick
# when everything is present. Called by .ci/run and, once per machine, by the test projects' build (see
# tests/Directory.Build.targets), so that a plain `dotnet test` works on a fresh machine too.
set -euo pipefail
need=()
command -v setpriv >/dev/null || need+=(util-linux)
command -v useradd >/dev/null || need+=(passwd)
# fio: the device scenarios of tools/SharedStore.Bench measure against it in the same run.
command -v fio >/dev/null || need+=(fio)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing packages ${need[*]} (run as root to install them)" >&2
  fi
fi
