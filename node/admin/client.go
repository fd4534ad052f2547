package admin

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/opentrack/opentrack/node/ingest"
)

// Client-side limits of Events.
const (
	// DefaultBatch is the events per request when Events is given none.
	DefaultBatch = 1000
	// maxPostBody flushes a batch early once its body reaches this size,
	// well under the server's default MaxBodyBytes, so that long lines
	// cannot make a batch the server refuses with 413.
	maxPostBody = 8 << 20
	// maxLine bounds one NDJSON line. An event encodes to at most
	// protocol.MaxEventSize bytes of CBOR; a JSON line far beyond that
	// cannot be valid, so it is rejected without being sent.
	maxLine = 1 << 20
	// maxAnswer bounds an answer the client reads, in bytes.
	maxAnswer = 64 << 20
)

// ErrPost means the server refused a whole batch of events (not one
// event of it). Its text names the operation as `opentrack ingest`
// reports it.
var ErrPost = errors.New("ingest: post failed")

// Client calls a running carrier node's admin API. Its zero HTTP uses
// http.DefaultClient.
type Client struct {
	// URL is the admin API's base URL, like http://127.0.0.1:7401, and
	// Token its bearer token.
	URL, Token string
	// HTTP sends the requests; nil for http.DefaultClient.
	HTTP *http.Client
}

// Summary is what Events did with its input.
type Summary struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
	Rejected   int `json:"rejected"`
	// Rejections lists every rejected event, in input order.
	Rejections []Rejection `json:"rejections"`
}

// Rejection is one rejected line of the input.
type Rejection struct {
	Line   int    `json:"line"` // 1-based line number in the input
	ID     string `json:"id"`   // the event id, when the line decoded far enough
	Reason string `json:"reason"`
}

// Events reads NDJSON events from r and posts them in batches of
// batchSize (DefaultBatch when ≤ 0). Blank lines are skipped; a line that
// is not JSON is rejected here with its line number and never sent.
// progress, when not nil, gets the number of non-blank lines handled so
// far after every batch.
//
// On a refused batch Events stops and returns the summary of the batches
// before it with an error wrapping ErrPost. Running it again on the same
// input is safe: already stored events come back as duplicates.
func (c *Client) Events(ctx context.Context, r io.Reader, batchSize int, progress func(done int)) (*Summary, error) {
	if batchSize <= 0 {
		batchSize = DefaultBatch
	}
	sum := &Summary{}
	var body bytes.Buffer
	var lines []int // input line number of each event in body
	done := 0
	flush := func() error {
		if len(lines) > 0 {
			if err := c.postLines(ctx, body.Bytes(), lines, sum); err != nil {
				return err
			}
			done += len(lines)
			body.Reset()
			lines = lines[:0]
		}
		if progress != nil {
			progress(done)
		}
		return nil
	}

	br := bufio.NewReaderSize(r, 64<<10)
	for lineNo := 1; ; lineNo++ {
		line, tooLong, err := readLine(br)
		if err != nil && err != io.EOF {
			return sum, fmt.Errorf("admin: reading input at line %d: %w", lineNo, err)
		}
		trimmed := bytes.TrimSpace(line)
		switch {
		case tooLong:
			sum.reject(lineNo, "", fmt.Sprintf("line longer than %d bytes", maxLine))
			done++
		case len(trimmed) == 0:
		case !json.Valid(trimmed):
			sum.reject(lineNo, "", "not a JSON value")
			done++
		default:
			body.Write(trimmed)
			body.WriteByte('\n')
			lines = append(lines, lineNo)
		}
		if len(lines) >= batchSize || body.Len() >= maxPostBody {
			if ferr := flush(); ferr != nil {
				return sum, ferr
			}
		}
		if err == io.EOF {
			err := flush()
			// Lines that never left are rejected as they are read, ahead
			// of their batch's server answers: report in input order.
			slices.SortStableFunc(sum.Rejections, func(a, b Rejection) int { return cmp.Compare(a.Line, b.Line) })
			return sum, err
		}
	}
}

// readLine returns the next line without its newline. A line longer than
// maxLine is consumed to its end and reported as tooLong.
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > maxLine+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return bytes.TrimSuffix(line, []byte("\n")), tooLong, err
	}
}

