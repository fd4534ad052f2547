// Package postgres is the carrier store on PostgreSQL, for a carrier that
// outgrows one machine (DESIGN §6): several node replicas serve one
// carrier from one shared, replicated database that the carrier already
// runs, with no cluster of our own. It implements store.Store and passes
// the conformance suite in storetest, like pebble, the embedded default.
// It speaks the PostgreSQL wire protocol through pgx, and its SQL stays
// within what CockroachDB and YugabyteDB accept (see below).
//
// # Schema
//
// Version 1 (schema.go; Open migrates, or `opentrack migrate`; the
// versions applied are rows of ot_schema, and a database whose version is
// newer than the build's is refused):
//
//	ot_meta       one row: the store id (so that replicas share feed
//	              cursors) and the counters: feed tail, parcels, events
//	ot_numbers    number → its newest parcel; the row an append locks
//	ot_parcels    id → the parcel's head: number, genesis, seq, head CID,
//	              signed head, audience (CBOR), created
//	ot_events     (parcel_id, seq) → event block
//	ot_event_ids  carrier event id → (parcel_id, seq, CID): idempotency
//	ot_feed       pos → (parcel_id, number, from_seq, to_seq)
//	ot_details    parcel_id → personal data (CBOR), apart from the public rows
//	ot_grants     grant id → grant (CBOR), signed grant, revoked time
//	ot_audit      seq → one disclosure or refusal
//	ot_parcel_ids, ot_audit_seqs   sequences for parcel ids and audit seqs
//
// # Indexes, and what each is for
//
// Every hot query is a primary-key lookup or range, so the tables carry
// few secondary indexes, and ingest maintains few:
//
//   - ot_numbers(number): track by number, and the row lock of an append.
//   - ot_parcels(id): the head, by the id ot_numbers or a feed entry gives.
//   - ot_events(parcel_id, seq): a history is one range scan from a seq;
//     the rows of one parcel are adjacent in the index.
//   - ot_event_ids(id): ingest looks up every posted event id before it
//     chains (idempotency), and nearly all are new.
//   - ot_feed(pos): watch reads the feed in position order from a cursor.
//   - ot_grants_issued(issued, id): Grants lists oldest issued first.
//   - ot_audit_peer(peer, seq): the carrier's audit queries by peer, in
//     order. Time filters scan in seq order: audit queries are rare.
//
// # Appends
//
// Append is one transaction, synchronous_commit as the server has it (on
// by default: the commit is durable when Append returns). It locks the
// ot_numbers rows of the batch's numbers (SELECT ... FOR UPDATE, in
// number order, so that two batches cannot deadlock) and then reads their
// heads in a second statement: in READ COMMITTED a statement that waited
// for a lock sees the newest version of the locked row, but the other
// rows of its join as they were when it started. The guards (ParcelID,
// PrevSeq, IfAbsent) are checked against those heads, which no other
// writer can move until this transaction ends; a failed guard is
// store.ErrConflict and writes nothing. A number another writer starts at
// the same time makes the INSERT into ot_numbers wait for it and then
// fail on the key, also ErrConflict; so do serialization failures and
// deadlocks. node/ingest answers ErrConflict by reading the heads again,
// re-chaining and re-signing (10 times on a postgres node), so two
// replicas ingesting the same parcel leave one gap-free, valid chain.
// Events, feed entries and new parcels go in with COPY; event ids, heads,
// numbers and details with one set-based statement each (unnest of
// arrays), pipelined.
//
// # The feed, and why a reader never misses a row
//
// With several writers, positions taken from a sequence commit out of
// order: a writer that took position 7 may commit after one that took 8,
// and a reader that has read 8 and asks for "pos > 8" never sees 7
// (TestNaiveFeedMissesRows shows it on the server). This store
// serializes positions instead: an append takes them last, by
// incrementing feed_tail in the single ot_meta row, and holds that row's
// lock until it commits. The next append's increment waits for the lock
// and so commits after it, and PostgreSQL makes a transaction visible
// before it releases its locks. So commit order is position order, and
// the committed positions are always exactly 1..feed_tail: no gaps (a
// rolled-back append gives its positions back), no stragglers. A reader
// that asks for the rows above its cursor gets consecutive positions,
// whoever wrote them, so Feed is one query and safe with any number of
// writers (TestFeedManyWriters, TestFeedPositionsCommitInOrder).
//
// The cost: appends of all replicas queue on one row for the time from
// their increment to their commit, which is the COPY of the feed rows
// and the commit's WAL flush. Everything else an append does (locks,
// reads, event COPY) runs in parallel. With ingest's batches of 1000
// events that is one short critical section per batch, not per event.
// The alternative the design brief names, reading only below the horizon
// pg_snapshot_xmin(pg_current_snapshot()) with a transaction-id column,
// lets appends commit in parallel but needs PostgreSQL's xid functions,
// which neither CockroachDB nor YugabyteDB has, and its positions have
// gaps, which watch cursors do not expect.
//
// WaitFeed wakes on other replicas' commits through LISTEN/NOTIFY: an
// append calls pg_notify inside its transaction, so the notification goes
// out at commit and only if it commits, carrying the new tail. Each store
// keeps one connection listening on the channel opentrack_feed_<store
// id>, and re-reads the tail whenever PollInterval passes without a
// notification or that connection is lost; so a lost notification delays
// a watcher by at most PollInterval. A cursor ahead of what this replica
// has heard of is checked against the database before it is called
// unknown.
//
// # Measured
//
// BenchmarkVsPebble, one run, the same events for both, PostgreSQL 15 on
// loopback (fsync and synchronous_commit on) on the same two shared
// cores, medians of 5 (scripts/testpg.sh run go test -run '^$' -bench
// VsPebble -benchtime 2s -count 5 ./node/store/postgres/):
//
//	                                  postgres     pebble
//	ingest, batches of 125×8 events   31.8k ev/s   104k ev/s
//	lookups (head + history), c=16     5.6k/s      39.1k/s
//
// A batch spends most of its 30 ms in the server: the COPY of its 1000
// events, the event-id upsert, and the commit's WAL flush. A lookup is two
// round trips (Parcel, then Events). Both are well below what DESIGN §6
// measured for a bare schema (143k ev/s, 20k-27k lookups/s); the
// machine's cores were shared with other work during the run, which
// spread pebble's own figures by ±30%.
//
// # CockroachDB and YugabyteDB
//
// The schema avoids what they lack or do differently: no triggers, stored
// procedures, advisory locks, xid or snapshot functions, partial or
// expression indexes, SERIAL defaults or system columns (xmin, ctid).
// It uses plain tables with primary keys, one secondary index each on two
// small tables, TEXT[] columns, explicit sequences (nextval), INSERT ...
// ON CONFLICT, SELECT ... FOR UPDATE, unnest and COPY FROM STDIN, which
// both accept. On either:
//
//   - set [store] disable_notify = true (Options.DisableNotify): they
//     have no LISTEN/NOTIFY, and replicas then learn of each other's
//     appends by polling the one-row tail every PollInterval (1s);
//   - both run SERIALIZABLE (YugabyteDB: set yb_enable_read_committed or
//     use serializable); the row locks still serialize appends, and
//     serialization failures (40001) come back as ErrConflict, which
//     ingest retries;
//   - the ot_meta row is a deliberate hot spot: every append writes it.
//     That bounds ingest to one batch per round trip to its leaseholder
//     (CockroachDB) or tablet leader (YugabyteDB), so keep ingest batches
//     large; it is the price of a feed that needs no horizon;
//   - sequences are slower there than in PostgreSQL; ids are taken once
//     per batch, in one statement;
//   - events, feed entries and new parcels go in with pgx's COPY, which
//     uses the binary format: check first that the database's version
//     accepts COPY ... FROM STDIN BINARY, as the rest is plain SQL.
//
// This has been run on PostgreSQL 15 only; the notes above come from the
// SQL each database documents, not from a test run.
package postgres
