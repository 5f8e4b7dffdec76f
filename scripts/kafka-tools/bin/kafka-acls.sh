#!/usr/bin/env bash
# Stand-in for Kafka's kafka-acls.sh (see ../kafka_tools.py): runs `riptide acl add|remove|list`.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# confluent-kafka comes from the repo's .venv (scripts/setup-test-deps) unless RIPTIDE_PYTHON says otherwise.
PY="${RIPTIDE_PYTHON:-$HERE/../../../.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" "$HERE/../kafka_tools.py" acls "$@"
