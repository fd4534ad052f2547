package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/node/store"
	"github.com/opentrack/opentrack/node/store/pebble"
	"github.com/opentrack/opentrack/protocol"
)

// BaselineReady is the file the baseline server writes into its repo
// once it listens: its URL and the PEM of its self-signed certificate.
const BaselineReady = "baseline.json"

type baselineInfo struct {
	URL  string `json:"url"`
	Cert string `json:"cert"`
}

// ServeBaseline runs the HTTPS+JSON baseline over the store of the
// carrier repo in dir until ctx ends: GET /v1/track/{number} answers the
// parcel's signed head and events as JSON, what a central tracking API
// would serve. It opens the store with the node's own settings and does
// the work of the node's track handler, no more: the same store reads
// (one parcel get, one event range scan), and the stored head and event
// bytes sent as they are, base64 in a JSON object where the node sends
// CBOR byte strings. Neither server decodes an event, and neither client
// does: both decode the envelope and check the answer has events. The
// baseline evaluates no policy and keeps no stream state, which only
// makes it cheaper; the one thing it does that the node does not is
// base64, about 2.5 µs a lookup of 8 events (BenchmarkBaselineAnswer),
// some 2% of a lookup's CPU. TLS 1.3,
// HTTP/1.1 with keep-alive (DESIGN section 8 measured HTTP/2 on one
// connection slower). The node must not be running: a store has one
// process.
func ServeBaseline(ctx context.Context, dir, listen string) error {
	r, err := repo.Open(dir)
	if err != nil {
		return err
	}
	st, err := openNodeStore(r)
	if err != nil {
		return fmt.Errorf("bench: baseline: %w", err)
	}
	defer st.Close()
	cert, certPEM, err := selfSigned()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           baselineHandler(st),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	info, err := json.Marshal(baselineInfo{URL: "https://" + ln.Addr().String(), Cert: string(certPEM)})
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, BaselineReady+".tmp")
	if err := os.WriteFile(tmp, info, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, BaselineReady)); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(dir, BaselineReady))
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shut); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// jsonParcel is the baseline's answer, as its client decodes it: the
// stored bytes, base64 in JSON.
type jsonParcel struct {
	Number     string   `json:"number"`
	SignedHead []byte   `json:"signed_head"` // COSE_Sign1, as stored
	Events     [][]byte `json:"events"`      // DAG-CBOR events, as stored
}

var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func baselineHandler(st store.Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/track/{number}", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		p, err := st.Parcel(ctx, r.PathValue("number"))
		if errors.Is(err, store.ErrNotFound) {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		evs, err := st.Events(ctx, p.ID, 0, protocol.MaxEventsPerResult)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		bp := answerBufs.Get().(*[]byte)
		b := appendAnswer((*bp)[:0], p, evs)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
		*bp = b
		answerBufs.Put(bp)
	})
	return mux
}

// appendAnswer appends the JSON answer for p and its events to b: what
// encoding/json would write for a jsonParcel, without reflection.
func appendAnswer(b []byte, p *store.Parcel, evs []store.Event) []byte {
	b = append(b, `{"number":`...)
	// A stored number is normalized ASCII (protocol's schemes), where Go
	// quoting and JSON agree.
	b = strconv.AppendQuoteToASCII(b, p.Number)
	b = append(b, `,"signed_head":"`...)
	b = base64.StdEncoding.AppendEncode(b, p.SignedHead)
	b = append(b, `","events":[`...)
	for i, e := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, e.Bytes)
		b = append(b, '"')
	}
	return append(b, "]}\n"...)
}

// selfSigned makes a P-256 certificate for 127.0.0.1.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "opentrack bench baseline"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// baselineClient is the harness's side of the baseline: keep-alive
// HTTP/1.1 over TLS 1.3, one connection per concurrent request.
type baselineClient struct {
	url    string
	client *http.Client
}

func newBaselineClient(info *baselineInfo, conns int) (*baselineClient, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(info.Cert)) {
		return nil, errors.New("bench: baseline certificate does not parse")
	}
	return &baselineClient{url: info.URL, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, NextProtos: []string{"http/1.1"}},
		MaxIdleConnsPerHost: conns, MaxIdleConns: conns, ForceAttemptHTTP2: false, DisableCompression: true,
	}}}, nil
}

// track looks up one number and decodes the answer.
func (c *baselineClient) track(ctx context.Context, n string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/v1/track/"+n, nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var v jsonParcel
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return fmt.Errorf("baseline %s: %s: %w", n, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || v.Number != n || len(v.Events) == 0 {
		return fmt.Errorf("baseline %s: %s, %d events", n, resp.Status, len(v.Events))
	}
	return nil
}

// openNodeStore opens a stopped node's store with the node's settings.
func openNodeStore(r *repo.Repo) (*pebble.Store, error) {
	sc := r.Config.Store
	return pebble.Open(r.Path(sc.Path), &pebble.Options{CacheSize: int64(sc.CacheMB) << 20, MemTableSize: uint64(sc.MemTableMB) << 20})
}

// storeLookup is one lookup with the store reads of the track handler
// (the parcel by number, then its events), in this process: DESIGN
// section 8's "store alone" ceiling, against which the network's share
// of a lookup shows.
func storeLookup(st *pebble.Store) request {
	return func(ctx context.Context, i int) error {
		p, err := st.Parcel(ctx, number(i))
		if err != nil {
			return err
		}
		evs, err := st.Events(ctx, p.ID, 0, 0)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return fmt.Errorf("bench: store: %s has no events", p.Number)
		}
		return nil
	}
}

// startBaseline runs `opentrack bench baseline --repo dir` and waits
// until it listens.
func startBaseline(ctx context.Context, o *Options, dir string) (*nodeProc, *baselineInfo, error) {
	_ = os.Remove(filepath.Join(dir, BaselineReady))
	p, err := startProc(o.Command, dir, "baseline.log", "bench", "baseline", "--repo", dir)
	if err != nil {
		return nil, nil, err
	}
	var info baselineInfo
	err = waitFile(ctx, p, filepath.Join(dir, BaselineReady), func(b []byte) error { return json.Unmarshal(b, &info) })
	if err != nil {
		return nil, nil, err
	}
	return p, &info, nil
}
