package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
)

// Task is the demo's resource on the board's columns, as its API serves it.
type Task struct {
	ID        string `json:"id"`
	Title     string `json:"title"`
	Status    string `json:"status"` // a column: todo, doing or done
	UpdatedAt int64  `json:"updatedAt"`
}

// Sprint is one entry of the board's sprint strip.
type Sprint struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Start     string `json:"start"` // YYYY-MM-DD
	End       string `json:"end"`
	Goal      string `json:"goal"`
	UpdatedAt int64  `json:"updatedAt"`
}

// statuses are the board's columns, in order.
var statuses = []string{"todo", "doing", "done"}

// domain is the demo's task-and-chat service: the "domain service" of the
// design. Its API changes its own data first, then publishes the change as
// an envelope with proto's publisher, so a client that refetches sees at
// least what it was told. It also consumes the board's rooms from the
// stream (consume.go), as a service that is not the only publisher must:
// a task published with "roomcast publish" is in its store too.
type domain struct {
	cfg   config
	pub   *proto.Publisher
	log   zerolog.Logger
	token tokenMinter
	// presence asks presence.get (nil in tests without NATS).
	presence func(ctx context.Context, users []string) (map[string]bool, error)

	mu      sync.Mutex // orders changes: a board's publishes go out in updatedAt order
	tasks   map[string]*resources[Task]
	sprints map[string]*resources[Sprint]
	last    int64
}

// resources is one room's resources, with when each deleted one was
// deleted, so that an older event arriving later does not bring it back.
type resources[T any] struct {
	items   map[string]T
	deleted map[string]int64 // id → updatedAt of its delete
}

func newResources[T any]() *resources[T] {
	return &resources[T]{items: map[string]T{}, deleted: map[string]int64{}}
}

func newDomain(cfg config, pub *proto.Publisher, log zerolog.Logger) *domain {
	return &domain{cfg: cfg, pub: pub, log: log, token: tokenMinter{secret: []byte(cfg.secret), ttl: time.Hour},
		tasks: map[string]*resources[Task]{}, sprints: map[string]*resources[Sprint]{}}
}

// now is milliseconds since the epoch, strictly increasing, so two changes
// never tie. Callers hold mu.
func (d *domain) now() int64 {
	t := time.Now().UnixMilli()
	if t <= d.last {
		t = d.last + 1
	}
	d.last = t
	return t
}

func (d *domain) isUser(u string) bool { return slices.Contains(d.cfg.users, u) }

// allow is the demo's authorization: demo users see the demo board, their
// own user room, and chats between two demo users.
func (d *domain) allow(user, roomName string) bool {
	r, err := proto.ParseRoom(roomName)
	if err != nil || !d.isUser(user) {
		return false
	}
	switch r.Kind() {
	case proto.KindBoard, proto.KindBoardTasks, proto.KindBoardSprints:
		return r.ID() == d.cfg.board
	case proto.KindUser:
		return r.HasMember(user)
	case proto.KindChat:
		m := r.Members()
		return r.HasMember(user) && d.isUser(m[0]) && d.isUser(m[1])
	}
	return false
}

// serveAuthz answers authz.join (a queue group, as several instances of a
// real domain service would).
func (d *domain) serveAuthz(nc *nats.Conn) (*nats.Subscription, error) {
	return nc.QueueSubscribe(proto.SubjectAuthzJoin, "demo", func(m *nats.Msg) {
		var req proto.AuthzJoinRequest
		allow := json.Unmarshal(m.Data, &req) == nil && d.allow(req.UserID, req.RoomName)
		b, _ := json.Marshal(proto.AuthzJoinReply{Allow: allow})
		_ = m.Respond(b)
	})
}

func (d *domain) publish(ctx context.Context, room proto.Room, env proto.Envelope) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := d.pub.Publish(ctx, room, env)
	return err
}

// list returns the resources of one room (those in ids only, when given),
// oldest change first.
func list[T any](r *resources[T], ids []string, updatedAt func(T) int64) []T {
	out := []T{}
	if r == nil {
		return out
	}
	for id, t := range r.items {
		if ids == nil || slices.Contains(ids, id) {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b T) int { return int(updatedAt(a) - updatedAt(b)) })
	return out
}

