package seal

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/protocol"
)

// sealedField is the one key under which a backend keeps a sealed record,
// base64 so that it is a valid CBOR text string. It is no detail field,
// so a record from before sealing (its fields in plain text) is told
// apart.
const sealedField = "sealed"

// Backend is a store that Store can wrap.
type Backend interface {
	store.Store
	store.DetailsScanner
}

// Options configure a Store.
type Options struct {
	// Retention is how long details are kept after the ingest of the
	// parcel's last event; they go at the end of that UTC day. 0 keeps
	// them as long as the keyring. At most MaxRetention. Default 0.
	Retention time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger reports sweeps. Default slog.Default().
	Logger *slog.Logger
}

// Store is a store.Store whose details are sealed at rest. Every other
// method is the backend's.
type Store struct {
	store.Store
	scan store.DetailsScanner
	keys *Keyring
	opts Options
}

var _ store.HeadsReader = (*Store)(nil)

// Parcels is the backend's batched head read, or Parcel for each number
// on a backend without one.
func (s *Store) Parcels(ctx context.Context, numbers []string) ([]*store.Parcel, error) {
	if h, ok := s.Store.(store.HeadsReader); ok {
		return h.Parcels(ctx, numbers)
	}
	out := make([]*store.Parcel, len(numbers))
	for i, n := range numbers {
		p, err := s.Store.Parcel(ctx, n)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// Open wraps b with the keyring at path. A missing keyring is created
// only when b holds no sealed details: one that does needs its own
// keyring back, since a new one would open none of them. It destroys the
// keys of the days already past before it returns, or logs why not.
func Open(ctx context.Context, b Backend, path string, o *Options) (*Store, error) {
	opts := Options{}
	if o != nil {
		opts = *o
	}
	if opts.Retention < 0 || opts.Retention > MaxRetention {
		return nil, fmt.Errorf("seal: retention %v outside 0 to %v", opts.Retention, MaxRetention)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	keys, err := LoadKeyring(path)
	switch {
	case errors.Is(err, ErrNoKeyring):
		keys, err = createFor(ctx, b, path, opts.Now())
	case err == nil:
		err = checkOpens(ctx, b, keys, opts.Now())
	}
	if err != nil {
		return nil, err
	}
	s := &Store{Store: b, scan: b, keys: keys, opts: opts}
	if err := s.Sweep(); err != nil {
		// Reads refuse expired details by the clock all the same; a full
		// disk must not keep the node from serving.
		opts.Logger.Error("seal: sweep at start failed; the sweeper tries again", "err", err)
	}
	return s, nil
}

// createFor creates the keyring of a store that has no sealed details.
func createFor(ctx context.Context, b store.DetailsScanner, path string, now time.Time) (*Keyring, error) {
	var sealed uint64
	err := b.EachDetails(ctx, func(id uint64, d protocol.Details) (bool, error) {
		if _, ok := d[sealedField]; ok {
			sealed = id
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("seal: look for sealed details: %w", err)
	}
	if sealed != 0 {
		return nil, fmt.Errorf("%w: %s, and the store holds sealed details (parcel %d and maybe more) that only it opens: restore that file; a new keyring would open none of them", ErrNoKeyring, path, sealed)
	}
	return CreateKeyring(path, now)
}

// checkScan bounds how many records checkOpens looks at for a live one.
const checkScan = 1000

// checkOpens unwraps the data key of the first live sealed record, so
// that a node started with another store's keyring (a replica's made
// afresh, a file mixed up) says so at once rather than at every read.
func checkOpens(ctx context.Context, b store.DetailsScanner, k *Keyring, now time.Time) error {
	seen, today := 0, Day(now)
	var problem error
	err := b.EachDetails(ctx, func(id uint64, d protocol.Details) (bool, error) {
		seen++
		rec, _, err := split(d)
		if err != nil || rec == nil {
			return seen < checkScan, nil
		}
		day, err := recordDay(rec)
		if err != nil || (day != Never && day <= max(today, k.FirstDay())) {
			return seen < checkScan, nil // expired, or about to be by the time the check ends
		}
		if _, err := unwrap(k, rec); err != nil {
			problem = fmt.Errorf("%w: %s does not open the sealed details of parcel %d (%v): it is not this store's keyring; restore the right one",
				ErrBadKeyring, k.Path(), id, err)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("seal: check keyring: %w", err)
	}
	return problem
}

// Keyring is the keyring s seals with.
func (s *Store) Keyring() *Keyring { return s.keys }

// Sweep destroys the keys of the days before today, so that the details
// that expired on them can no longer be read from any copy of the store.
func (s *Store) Sweep() error {
	before := s.keys.FirstDay()
	gone, err := s.keys.Advance(s.opts.Now())
	if err != nil {
		return fmt.Errorf("seal: sweep: %w", err)
	}
	if gone {
		s.opts.Logger.Info("seal: details past retention erased", "keyring", s.keys.Path(), "from", dayString(before), "to", dayString(s.keys.FirstDay()-1))
	}
	return nil
}

// RunSweeper sweeps every interval until ctx ends.
func (s *Store) RunSweeper(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Sweep(); err != nil {
				s.opts.Logger.Error("seal: sweep failed; expired details stay readable until one succeeds", "err", err)
			}
		}
	}
}

func dayString(day uint32) string {
	return time.Unix(int64(day)*86400, 0).UTC().Format(time.DateOnly)
}

// expiry is the bucket day of a parcel whose last event is ingested now.
func (s *Store) expiry() uint32 {
	if s.opts.Retention == 0 {
		return Never
	}
	return Day(s.opts.Now().Add(s.opts.Retention))
}

// Details implements store.Store: the backend's record, opened.
func (s *Store) Details(ctx context.Context, parcelID uint64) (protocol.Details, error) {
	return s.details(ctx, parcelID, nil)
}

// ParcelDetails implements store.ParcelDetailer: Details without reading
// the parcel again.
func (s *Store) ParcelDetails(ctx context.Context, p *store.Parcel) (protocol.Details, error) {
	return s.details(ctx, p.ID, p)
}

// details reads and opens the details of parcelID; p is that parcel, or
// nil to read it.
func (s *Store) details(ctx context.Context, parcelID uint64, p *store.Parcel) (protocol.Details, error) {
	stored, err := s.Store.Details(ctx, parcelID)
	if err != nil {
		return nil, err
	}
	rec, legacy, err := split(stored)
	switch {
	case err != nil:
		return nil, fmt.Errorf("seal: details of parcel %d: %w", parcelID, err)
	case rec == nil && len(legacy) == 0:
		return nil, fmt.Errorf("seal: details of parcel %d: %w", parcelID, store.ErrNotFound)
	case rec == nil:
		return legacy, nil // stored before sealing; sealed at the parcel's next event
	}
	if day, err := recordDay(rec); err == nil && s.expired(day) {
		return nil, fmt.Errorf("seal: details of parcel %d, kept until the end of %s: %w", parcelID, dayString(day), store.ErrExpired)
	}
	if p == nil {
		if p, err = s.Store.ParcelByID(ctx, parcelID); err != nil {
			return nil, fmt.Errorf("seal: details of parcel %d: %w", parcelID, err)
		}
	}
	d, err := s.open(p.Number, p.Genesis, rec)
	if err != nil {
		return nil, fmt.Errorf("seal: details of parcel %d: %w", parcelID, err)
	}
	return d, nil
}

// expired reports whether details expiring on day are past, by the
// clock: a key the sweeper has not destroyed yet opens nothing after its
// day either.
func (s *Store) expired(day uint32) bool {
	return day != Never && day < Day(s.opts.Now())
}

func (s *Store) open(number string, genesis cid.Cid, rec []byte) (protocol.Details, error) {
	day, err := recordDay(rec)
	if err != nil {
		return nil, err
	}
	if s.expired(day) {
		return nil, fmt.Errorf("kept until the end of %s: %w", dayString(day), store.ErrExpired)
	}
	d, err := open(s.keys, binding(number, genesis), rec)
	if errors.Is(err, errGone) {
		return nil, fmt.Errorf("kept until the end of %s: %w", dayString(day), store.ErrExpired)
	}
	return d, err
}

// split parts a stored record into the sealed record and the fields
// stored in plain text before sealing. Blanked fields are dropped.
func split(d protocol.Details) (rec []byte, legacy protocol.Details, err error) {
	for k, v := range d {
		switch {
		case k == sealedField:
			if rec, err = base64.RawStdEncoding.DecodeString(v); err != nil {
				return nil, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
		case v != "":
			if legacy == nil {
				legacy = protocol.Details{}
			}
			legacy[k] = v
		}
	}
	return rec, legacy, nil
}

// peekDay is the expiry day of a base64 sealed record from its first
// eight characters, 0 when they do not decode to a record's header.
func peekDay(b64 string) uint32 {
	var head [6]byte
	if len(b64) < 8 {
		return 0
	}
	if n, err := base64.RawStdEncoding.Decode(head[:], []byte(b64[:8])); err != nil || n != 6 || head[0] != recordVersion {
		return 0
	}
	return binary.BigEndian.Uint32(head[1:headerLen])
}

// hasPlain reports whether d holds fields stored before sealing.
func hasPlain(d protocol.Details) bool {
	for k, v := range d {
		if k != sealedField && v != "" {
			return true
		}
	}
	return false
}

// parcelPlan is one parcel of a batch as Append seals it.
type parcelPlan struct {
	id      uint64 // 0 for a parcel the batch starts
	number  string
	genesis cid.Cid // known when the batch starts the parcel
	add     protocol.Details
	last    int // its last update in the batch
}

// Append implements store.Store. It lays each parcel's new details over
// the stored ones and seals the result, and re-wraps the data key of a
// parcel whose expiry the batch moves, in the batch it hands the backend.
// Stored details are read outside the backend's commit; the update guards
// (ParcelID and PrevSeq) make a batch that read them stale fail with
// ErrConflict.
func (s *Store) Append(ctx context.Context, b *store.Batch) (*store.AppendResult, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	day := s.expiry()
	cur := map[string]*parcelPlan{}
	var plans []*parcelPlan
	var continued []uint64
	for i := range b.Updates {
		u := &b.Updates[i]
		pl := cur[u.Number]
		switch {
		case u.New:
			pl = &parcelPlan{number: u.Number, genesis: u.Events[0].CID}
		case pl == nil || pl.id != u.ParcelID:
			// An update after a New one of its number cannot name the
			// new id; the backend refuses it, whatever we seal.
			pl = &parcelPlan{id: u.ParcelID, number: u.Number}
			continued = append(continued, u.ParcelID)
		}
		if cur[u.Number] != pl {
			cur[u.Number] = pl
			plans = append(plans, pl)
		}
		pl.last = i
		if len(u.Details) > 0 {
			if pl.add == nil {
				pl.add = protocol.Details{}
			}
			maps.Copy(pl.add, u.Details)
		}
	}
	stored, err := s.scan.DetailsOf(ctx, continued)
	if err != nil {
		return nil, fmt.Errorf("seal: read details: %w", err)
	}
	if err := s.genesisOf(ctx, plans, stored); err != nil {
		return nil, fmt.Errorf("seal: read parcels: %w", err)
	}
	out := make(map[int]protocol.Details)
	for _, pl := range plans {
		d, err := s.plan(pl, stored[pl.id], day)
		if err != nil {
			return nil, fmt.Errorf("seal: details of %s: %w", pl.number, err)
		}
		if d != nil {
			out[pl.last] = d
		}
	}
	sealed := &store.Batch{Updates: make([]store.ParcelUpdate, len(b.Updates))}
	for i, u := range b.Updates {
		u.Details = out[i]
		sealed.Updates[i] = u
	}
	return s.Store.Append(ctx, sealed)
}

// genesisOf sets the genesis of each continued parcel whose details the
// batch seals afresh, which binds them: with one batched read where the
// backend has one. A parcel that is not its number's newest is left
// unset, and its update fails its guard.
func (s *Store) genesisOf(ctx context.Context, plans []*parcelPlan, stored map[uint64]protocol.Details) error {
	var need []*parcelPlan
	for _, pl := range plans {
		if pl.id == 0 {
			continue
		}
		if pl.add != nil || hasPlain(stored[pl.id]) {
			need = append(need, pl)
		}
	}
	if len(need) == 0 {
		return nil
	}
	numbers := make([]string, len(need))
	for i, pl := range need {
		numbers[i] = pl.number
	}
	ps, err := s.Parcels(ctx, numbers)
	if err != nil {
		return err
	}
	for i, p := range ps {
		if p != nil && p.ID == need[i].id {
			need[i].genesis = p.Genesis
		}
	}
	return nil
}

// plan returns what the backend is to lay over the parcel's stored
// details, nil for nothing.
func (s *Store) plan(pl *parcelPlan, stored protocol.Details, day uint32) (protocol.Details, error) {
	if pl.add == nil && len(stored) == 1 && peekDay(stored[sealedField]) == day {
		return nil, nil // the common event: sealed details, expiry unmoved
	}
	rec, legacy, err := split(stored)
	if err != nil {
		return nil, err
	}
	if pl.add == nil && legacy == nil {
		if rec == nil {
			return nil, nil
		}
		have, err := recordDay(rec)
		if err != nil || have == day || s.expired(have) {
			return nil, nil // left for Details to report, or gone, or already right
		}
		rec, err = rewrap(s.keys, rec, day)
		if errors.Is(err, errGone) || errors.Is(err, ErrCorrupt) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return protocol.Details{sealedField: base64.RawStdEncoding.EncodeToString(rec)}, nil
	}
	merged := protocol.Details{}
	if pl.id != 0 {
		if !pl.genesis.Defined() {
			return nil, fmt.Errorf("parcel %d is not one of this number: %w", pl.id, store.ErrConflict)
		}
		maps.Copy(merged, legacy)
		if rec != nil {
			have, err := s.open(pl.number, pl.genesis, rec)
			switch {
			case errors.Is(err, store.ErrExpired): // erased: the new fields start afresh
			case err != nil:
				return nil, err
			}
			maps.Copy(merged, have)
		}
	}
	maps.Copy(merged, pl.add)
	rec, err = seal(s.keys, day, binding(pl.number, pl.genesis), merged)
	if err != nil {
		return nil, err
	}
	d := protocol.Details{sealedField: base64.RawStdEncoding.EncodeToString(rec)}
	for k := range legacy {
		d[k] = "" // the plain text goes from the live record
	}
	return d, nil
}
