package protocol

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/multiformats/go-varint"
)

// A frame is an unsigned-varint (LEB128, minimal) length followed by that
// many bytes of one CBOR message. A zero length is not a valid frame.

// AppendFrame appends the frame of msg to dst. It refuses a message above
// max, so a node never sends what its peer must reject.
func AppendFrame(dst, msg []byte, max int) ([]byte, error) {
	if len(msg) > max {
		return dst, fmt.Errorf("%w: %d bytes, cap %d", ErrFrameTooLarge, len(msg), max)
	}
	if len(msg) == 0 {
		return dst, fmt.Errorf("%w: empty message", ErrBadFrame)
	}
	dst = binary.AppendUvarint(dst, uint64(len(msg))) // minimal, like go-varint
	return append(dst, msg...), nil
}

// frameHeadroom is the room MarshalFrame leaves before a message for its
// length, the longest a uvarint can be.
const frameHeadroom = binary.MaxVarintLen64

// MarshalFrame encodes v as one frame in buf, which it resets, and
// returns the frame, valid until buf is used again. It writes the message
// once, where AppendFrame(Marshal(v)) would copy it into the frame: a
// server that answers from one reused buffer allocates nothing per reply.
// It refuses a message above max, as AppendFrame does.
func MarshalFrame(buf *bytes.Buffer, v any, max int) ([]byte, error) {
	var head [frameHeadroom]byte
	buf.Reset()
	buf.Write(head[:])
	if err := encMode.MarshalToBuffer(v, buf); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	b := buf.Bytes()
	n := len(b) - frameHeadroom
	if n > max {
		return nil, fmt.Errorf("%w: %d bytes, cap %d", ErrFrameTooLarge, n, max)
	}
	start := frameHeadroom - binary.PutUvarint(head[:], uint64(n))
	copy(b[start:], head[:frameHeadroom-start])
	return b[start:], nil
}

// WriteFrame writes msg as one frame in a single Write call, because
// stream muxers send each Write as its own packet.
func WriteFrame(w io.Writer, msg []byte, max int) error {
	buf, err := AppendFrame(make([]byte, 0, len(msg)+varint.MaxLenUvarint63), msg, max)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// FrameReader reads frames with a fixed cap from one stream.
type FrameReader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

// NewFrameReader returns a reader that rejects frames above max bytes.
func NewFrameReader(r io.Reader, max int) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 4096), max: max}
}

// Next returns the next frame body. The slice is valid until the next
// call. It returns io.EOF at a clean end between frames; a length above
// the cap fails with ErrFrameTooLarge before any body byte is read.
func (f *FrameReader) Next() ([]byte, error) {
	n, err := varint.ReadUvarint(f.r)
	switch {
	case err == io.EOF:
		return nil, io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("%w: stream ended inside the length prefix", ErrBadFrame)
	case err != nil && (errors.Is(err, varint.ErrOverflow) || errors.Is(err, varint.ErrNotMinimal)):
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	case err != nil:
		return nil, err
	}
	if n > uint64(f.max) {
		return nil, fmt.Errorf("%w: length %d, cap %d", ErrFrameTooLarge, n, f.max)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: zero length", ErrBadFrame)
	}
	if cap(f.buf) < int(n) {
		f.buf = make([]byte, n)
	}
	f.buf = f.buf[:n]
	if _, err := io.ReadFull(f.r, f.buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: stream ended inside a %d-byte frame", ErrBadFrame, n)
		}
		return nil, err
	}
	return f.buf, nil
}

// ReadFrame reads one frame from b, for callers that hold whole buffers
// (test vectors, fuzzing). It returns the body and the bytes after it.
func ReadFrame(b []byte, max int) (body, rest []byte, err error) {
	n, k, err := varint.FromUvarint(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if n > uint64(max) {
		return nil, nil, fmt.Errorf("%w: length %d, cap %d", ErrFrameTooLarge, n, max)
	}
	if n == 0 {
		return nil, nil, fmt.Errorf("%w: zero length", ErrBadFrame)
	}
	if uint64(len(b)-k) < n {
		return nil, nil, fmt.Errorf("%w: %d-byte frame truncated to %d", ErrBadFrame, n, len(b)-k)
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}
