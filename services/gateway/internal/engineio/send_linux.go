//go:build linux

package engineio

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxSendBatch is the most sends in one submission: the ring's size, and
// how deep Sender holds descriptors (one nested RawConn.Control each).
const maxSendBatch = 64

// The io_uring ABI (include/uapi/linux/io_uring.h), the part used here.
const (
	sysIOUringSetup = 425
	sysIOUringEnter = 426

	ioringSetupSubmitAll   = 1 << 7 // go on submitting after an SQE that fails
	ioringSetupCoopTaskrun = 1 << 8 // no interrupt to run completions' task work
	ioringFeatSingleMmap   = 1 << 0
	ioringEnterGetevents   = 1 << 0
	ioringOpSendmsg        = 9
	ioringOffSqes          = 0x10000000
)

// ioUringParams is struct io_uring_params: the offsets in sqOff and cqOff
// are those of struct io_sqring_offsets and io_cqring_offsets.
type ioUringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  [10]uint32 // head, tail, ring_mask, ring_entries, flags, dropped, array, resv1, user_addr (u64)
	cqOff                                                                  [10]uint32 // head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1, user_addr (u64)
}

// ioUringSqe is struct io_uring_sqe (64 bytes), as a send fills it.
type ioUringSqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	msgFlags    uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFDIn  int32
	addr3       uint64
	_           uint64
}

// ioUringCqe is struct io_uring_cqe (16 bytes).
type ioUringCqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// sendRing is an io_uring instance that only sends: a submission queue of
// maxSendBatch sendmsg requests, each with MSG_DONTWAIT, so that a socket
// whose buffer is full answers EAGAIN at once (its writer goes on in
// flush, as after a writev) and no request ever waits in the kernel: every
// submission is complete when submit returns, and the buffers it named are
// the caller's again.
type sendRing struct {
	fd     int
	rings  []byte // SQ and CQ rings, one mapping (IORING_FEAT_SINGLE_MMAP)
	sqeMem []byte

	sqTail, sqMask *uint32
	sqArray        []uint32
	sqes           []ioUringSqe
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []ioUringCqe

	// Per entry of a submission, kept until the next: the msghdr and the
	// iovecs the kernel reads (Go memory, referenced from here while the
	// kernel may read it).
	hdrs []unix.Msghdr
	iovs []unix.Iovec

	// The submission at hand (submit): its entries and the one whose
	// descriptor is held next.
	entries []sendEntry
	i       int
	fn      func(fd uintptr)
	// broken: io_uring_enter failed; the ring is not used again.
	broken error
}

