package kubefake

import (
	"encoding/pem"
	"os"
)

func (a *API) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.srv.Certificate().Raw})
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
