package h1

import (
	"errors"
	"net"
	"os"
	"time"
)

// The watch for a client gone mid-request. With no background reader, a
// client that disconnects while its handler is still at work would be
// noticed only when the answer is written. So, once a handler has run
// for WatchAfter and the request's body has been read to its end (before
// that, the body's own reads notice), a one-byte read is started on the
// connection in the background:
//   - EOF or an error: the client is gone (or broke the framing). The
//     connection's context is cancelled, which cancels the request's (as
//     net/http does at once), and the error is kept for the next read of
//     the connection, so that it ends after the answer.
//   - A byte (the head of a pipelined request): kept, and given back by
//     connReader ahead of the connection's next bytes. The watch ends.
//
// When the handler returns (or hijacks), the watch is stopped: a read
// deadline in the past, and a wait for the read to return; only then does
// anything else read the connection. Requests shorter than WatchAfter cost
// a clock read and two uncontended locks; nothing is allocated, and the
// connection's timer is not moved: it runs on from request to request and
// fires about once per WatchAfter on a busy connection.
//
// Locking: watchMu guards armed, armedAt, timing, due, bodyDone, running
// and stopping.
// held, heldByte and watchErr are written by the watch goroutine before
// it signals watchDone, and read by the connection's goroutine only after
// stopWatch received that signal.

const defaultWatchAfter = time.Second

// watchHook, set by tests only, is told each step of a watch: "start",
// "byte" (kept), "gone" (EOF or an error), "stopped" (by stopWatch).
var watchHook func(c net.Conn, event string)

func (c *conn) tellWatch(event string) {
	if watchHook != nil {
		watchHook(c.rwc, event)
	}
}

// armWatch starts the request's wait; bodyDone: it has no body to read.
// The connection's timer is left running across requests (moving a timer
// costs a lock and a heap operation): armWatch notes when the request
// began, and starts the timer only when it is not running.
func (c *conn) armWatch(bodyDone bool) {
	if c.watchAfter < 0 {
		return
	}
	now := time.Now()
	c.watchMu.Lock()
	c.armed, c.due, c.bodyDone = true, false, bodyDone
	c.armedAt = now
	if !c.timing {
		c.timing = true
		if c.watchTimer == nil {
			c.watchDone = make(chan struct{}, 1)
			c.watchTimer = time.AfterFunc(c.watchAfter, c.watchDue)
		} else {
			c.watchTimer.Reset(c.watchAfter)
		}
	}
	c.watchMu.Unlock()
}

// watchDue runs when the timer fires: a request armed for WatchAfter is
// due; one armed later than that (the timer was left running from an
// earlier request) waits out the rest; with none armed the timer stops.
func (c *conn) watchDue() {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	c.timing = false
	if !c.armed {
		return
	}
	if left := c.watchAfter - time.Since(c.armedAt); left > 0 {
		c.timing = true
		c.watchTimer.Reset(left)
		return
	}
	c.due = true
	if c.bodyDone {
		c.startWatchLocked()
	}
}

// bodyEOF: the request's body was read to its end.
func (c *conn) bodyEOF() {
	if c.watchAfter < 0 {
		return
	}
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	c.bodyDone = true
	if c.armed && c.due {
		c.startWatchLocked()
	}
}

func (c *conn) startWatchLocked() {
	if c.running {
		return
	}
	c.running = true
	// No deadline: the read lasts until the handler returns (stopWatch),
	// not until the ReadHeaderTimeout set for the head.
	c.setReadDeadline(time.Time{})
	c.tellWatch("start")
	go c.watch()
}

// watch is the background read.
func (c *conn) watch() {
	n, err := c.rwc.Read(c.heldByte[:])
	c.watchMu.Lock()
	stopping := c.stopping
	c.watchMu.Unlock()
	if n == 1 {
		c.held = true
		c.tellWatch("byte")
	}
	if err != nil && !(stopping && isTimeout(err)) {
		c.watchErr = err
		c.cancel()
		c.tellWatch("gone")
	} else if err != nil {
		c.tellWatch("stopped")
	}
	c.watchDone <- struct{}{}
}

// stopWatch ends the request's watch and waits for its read to return.
// The timer goes on (armWatch); it stops at its next firing, or with the
// connection (endWatch).
func (c *conn) stopWatch() {
	if c.watchTimer == nil {
		return
	}
	c.watchMu.Lock()
	c.armed = false
	running := c.running
	if running {
		c.stopping = true
		c.setReadDeadline(aLongTimeAgo)
	}
	c.watchMu.Unlock()
	if !running {
		return
	}
	<-c.watchDone
	c.watchMu.Lock()
	c.running, c.stopping = false, false
	c.watchMu.Unlock()
}

// endWatch stops the timer when the connection ends.
func (c *conn) endWatch() {
	if c.watchTimer != nil {
		c.watchTimer.Stop()
	}
}

// readHeld gives back what the watch read: its byte, then its error.
func (c *conn) readHeld(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.held {
		c.held = false
		p[0] = c.heldByte[0]
		return 1, nil
	}
	return 0, c.watchErr
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
