// Package keyfile reads and writes the Ed25519 key files of nodes and
// authorities: private keys as PEM "PRIVATE KEY" (PKCS#8) and public
// keys as PEM "PUBLIC KEY" (PKIX), the forms openssl writes. The files
// are part of the operator contract, so these are the only encoders.
package keyfile

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// PEM block types of the two files.
const (
	privateType = "PRIVATE KEY"
	publicType  = "PUBLIC KEY"
)

// Errors. Parse and Read functions wrap them with %w.
var (
	// ErrNotPEM means the data does not start with a PEM block of the
	// type wanted.
	ErrNotPEM = errors.New("keyfile: not a PEM key")
	// ErrNotEd25519 means the block holds a key of another algorithm.
	ErrNotEd25519 = errors.New("keyfile: not an Ed25519 key")
)

// MarshalPrivate encodes key as a PEM "PRIVATE KEY" block (PKCS#8).
func MarshalPrivate(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: privateType, Bytes: der}), nil
}

// MarshalPublic encodes pub as a PEM "PUBLIC KEY" block (PKIX).
func MarshalPublic(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: publicType, Bytes: der}), nil
}

// ParsePrivate decodes the Ed25519 key of a PEM "PRIVATE KEY" block.
func ParsePrivate(b []byte) (ed25519.PrivateKey, error) {
	return parse[ed25519.PrivateKey](b, privateType, x509.ParsePKCS8PrivateKey)
}

// ParsePublic decodes the Ed25519 key of a PEM "PUBLIC KEY" block.
func ParsePublic(b []byte) (ed25519.PublicKey, error) {
	return parse[ed25519.PublicKey](b, publicType, x509.ParsePKIXPublicKey)
}

// ReadPrivate reads a private key file, as ParsePrivate.
func ReadPrivate(path string) (ed25519.PrivateKey, error) {
	return read(path, ParsePrivate)
}

// ReadPublic reads a public key file, as ParsePublic.
func ReadPublic(path string) (ed25519.PublicKey, error) {
	return read(path, ParsePublic)
}

// read parses the file at path, naming it in a parse error.
func read[K any](path string, parse func([]byte) (K, error)) (K, error) {
	var zero K
	b, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("keyfile: %w", err)
	}
	k, err := parse(b)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// parse decodes b's first PEM block, which must be of type typ, with
// parseDER, and checks that the key is a K; text around the block is
// ignored.
func parse[K any](b []byte, typ string, parseDER func([]byte) (any, error)) (K, error) {
	var zero K
	blk, _ := pem.Decode(b)
	if blk == nil {
		return zero, fmt.Errorf("%w: no %q block", ErrNotPEM, typ)
	}
	if blk.Type != typ {
		return zero, fmt.Errorf("%w: a %q block, want %q", ErrNotPEM, blk.Type, typ)
	}
	k, err := parseDER(blk.Bytes)
	if err != nil {
		return zero, fmt.Errorf("keyfile: %w", err)
	}
	key, ok := k.(K)
	if !ok {
		return zero, fmt.Errorf("%w: %T", ErrNotEd25519, k)
	}
	return key, nil
}
