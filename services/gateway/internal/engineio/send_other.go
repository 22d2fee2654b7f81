//go:build !linux

package engineio

import "errors"

// maxSendBatch: see send_linux.go; no batching here.
const maxSendBatch = 64

// sendRing: io_uring is Linux's; a Sender here writes each transport.
type sendRing struct{ broken error }

func newSendRing() (*sendRing, error) {
	return nil, errors.New("io_uring: Linux only")
}

func (r *sendRing) submit([]sendEntry) {}
func (r *sendRing) close()             {}

func errnoErr(errno int32) error { return errors.New("send failed") }
