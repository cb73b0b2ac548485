package controlplane

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/metadata"

	"minimesh/certs"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// The CA keys at rest.
//
// meshd keeps its CA state (certs.CA.MarshalState: PEM certificates and
// PKCS#8 private keys) in the data file's meta bucket. With --ca-key-file
// that value is sealed with AES-256-GCM instead, so the data file and every
// backup of it (meshctl backup copies the file) hold the keys encrypted:
//
//	magic "MMCASEAL" | version 1 | key id (8 bytes) | len(td) (1 byte) | td | nonce (12 bytes) | ciphertext and tag
//
// The associated data is caStatePurpose followed by everything before the
// nonce, so the version, the key id and the trust domain are bound to the
// ciphertext, and a sealed value cannot be replayed as anything else. The
// AES key and the key id are derived from the file's 32 bytes with HKDF-
// SHA256 under separate labels; the id tells a wrong key file from a damaged
// data file and is safe to log. Each write draws a fresh random nonce.
//
// One function writes the state (saveCA) and one reads it (loadCA); every
// path that stores or loads the CA goes through them: first start, import,
// every rotation step, restore's check, and `meshd operator` (LoadCAState).
//
// A data file whose CA is sealed needs the key file at every start: meshd
// refuses to start without it (there is no way back to a plain state short
// of the key file). A plain data file started with a key file is sealed in
// place at that start, and rewritten (compacted) so that no freed page still
// holds the plain keys; backups taken before stay in clear.

// caKeySize is the exact length of --ca-key-file.
const caKeySize = 32

const (
	caStateMagic   = "MMCASEAL"
	caStateVersion = 1
	caKeyIDSize    = 8
	caNonceSize    = 12
	caStatePurpose = "minimesh ca state v1\x00"
	// storeMetaBucket is the store's bucket of meta values (Store.Meta);
	// sealDataFile fails rather than guess if it finds no CA state there.
	storeMetaBucket = "meta"
)

var (
	// ErrCAKeyRequired: the data file's CA is encrypted and no key file was given.
	ErrCAKeyRequired = errors.New("the data file's CA keys are encrypted: start meshd with --ca-key-file, the file they were encrypted with")
	// ErrCAKeyMismatch: the key file given does not decrypt the data file's CA.
	ErrCAKeyMismatch = errors.New("the CA key file does not decrypt this data file's CA")
	// ErrTrustDomainMismatch: the stored CA (its sealed state names its
	// trust domain, authenticated) is of another trust domain.
	ErrTrustDomainMismatch = errors.New("trust domain mismatch")
)

// CAKey encrypts the CA state at rest. It prints and logs as its id only.
type CAKey struct {
	aead cipher.AEAD
	id   [caKeyIDSize]byte
}

// ID is the key's public fingerprint (hex): it identifies the key file,
// and reveals nothing of it.
func (k *CAKey) ID() string { return hex.EncodeToString(k.id[:]) }

// String, GoString, Format and LogValue never show the key.
func (k *CAKey) String() string   { return "CAKey(" + k.ID() + ")" }
func (k *CAKey) GoString() string { return k.String() }

// Format implements fmt.Formatter: every verb prints String.
func (k *CAKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// LogValue implements slog.LogValuer.
func (k *CAKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// ReadCAKeyFile reads meshd's --ca-key-file: a regular file (not a
// symlink) of mode 0600 or stricter holding exactly 32 random bytes. Its
// errors name the file and the reason, never its content.
func ReadCAKeyFile(path string) (*CAKey, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("controlplane: --ca-key-file %s: %s", path, fmt.Sprintf(format, a...))
	}
	if path == "" {
		return nil, errors.New("controlplane: --ca-key-file: empty path")
	}
	li, err := os.Lstat(path)
	if err != nil {
		return nil, bad("cannot read it: %v", osReason(err))
	}
	if err := checkKeyFileInfo(li); err != "" {
		return nil, bad("%s", err)
	}
	// O_NOFOLLOW: a symlink swapped in after the Lstat is refused; fstat
	// checks the file actually opened.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, bad("cannot open it: %v", osReason(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, bad("cannot stat it: %v", osReason(err))
	}
	if err := checkKeyFileInfo(fi); err != "" {
		return nil, bad("%s", err)
	}
	if !os.SameFile(li, fi) {
		return nil, bad("it changed while being opened")
	}
	raw := make([]byte, caKeySize+1)
	defer clear(raw)
	n, err := io.ReadFull(f, raw)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, bad("cannot read it: %v", osReason(err))
	}
	const how = "make one with: head -c 32 /dev/urandom > FILE && chmod 600 FILE"
	if n != caKeySize {
		more := ""
		if n > caKeySize {
			more = " or more"
		}
		return nil, bad("it holds %d bytes%s; it must hold exactly %d random bytes (%s)", n, more, caKeySize, how)
	}
	if reason := notRandom(raw[:caKeySize]); reason != "" {
		return nil, bad("its %d bytes do not look random (%s); %s", caKeySize, reason, how)
	}
	return newCAKey(raw[:caKeySize])
}

