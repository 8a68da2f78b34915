#!/usr/bin/env bash
# Installs the system packages the build, tests and benchmarks use, on a fresh Debian machine. Idempotent and quick
# when everything is present. Called by .ci/run and, once per machine, by the test projects' build (see
# tests/Directory.Build.targets), so that a plain `dotnet test` works on a fresh machine too.
set -euo pipefail
need=()
command -v setpriv >/dev/null || need+=(util-linux)
command -v useradd >/dev/null || need+=(passwd)
command -v runuser >/dev/null || need+=(util-linux)
command -v gdb >/dev/null || need+=(gdb)         # native stacks in the watchdog's reports
# libsharedstore.so (NativeAOT links with gcc and zlib), the C samples and tests, their valgrind run, and the Python
# package's tests (Debian's python3 with pytest and numpy; venv for the offline `pip install` test).
command -v gcc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
command -v valgrind >/dev/null || need+=(valgrind)
[ -e /usr/include/stdio.h ] || need+=(libc6-dev)
[ -e /usr/include/zlib.h ] || need+=(zlib1g-dev)
/usr/bin/python3 -c 'import pytest' 2>/dev/null || need+=(python3-pytest)
/usr/bin/python3 -c 'import numpy' 2>/dev/null || need+=(python3-numpy)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# fio: the device scenarios of tools/SharedStore.Bench measure against it in the same run.
command -v fio >/dev/null || need+=(fio)
# nats-server (2.9.x, with JetStream): the replication tests and bench scenarios start a three-node cluster of it on
# loopback (tests/Shared/Nats/NatsCluster.cs). Debian installs it in /usr/sbin, which a non-root PATH may lack.
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing packages ${need[*]} (run as root to install them)" >&2
  fi
fi