func (d *domain) listTasks(board string, ids []string) []Task {
	d.mu.Lock()
	defer d.mu.Unlock()
	return list(d.tasks[board], ids, func(t Task) int64 { return t.UpdatedAt })
}

func (d *domain) listSprints(board string, ids []string) []Sprint {
	d.mu.Lock()
	defer d.mu.Unlock()
	return list(d.sprints[board], ids, func(s Sprint) int64 { return s.UpdatedAt })
}

func (d *domain) boardTasks(board string) *resources[Task] {
	if d.tasks[board] == nil {
		d.tasks[board] = newResources[Task]()
	}
	return d.tasks[board]
}

func (d *domain) boardSprints(board string) *resources[Sprint] {
	if d.sprints[board] == nil {
		d.sprints[board] = newResources[Sprint]()
	}
	return d.sprints[board]
}

var errBadStatus = fmt.Errorf("status must be one of %v", statuses)

func (d *domain) createTask(ctx context.Context, board, title, status string) (Task, error) {
	if status == "" {
		status = statuses[0]
	}
	if !slices.Contains(statuses, status) {
		return Task{}, errBadStatus
	}
	room, err := proto.BoardTasksRoom(board)
	if err != nil {
		return Task{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t := Task{ID: newID(), Title: title, Status: status, UpdatedAt: d.now()}
	d.boardTasks(board).items[t.ID] = t
	data, _ := json.Marshal(map[string]any{"title": t.Title, "status": t.Status})
	return t, d.publish(ctx, room, proto.Envelope{Event: proto.EventCreateTask, ID: t.ID, UpdatedAt: t.UpdatedAt, Data: data})
}

// taskPatch holds the fields an update may change.
type taskPatch struct {
	Title  *string `json:"title,omitempty"`
	Status *string `json:"status,omitempty"`
}

var errNoTask = errors.New("no such task")

func (d *domain) updateTask(ctx context.Context, board, id string, p taskPatch) (Task, error) {
	if p.Status != nil && !slices.Contains(statuses, *p.Status) {
		return Task{}, errBadStatus
	}
	room, err := proto.BoardTasksRoom(board)
	if err != nil {
		return Task{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.boardTasks(board).items[id]
	if !ok {
		return Task{}, errNoTask
	}
	if p.Title != nil {
		t.Title = *p.Title
	}
	if p.Status != nil {
		t.Status = *p.Status
	}
	t.UpdatedAt = d.now()
	d.tasks[board].items[id] = t
	diff, _ := json.Marshal(p) // only the changed fields: the seed's diffs
	return t, d.publish(ctx, room, proto.Envelope{Event: proto.EventUpdateTask, ID: id, UpdatedAt: t.UpdatedAt, Diff: diff})
}

func (d *domain) deleteTask(ctx context.Context, board, id string) error {
	room, err := proto.BoardTasksRoom(board)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ts := d.boardTasks(board)
	if _, ok := ts.items[id]; !ok {
		return errNoTask
	}
	at := d.now()
	delete(ts.items, id)
	ts.deleted[id] = at
	return d.publish(ctx, room, proto.Envelope{Event: proto.EventDeleteTask, ID: id, UpdatedAt: at})
}

func (d *domain) createSprint(ctx context.Context, board string, s Sprint) (Sprint, error) {
	room, err := proto.BoardSprintsRoom(board)
	if err != nil {
		return Sprint{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s.ID, s.UpdatedAt = newID(), d.now()
	d.boardSprints(board).items[s.ID] = s
	data, _ := json.Marshal(map[string]string{"name": s.Name, "start": s.Start, "end": s.End, "goal": s.Goal})
	return s, d.publish(ctx, room, proto.Envelope{Event: proto.EventCreateSprint, ID: s.ID, UpdatedAt: s.UpdatedAt, Data: data})
}

// seed gives an empty board a sprint strip and a few tasks, published as
// any change is, so that a page opened later catches up on them.
func (d *domain) seed(ctx context.Context) error {
	if len(d.listTasks(d.cfg.board, nil)) > 0 {
		return nil
	}
	monday := time.Now().UTC().Truncate(24 * time.Hour)
	for monday.Weekday() != time.Monday {
		monday = monday.Add(-24 * time.Hour)
	}
	day := func(n int) string { return monday.AddDate(0, 0, n).Format(time.DateOnly) }
	for _, s := range []Sprint{
		{Name: "Sprint 13", Start: day(-14), End: day(-3), Goal: "Boards load in under a second"},
		{Name: "Sprint 14", Start: day(0), End: day(11), Goal: "Ship live boards to the beta group"},
		{Name: "Sprint 15", Start: day(14), End: day(25), Goal: "Mobile notifications"},
	} {
		if _, err := d.createSprint(ctx, d.cfg.board, s); err != nil {
			return err
		}
	}
	for _, t := range []struct{ title, status string }{
		{"Plan the sprint", "done"},
		{"Design the onboarding checklist", "doing"},
		{"Fix the login redirect loop", "doing"},
		{"Write the release notes", "todo"},
		{"Add keyboard shortcuts to the board", "todo"},
		{"Set up the staging database backup", "todo"},
		{"Triage last week's crash reports", "todo"},
		{"Update the pricing page copy", "todo"},
	} {
		if _, err := d.createTask(ctx, d.cfg.board, t.title, t.status); err != nil {
			return err
		}
	}
	return nil
}

// sendMessage publishes a chat message; the stream is the chat's history
// (clients read it back with getChatMessagesSince).
func (d *domain) sendMessage(ctx context.Context, from, to, text string) (proto.Envelope, error) {
	room, err := proto.ChatRoom(from, to)
	if err != nil {
		return proto.Envelope{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	data, _ := json.Marshal(map[string]string{"from": from, "to": to, "text": text})
	env := proto.Envelope{Event: proto.EventNewMessage, ID: newID(), UpdatedAt: d.now(), Data: data}
	return env, d.publish(ctx, room, env)
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tokenMinter signs demo users' tokens with the gateway's HS256 secret, as
// a product's identity service would.
type tokenMinter struct {
	secret []byte
	ttl    time.Duration
}

func (m tokenMinter) mint(user string) (string, int64, error) {
	exp := time.Now().Add(m.ttl)
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "iat": time.Now().Unix(), "exp": exp.Unix(),
	}).SignedString(m.secret)
	return s, exp.UnixMilli(), err
}

func (m tokenMinter) user(r *http.Request) (string, error) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return "", errors.New("send Authorization: Bearer <token from /api/token>")
	}
	claims := jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return m.secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil {
		return "", err
	}
	return claims.Subject, nil
}

// routes is the demo's HTTP side: the page, the client library and
// socket.io-client's ESM build as static files (an import map ties them
// together, no bundler), and the API.
func (d *domain) routes(gatewayURL, clientDir string) http.Handler {
	mux := http.NewServeMux()
	web := webFiles()
	mux.Handle("GET /", http.FileServerFS(web))
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.Handle("GET /lib/", http.StripPrefix("/lib/", http.FileServer(http.Dir(filepath.Join(clientDir, "dist")))))
	mux.HandleFunc("GET /vendor/socket.io.esm.min.js", func(w http.ResponseWriter, r *http.Request) {
		p := filepath.Join(clientDir, "node_modules", "socket.io-client", "dist", "socket.io.esm.min.js")
		if _, err := os.Stat(p); err != nil {
			http.Error(w, "socket.io-client is not installed in "+clientDir+": run npm ci there", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/javascript")
		http.ServeFile(w, r, p)
	})

	mux.HandleFunc("GET /api/config", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"gatewayURL": gatewayURL, "board": d.cfg.board, "users": d.cfg.users})
	})
	mux.HandleFunc("GET /api/token", func(w http.ResponseWriter, r *http.Request) {
		u := r.URL.Query().Get("user")
		if !d.isUser(u) {
			writeError(w, http.StatusForbidden, fmt.Errorf("%q is not a demo user: try one of %v", u, d.cfg.users))
			return
		}
		tok, exp, err := d.token.mint(u)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"user": u, "token": tok, "expiresAt": exp})
	})
	mux.HandleFunc("GET /api/boards/{board}/tasks", func(w http.ResponseWriter, r *http.Request) {
		var ids []string
		if q := r.URL.Query().Get("ids"); q != "" {
			ids = strings.Split(q, ",")
		}
		writeJSON(w, http.StatusOK, d.listTasks(r.PathValue("board"), ids))
	})
	mux.HandleFunc("GET /api/boards/{board}/sprints", func(w http.ResponseWriter, r *http.Request) {
		var ids []string
		if q := r.URL.Query().Get("ids"); q != "" {
			ids = strings.Split(q, ",")
		}
		writeJSON(w, http.StatusOK, d.listSprints(r.PathValue("board"), ids))
	})
	mux.HandleFunc("GET /api/boards/{board}/presence", d.authed(func(w http.ResponseWriter, r *http.Request, _ string) {
		if d.presence == nil {
			writeError(w, http.StatusServiceUnavailable, errors.New("no presence service"))
			return
		}
		active, err := d.presence(r.Context(), d.cfg.users)
		d.reply(w, map[string]any{"active": active}, err)
	}))
	mux.HandleFunc("POST /api/boards/{board}/tasks", d.authed(func(w http.ResponseWriter, r *http.Request, _ string) {
		var body struct {
			Title  string `json:"title"`
			Status string `json:"status"`
		}
		if err := readJSON(r, &body); err != nil || strings.TrimSpace(body.Title) == "" {
			writeError(w, http.StatusBadRequest, errors.New(`send {"title": "...", "status": "todo"}`))
			return
		}
		t, err := d.createTask(r.Context(), r.PathValue("board"), body.Title, body.Status)
		d.reply(w, t, err)
	}))
	mux.HandleFunc("PATCH /api/boards/{board}/tasks/{id}", d.authed(func(w http.ResponseWriter, r *http.Request, _ string) {
		var p taskPatch
		if err := readJSON(r, &p); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		t, err := d.updateTask(r.Context(), r.PathValue("board"), r.PathValue("id"), p)
		d.reply(w, t, err)
	}))
	mux.HandleFunc("DELETE /api/boards/{board}/tasks/{id}", d.authed(func(w http.ResponseWriter, r *http.Request, _ string) {
		err := d.deleteTask(r.Context(), r.PathValue("board"), r.PathValue("id"))
		d.reply(w, struct{}{}, err)
	}))
	mux.HandleFunc("POST /api/chats/{peer}/messages", d.authed(func(w http.ResponseWriter, r *http.Request, user string) {
		var body struct {
			Text string `json:"text"`
		}
		if err := readJSON(r, &body); err != nil || strings.TrimSpace(body.Text) == "" {
			writeError(w, http.StatusBadRequest, errors.New(`send {"text": "..."}`))
			return
		}
		peer := r.PathValue("peer")
		if !d.isUser(peer) {
			writeError(w, http.StatusNotFound, fmt.Errorf("%q is not a demo user", peer))
			return
		}
		env, err := d.sendMessage(r.Context(), user, peer, body.Text)
		d.reply(w, env, err)
	}))
	return mux
}

// authed runs h for requests with a valid demo token.
func (d *domain) authed(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, err := d.token.user(r)
		if err != nil || !d.isUser(u) {
			writeError(w, http.StatusUnauthorized, fmt.Errorf("unauthenticated: %v", err))
			return
		}
		if b := r.PathValue("board"); b != "" && b != d.cfg.board {
			writeError(w, http.StatusNotFound, fmt.Errorf("no board %q", b))
			return
		}
		h(w, r, u)
	}
}

func (d *domain) reply(w http.ResponseWriter, v any, err error) {
	switch {
	case errors.Is(err, errNoTask):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, errBadStatus):
		writeError(w, http.StatusBadRequest, err)
	case err != nil:
		d.log.Error().Err(err).Msg("demo API")
		writeError(w, http.StatusBadGateway, err)
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
