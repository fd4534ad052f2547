// Package seal keeps parcel details encrypted at rest and erases them
// when their retention passes, on any store backend.
//
// Store wraps a backend. Each parcel's details are sealed with a data key
// of their own (AES-256-GCM, bound to the parcel's number and genesis, so
// that a record moved to another parcel does not open), and the data key
// is wrapped with the bucket key of the parcel's expiry day. The bucket
// keys come from a Keyring, a small file in the node repo, outside the
// store: erasing a day's key makes every record that expires that day
// unreadable in every copy of the store, backups and compaction leftovers
// included.
//
// The keyring holds one chain key, that of its first live day. The key of
// each later day is derived from it by a one-way step (HMAC-SHA256), and
// Advance replaces it with the next day's, so no key of a past day can be
// computed again. Replicas that share one database share the keyring file
// and derive the same keys without talking to each other. A copy of the
// keyring taken on day D still opens every record that expires on or
// after D: keep it out of store backups.
//
// A parcel expires Retention after the ingest of its last event, at the
// end of that UTC day. A later event moves the expiry, and the same batch
// re-wraps the data key under the new day; the ciphertext is unchanged.
package seal
