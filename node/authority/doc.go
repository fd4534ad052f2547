// Package authority is the registry authority's workspace: the anchor key
// that signs registry editions, and a draft of the next edition that the
// authority edits before signing it. `opentrack registry` is a thin shell
// over it; everything the command does can be done from Go.
//
// A workspace is a directory:
//
//	<name>.key   the authority's Ed25519 key, PKCS#8 PEM, mode 0600.
//	             Keep the directory offline: whoever holds this key
//	             decides which keys sign for every carrier.
//	<name>.pub   its public key, PEM "PUBLIC KEY": the trust anchor that
//	             nodes are given with `opentrack init --trust`.
//	draft.json   the carriers of the next edition, the seq of the last
//	             signed one and the default validity (see Draft).
//
// Editing the draft never publishes anything. Sign turns the draft into
// a protocol.Registry, validates it as a receiving node would, signs it
// and writes the COSE_Sign1 file that nodes install. Keys rotate by adding
// a second key to a carrier with an overlapping window, and are revoked by
// removing them (spec section 5.11).
//
// A workspace is meant for one operator at a time: two processes editing
// or signing the same directory at once can lose an edit.
package authority
