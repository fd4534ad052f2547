// Package bench is OpenTrack's benchmark harness, what `opentrack bench`
// and `make bench` run. It measures the DESIGN section 8 targets on real
// nodes on loopback, each server in its own process and the harness as
// the client, and compares p2p lookups with an HTTPS+JSON API over the
// same store in the same run:
//
//  1. durable ingest through the admin API (NDJSON batches of 1000, one
//     event per parcel per batch, as a live scan feed posts them) into a
//     store that grows to Parcels x EventsPerParcel events, and the raw
//     store put rate of the same events, read back and appended again;
//  2. disk bytes per event after a full compaction;
//  3. idle RSS of the restarted node;
//  4. single-number track lookups at each concurrency over TCP (Noise,
//     yamux) and QUIC, and batched track (100 numbers a request), with
//     and without verifying every head and chain;
//  5. the same single-number lookups through the HTTPS+JSON baseline
//     (`opentrack bench baseline`, TLS 1.3, HTTP/1.1 keep-alive) over the
//     same store;
//  6. watch delivery lag at WatchRate events/s over WatchParcels watched
//     parcels, from the harness's ingest acknowledgement to the verified
//     update;
//  7. how long a testnet of TestnetCarriers x TestnetPlatforms takes until
//     every platform has an answer from every carrier.
//
// The figures are medians of Rounds rounds where a figure is a rate.
// bench/README.md explains each figure and how to reproduce it.
package bench
