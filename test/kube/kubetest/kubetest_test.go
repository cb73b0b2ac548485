package kubetest

import "testing"

func TestStart(t *testing.T) {
	s := Start(t)
	t.Logf("host %s", s.Config.Host)
}