func (s *Summary) reject(line int, id, reason string) {
	s.Rejected++
	s.Rejections = append(s.Rejections, Rejection{Line: line, ID: id, Reason: reason})
}

// postLines sends one NDJSON body and adds its results to sum.
func (c *Client) postLines(ctx context.Context, body []byte, lines []int, sum *Summary) error {
	out, err := c.post(ctx, ingest.TypeNDJSON, body, len(lines))
	if err != nil {
		return fmt.Errorf("%w: lines %d-%d: %w", ErrPost, lines[0], lines[len(lines)-1], err)
	}
	for i, res := range out.Results {
		switch res.Status {
		case ingest.StatusAccepted:
			sum.Accepted++
		case ingest.StatusDuplicate:
			sum.Duplicates++
		default:
			sum.reject(lines[i], res.ID, res.Error)
		}
	}
	return nil
}

// Post sends one batch body of n events, of media type contentType
// (ingest.TypeNDJSON, TypeJSON or TypeCBOR), and returns the answer. A
// refused batch is an error wrapping ErrPost.
func (c *Client) Post(ctx context.Context, contentType string, body []byte, n int) (*EventsResponse, error) {
	out, err := c.post(ctx, contentType, body, n)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPost, err)
	}
	return out, nil
}

// Ingest posts events as one JSON batch and returns one result per event.
func (c *Client) Ingest(ctx context.Context, events []ingest.InputEvent) ([]ingest.Result, error) {
	body, err := json.Marshal(events)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	out, err := c.Post(ctx, ingest.TypeJSON, body, len(events))
	if err != nil {
		return nil, err
	}
	return out.Results, nil
}

// post sends one batch and requires an answer with n results. Its errors
// say what failed, for the caller to place.
func (c *Client) post(ctx context.Context, contentType string, body []byte, n int) (*EventsResponse, error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/events", contentType, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var p Problem
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		detail := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &p) == nil && p.Detail != "" {
			detail = p.Detail
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, detail)
	}
	var out EventsResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(&out); err != nil {
		return nil, fmt.Errorf("reading response: %w", err)
	}
	if len(out.Results) != n {
		return nil, fmt.Errorf("%d results for %d events", len(out.Results), n)
	}
	return &out, nil
}

// Parcel returns the carrier's own view of the newest parcel with number.
func (c *Client) Parcel(ctx context.Context, number string) (*ingest.ParcelView, error) {
	var out ingest.ParcelView
	return &out, c.do(ctx, http.MethodGet, "/v1/parcels/"+url.PathEscape(number), nil, &out)
}

// PutGrant records a signed grant.
func (c *Client) PutGrant(ctx context.Context, signed []byte) (*GrantInfo, error) {
	var out GrantInfo
	return &out, c.do(ctx, http.MethodPost, "/v1/grants", bytes.NewReader(signed), &out)
}

// RevokeGrant revokes the grant with id.
func (c *Client) RevokeGrant(ctx context.Context, id string) (*GrantInfo, error) {
	var out GrantInfo
	return &out, c.do(ctx, http.MethodPost, "/v1/grants/"+url.PathEscape(id)+"/revoke", nil, &out)
}

// ListGrants returns every grant, oldest first.
func (c *Client) ListGrants(ctx context.Context) ([]GrantInfo, error) {
	var out []GrantInfo
	return out, c.do(ctx, http.MethodGet, "/v1/grants", nil, &out)
}

// Audit returns the audit entries matching q, oldest first.
func (c *Client) Audit(ctx context.Context, q AuditQuery) ([]AuditInfo, error) {
	v := url.Values{}
	if q.Since != 0 {
		v.Set("since", strconv.FormatInt(q.Since, 10))
	}
	if q.Peer != "" {
		v.Set("peer", q.Peer)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	path := "/v1/audit"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var out []AuditInfo
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// Health asks /healthz. It returns nil for a node that serves, degraded
// or not, and an error for one that is unhealthy or does not answer.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil)
}

// do sends a request and decodes a 2xx answer into out, when not nil.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	ct := ""
	if body != nil {
		ct = "application/cose"
	}
	resp, err := c.send(ctx, method, path, ct, body)
	if err != nil {
		return fmt.Errorf("admin API: %w (is the node running?)", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("admin API: %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// send sends one request with the token.
func (c *Client) send(ctx context.Context, method, path, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	return hc.Do(req)
}