// osReason is an os error without the path (the message names it once).
func osReason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkKeyFileInfo is the type and mode rule for the key file.
func checkKeyFileInfo(fi fs.FileInfo) string {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return "it is a symlink; give the key file itself"
	case !fi.Mode().IsRegular():
		return fmt.Sprintf("it is not a regular file (%v)", fi.Mode().Type())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Sprintf("it has mode %04o: it must be readable by its owner only (chmod 600)", fi.Mode().Perm())
	}
	return ""
}

// notRandom catches the usual mistakes: a passphrase or hex text typed
// into the file, or a zeroed one. 32 random bytes are all printable ASCII
// with probability (95/256)^32 < 2e-14, and take fewer than 17 distinct
// values with probability < 1e-13.
func notRandom(b []byte) string {
	var seen [256]bool
	distinct, printable := 0, 0
	for _, c := range b {
		if !seen[c] {
			seen[c] = true
			distinct++
		}
		if c >= 0x20 && c < 0x7f {
			printable++
		}
	}
	switch {
	case printable == len(b):
		return "they are all printable text"
	case distinct < 17:
		return fmt.Sprintf("only %d distinct byte values", distinct)
	}
	return ""
}

func newCAKey(raw []byte) (*CAKey, error) {
	aesKey, err := hkdf.Key(sha256.New, raw, nil, "minimesh ca state aes-256-gcm v1", 32)
	if err != nil {
		return nil, fmt.Errorf("controlplane: ca key: %w", err)
	}
	defer clear(aesKey)
	id, err := hkdf.Key(sha256.New, raw, nil, "minimesh ca key id v1", caKeyIDSize)
	if err != nil {
		return nil, fmt.Errorf("controlplane: ca key: %w", err)
	}
	block, err := aes.NewCipher(aesKey)
	if err != nil {
		return nil, fmt.Errorf("controlplane: ca key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("controlplane: ca key: %w", err)
	}
	k := &CAKey{aead: aead}
	copy(k.id[:], id)
	return k, nil
}

// caStateSealed says whether a stored CA state is sealed.
func caStateSealed(stored []byte) bool { return bytes.HasPrefix(stored, []byte(caStateMagic)) }

// sealCAState encrypts a CA state for the meta bucket.
func sealCAState(key *CAKey, td spiffeid.TrustDomain, state []byte) ([]byte, error) {
	name := td.Name()
	if name == "" || len(name) > 255 {
		return nil, fmt.Errorf("controlplane: seal CA state: trust domain %q", name)
	}
	out := make([]byte, 0, len(caStateMagic)+2+caKeyIDSize+len(name)+caNonceSize+len(state)+key.aead.Overhead())
	out = append(out, caStateMagic...)
	out = append(out, caStateVersion)
	out = append(out, key.id[:]...)
	out = append(out, byte(len(name)))
	out = append(out, name...)
	header := len(out)
	nonce := make([]byte, caNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("controlplane: seal CA state: %w", err)
	}
	out = append(out, nonce...)
	return key.aead.Seal(out, nonce, state, caStateAD(out[:header])), nil
}

func caStateAD(header []byte) []byte {
	return append([]byte(caStatePurpose), header...)
}

// openCAState returns the plain CA state of a stored one (sealed or not)
// and the trust domain a sealed one was sealed for. stored is read as
// hostile: a backup handed to restore may come from anywhere.
func openCAState(key *CAKey, stored []byte) (state []byte, sealedFor string, err error) {
	if !caStateSealed(stored) {
		return stored, "", nil
	}
	rest := stored[len(caStateMagic):]
	if len(rest) < 1+caKeyIDSize+1 {
		return nil, "", errors.New("the encrypted CA state is truncated")
	}
	if v := rest[0]; v != caStateVersion {
		return nil, "", fmt.Errorf("the CA state is encrypted in format version %d; this meshd reads version %d", v, caStateVersion)
	}
	id := rest[1 : 1+caKeyIDSize]
	tdLen := int(rest[1+caKeyIDSize])
	rest = rest[1+caKeyIDSize+1:]
	if len(rest) < tdLen+caNonceSize {
		return nil, "", errors.New("the encrypted CA state is truncated")
	}
	td := string(rest[:tdLen])
	header := stored[:len(stored)-len(rest)+tdLen]
	nonce := rest[tdLen : tdLen+caNonceSize]
	ct := rest[tdLen+caNonceSize:]
	if key == nil {
		return nil, td, fmt.Errorf("%w (key id %x)", ErrCAKeyRequired, id)
	}
	if !bytes.Equal(id, key.id[:]) {
		return nil, td, fmt.Errorf("%w: the key file's id is %s, the CA was encrypted with key id %x", ErrCAKeyMismatch, key.ID(), id)
	}
	state, err = key.aead.Open(nil, nonce, ct, caStateAD(header))
	if err != nil {
		return nil, td, fmt.Errorf("%w: the key ids match (%s), so the stored CA state is damaged or was altered", ErrCAKeyMismatch, key.ID())
	}
	return state, td, nil
}

// loadCA is the one reader of the stored CA: nil when st holds none.
// sealed says whether the stored state was encrypted.
func loadCA(st *store.Store, key *CAKey, cfg certs.CAConfig) (ca *certs.CA, sealed bool, err error) {
	stored, err := st.Meta(caMetaKey)
	if err != nil || stored == nil {
		return nil, false, err
	}
	return loadCAValue(stored, key, cfg)
}

// loadCAValue is loadCA of a stored value (a backup's, before it is
// restored).
func loadCAValue(stored []byte, key *CAKey, cfg certs.CAConfig) (ca *certs.CA, sealed bool, err error) {
	state, td, err := openCAState(key, stored)
	if err != nil {
		return nil, true, err
	}
	defer clear(state)
	sealed = caStateSealed(stored)
	if sealed && cfg.TrustDomain.IsZero() {
		// The trust domain the state was sealed for is authenticated: the
		// root must be of it.
		if cfg.TrustDomain, err = spiffeid.TrustDomainFromString(td); err != nil {
			return nil, true, fmt.Errorf("the encrypted CA state names trust domain %q: %w", td, err)
		}
	}
	if sealed && td != cfg.TrustDomain.Name() {
		return nil, true, fmt.Errorf("%w: the CA state was encrypted for trust domain %q, not %q", ErrTrustDomainMismatch, td, cfg.TrustDomain.Name())
	}
	ca, err = certs.LoadCA(cfg, state)
	if err != nil {
		return nil, sealed, err
	}
	return ca, sealed, nil
}

// caStateValue is what saveCA stores for ca: its state, sealed when key is set.
func caStateValue(key *CAKey, ca *certs.CA) ([]byte, error) {
	state, err := ca.MarshalState()
	if err != nil {
		return nil, err
	}
	if key == nil {
		return state, nil
	}
	defer clear(state)
	return sealCAState(key, ca.TrustDomain(), state)
}

// saveCA is the one writer of the stored CA: ca's state, sealed when key is
// set. The value is computed before the store transaction.
func saveCA(st *store.Store, key *CAKey, ca *certs.CA) error {
	v, err := caStateValue(key, ca)
	if err != nil {
		return err
	}
	// A leader-only write: every CA change after the first is a rotation
	// step (the singleton), fenced on the election key on etcd.
	return st.UpdateAsLeader(func(tx *store.Txn) error { return tx.SetMeta(caMetaKey, v) })
}

// errCAMoved: the stored CA is no longer the one a step started from.
var errCAMoved = errors.New("controlplane: the stored certificate authority changed")

// swapCA stores ca in place of prev (the stored value the step started
// from), in one transaction that fails with errCAMoved when the store
// holds anything else: any replica may take an operator's rotation step,
// and two racing steps never both commit. asLeader also fences the write
// on the leader's election key (UpdateAsLeader). It returns the stored
// value.
func swapCA(st *store.Store, key *CAKey, prev []byte, ca *certs.CA, asLeader bool) ([]byte, error) {
	v, err := caStateValue(key, ca)
	if err != nil {
		return nil, err
	}
	update := st.Update
	if asLeader {
		update = st.UpdateAsLeader
	}
	err = update(func(tx *store.Txn) error {
		if !bytes.Equal(tx.Meta(caMetaKey), prev) {
			return errCAMoved
		}
		return tx.SetMeta(caMetaKey, v)
	})
	return v, err
}

// createCA stores ca as the first CA, unless the store holds one already
// (another replica created it first): created is false then.
func createCA(st *store.Store, key *CAKey, ca *certs.CA) (created bool, err error) {
	v, err := caStateValue(key, ca)
	if err != nil {
		return false, err
	}
	err = st.Update(func(tx *store.Txn) error {
		created = tx.Meta(caMetaKey) == nil
		if !created {
			return nil
		}
		return tx.SetMeta(caMetaKey, v)
	})
	return created, err
}

// LoadCAState loads the CA meshd keeps in st, for tools that work on a
// stopped meshd's data file (`meshd operator issue`): every load of the CA
// goes through this function (or its unexported twin), so it decrypts the
// state meshd sealed with --ca-key-file. keyFile is that file ("" when
// meshd runs without one); a sealed state without it, or with another key
// file, is refused (errors.Is ErrCAKeyRequired / ErrCAKeyMismatch). A data
// file without a CA is an error. cfg is as for certs.LoadCA; a zero
// TrustDomain is taken from the state. It never writes: a plain state read
// with a key file is sealed at meshd's next start.
func LoadCAState(st *store.Store, keyFile string, cfg certs.CAConfig) (*certs.CA, error) {
	var key *CAKey
	if keyFile != "" {
		var err error
		if key, err = ReadCAKeyFile(keyFile); err != nil {
			return nil, err
		}
	}
	ca, _, err := loadCA(st, key, cfg)
	if err != nil {
		return nil, fmt.Errorf("controlplane: stored CA: %w", err)
	}
	if ca == nil {
		return nil, fmt.Errorf("controlplane: %s holds no certificate authority", st.Path())
	}
	return ca, nil
}

// openStore opens the data file for meshd. With a key, a plain CA state is
// sealed first (migration, see sealDataFile).
func openStore(path string, key *CAKey, td spiffeid.TrustDomain, log *slog.Logger) (*store.Store, error) {
	st, err := store.Open(store.Config{Path: path, Logger: log})
	if err != nil || key == nil {
		return st, err
	}
	stored, err := st.Meta(caMetaKey)
	if err != nil || stored == nil || caStateSealed(stored) {
		if err != nil {
			_ = st.Close()
		}
		return st, err
	}
	ca, err := certs.LoadCA(certs.CAConfig{TrustDomain: td}, stored)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("controlplane: stored CA: %w", err)
	}
	sealed, err := sealCAState(key, ca.TrustDomain(), stored)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, err
	}
	if err := sealDataFile(path, sealed); err != nil {
		return nil, fmt.Errorf("controlplane: encrypting the CA keys of %s: %w (the data file was left as it was)", path, err)
	}
	log.Warn("encrypted the certificate authority's keys in the data file with --ca-key-file; backups taken before hold them in clear",
		"path", path, "ca_key_id", key.ID(), "root_pin", ca.RootPin())
	return store.Open(store.Config{Path: path, Logger: log})
}

