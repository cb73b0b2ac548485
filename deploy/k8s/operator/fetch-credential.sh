#!/usr/bin/env bash
# Copies meshd's operator credential out of its pod into credential/ (mode
# 0600), from which `kubectl apply -k` of this directory makes the
# meshctl-operator Secret. Run it again after meshd re-issues the
# credential (past half its 30-day life, at a restart).
set -euo pipefail
cd "$(dirname "$0")"
NS=${NAMESPACE:-minimesh-system}
DIR=${MESHD_DATA_DIR:-/var/lib/minimesh/meshd}
umask 077
mkdir -p credential
for f in svid.pem svid_key.pem bundle.pem; do
	kubectl -n "$NS" exec deploy/meshd -c meshd -- cat "$DIR/operator/$f" >"credential/$f.tmp"
	mv "credential/$f.tmp" "credential/$f"
done
echo "wrote $(pwd)/credential; now: kubectl apply -k $(pwd)"
