package bench

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opentrack/opentrack/node/client"
	"github.com/opentrack/opentrack/protocol"
)

// watchResult is what the watch phase measured.
type watchResult struct {
	events, delivered  int
	rate               float64
	p50, p99, max      time.Duration
	fromPostP99        time.Duration
	unverified, missed int
	nodeCPU, selfCPU   time.Duration // over the ingest and drain
}

// watchTick is how often the watch phase posts a batch: WatchRate/100
// events every 10 ms.
const watchTick = 10 * time.Millisecond

// watchLag subscribes to o.WatchParcels parcels over p, ingests
// o.WatchRate events/s to them through the admin API for
// o.WatchDuration, and measures when each acknowledged event's verified
// update reaches the subscriber. The clock is the harness's: the
// acknowledgement is the receipt of the ingest response, so an update
// that arrives before it counts as zero; the lag from the start of the
// request is reported too, as an upper bound.
func watchLag(ctx context.Context, o *Options, p *platform, nd *nodeProc, key ed25519.PublicKey, post *poster) (*watchResult, error) {
	numbers := make([]string, o.WatchParcels)
	for i := range numbers {
		numbers[i] = number(i)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := p.client.Watch(ctx, client.WatchOptions{Carrier: carrierCode, Peers: []peer.ID{nd.id},
		Keys: protocol.PublicKeyResolver{Carrier: carrierCode, Key: key}, Numbers: numbers, Sync: true})
	if err != nil {
		return nil, err
	}
	defer w.Close()
	next, err := syncWatch(w, len(numbers))
	if err != nil {
		return nil, err
	}
	o.Logger.Info("watch: synced, ingesting", "parcels", len(numbers), "rate", o.WatchRate, "duration", o.WatchDuration)

	rec := receive(w)
	node0, err := nd.CPU()
	if err != nil {
		return nil, err
	}
	self0 := selfCPU()
	acks, elapsed, err := postAtRate(ctx, cancel, o, post, rec, next)
	if err != nil {
		return nil, err
	}
	rec.drain(acks, 10*time.Second)
	node1, err := nd.CPU()
	if err != nil {
		return nil, err
	}
	self1 := selfCPU()
	cancel()
	_ = w.Close()
	<-rec.done

	res := &watchResult{events: len(acks), unverified: rec.unverified, rate: float64(len(acks)) / elapsed.Seconds(),
		nodeCPU: node1 - node0, selfCPU: self1 - self0}
	return res, res.lags(acks, rec.received)
}

// syncWatch waits until each of n watched parcels' history has arrived
// and returns the first round not stored, so that a reused store takes
// new events. Sync hands over every watched parcel's history first, so
// that the watcher holds each head and the measured updates link to it,
// as on a platform that has been watching for a while. Without it, the
// first update of each parcel is back-filled with a track request.
func syncWatch(w *client.Watcher, n int) (next int, err error) {
	synced := make(map[string]bool, n)
	timeout := time.After(time.Minute)
	for len(synced) < n {
		select {
		case u, ok := <-w.Updates():
			if !ok {
				return 0, fmt.Errorf("bench: watch: ended during sync: %w", w.Err())
			}
			if !u.Verified {
				return 0, fmt.Errorf("bench: watch: sync of %s: %s %s", u.Number, u.Error, u.Message)
			}
			synced[u.Number] = true
			for _, e := range u.Events {
				next = max(next, int(e.Seq)+1)
			}
		case <-timeout:
			return 0, fmt.Errorf("bench: watch: %d of %d parcels synced in a minute: %v", len(synced), n, w.Err())
		}
	}
	return next, nil
}

// ack is when an event's ingest request was sent and answered.
type ack struct{ sent, acked time.Time }

// recorder notes when each event's update arrives, by event CID; mu
// guards received, unverified and the acks postAtRate writes.
type recorder struct {
	mu         sync.Mutex
	received   map[string]time.Time
	unverified int
	done       chan struct{} // closed when the updates end
}

// receive reads w's updates until they end.
func receive(w *client.Watcher) *recorder {
	rec := &recorder{received: make(map[string]time.Time), done: make(chan struct{})}
	go func() {
		defer close(rec.done)
		for u := range w.Updates() {
			now := time.Now()
			rec.mu.Lock()
			if !u.Verified {
				rec.unverified++
			}
			for _, e := range u.Events {
				rec.received[e.CID] = now
			}
			rec.mu.Unlock()
		}
	}()
	return rec
}

// drain waits until every acknowledged event's update has arrived, or
// for at most limit.
func (rec *recorder) drain(acks map[string]ack, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for {
		rec.mu.Lock()
		got := 0
		for c := range acks {
			if _, ok := rec.received[c]; ok {
				got++
			}
		}
		rec.mu.Unlock()
		if got == len(acks) || time.Now().After(deadline) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postAtRate posts o.WatchRate events/s for o.WatchDuration, a batch
// every watchTick over 8 connections, starting at round next, and
// returns when each event was sent and acknowledged. The bodies are
// built before the clock starts. A failed post cancels the phase.
func postAtRate(ctx context.Context, cancel context.CancelFunc, o *Options, post *poster, rec *recorder, next int) (map[string]ack, time.Duration, error) {
	per := o.WatchRate * int(watchTick) / int(time.Second)
	ticks := int(o.WatchDuration / watchTick)
	bodies := make([][]byte, ticks)
	for t := range bodies {
		scans := make([]scan, per)
		for k := range scans {
			e := t*per + k // the phase's e-th event
			scans[k] = scan{parcel: e % o.WatchParcels, round: next + e/o.WatchParcels}
		}
		bodies[t] = body(scans)
	}
	acks := make(map[string]ack)
	queue := make(chan int, ticks)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for t := range queue {
				sent := time.Now()
				resp, err := post.post(ctx, bodies[t], per)
				if err != nil {
					select {
					case errc <- err:
					default:
					}
					cancel()
					return
				}
				now := time.Now()
				rec.mu.Lock()
				for _, r := range resp.Results {
					acks[r.CID] = ack{sent, now}
				}
				rec.mu.Unlock()
			}
		})
	}
	start := time.Now()
	for t := range ticks {
		time.Sleep(time.Until(start.Add(time.Duration(t) * watchTick)))
		queue <- t
	}
	close(queue)
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errc:
		return nil, 0, err
	default:
	}
	return acks, elapsed, nil
}

// lags sets the delivered, missed and lag figures of res from when each
// event was acknowledged and received.
func (res *watchResult) lags(acks map[string]ack, received map[string]time.Time) error {
	var lags, fromPost []time.Duration
	for c, a := range acks {
		r, ok := received[c]
		if !ok {
			res.missed++
			continue
		}
		lags = append(lags, max(0, r.Sub(a.acked)))
		fromPost = append(fromPost, r.Sub(a.sent))
	}
	res.delivered = len(lags)
	if len(lags) == 0 {
		return fmt.Errorf("bench: watch: none of %d events delivered", len(acks))
	}
	slices.Sort(lags)
	slices.Sort(fromPost)
	res.p50, res.p99, res.max = lags[len(lags)/2], lags[len(lags)*99/100], lags[len(lags)-1]
	res.fromPostP99 = fromPost[len(fromPost)*99/100]
	return nil
}

// selfCPU is this process's CPU time, user and system.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
