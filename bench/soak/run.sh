#!/usr/bin/env bash
# make soak: the resilience suite in its long form, then every Fuzz target
# for a bounded time. Prints a table of what ran and a last line
# "N passed, N failed". Short versions of the same tests run in make test.
set -uo pipefail
cd "$(dirname "$0")/../.."
FUZZTIME=${FUZZTIME:-30s}
export MINIMESH_SOAK=1

rows=()
pass=0
fail=0
step() { # name command...
	local name=$1
	shift
	local start=$SECONDS
	if "$@" >"/tmp/soak-$$.log" 2>&1; then
		rows+=("$(printf '%-58s %-6s %5ss' "$name" PASS $((SECONDS - start)))")
		pass=$((pass + 1))
	else
		rows+=("$(printf '%-58s %-6s %5ss' "$name" FAIL $((SECONDS - start)))")
		fail=$((fail + 1))
		tail -n 30 "/tmp/soak-$$.log"
	fi
}

step "rotation under load (all three root phases)" go test -count=1 -timeout 30m -run 'TestRootRotationUnderLoad|TestRotationDropsNoRequest' ./e2e
step "meshd down 10 minutes under traffic" go test -count=1 -timeout 30m -run TestMeshdOutageUnderTraffic ./e2e
step "meshd restarted 40 times under traffic (discovery only)" go test -count=1 -timeout 30m -run TestMeshdRestartsCostNoRequest ./e2e
step "three meshd replicas: leader killed, rolled, rotation across a kill (x5)" go test -count=5 -timeout 30m -run 'TestLeaderKilledLosesNothing|TestRollingRestartOfReplicas|TestRotationSurvivesLeaderKill' ./e2e
step "SIGKILL of meshd in a loop of writes" go test -count=3 -timeout 30m -run TestSIGKILLLosesNoAcknowledgedApply ./controlplane
step "identity matrix at a proxy and at meshd" go test -count=1 -timeout 10m -run TestIdentityMatrix ./e2e
step "revocation, denial, stale proxies" go test -count=1 -timeout 10m -run 'TestRevokeAndDeny|TestStaleProxiesAreForgotten' ./e2e

# fuzz runs one Fuzz target for FUZZTIME. Go 1.26's fuzz coordinator can
# fail a target with a bare "context deadline exceeded" at the end of a
# duration budget on a loaded machine, having found nothing
# (go.dev/issue/75804, fixed in Go 1.27): such a run, with no new crasher
# in the package's testdata/fuzz, is run once more; a second one fails.
fuzz() { # pkg func
	local pkg=$1 func=$2 log
	log=$(mktemp)
	for try in 1 2; do
		if go test -run '^$' -fuzz "^${func}\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
			cat "$log"
			rm -f "$log"
			return 0
		fi
		if [ "$try" = 1 ] && grep -q 'context deadline exceeded' "$log" &&
			! grep -q 'Failing input written' "$log"; then
			echo "== $func: bare deadline at the end of the budget (go.dev/issue/75804), running again"
			continue
		fi
		break
	done
	cat "$log"
	rm -f "$log"
	return 1
}

# Every Fuzz target, each for FUZZTIME; new crashers land in the package's
# testdata/fuzz and run as regression tests in make test from then on.
while IFS=: read -r file func; do
	pkg=./$(dirname "$file")
	step "fuzz $pkg $func ($FUZZTIME)" fuzz "$pkg" "$func"
done < <(grep -rl --include='*_test.go' -E '^func Fuzz' . | sort | while read -r f; do
	grep -oE '^func Fuzz[A-Za-z0-9_]+' "$f" | sed "s#^func #${f#./}:#"
done)

echo
printf '%-58s %-6s %6s\n' STEP RESULT TIME
for r in "${rows[@]}"; do echo "$r"; done
rm -f "/tmp/soak-$$.log"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
