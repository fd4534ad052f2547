package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"

	"github.com/opentrack/opentrack/node/internal/atomicfile"
)

// KeyringFile is the keyring's name in the node repo.
const KeyringFile = "details.keyring"

// Errors. Functions wrap them with %w.
var (
	// ErrNoKeyring means the keyring file does not exist.
	ErrNoKeyring = errors.New("seal: no details keyring")
	// ErrBadKeyring means the keyring file exists but does not parse.
	ErrBadKeyring = errors.New("seal: corrupt details keyring")
	// ErrCorrupt means a sealed record does not open: tampered with,
	// moved from another parcel, or sealed under another keyring.
	ErrCorrupt = errors.New("seal: sealed details do not open")
)

// Never is the bucket day of details kept without retention.
const Never = math.MaxUint32

// MaxRetention bounds the retention, and so how many days ahead of its
// first live day the keyring derives a key: a record naming a day further
// out is corrupt, and costs no derivation.
const MaxRetention = 10 * 366 * 24 * time.Hour

const maxDaysAhead = uint32(MaxRetention/(24*time.Hour)) + 2

// keyring file: magic, version, first live day (BE4), chain key, forever
// key, then SHA-256 of all that, so that a damaged file is refused rather
// than read as other keys.
var keyringMagic = []byte("OTKR")

const (
	keyringVersion = 1
	keyLen         = 32
	keyringBody    = 4 + 1 + 4 + 2*keyLen
	keyringLen     = keyringBody + sha256.Size
)

// Keyring holds the bucket keys. It is safe for concurrent use.
type Keyring struct {
	path string

	mu      sync.Mutex
	day     uint32 // first live day: keys of earlier days are gone
	chain   [keyLen]byte
	forever cipher.AEAD
	rawFor  [keyLen]byte
	buckets map[uint32]cipher.AEAD // derived so far, day ≥ day
}

// Day is the UTC day of t, in days since the Unix epoch.
func Day(t time.Time) uint32 {
	d := t.Unix() / 86400
	if t.Unix() < 0 {
		d = (t.Unix() - 86399) / 86400
	}
	return uint32(max(0, min(d, Never-1)))
}

// CreateKeyring writes a new keyring at path, its first live day that of
// now, mode 0600. It refuses to replace an existing file.
func CreateKeyring(path string, now time.Time) (*Keyring, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("seal: create keyring: %s exists", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("seal: create keyring: %w", err)
	}
	k := &Keyring{path: path, day: Day(now)}
	_, _ = rand.Read(k.chain[:]) // crypto/rand.Read never fails (Go 1.24+)
	_, _ = rand.Read(k.rawFor[:])
	if err := k.write(k.day, &k.chain); err != nil {
		return nil, err
	}
	return k, k.init()
}

// LoadKeyring reads the keyring at path: ErrNoKeyring if there is none,
// ErrBadKeyring if it does not parse.
func LoadKeyring(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoKeyring, path)
	}
	if err != nil {
		return nil, fmt.Errorf("seal: read keyring: %w", err)
	}
	sum := sha256.Sum256(b[:min(len(b), keyringBody)])
	if len(b) != keyringLen || !bytes.Equal(b[:4], keyringMagic) || b[4] != keyringVersion || !hmac.Equal(sum[:], b[keyringBody:]) {
		return nil, fmt.Errorf("%w: %s: not a version %d keyring of %d bytes with a good checksum", ErrBadKeyring, path, keyringVersion, keyringLen)
	}
	k := &Keyring{path: path, day: binary.BigEndian.Uint32(b[5:9])}
	copy(k.chain[:], b[9:9+keyLen])
	copy(k.rawFor[:], b[9+keyLen:keyringBody])
	return k, k.init()
}

func (k *Keyring) init() error {
	var err error
	k.forever, err = newAEAD(k.rawFor[:])
	k.buckets = map[uint32]cipher.AEAD{}
	return err
}

// Path is the keyring's file.
func (k *Keyring) Path() string { return k.path }

// FirstDay is the first day whose key the keyring still holds.
func (k *Keyring) FirstDay() uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.day
}

// Advance destroys the keys of the days before now's: it writes the
// keyring with the chain key of now's day and forgets the older ones. It
// reports whether any key was destroyed.
func (k *Keyring) Advance(now time.Time) (bool, error) {
	today := Day(now)
	k.mu.Lock()
	defer k.mu.Unlock()
	if today <= k.day {
		return false, nil
	}
	next := k.chain
	for d := k.day; d < today; d++ {
		next = step(&next, labelNext)
	}
	if err := k.write(today, &next); err != nil {
		return false, err
	}
	clear(k.chain[:])
	k.chain, k.day = next, today
	for d := range k.buckets {
		if d < today {
			delete(k.buckets, d)
		}
	}
	return true, nil
}

// bucket returns the key that wraps data keys of records expiring on day.
func (k *Keyring) bucket(day uint32) (cipher.AEAD, error) {
	if day == Never {
		return k.forever, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if day < k.day {
		return nil, errGone
	}
	if day-k.day > maxDaysAhead {
		return nil, fmt.Errorf("%w: expiry day %d is %d days past the keyring's first", ErrCorrupt, day, day-k.day)
	}
	if a := k.buckets[day]; a != nil {
		return a, nil
	}
	c := k.chain
	for d := k.day; d < day; d++ {
		c = step(&c, labelNext)
	}
	key := step(&c, labelBucket)
	a, err := newAEAD(key[:])
	if err != nil {
		return nil, err
	}
	k.buckets[day] = a
	return a, nil
}

// errGone is a bucket key the keyring has destroyed; Store maps it to
// store.ErrExpired.
var errGone = errors.New("seal: bucket key destroyed")

var (
	labelNext   = []byte("opentrack details keyring: next day")
	labelBucket = []byte("opentrack details keyring: bucket key")
)

// step is the one-way derivation of the chain: HMAC-SHA256(key, label).
func step(key *[keyLen]byte, label []byte) [keyLen]byte {
	m := hmac.New(sha256.New, key[:])
	m.Write(label)
	var out [keyLen]byte
	m.Sum(out[:0])
	return out
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return cipher.NewGCM(b)
}

// write replaces the keyring file atomically, so that a crash leaves the
// old keyring or the new one and never a torn file.
func (k *Keyring) write(day uint32, chain *[keyLen]byte) error {
	b := make([]byte, 0, keyringLen)
	b = append(b, keyringMagic...)
	b = append(b, keyringVersion)
	b = binary.BigEndian.AppendUint32(b, day)
	b = append(b, chain[:]...)
	b = append(b, k.rawFor[:]...)
	sum := sha256.Sum256(b)
	b = append(b, sum[:]...)
	if err := atomicfile.Write(k.path, b, 0o600); err != nil {
		return fmt.Errorf("seal: write keyring: %w", err)
	}
	return nil
}
