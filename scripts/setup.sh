#!/usr/bin/env bash
# Set up everything cvo_spark needs on a fresh machine: Java 17, a Python 3.11
# virtualenv in .venv with the package and its test tools. Idempotent and quick when
# nothing changed. The Delta Lake JVM package is fetched by Spark on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${CVO_EXTRAS:-test}"

if ! java -version 2>&1 | grep -qE 'version "(17|21)'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing OpenJDK 17 (Spark 4 needs Java 17 or 21)"
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    echo "setup: error: Java 17 is required (apt-get install openjdk-17-jre-headless)" >&2
    exit 1
  fi
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: error: Python 3.11 is required" >&2; exit 1; }

stamp=".venv/.installed-${extras//,/-}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing cvo_spark[$extras] into .venv (first time takes a few minutes)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[$extras]"
  touch "$stamp"
fi
