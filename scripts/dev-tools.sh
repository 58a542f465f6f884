#!/usr/bin/env bash
# Tools the tests use but the platform image does not need: docker-compose (validates docker/compose.yaml
# offline; no Docker engine is needed for `config`). Idempotent; skips with a message when not root.
set -euo pipefail
if command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "dev-tools: install docker-compose (or the docker compose plugin) to validate docker/compose.yaml" >&2
  exit 0
fi
apt-get install -y -q docker-compose >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null; }
echo "dev-tools: installed docker-compose"