// newSendRing sets up a ring and checks that a send that would block
// answers EAGAIN instead of waiting; nil and why when io_uring cannot be
// used here.
func newSendRing() (*sendRing, error) {
	var p ioUringParams
	p.flags = ioringSetupSubmitAll | ioringSetupCoopTaskrun
	fd, _, errno := unix.Syscall(sysIOUringSetup, maxSendBatch, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &sendRing{fd: int(fd)}
	if err := r.mmap(&p); err != nil {
		r.close()
		return nil, err
	}
	if err := r.probeNowait(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// mmap maps the rings (IORING_FEAT_SINGLE_MMAP: one mapping for both,
// Linux 5.4) and the SQE array.
func (r *sendRing) mmap(p *ioUringParams) error {
	if p.features&ioringFeatSingleMmap == 0 || p.sqEntries < maxSendBatch || p.cqEntries < maxSendBatch {
		return errors.New("io_uring: this kernel's ring lacks IORING_FEAT_SINGLE_MMAP")
	}
	size := max(p.sqOff[6]+p.sqEntries*4, p.cqOff[5]+p.cqEntries*uint32(unsafe.Sizeof(ioUringCqe{})))
	rings, err := unix.Mmap(r.fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("io_uring rings: %w", err)
	}
	r.rings = rings
	sqeMem, err := unix.Mmap(r.fd, ioringOffSqes, int(p.sqEntries)*int(unsafe.Sizeof(ioUringSqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("io_uring SQEs: %w", err)
	}
	r.sqeMem = sqeMem
	base := unsafe.Pointer(&rings[0])
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqTail, r.sqMask = at(p.sqOff[1]), at(p.sqOff[2])
	r.sqArray = unsafe.Slice(at(p.sqOff[6]), p.sqEntries)
	r.cqHead, r.cqTail, r.cqMask = at(p.cqOff[0]), at(p.cqOff[1]), *at(p.cqOff[2])
	r.cqes = unsafe.Slice((*ioUringCqe)(unsafe.Add(base, p.cqOff[5])), p.cqEntries)
	r.sqes = unsafe.Slice((*ioUringSqe)(unsafe.Pointer(&sqeMem[0])), p.sqEntries)
	r.hdrs = make([]unix.Msghdr, maxSendBatch)
	r.iovs = make([]unix.Iovec, 0, maxSendBatch)
	return nil
}

func (r *sendRing) close() {
	if r.sqeMem != nil {
		_ = unix.Munmap(r.sqeMem)
	}
	if r.rings != nil {
		_ = unix.Munmap(r.rings)
	}
	_ = unix.Close(r.fd)
}

// submit sends each entry's buffers on its connection, in one io_uring_enter
// per submission, and sets each entry's res (or closed). The descriptors
// are held for the whole submission the way a writev holds its one
// (RawConn.Control, nested: a connection closed meanwhile is not closed
// for good until the submission is over, so its number cannot be reused
// by another client's connection and get this one's frames).
func (r *sendRing) submit(entries []sendEntry) {
	if r.fn == nil {
		r.fn = r.held // bound once: a method value given to Control escapes
	}
	r.entries, r.i = entries, 0
	r.next()
	r.entries = nil
}

// next holds the descriptor of each entry from r.i on (RawConn.Control)
// while it calls itself for the following one, and submits from the
// innermost call.
func (r *sendRing) next() {
	for r.i < len(r.entries) {
		e := &r.entries[r.i]
		if err := e.w.raw.Control(r.fn); err == nil {
			return // the rest ran inside, the submission too
		}
		e.closed = true
		r.i++
	}
	r.enter(r.entries)
}

func (r *sendRing) held(fd uintptr) {
	r.entries[r.i].fd = int32(fd)
	r.i++
	r.next()
}

// enter fills an SQE per open entry, submits them and waits for every
// completion (they come at once: MSG_DONTWAIT).
func (r *sendRing) enter(entries []sendEntry) {
	iovs := r.iovs[:0]
	for _, e := range entries {
		if e.closed {
			continue
		}
		for _, b := range e.bufs[:min(len(e.bufs), maxIovecs)] {
			if len(b) > 0 {
				v := unix.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				iovs = append(iovs, v)
			}
		}
	}
	r.iovs = iovs // grown once and kept; cleared after each submission
	tail := *r.sqTail
	n, at := 0, 0
	for i := range entries {
		e := &entries[i]
		if e.closed {
			continue
		}
		k := 0
		for _, b := range e.bufs[:min(len(e.bufs), maxIovecs)] {
			if len(b) > 0 {
				k++
			}
		}
		if k == 0 {
			e.res = 0 // nothing to send: its empty buffers are dropped
			continue
		}
		hdr := &r.hdrs[n]
		*hdr = unix.Msghdr{Iov: &iovs[at]}
		hdr.SetIovlen(k)
		at += k
		idx := (tail + uint32(n)) & *r.sqMask
		r.sqes[idx] = ioUringSqe{
			opcode:   ioringOpSendmsg,
			fd:       e.fd,
			addr:     uint64(uintptr(unsafe.Pointer(hdr))),
			msgFlags: unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL,
			userData: uint64(i),
		}
		r.sqArray[idx] = idx
		n++
	}
	if n == 0 {
		return
	}
	atomic.StoreUint32(r.sqTail, tail+uint32(n)) // the kernel reads the SQEs after this
	toSubmit, got := n, 0
	for got < n {
		// A raw system call, as writeNonblock's: nothing here waits (every
		// send is MSG_DONTWAIT), so the runtime need not hand the P on.
		// io_uring_enter returns how many SQEs it took, having waited for
		// n-got completions; EINTR only when it took none.
		ret, _, errno := syscall.RawSyscall6(sysIOUringEnter, uintptr(r.fd), uintptr(toSubmit), uintptr(n-got), ioringEnterGetevents, 0, 0)
		switch errno {
		case 0:
			toSubmit -= int(ret)
		case unix.EINTR, unix.EAGAIN, unix.EBUSY:
		default:
			// Never seen: the ring's own descriptor or memory is wrong.
			// Its requests may still name these buffers, so the ring is
			// kept, unused, and the sends not completed fail (their
			// sessions end) rather than wait.
			r.broken = fmt.Errorf("io_uring_enter: %w", errno)
			r.reap(entries, &got)
			return
		}
		r.reap(entries, &got)
	}
	clear(r.hdrs[:n])
	clear(r.iovs)
}

// reap takes the completions posted, setting each entry's res.
func (r *sendRing) reap(entries []sendEntry, got *int) {
	head := *r.cqHead
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		c := &r.cqes[head&r.cqMask]
		entries[c.userData].res = c.res
		*got++
	}
	atomic.StoreUint32(r.cqHead, head)
}

// probeNowait checks that a send to a full socket completes at once with
// EAGAIN (kernels that instead wait for the socket to drain would stall a
// fan-out worker behind a slow client): it fills a socket pair and sends
// once more through the ring.
func (r *sendRing) probeNowait() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fds[1])
	defer unix.Close(fds[0])
	chunk := make([]byte, 64<<10)
	for {
		if _, err := unix.Write(fds[0], chunk); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			return err
		}
	}
	// In the ring's own memory (heap, not this stack: a send that waited
	// would read it after this function's stack may have moved).
	r.iovs = append(r.iovs[:0], unix.Iovec{Base: &chunk[0]})
	r.iovs[0].SetLen(len(chunk))
	hdr := &r.hdrs[0]
	*hdr = unix.Msghdr{Iov: &r.iovs[0]}
	hdr.SetIovlen(1)
	defer func() { clear(r.iovs); r.iovs = r.iovs[:0]; *hdr = unix.Msghdr{} }()
	tail := *r.sqTail
	idx := tail & *r.sqMask
	r.sqes[idx] = ioUringSqe{opcode: ioringOpSendmsg, fd: int32(fds[0]), addr: uint64(uintptr(unsafe.Pointer(hdr))), msgFlags: unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL}
	r.sqArray[idx] = idx
	atomic.StoreUint32(r.sqTail, tail+1)
	if _, _, errno := unix.Syscall6(sysIOUringEnter, uintptr(r.fd), 1, 0, ioringEnterGetevents, 0, 0); errno != 0 {
		return fmt.Errorf("io_uring_enter: %w", errno)
	}
	var res []int32
	r.collect(&res)
	if len(res) == 0 {
		// The send waits for room: let it go (the peer closes, the send
		// fails) before the buffers go, and do not use the ring.
		_ = unix.Close(fds[1])
		for len(res) == 0 {
			if _, _, errno := unix.Syscall6(sysIOUringEnter, uintptr(r.fd), 0, 1, ioringEnterGetevents, 0, 0); errno != 0 && errno != unix.EINTR {
				return fmt.Errorf("io_uring_enter: %w", errno)
			}
			r.collect(&res)
		}
		return errors.New("io_uring: a send to a full socket waits here instead of answering EAGAIN")
	}
	if syscall.Errno(-res[0]) != unix.EAGAIN {
		return fmt.Errorf("io_uring: a send to a full socket answered %d, not EAGAIN", res[0])
	}
	return nil
}

// collect appends the results of the completions posted.
func (r *sendRing) collect(res *[]int32) {
	head := *r.cqHead
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		*res = append(*res, r.cqes[head&r.cqMask].res)
	}
	atomic.StoreUint32(r.cqHead, head)
}

// errnoErr is a send's error from its negated errno; EAGAIN is none (the
// kernel took nothing, the rest waits in flush).
func errnoErr(errno int32) error {
	if e := syscall.Errno(errno); e != unix.EAGAIN {
		return e
	}
	return nil
}
