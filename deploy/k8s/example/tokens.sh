#!/usr/bin/env bash
# Creates the join-token Secrets the injected pods mount: one token per
# service account, usable by a few pods (each pod bootstraps once; its
# SVID is renewed without the token after that).
set -euo pipefail
USES=${USES:-10}
TTL=${TTL:-24h}
meshctl() { kubectl -n minimesh-system exec meshctl -- meshctl "$@"; }
for sa in api web; do
	out=$(meshctl token create --ns demo --sa "$sa" --ttl "$TTL" --uses "$USES")
	token=$(awk '/^token:/{print $2}' <<<"$out")
	pin=$(awk '/^ca-pin:/{print $2}' <<<"$out")
	kubectl -n demo create secret generic "mesh-token-$sa" \
		--from-literal=token="$token" --from-literal=ca-pin="$pin" \
		--dry-run=client -o yaml | kubectl apply -f -
done
