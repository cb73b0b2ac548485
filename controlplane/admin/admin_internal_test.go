package admin

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/controlplane/store"
)

// TestStoreStatus: a store error reaches the operator as what it is: etcd
// unreachable is Unavailable, a follower asked for a leader's job is
// FailedPrecondition naming the way out (it was Internal), anything else
// Internal.
func TestStoreStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
		says string
	}{
		{fmt.Errorf("save CA: %w", store.ErrUnavailable), codes.Unavailable, "etcd"},
		{fmt.Errorf("controlplane: activate the new root: %w", store.ErrNotLeader), codes.FailedPrecondition, "meshctl check"},
		{fmt.Errorf("disk on fire"), codes.Internal, "disk on fire"},
	} {
		st := status.Convert(storeStatus(tc.err))
		if st.Code() != tc.code || !strings.Contains(st.Message(), tc.says) {
			t.Errorf("storeStatus(%v) = %v %q, want %v mentioning %q", tc.err, st.Code(), st.Message(), tc.code, tc.says)
		}
	}
}
