// Package epp is the Tier 1 check of `tessera epp`: an ext_proc client built from envoy's own Go
// API module (github.com/envoyproxy/go-control-plane/envoy, the types Envoy's control planes and
// the Inference Extension's picker compile against) drives a real `tessera epp` child process
// over gRPC, with small Go model servers behind it whose /metrics the picker scrapes.
package epp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// ModelServer is a fake vLLM replica: /metrics carries the queue gauges the picker scrapes;
// Down makes /metrics answer 503, so the picker marks the endpoint not ready.
type ModelServer struct {
	Addr    string // "127.0.0.1:port", the value the picker routes to
	Down    atomic.Bool
	Waiting atomic.Int64
	srv     *http.Server
}

// StartModelServer listens on an ephemeral loopback port.
func StartModelServer() (*ModelServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &ModelServer{Addr: ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if m.Down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} %d\n", m.Waiting.Load())
		fmt.Fprintf(w, "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} 0\n")
		fmt.Fprintf(w, "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.1\n")
	})
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = m.srv.Serve(ln) }()
	return m, nil
}

func (m *ModelServer) Close() { _ = m.srv.Close() }

// Picker is one running `tessera epp` child process.
type Picker struct {
	Target  string // gRPC "127.0.0.1:port" from its banner
	cmd     *exec.Cmd
	exited  chan error
	logPath string
}

var bannerRe = regexp.MustCompile(`tessera epp listening on (\S+)`)

// StartPicker runs `node bin/tessera.js epp --listen 127.0.0.1:0 --endpoints ...` in its own
// process group and waits for its banner (printed once the endpoints were scraped).
func StartPicker(repo string, endpoints []string, extra ...string) (*Picker, error) {
	dir, err := os.MkdirTemp("", "tessera-epp-conf-")
	if err != nil {
		return nil, err
	}
	p := &Picker{logPath: filepath.Join(dir, "epp.log"), exited: make(chan error, 1)}
	urls := make([]string, len(endpoints))
	for i, e := range endpoints {
		urls[i] = "http://" + e
	}
	args := append([]string{filepath.Join(repo, "bin", "tessera.js"), "epp", "--listen", "127.0.0.1:0",
		"--metrics-listen", "off", "--endpoints", strings.Join(urls, ","), "--scrape-interval-ms", "50"}, extra...)
	p.cmd = exec.Command("node", args...)
	p.cmd.Dir = repo
	logf, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start tessera epp: %w", err)
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if m := bannerRe.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(logf, out)
	}()
	go func() { p.exited <- p.cmd.Wait() }()
	select {
	case t := <-found:
		p.Target = t
		return p, nil
	case err := <-p.exited:
		p.exited <- err
		return nil, fmt.Errorf("tessera epp exited before listening (%v): %s", err, p.LogTail())
	case <-time.After(60 * time.Second):
		p.Stop()
		return nil, fmt.Errorf("tessera epp printed no banner in 60s: %s", p.LogTail())
	}
}

// Alive reports whether the child is still running.
func (p *Picker) Alive() bool {
	select {
	case err := <-p.exited:
		p.exited <- err
		return false
	default:
		return true
	}
}

// LogTail is the last lines of the picker's output, for failure details.
func (p *Picker) LogTail() string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// Stop sends SIGTERM to the group, waits up to 10 s (the picker drains streams for 2 s), then
// SIGKILLs it; it reports the exit status of a clean stop.
func (p *Picker) Stop() error {
	if p.cmd.Process == nil {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-p.exited:
		p.exited <- err
		_ = os.RemoveAll(filepath.Dir(p.logPath))
		return err
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("tessera epp did not stop within 10s of SIGTERM")
	}
}

// waitCtx is a context for one check: bounded, and cancelled with the run.
func waitCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
