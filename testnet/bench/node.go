package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/testnet/internal/proc"
)

// carrierCode is the benchmark carrier; its numbers are "BENCH" and ten
// digits, its default scheme.
const carrierCode = "BENCH"

// number is the tracking number of parcel i.
func number(i int) string { return fmt.Sprintf("%s%010d", carrierCode, i) }

// initCarrier creates the carrier's repo: TCP and QUIC on loopback
// ports the kernel picks, the admin API likewise, and a track rate limit
// high enough that the policy is evaluated on every request but never
// refuses the harness, which asks from one peer ID what a carrier's many
// platforms would ask together.
func initCarrier(dir string) (*repo.Repo, error) {
	r, err := repo.Init(dir, repo.InitOptions{Carrier: carrierCode, Name: "Benchmark carrier",
		Listen: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}})
	if err != nil {
		return nil, err
	}
	r.Config.Admin.Addr = "127.0.0.1:0"
	r.Config.Policy.TrackRate = 1e9
	r.Config.Policy.TrackBurst = 1e9
	if err := writeConfig(r); err != nil {
		return nil, err
	}
	return r, nil
}

// setCache sets the node's block cache, in MB.
func setCache(r *repo.Repo, mb int) error {
	r.Config.Store.CacheMB = mb
	return writeConfig(r)
}

func writeConfig(r *repo.Repo) error {
	b, err := r.Config.Render()
	if err != nil {
		return err
	}
	return os.WriteFile(r.Path(repo.ConfigFile), b, 0o600)
}

// nodeProc is the carrier node running as its own process, with its
// memory sampled while it runs.
type nodeProc struct {
	*proc.Process
	info *repo.NodeInfo
	id   peer.ID

	mu       sync.Mutex
	peakRSS  int64
	stop     chan struct{}
	stopOnce sync.Once
	sampled  chan struct{}
}

// startProc starts command(args) with its output in dir/logName and
// samples its memory while it runs.
func startProc(command proc.CommandFunc, dir, logName string, args ...string) (*nodeProc, error) {
	p, err := proc.Start(command, dir, logName, args...)
	if err != nil {
		return nil, err
	}
	n := &nodeProc{Process: p, stop: make(chan struct{}), sampled: make(chan struct{})}
	go n.sample()
	return n, nil
}

// waitFile waits until the file at path exists and parse accepts it;
// the process is killed if that does not happen.
func waitFile(ctx context.Context, p *nodeProc, path string, parse func([]byte) error) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		if b, err := os.ReadFile(path); err == nil && parse(b) == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("bench: %s exited: %v (log: %s)", filepath.Base(p.LogPath), p.Err(), p.LogPath)
		case <-ctx.Done():
			_, _ = p.shutdown()
			return fmt.Errorf("bench: no %s: %w (log: %s)", filepath.Base(path), ctx.Err(), p.LogPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startNode runs `opentrack node --repo dir` and waits for its node.json.
func startNode(ctx context.Context, command proc.CommandFunc, dir string) (*nodeProc, error) {
	if err := os.Remove(filepath.Join(dir, repo.NodeInfoFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	n, err := startProc(command, dir, "node.log", "node", "--repo", dir)
	if err != nil {
		return nil, err
	}
	err = waitFile(ctx, n, filepath.Join(dir, repo.NodeInfoFile), func(b []byte) error {
		var info repo.NodeInfo
		if err := json.Unmarshal(b, &info); err != nil {
			return err
		}
		id, err := peer.Decode(info.PeerID)
		if err != nil {
			return err
		}
		n.info, n.id = &info, id
		return nil
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// sample records the highest RSS every 100 ms; VmHWM says the same at
// the end, this keeps it for a node that is killed.
func (n *nodeProc) sample() {
	defer close(n.sampled)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if m, err := n.Memory(); err == nil {
			n.mu.Lock()
			n.peakRSS = max(n.peakRSS, m.Peak, m.RSS)
			n.mu.Unlock()
		}
		select {
		case <-n.stop:
			return
		case <-n.Done():
			return
		case <-t.C:
		}
	}
}

// peak is the highest RSS seen so far, in bytes.
func (n *nodeProc) peak() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.peakRSS
}

// addrs returns the node's address on one transport ("/tcp/", "/quic-v1").
func (n *nodeProc) addrInfo(transport string) (peer.AddrInfo, error) {
	ai := peer.AddrInfo{ID: n.id}
	for _, s := range n.info.Addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return ai, fmt.Errorf("bench: node.json address %q: %w", s, err)
		}
		if strings.Contains(s, transport) {
			a, _ = ma.SplitLast(a) // drop /p2p/<id>
			ai.Addrs = append(ai.Addrs, a)
		}
	}
	if len(ai.Addrs) == 0 {
		return ai, fmt.Errorf("bench: node listens on no %s address: %v", transport, n.info.Addrs)
	}
	return ai, nil
}

// shutdown stops the node cleanly (SIGTERM) and returns its peak RSS.
func (n *nodeProc) shutdown() (int64, error) {
	if m, err := n.Memory(); err == nil {
		n.mu.Lock()
		n.peakRSS = max(n.peakRSS, m.Peak)
		n.mu.Unlock()
	}
	n.stopOnce.Do(func() { close(n.stop) })
	<-n.sampled
	return n.peak(), n.Stop(time.Minute)
}

// dirSize is the bytes of every file under dir.
func dirSize(dir string) (uint64, error) {
	var total uint64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += uint64(info.Size())
		return nil
	})
	return total, err
}
