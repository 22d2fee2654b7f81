package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

// serverProfile fetches a CPU profile of roomcast over the next seconds
// from its /debug/pprof (ROOMCAST_PPROF=1), into path, in the background:
// wait returns once it is written. It is started just before the part of a
// run it should cover (a storm's drop), so the profile holds that part.
type serverProfile struct {
	done chan error
}

func startServerProfile(ctx context.Context, baseURL, path string, seconds int) *serverProfile {
	p := &serverProfile{done: make(chan error, 1)}
	go func() { p.done <- fetchProfile(ctx, baseURL, path, seconds) }()
	return p
}

func fetchProfile(ctx context.Context, baseURL, path string, seconds int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds+30)*time.Second)
	defer cancel()
	url := baseURL + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("server CPU profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("server CPU profile: %s answered HTTP %d (is it serving pprof? ROOMCAST_PPROF=1)", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("server CPU profile: %w", err)
	}
	return f.Close()
}

// wait returns the fetch's error, once it ended.
func (p *serverProfile) wait() error { return <-p.done }
