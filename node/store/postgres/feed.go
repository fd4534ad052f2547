package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opentrack/opentrack/node/store"
)

// channel is the NOTIFY channel of this store's feed. It carries the
// store id, so that stores in other schemas of one database do not wake
// each other.
func (s *Store) channel() string { return "opentrack_feed_" + s.id }

// Feed implements store.Store. Positions are taken under a row lock and
// committed in order, so every position up to the committed tail is
// readable and none below it can appear later; see doc.go.
func (s *Store) Feed(ctx context.Context, after uint64, limit int) ([]store.FeedEntry, error) {
	if err := s.enter("feed"); err != nil {
		return nil, err
	}
	defer s.leave()
	// Every watch subscription reads the feed after each wake-up, so the
	// common case is one query. It needs no upper bound: the committed
	// positions are always 1..tail, so whatever rows it sees above the
	// cursor are consecutive, other replicas' included. The database's
	// tail is asked for only when the cursor is beyond what this store
	// has heard of (another replica's, or one never issued).
	if after > s.signal.Tail() {
		tail, err := s.feedTail(ctx)
		if err != nil {
			return nil, err
		}
		if after > tail {
			return nil, fmt.Errorf("postgres: feed after %d (tail %d): %w", after, tail, store.ErrUnknownCursor)
		}
	}
	lim := int64(limit)
	if limit <= 0 {
		lim = 1<<63 - 1
	}
	rows, err := s.pool.Query(ctx, `SELECT pos, parcel_id, number, from_seq, to_seq FROM ot_feed
		WHERE pos > $1 ORDER BY pos LIMIT $2`, int64(after), lim)
	if err != nil {
		return nil, wrap("feed", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.FeedEntry, error) {
		var pos, parcelID, from, to int64
		var e store.FeedEntry
		err := row.Scan(&pos, &parcelID, &e.Number, &from, &to)
		e.Pos, e.ParcelID, e.FromSeq, e.ToSeq = uint64(pos), uint64(parcelID), uint64(from), uint64(to)
		return e, err
	})
	if err != nil {
		return nil, wrap("feed", err)
	}
	if len(out) > 0 {
		s.signal.Advance(out[len(out)-1].Pos)
	}
	return out, nil
}

// feedTail reads the committed feed tail and tells the signal about it.
func (s *Store) feedTail(ctx context.Context) (uint64, error) {
	var tail int64
	if err := s.pool.QueryRow(ctx, `SELECT feed_tail FROM ot_meta WHERE singleton = 1`).Scan(&tail); err != nil {
		return 0, wrap("feed tail", err)
	}
	s.signal.Advance(uint64(tail))
	return uint64(tail), nil
}

// FeedTail implements store.Store: the database's tail, which takes in
// other replicas' appends.
func (s *Store) FeedTail(ctx context.Context) (uint64, error) {
	if err := s.enter("feed tail"); err != nil {
		return 0, err
	}
	defer s.leave()
	return s.feedTail(ctx)
}

// WaitFeed implements store.Store. It wakes on this store's appends at
// once, on other replicas' within a notification's delivery, or, without
// notifications, within PollInterval.
func (s *Store) WaitFeed(ctx context.Context, after uint64) error {
	if after > s.signal.Tail() {
		// A cursor from another replica may be ahead of what this one
		// has heard of: ask the database before calling it unknown.
		if err := s.enter("wait feed"); err != nil {
			return err
		}
		_, err := s.feedTail(ctx)
		s.leave()
		if err != nil {
			return err
		}
	}
	if err := s.signal.Wait(ctx, after); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// follow keeps the signal up to date with other replicas' appends until
// ctx ends: it listens on the store's channel and, whenever a
// notification does not come within PollInterval or the listening
// connection is lost, reads the tail instead.
func (s *Store) follow(ctx context.Context) {
	defer close(s.followed)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil && !s.opts.DisableNotify {
			conn = s.listen(ctx)
		}
		if conn == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.opts.PollInterval):
			}
			s.poll(ctx)
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, s.opts.PollInterval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err == nil {
			if tail, perr := strconv.ParseUint(n.Payload, 10, 64); perr == nil {
				s.signal.Advance(tail)
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if conn.IsClosed() {
			conn = nil
		}
		s.poll(ctx)
	}
}

// listen opens the connection that LISTENs on the store's channel, or
// returns nil when the database cannot be reached. A notification sent
// before LISTEN took effect is never delivered, so it polls once after.
func (s *Store) listen(ctx context.Context) *pgx.Conn {
	cctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil
	}
	// The channel holds the store id, read from the database: quoted as
	// an identifier, not pasted.
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{s.channel()}.Sanitize()); err != nil {
		_ = conn.Close(context.Background())
		return nil
	}
	s.poll(ctx)
	return conn
}

// poll reads the tail; a failure is left to the next round. It needs no
// enter: Close stops the follower before it closes the pool.
func (s *Store) poll(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, s.opts.PollInterval)
	defer cancel()
	_, _ = s.feedTail(pctx)
}

// ID implements store.Store: the id kept in the database, so that all
// replicas on it share it and a cursor from one is good on another.
func (s *Store) ID() string { return s.id }
