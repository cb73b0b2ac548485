package agent_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/meshctl"
)

// checkReplicasVia runs `meshctl check -o json` against m and returns its
// replica checks by name (status and message).
func checkReplicasVia(t *testing.T, m *controlplanetest.Meshd) map[string][2]string {
	t.Helper()
	var out, errb bytes.Buffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &errb})
	root.SetArgs([]string{"--server", m.Addr, "--credentials", m.OperatorCredentialDir(), "check", "-o", "json"})
	_ = root.Execute() // other checks may fail (no proxies); the replica ones are read below
	var got struct {
		Checks []struct {
			Name, Status, Message string
		} `json:"checks"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("meshctl check -o json: %v\n%s%s", err, out.String(), errb.String())
	}
	res := map[string][2]string{}
	for _, c := range got.Checks {
		switch c.Name {
		case "every replica answers", "a leader is known", "replica caches are current":
			res[c.Name] = [2]string{c.Status, c.Message}
		}
	}
	return res
}

// TestCheckSeesEveryReplica: with two replicas, meshctl check's replica
// checks pass through either (both answer, a leader is known, caches
// current); once one is stopped and its lease gone, "every replica
// answers" fails through the other, naming it.
func TestCheckSeesEveryReplica(t *testing.T) {
	e := startEtcd(t)
	keyFile := caKeyFile(t)
	prefix := "/ha-check/"
	a := replica(t, e, prefix, "a", keyFile, 0)
	b := replica(t, e, prefix, "b", keyFile, 0)
	eventually(t, "the replica checks pass through b", func() bool {
		r := checkReplicasVia(t, b)
		return r["every replica answers"] == [2]string{"ok", "2 replicas"} && r["a leader is known"][0] == "ok" &&
			r["replica caches are current"][0] == "ok"
	})
	if r := checkReplicasVia(t, a); r["every replica answers"][0] != "ok" || r["a leader is known"][0] != "ok" {
		t.Fatalf("replica checks through a: %v", r)
	}
	a.Stop()
	eventually(t, "every replica answers fails through b, naming a", func() bool {
		r := checkReplicasVia(t, b)
		return r["every replica answers"][0] == "error" && strings.Contains(r["every replica answers"][1], "a (") &&
			r["a leader is known"] == [2]string{"ok", "b"}
	})
}
