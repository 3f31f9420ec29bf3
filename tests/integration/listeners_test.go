// This file owns loading a config into the suite's Caddy so that the next
// request reaches the new config and nothing else.
//
// On Linux, Caddy gives each config its own SO_REUSEPORT socket and closes
// the old config's socket only when that config's server begins shutting
// down, which may happen after the admin API has answered the load. Until
// then the kernel hands new connections to either socket; one that lands
// on the old socket is served by the old config, or, if its shutdown has
// begun meanwhile, closed unanswered (the client sees EOF). CI once saw a
// request right after a load end in EOF; this is the mechanism found for
// it. So a load waits until every port of the suite has one listening
// socket again.
package integration

import (
	"bufio"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// loadConfig loads a Caddyfile into the suite's Caddy and returns once
// only the new config listens on the suite's ports.
func loadConfig(t *testing.T, tester *caddytest.Tester, caddyfile string) {
	t.Helper()
	tester.InitServer(caddyfile, "caddyfile")
	awaitSingleListeners(t, gatewayPort, plainPort)
}

// awaitSingleListeners waits until each port has at most one listening TCP
// socket. Where /proc/net/tcp does not exist (not Linux) there is nothing
// to read and it returns at once.
func awaitSingleListeners(t *testing.T, ports ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		counts, ok := listeningSockets()
		if !ok {
			return
		}
		busy := -1
		for _, p := range ports {
			if counts[p] > 1 {
				busy = p
			}
		}
		if busy < 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d still has %d listening sockets 10s after the config load: the previous config's server did not shut down", busy, counts[busy])
		}
		time.Sleep(time.Millisecond)
	}
}

// listeningSockets counts the TCP sockets in state LISTEN per local port,
// over IPv4 and IPv6, from /proc/net/tcp{,6}. ok is false where neither
// file can be read.
func listeningSockets() (counts map[int]int, ok bool) {
	counts = make(map[int]int)
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		ok = true
		sc := bufio.NewScanner(f)
		sc.Scan() // the header line
		for sc.Scan() {
			// sl local_address rem_address st ...; st 0A is LISTEN.
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" {
				continue
			}
			_, portHex, found := strings.Cut(fields[1], ":")
			if !found {
				continue
			}
			if port, err := strconv.ParseUint(portHex, 16, 16); err == nil {
				counts[int(port)]++
			}
		}
		f.Close()
	}
	return counts, ok
}

// TestListeningSocketsAreCounted keeps awaitSingleListeners honest: a
// socket this test opens is counted while open and gone once closed, so
// the wait above cannot pass by reading nothing.
func TestListeningSocketsAreCounted(t *testing.T) {
	if _, ok := listeningSockets(); !ok {
		t.Skip("no /proc/net/tcp here: loads do not wait for the old socket")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if counts, _ := listeningSockets(); counts[port] != 1 {
		t.Errorf("an open listener on port %d: counted %d", port, counts[port])
	}
	ln.Close()
	if counts, _ := listeningSockets(); counts[port] != 0 {
		t.Errorf("a closed listener on port %d: counted %d", port, counts[port])
	}
}
