package meshctl_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
)

func TestOperatorListRevokeAndReservedDeny(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	svid, _, err := certs.LoadSVID(m.OperatorCredentialDir(), spiffeid.RequireTrustDomainFromString("minimesh.local"))
	if err != nil {
		t.Fatal(err)
	}
	serial := svid.Certificates[0].SerialNumber.Text(16)

	out, err := run(t, m, "operator", "list")
	if err != nil {
		t.Fatalf("operator list: %v", err)
	}
	for _, want := range []string{"SERIAL", serial, "operator:meshd-start", svid.Certificates[0].NotAfter.UTC().Format("2006-01-02T15:04:05Z"), "valid (this credential)"} {
		if !strings.Contains(out, want) {
			t.Errorf("operator list lacks %q:\n%s", want, out)
		}
	}
	out, err = run(t, m, "operator", "list", "-o", "json")
	var listed struct {
		Operators []struct{ Serial, IssuedBy, NotAfter string }
	}
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed.Operators) != 1 || listed.Operators[0].Serial != serial || listed.Operators[0].IssuedBy != "operator:meshd-start" || listed.Operators[0].NotAfter == "" {
		t.Errorf("operator list -o json: %v\n%s", err, out)
	}

	// Denying the operator identity used to say "denied" and change nothing.
	_, err = run(t, m, "identity", "deny", "spiffe://minimesh.local/ns/minimesh-system/sa/operator")
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "meshctl operator revoke") {
		t.Errorf("identity deny of the operator: %v, want InvalidArgument naming meshctl operator revoke", err)
	}

	// The only credential: refused without --force, and nothing changes.
	if _, err := run(t, m, "operator", "revoke", serial); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("revoking the last credential: %v, want FailedPrecondition naming --force", err)
	}
	out, err = run(t, m, "operator", "revoke", "--force", "--reason", "laptop lost", serial)
	if err != nil || !strings.Contains(out, serial+" revoked") || !strings.Contains(out, "your next call with it will be refused") || !strings.Contains(out, "0 valid operator credentials left") {
		t.Fatalf("operator revoke --force: %v\n%s", err, out)
	}
	if _, err := run(t, m, "operator", "list"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("operator list with the revoked credential: %v, want Unauthenticated", err)
	}
}
