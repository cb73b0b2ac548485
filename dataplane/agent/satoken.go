package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxSATokenLen bounds the projected token read (they are about 1 KiB;
// meshd refuses more than 16 KiB).
const maxSATokenLen = 16 << 10

// ErrSAToken: the service-account token file could not be used.
var ErrSAToken = errors.New("agent: service-account token file")

// readSAToken reads the projected service-account token now: the kubelet
// replaces the file before the token expires, so it is read at every use
// and never kept. Its content is never logged or put in an error.
func (a *Agent) readSAToken() (string, error) {
	f, err := os.Open(a.cfg.SATokenFile)
	if err != nil {
		return "", fmt.Errorf("%w (--sa-token-file): %w", ErrSAToken, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSATokenLen+1))
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrSAToken, a.cfg.SATokenFile, err)
	}
	if len(b) > maxSATokenLen {
		return "", fmt.Errorf("%w %s: larger than %d bytes", ErrSAToken, a.cfg.SATokenFile, maxSATokenLen)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%w %s: empty", ErrSAToken, a.cfg.SATokenFile)
	}
	return tok, nil
}
