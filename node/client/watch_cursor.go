package client

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/opentrack/opentrack/node/internal/atomicfile"
	"github.com/opentrack/opentrack/protocol"
)

// setCursor moves the cursor held; position publishes it to Cursor,
// which any goroutine may call.
func (w *Watcher) setCursor(c string) {
	w.cursor = c
	w.position.Store(&c)
}

// flush writes the cursor file when it is behind, unless a re-sync is
// due: until then the old cursor is the one a restart must resume from.
func (w *Watcher) flush() error {
	if w.opts.CursorFile == "" || w.resync || w.cursor == w.saved || w.cursor == "" {
		return nil
	}
	if err := writeCursorFile(w.opts.CursorFile, w.cursor); err != nil {
		return err
	}
	w.saved = w.cursor
	return nil
}

// readCursorFile returns the cursor in path, "" when there is no file.
func readCursorFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrCursorFile, err)
	}
	c := strings.TrimSuffix(string(b), "\n")
	if len(c) > protocol.MaxCursorLen {
		return "", fmt.Errorf("%w: %s holds %d bytes, a cursor is at most %d", ErrCursorFile, path, len(c), protocol.MaxCursorLen)
	}
	return c, nil
}

// writeCursorFile replaces path with cursor, so that a crash leaves the
// old cursor or the new one, never a torn or empty file.
func writeCursorFile(path, cursor string) error {
	if err := atomicfile.Write(path, []byte(cursor+"\n"), 0o600); err != nil {
		return fmt.Errorf("%w: %w", ErrCursorFile, err)
	}
	return nil
}
