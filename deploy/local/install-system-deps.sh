#!/usr/bin/env bash
# Install the system programs llmpulse runs next to Python, from Debian's
# packages, only when something is missing (a second run does nothing):
#   java + maven  the Apache Kafka broker (jars from Maven Central)
#   postgresql    the PostgreSQL server for the trace store and aggregates
#   kcat          an independent Kafka client used by tests and docs
#   prometheus    promtool, which checks and unit-tests the alert rules
#   gcc           compiles the hot Avro readers (schemas/_hot_readers.pyx)
#                 and the metrics store's COPY rows (sinks/_inbox_copy.pyx)
#                 when the virtualenv is built; Python's headers come with
#                 python3-dev when the interpreter is Debian's
set -euo pipefail

missing=()
command -v java >/dev/null || missing+=(default-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v kcat >/dev/null || missing+=(kcat)
command -v promtool >/dev/null || missing+=(prometheus)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
command -v gcc >/dev/null || missing+=(gcc)
python_h="$(${PYTHON:-python3} -c 'import sysconfig; print(sysconfig.get_path("include"))' 2>/dev/null)/Python.h"
[ -f "$python_h" ] || missing+=(python3-dev)

if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "system-deps: installing ${missing[*]} (Debian packages)"
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "system-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
# Debian's postgresql/prometheus packages try to start system services; there is
# no init system in containers and we run our own servers, so that may fail
# harmlessly (policy-rc.d would hide it but is not ours to change).
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "system-deps: done"
