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

var errNotEntry = errors.New("archcheck: the command imports past the library's entry points")

// checkEntry returns one error per direct import of a cmd/... package
// that is in the module and not an entry point.
func checkEntry(graph map[string][]string, allowed []string) []error {
	var errs []error
	for _, from := range sortedKeys(graph) {
		if !match("cmd/...", from) {
			continue
		}
		for _, to := range graph[from] {
			if match("cmd/...", to) || slices.Contains(allowed, to) {
				continue
			}
			errs = append(errs, fmt.Errorf("%w: %s imports %s (allowed: %v)", errNotEntry, from, to, allowed))
		}
	}
	return errs
}
