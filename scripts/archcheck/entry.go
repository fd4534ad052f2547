package main

import (
	"errors"
	"fmt"
	"slices"
)

// entryPoints are what the command may import from the module, directly:
// the library's entry points (a carrier node, a platform, the admin API's
// client, the gateway, the registry authority, the repo on disk, key
// files, the testnet and the bench) and the wire types. Everything else
// (host, client, discovery, the stores, ingest, service, policy) it
// reaches through them, so that the command stays flags and printing.
var entryPoints = []string{
	"node", "node/platform", "node/admin", "node/gateway", "node/authority", "node/repo",
	"node/keyfile", "node/version", "protocol", "testnet", "testnet/bench",
}

// testnetEntryPoints are what the testnet drives its nodes through: it
// runs carriers and platforms as a user of the library would. (The bench,
// testnet/bench, also measures the bare store and a baseline over it, so
// it reaches the store directly.)
var testnetEntryPoints = []string{
	"node", "node/platform", "node/admin", "node/repo", "node/keyfile", "protocol",
	"protocol/numbertest", "internal/options", "testnet/internal/proc",
}

// entry says which packages from may import, directly, of the module's.
type entry struct {
	From    string
	Allowed []string
}

var entries = []entry{{"cmd/...", entryPoints}, {"testnet", testnetEntryPoints}}

var errNotEntry = errors.New("archcheck: imports past the library's entry points")

// checkEntry returns one error per direct import, by a package an entry
// names, of a package of the module the entry does not allow.
func checkEntry(graph map[string][]string, entries []entry) []error {
	var errs []error
	for _, from := range sortedKeys(graph) {
		for _, e := range entries {
			if !match(e.From, from) {
				continue
			}
			for _, to := range graph[from] {
				if match(e.From, to) || slices.Contains(e.Allowed, to) {
					continue
				}
				errs = append(errs, fmt.Errorf("%w: %s imports %s (allowed: %v)", errNotEntry, from, to, e.Allowed))
			}
		}
	}
	return errs
}
