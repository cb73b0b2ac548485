package applink

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Many goroutines share one Client pool against a real app while
// requests are cancelled at random points (before sending, while the head
// or body is written, while waiting for the head, mid-body). Run with
// -race: no data race, every answer read whole is its own request's (the
// app echoes the request's id, and its body for a POST), and no goroutine
// is left once the pool is closed (goleak).
func TestAppClientStress(t *testing.T) {
	checkLeaks(t)
	a := newConnApp(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		id := r.URL.Query().Get("id")
		_, _ = io.WriteString(w, "id="+id)
		w.(http.Flusher).Flush()
		if r.URL.Query().Get("slow") != "" {
			time.Sleep(time.Millisecond)
		}
		_, _ = io.WriteString(w, " body="+string(b))
	})
	c := newTestAppClient(t, Config{MaxIdleConnsPerHost: 8})
	const workers, each = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 17))
			for i := range each {
				if err := stressOne(c, a.URL, fmt.Sprintf("%d-%d", w, i), rng); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := a.conns.Load(); n > workers*each {
		t.Errorf("%d connections for %d requests", n, workers*each)
	}
}

// stressOne sends one request with id, cancelled (or not) at a random
// point, and checks what came back.
func stressOne(c *Client, base, id string, rng *rand.Rand) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var body io.Reader
	method, payload := http.MethodGet, ""
	if rng.IntN(3) == 0 {
		method, payload = http.MethodPost, strings.Repeat(id+";", 1+rng.IntN(2000))
		body = strings.NewReader(payload)
	}
	url := base + "/?id=" + id
	if rng.IntN(4) == 0 {
		url += "&slow=1"
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	cancelled := false
	switch rng.IntN(6) {
	case 0: // before sending
		cancel()
		cancelled = true
	case 1: // at some point of the exchange
		d := time.Duration(rng.IntN(300)) * time.Microsecond
		cancelled = true
		time.AfterFunc(d, cancel)
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		if cancelled {
			return nil
		}
		return fmt.Errorf("request %s: %w", id, err)
	}
	defer resp.Body.Close()
	partial := false
	if rng.IntN(6) == 0 { // mid-body
		partial = true
		buf := make([]byte, 3)
		_, _ = io.ReadFull(resp.Body, buf)
		cancel()
		cancelled = true
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		if cancelled {
			return nil
		}
		return fmt.Errorf("request %s: body: %w", id, err)
	}
	if want := "id=" + id + " body=" + payload; !strings.HasSuffix(want, string(got)) || !partial && string(got) != want {
		return fmt.Errorf("request %s got %.60q, want %.60q (cross-talk)", id, got, want)
	}
	return nil
}
