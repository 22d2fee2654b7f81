package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/roomcast/roomcast/proto"
)

// Centrifugo, the second peer: a Go server with its own protocol, built by
// the tool from its Go module into a cache folder, started with the memory
// engine and a generated config, driven over its JSON protocol on WebSocket
// (cfclient) and published to through its HTTP API.

// centrifugoModule is the version measured; the cache folder is named after
// it, so a new version is built next to the old one, never mixed up with it.
const (
	centrifugoModule  = "github.com/centrifugal/centrifugo/v6"
	centrifugoVersion = "v6.9.1"
)

// centrifugoBinary returns the Centrifugo binary: -centrifugo when given,
// else the cached build, building it first when it is not there.
func centrifugoBinary(ctx context.Context, o options, log io.Writer) (string, error) {
	if o.CentrifugoBin != "" {
		if _, err := os.Stat(o.CentrifugoBin); err != nil {
			return "", fmt.Errorf("-centrifugo: %w", err)
		}
		return o.CentrifugoBin, nil
	}
	dir, err := centrifugoCacheDir()
	if err != nil {
		return "", err
	}
	return buildCentrifugo(ctx, dir, log)
}

// centrifugoCacheDir is <user cache dir>/roomcast/centrifugo-<version>, or
// ROOMCAST_BENCH_CACHE/centrifugo-<version>.
func centrifugoCacheDir() (string, error) {
	base := os.Getenv("ROOMCAST_BENCH_CACHE")
	if base == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no cache folder for the Centrifugo build (%v): set ROOMCAST_BENCH_CACHE or give -centrifugo", err)
		}
		base = filepath.Join(c, "roomcast")
	}
	return filepath.Join(base, "centrifugo-"+centrifugoVersion), nil
}

// buildCentrifugo makes sure dir/centrifugo exists: reused when present,
// else `go install module@version` into a fresh folder next to dir, renamed
// to dir when it succeeded (so an interrupted or concurrent build never
// leaves a half-written binary where the next run looks).
func buildCentrifugo(ctx context.Context, dir string, log io.Writer) (string, error) {
	bin := filepath.Join(dir, "centrifugo")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("building Centrifugo needs the go tool on PATH (or give -centrifugo with a built binary)")
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("Centrifugo cache folder: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".centrifugo-build-")
	if err != nil {
		return "", fmt.Errorf("Centrifugo cache folder: %w", err)
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(log, "centrifugo: building %s@%s into %s (once; several minutes with a cold module cache)\n", centrifugoModule, centrifugoVersion, dir)
	start := time.Now()
	cmd := exec.CommandContext(ctx, goTool, "install", centrifugoModule+"@"+centrifugoVersion)
	// GOWORK=off: module@version builds outside any workspace; the folder is
	// neutral so no go.mod around the caller's directory takes part.
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOWORK=off", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build Centrifugo (go install %s@%s) failed: %w\n%s", centrifugoModule, centrifugoVersion, err, tailBytes(out, 2000))
	}
	if _, err := os.Stat(filepath.Join(tmp, "centrifugo")); err != nil {
		return "", fmt.Errorf("build Centrifugo: go install left no binary in %s", tmp)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// another run finished first: use its binary
		if _, serr := os.Stat(bin); serr == nil {
			return bin, nil
		}
		return "", fmt.Errorf("build Centrifugo: %w", err)
	}
	fmt.Fprintf(log, "centrifugo: built in %s\n", time.Since(start).Round(time.Second))
	return bin, nil
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// centrifugoConfig is the generated config: loopback only, memory engine,
// HS256 connection tokens signed with secret, the HTTP API behind apiKey,
// any authenticated client may subscribe to channels without a namespace
// (the rooms' names; roomcast's authorizer answers allow in the tool too),
// no history (roomcast's stream is not measured against it: fan-out, idle and
// storm only), the health endpoint for readiness.
func centrifugoConfig(port int, secret, apiKey string) ([]byte, error) {
	cfg := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"log":         map[string]any{"level": "error"},
		"engine":      map[string]any{"type": "memory"},
		"client": map[string]any{
			"token": map[string]any{"hmac_secret_key": secret},
		},
		"channel": map[string]any{
			"without_namespace": map[string]any{"allow_subscribe_for_client": true},
		},
		"http_api":    map[string]any{"key": apiKey},
		"health":      map[string]any{"enabled": true},
		"usage_stats": map[string]any{"disabled": true},
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// startCentrifugo builds (or finds) Centrifugo and runs it on a free
// loopback port with a generated config in a temp folder.
func (s *server) startCentrifugo(ctx context.Context, o options, log io.Writer) error {
	bin, err := centrifugoBinary(ctx, o, log)
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	s.apiKey = hex.EncodeToString(key)
	cfg, err := centrifugoConfig(port, s.secret, s.apiKey)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "roomcast-bench-centrifugo-")
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return err
	}
	cmd := pinned(o, true, bin, "-c", cfgPath)
	cmd.Dir = dir
	s.url = "http://127.0.0.1:" + strconv.Itoa(port)
	return s.run(ctx, cmd, dir, "centrifugo.log", "/health", bin, "centrifugo")
}