// sealDataFile rewrites the data file at path with sealed as its CA state:
// every bucket and value is copied into a new file, the CA state replaced
// on the way, so no page of the new file, used or free, ever held the plain
// keys (setting the value in place would leave them in a freed page, and
// so in every backup). The new file replaces the old one atomically.
func sealDataFile(path string, sealed []byte) (err error) {
	src, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 10 * time.Second, ReadOnly: true})
	if err != nil {
		return err
	}
	defer src.Close()
	tmpf, err := os.CreateTemp(filepath.Dir(path), ".seal-*")
	if err != nil {
		return err
	}
	tmp := tmpf.Name()
	_ = tmpf.Close()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	replaced := false
	err = src.View(func(stx *bolt.Tx) error {
		return dst.Update(func(dtx *bolt.Tx) error {
			return stx.ForEach(func(name []byte, sb *bolt.Bucket) error {
				db, err := dtx.CreateBucket(name)
				if err != nil {
					return err
				}
				var sub func(sb, db *bolt.Bucket, meta bool) error
				sub = func(sb, db *bolt.Bucket, meta bool) error {
					db.FillPercent = 1.0
					if err := db.SetSequence(sb.Sequence()); err != nil {
						return err
					}
					return sb.ForEach(func(k, v []byte) error {
						if v == nil {
							child, err := db.CreateBucket(k)
							if err != nil {
								return err
							}
							return sub(sb.Bucket(k), child, false)
						}
						if meta && string(k) == caMetaKey {
							v, replaced = sealed, true
						}
						return db.Put(k, v)
					})
				}
				return sub(sb, db, string(name) == storeMetaBucket)
			})
		})
	})
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if !replaced {
		return errors.New("the copy found no CA state to replace")
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// caKeyID is the key's id for logs, "" without one.
func (s *Server) caKeyID() string {
	if s.caKey == nil {
		return ""
	}
	return s.caKey.ID()
}

// BackupCAKeysHeader is the response header of AdminService.Backup that says
// whether the backup holds the CA keys encrypted ("encrypted") or in clear
// ("clear"); meshctl backup warns unless it reads "encrypted".
const BackupCAKeysHeader = "minimesh-ca-keys"

// backupHeader is the admin server whose Backup first sends the
// BackupCAKeysHeader (meshd's own flag, which admin cannot know).
type backupHeader struct {
	meshv1.AdminServiceServer
	encrypted bool
}

func (b backupHeader) Backup(req *meshv1.BackupRequest, stream meshv1.AdminService_BackupServer) error {
	v := "clear"
	if b.encrypted {
		v = "encrypted"
	}
	if err := stream.SetHeader(metadata.Pairs(BackupCAKeysHeader, v)); err != nil {
		return err
	}
	return b.AdminServiceServer.Backup(req, stream)
}
