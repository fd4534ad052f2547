package ingest

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
	"slices"
	"strings"
)

// Client-side limits of Post.
const (
	// DefaultPostBatch is the events per request when Post is given none.
	DefaultPostBatch = 1000
	// maxPostBody flushes a batch early once its body reaches this size,
	// well under the server's default MaxBodyBytes, so that long lines
	// cannot make a batch the server refuses with 413.
	maxPostBody = 8 << 20
	// maxLine bounds one NDJSON line. An event encodes to at most
	// protocol.MaxEventSize bytes of CBOR; a JSON line far beyond that
	// cannot be valid, so it is rejected without being sent.
	maxLine = 1 << 20
)

// ErrPost means the server refused a whole batch (not one event of it).
var ErrPost = errors.New("ingest: post failed")

// Summary is what Post did with a file.
type Summary struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
	Rejected   int `json:"rejected"`
	// Rejections lists every rejected event, in file order.
	Rejections []Rejection `json:"rejections"`
}

// Rejection is one rejected line of the input.
type Rejection struct {
	Line   int    `json:"line"` // 1-based line number in the input
	ID     string `json:"id"`   // the event id, when the line decoded far enough
	Reason string `json:"reason"`
}

// Post reads NDJSON events from r and posts them to the admin API at url
// (the server's base URL, like http://127.0.0.1:7401) in batches of
// batchSize (DefaultPostBatch when ≤ 0), with the admin token. Blank lines
// are skipped; a line that is not JSON is rejected here with its line
// number and never sent. progress, when not nil, gets the number of
// non-blank lines handled so far after every batch.
//
// On a refused batch Post stops and returns the summary of the batches
// before it with an error wrapping ErrPost. Running it again on the same
// input is safe: already stored events come back as duplicates.
func Post(ctx context.Context, url, token string, r io.Reader, batchSize int, progress func(done int)) (*Summary, error) {
	if batchSize <= 0 {
		batchSize = DefaultPostBatch
	}
	endpoint := strings.TrimSuffix(url, "/") + "/v1/events"
	sum := &Summary{}
	var body bytes.Buffer
	var lines []int // input line number of each event in body
	done := 0
	flush := func() error {
		if len(lines) > 0 {
			if err := postBatch(ctx, endpoint, token, body.Bytes(), lines, sum); err != nil {
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
			return sum, fmt.Errorf("ingest: reading input at line %d: %w", lineNo, err)
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
			// of their batch's server answers: report in file order.
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

// postBatch sends one NDJSON body and adds its results to sum.
func postBatch(ctx context.Context, endpoint, token string, body []byte, lines []int, sum *Summary) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPost, err)
	}
	req.Header.Set("Content-Type", TypeNDJSON)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: lines %d-%d: %w", ErrPost, lines[0], lines[len(lines)-1], err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var p Problem
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		detail := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &p) == nil && p.Detail != "" {
			detail = p.Detail
		}
		return fmt.Errorf("%w: lines %d-%d: %s: %s", ErrPost, lines[0], lines[len(lines)-1], resp.Status, detail)
	}
	var out Response
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("%w: lines %d-%d: reading response: %w", ErrPost, lines[0], lines[len(lines)-1], err)
	}
	if len(out.Results) != len(lines) {
		return fmt.Errorf("%w: lines %d-%d: %d results for %d events", ErrPost, lines[0], lines[len(lines)-1], len(out.Results), len(lines))
	}
	for i, res := range out.Results {
		switch res.Status {
		case StatusAccepted:
			sum.Accepted++
		case StatusDuplicate:
			sum.Duplicates++
		default:
			sum.reject(lines[i], res.ID, res.Error)
		}
	}
	return nil
}