// centrifugoChannel is the channel standing for a room: a board's -tasks
// and -sprints rooms go to the board's channel, since they share its
// members (the peer does the same with its Socket.IO rooms), every other
// room is a channel of its own name.
func centrifugoChannel(room proto.Room) string {
	if k := room.Kind(); k == proto.KindBoardTasks || k == proto.KindBoardSprints {
		return room.Parent().Name()
	}
	return room.Name()
}

// centrifugoPublisher batches the publications of one tick into one POST
// to /api/batch, as the Socket.IO peer's publisher does with /publish.
type centrifugoPublisher struct{ httpBatch }

func newCentrifugoPublisher(url, key string) *centrifugoPublisher {
	return &centrifugoPublisher{httpBatch{url: url, client: &http.Client{Timeout: 30 * time.Second},
		header: http.Header{"X-Api-Key": {key}}, open: `{"commands":[`, end: `]}`}}
}

func (p *centrifugoPublisher) add(_ context.Context, room proto.Room, env proto.Envelope) error {
	data, err := json.Marshal(env)
	if err != nil {
		return err
	}
	ch, _ := json.Marshal(centrifugoChannel(room))
	b := p.item()
	b.WriteString(`{"publish":{"channel":`)
	b.Write(ch)
	b.WriteString(`,"data":`)
	b.Write(data)
	b.WriteString(`}}`)
	return nil
}

// batchReply is /api/batch's answer: a reply per command, in order, each
// with an error when that publish failed.
type batchReply struct {
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Replies []struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	} `json:"replies"`
}

func (p *centrifugoPublisher) flush(ctx context.Context) error {
	body, n, err := p.post(ctx, "Centrifugo")
	if err != nil || n == 0 {
		return err
	}
	return p.check(body, n)
}

// check counts the failed publishes of one batch's answer and returns the
// first failure.
func (p *centrifugoPublisher) check(body []byte, n int) error {
	var r batchReply
	if err := json.Unmarshal(body, &r); err != nil {
		p.failed += int64(n)
		return fmt.Errorf("publish to Centrifugo: unreadable answer %.200q: %w", body, err)
	}
	if r.Error != nil {
		p.failed += int64(n)
		return fmt.Errorf("publish to Centrifugo: %d %s", r.Error.Code, r.Error.Message)
	}
	if len(r.Replies) != n {
		p.failed += int64(n)
		return fmt.Errorf("publish to Centrifugo: %d replies to %d publishes", len(r.Replies), n)
	}
	var first error
	for _, rep := range r.Replies {
		if rep.Error != nil {
			p.failed++
			if first == nil {
				first = fmt.Errorf("publish to Centrifugo: %d %s", rep.Error.Code, rep.Error.Message)
			}
		}
	}
	return first
}

func (p *centrifugoPublisher) wait(ctx context.Context) (int64, error) {
	err := p.flush(ctx)
	return p.failed, err
}
