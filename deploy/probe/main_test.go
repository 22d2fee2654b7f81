package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestProbe(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
	if got := probe(srv.URL + "/readyz"); got != 0 {
		t.Fatalf("200: exit %d", got)
	}
	status = http.StatusServiceUnavailable
	if got := probe(srv.URL + "/readyz"); got != 1 {
		t.Fatalf("503: exit %d", got)
	}
	srv.Close()
	if got := probe(srv.URL + "/readyz"); got != 1 {
		t.Fatalf("refused: exit %d", got)
	}
}
