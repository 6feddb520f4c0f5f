package render

import (
	"bufio"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// ProcessOptions runs the rendering of cache misses in child processes,
// each with a memory limit and a watchdog, so that a hostile repository
// (an alias bomb, a template that never ends) costs its own render and
// never ferry. Fetching, the render cache and its hits stay in ferry.
type ProcessOptions struct {
	// Command starts a render process: a binary whose main calls
	// RunRenderProcess first. Empty means this executable.
	Command []string
	// MemoryLimit is the most memory one render process may use, in
	// bytes: its private resident memory, not the pages of the binary it
	// shares with ferry. The watchdog stops a process that passes it, and
	// its render fails naming the limit; the process's GOMEMLIMIT is set
	// below it, and its address space is limited to what it mapped at
	// start plus the limit and a margin.
	MemoryLimit int64
	// Processes bounds the render processes running at once; renders
	// beyond it wait for one.
	Processes int
	// IdleTimeout stops a render process that has had no render for
	// this long. Zero means a minute.
	IdleTimeout time.Duration
}

// DefaultMemoryLimit is `--render-memory-limit`'s default.
const DefaultMemoryLimit = 512 << 20

// watchdogInterval is how often the watchdog reads a busy process's
// private memory.
const watchdogInterval = 10 * time.Millisecond

// processPool keeps the render processes of one Renderer.
type processPool struct {
	opts ProcessOptions
	cfg  processConfig
	log  *slog.Logger
	// slots holds one token per process that may run.
	slots chan struct{}

	mu     sync.Mutex
	idle   []*renderProcess
	closed bool
	stop   chan struct{}
}

func newProcessPool(opts ProcessOptions, cfg processConfig, log *slog.Logger) (*processPool, error) {
	if opts.MemoryLimit < 64<<20 {
		return nil, fmt.Errorf("%w: a render process needs a memory limit of at least 64 MiB", ErrInvalidOption)
	}
	if opts.Processes < 1 {
		return nil, fmt.Errorf("%w: at least one render process", ErrInvalidOption)
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = time.Minute
	}
	if len(opts.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding ferry's executable for render processes: %w", err)
		}
		opts.Command = []string{exe}
	}
	p := &processPool{opts: opts, cfg: cfg, log: log, slots: make(chan struct{}, opts.Processes), stop: make(chan struct{})}
	go p.reapIdle()
	return p, nil
}

// renderProcess is one child process and its pipes.
type renderProcess struct {
	cmd     *exec.Cmd
	enc     *gob.Encoder
	req     io.WriteCloser
	replies chan fromProcess
	exited  chan struct{}
	// stderr reads what the process writes to stderr, and keeps why it
	// died.
	stderr   *stderrReader
	lastUsed time.Time
}

// render runs renderResolved in a render process.
func (p *processPool) render(ctx context.Context, r *Renderer, app *v1alpha1.Application, snaps []*Snapshot) (*rendered, error) {
	name := app.Namespace + "/" + app.Name
	appJSON, err := json.Marshal(app)
	if err != nil {
		return nil, &AppError{App: name, Source: -1, Err: err}
	}
	req := &processRender{App: appJSON, Commits: make([]string, len(snaps)), Trace: trace.SpanFromContext(ctx).IsRecording()}
	for i, s := range snaps {
		if s != nil {
			req.Commits[i] = s.Commit.String()
		}
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("app %s: waiting for a render process: %w", name, ctx.Err())
	}
	defer func() { <-p.slots }()
	proc, err := p.take()
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", name, err)
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int("ferry.render.pid", proc.cmd.Process.Pid))
	res, err := p.exchange(ctx, r, proc, req)
	if err != nil {
		proc.kill()
		return nil, p.describe(ctx, name, proc, err, r.opts.Timeout)
	}
	replaySpans(ctx, res.TraceRoot, res.Spans)
	if rss, _ := privateBytes(proc.cmd.Process.Pid); rss > p.opts.MemoryLimit/2 {
		// Heaps shrink slowly; a fresh process is cheaper than carrying one.
		proc.kill()
	} else {
		p.putIdle(proc)
	}
	if res.Err != nil {
		return nil, res.Err.err()
	}
	return &rendered{objects: res.Objects, chartVersion: res.ChartVersion, in: inputsFromProcess(res, r.opts.MaxInputBytes)}, nil
}

// exchange sends one render to proc and answers its questions until the
// result comes, under the watchdog.
func (p *processPool) exchange(ctx context.Context, r *Renderer, proc *renderProcess, req *processRender) (*processResult, error) {
	if err := proc.enc.Encode(toProcess{Render: req}); err != nil {
		return nil, fmt.Errorf("sending the render: %w", err)
	}
	watch := time.NewTicker(watchdogInterval)
	defer watch.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-watch.C:
			if rss, err := privateBytes(proc.cmd.Process.Pid); err == nil && rss > p.opts.MemoryLimit {
				proc.kill()
				return nil, errProcessMemory
			}
		case m, ok := <-proc.replies:
			if !ok {
				return nil, errProcessDied
			}
			switch {
			case m.Result != nil:
				return m.Result, nil
			case m.NeedCreds != "":
				a := &credsAnswer{Asked: true}
				if r.opts.Credentials != nil {
					// The process's own lookupCredentials judges the answer.
					c, err := r.opts.Credentials.Lookup(ctx, m.NeedCreds)
					a.Creds = c
					if err != nil {
						a.Err = newProcessError(err)
					}
				}
				if err := proc.enc.Encode(toProcess{Creds: a}); err != nil {
					return nil, fmt.Errorf("answering the render process: %w", err)
				}
			case m.NeedCaps:
				a := &capsAnswer{Asked: true}
				c, err := r.capabilities(ctx, m.Dest)
				a.Caps = c
				if err != nil {
					a.Err = newProcessError(err)
				}
				if err := proc.enc.Encode(toProcess{Caps: a}); err != nil {
					return nil, fmt.Errorf("answering the render process: %w", err)
				}
			}
		}
	}
}

var (
	errProcessMemory = errors.New("memory limit")
	errProcessDied   = errors.New("render process exited")
)

// describe turns the end of a render process into the app's render error.
func (p *processPool) describe(ctx context.Context, name string, proc *renderProcess, err error, timeout time.Duration) error {
	limit := fmt.Sprintf("%d MiB", p.opts.MemoryLimit>>20)
	<-proc.exited
	last := proc.stderr.reason()
	switch {
	case errors.Is(err, errProcessMemory) || strings.Contains(last, "out of memory"):
		p.log.WarnContext(ctx, "render process stopped at its memory limit", "app", name, "limit", limit)
		return &AppError{App: name, Source: -1, Err: &SourceError{Err: fmt.Errorf(
			"the render used more than its memory limit of %s (--render-memory-limit); its render process was stopped: %w", limit, ErrLimitExceeded)}}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		p.log.WarnContext(ctx, "render process stopped at its time limit", "app", name, "limit", timeout)
		return &AppError{App: name, Source: -1, Err: &SourceError{Err: fmt.Errorf(
			"the render timed out after %s (--render-timeout); its render process was stopped: %w", timeout, ErrLimitExceeded)}}
	case ctx.Err() != nil:
		return &AppError{App: name, Source: -1, Err: fmt.Errorf("render canceled: %w", ctx.Err())}
	case errors.Is(err, errProcessDied) && last != "":
		p.log.WarnContext(ctx, "render process crashed", "app", name, "reason", last)
		// A crash the input causes comes back on every try.
		return &AppError{App: name, Source: -1, Err: &SourceError{Err: fmt.Errorf("the render process crashed: %s", last)}}
	case errors.Is(err, errProcessDied):
		// Killed from outside without a word, by the kernel's OOM killer
		// for one: worth another try, which the job's deliveries bound.
		p.log.WarnContext(ctx, "render process killed", "app", name, "state", proc.cmd.ProcessState.String())
		return &AppError{App: name, Source: -1, Err: &SourceError{Transient: true, Err: fmt.Errorf(
			"the render process ended (%s) before it answered; a process killed for memory by the kernel ends so", proc.cmd.ProcessState)}}
	}
	return &AppError{App: name, Source: -1, Err: err}
}

// take returns an idle render process, or starts one.
func (p *processPool) take() (*renderProcess, error) {
	p.mu.Lock()
	for len(p.idle) > 0 {
		proc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		select {
		case <-proc.exited:
			continue
		default:
		}
		p.mu.Unlock()
		return proc, nil
	}
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, errors.New("the renderer is closed")
	}
	return p.start()
}

func (p *processPool) putIdle(proc *renderProcess) {
	proc.lastUsed = time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		proc.kill()
		return
	}
	p.idle = append(p.idle, proc)
}

// start starts a render process and sends it its configuration.
func (p *processPool) start() (*renderProcess, error) {
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("starting a render process: %w", err)
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		return nil, fmt.Errorf("starting a render process: %w", err)
	}
	cmd := exec.Command(p.opts.Command[0], p.opts.Command[1:]...)
	cmd.ExtraFiles = []*os.File{reqR, repW} // fds 3 and 4
	cmd.Env = p.processEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = nil
	if err := cmd.Start(); err != nil {
		reqR.Close()
		reqW.Close()
		repR.Close()
		repW.Close()
		return nil, fmt.Errorf("starting a render process (%s): %w", p.opts.Command[0], err)
	}
	reqR.Close()
	repW.Close()
	proc := &renderProcess{cmd: cmd, req: reqW, enc: gob.NewEncoder(reqW), replies: make(chan fromProcess), exited: make(chan struct{}), stderr: &stderrReader{}}
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		proc.stderr.read(stderr, p.log, cmd.Process.Pid)
	}()
	go func() {
		defer close(proc.replies)
		dec := gob.NewDecoder(repR)
		for {
			var m fromProcess
			if err := dec.Decode(&m); err != nil {
				repR.Close()
				return
			}
			select {
			case proc.replies <- m:
			case <-proc.exited:
				return
			}
		}
	}()
	go func() {
		<-stderrDone
		_ = cmd.Wait()
		close(proc.exited)
	}()
	if err := proc.enc.Encode(toProcess{Config: &p.cfg}); err != nil {
		proc.kill()
		return nil, fmt.Errorf("configuring a render process: %w", err)
	}
	p.log.Debug("render process started", "pid", cmd.Process.Pid)
	return proc, nil
}

// processEnv is the environment of a render process: what finding files,
// proxies and certificates needs, and its limits. ferry's own environment
// may hold secrets, which a render has no use for.
func (p *processPool) processEnv() []string {
	env := []string{
		processEnv + "=1",
		processASLimitEnv + "=" + strconv.FormatInt(p.opts.MemoryLimit, 10),
		// The collector works harder as the heap nears three quarters of
		// the limit; the rest is the binary, stacks and what the
		// watchdog sees between two looks.
		"GOMEMLIMIT=" + strconv.FormatInt(p.opts.MemoryLimit*3/4, 10),
		// A render process starts with a small heap, which the default
		// GOGC would collect over and over; GOMEMLIMIT bounds it instead.
		// It makes a render in a process as fast as one here.
		"GOGC=400",
	}
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "TZ", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR",
		"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "GODEBUG", "GOCOVERDIR", "GOMAXPROCS"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// kill stops the process.
func (proc *renderProcess) kill() {
	proc.req.Close()
	_ = proc.cmd.Process.Kill()
}

// reapIdle stops processes that have been idle longer than IdleTimeout.
func (p *processPool) reapIdle() {
	t := time.NewTicker(p.opts.IdleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		kept := p.idle[:0]
		for _, proc := range p.idle {
			if time.Since(proc.lastUsed) > p.opts.IdleTimeout {
				proc.kill()
				continue
			}
			kept = append(kept, proc)
		}
		p.idle = kept
		p.mu.Unlock()
	}
}

// close stops every idle process now and every busy one when its render
// ends.
func (p *processPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	close(p.stop)
	for _, proc := range p.idle {
		proc.kill()
	}
	p.idle = nil
}

// privateBytes reads the memory a process has of its own: its resident
// set without the pages of files it maps, the binary's among them, which
// the page cache shares with ferry.
func privateBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, fmt.Errorf("short statm %q", b)
	}
	resident, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, err
	}
	shared, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return 0, err
	}
	return (resident - shared) * int64(os.Getpagesize()), nil
}

// stderrReader reads a render process's stderr: each line goes to ferry's log
// at debug level, bounded in length, and the line that says why the
// process died is kept.
type stderrReader struct {
	mu sync.Mutex
	// why is the first line in which Go says why the process ends.
	why string
}

// maxLineSize bounds a line of a render process's output in ferry's log.
const maxLineSize = 1024

func (t *stderrReader) read(r io.Reader, log *slog.Logger, pid int) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if len(line) > maxLineSize {
			line = line[:maxLineSize]
		}
		log.Debug("render process output", "pid", pid, "line", line)
		t.mu.Lock()
		if t.why == "" && (strings.HasPrefix(line, "fatal error:") || strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "runtime:")) {
			t.why = line
		}
		t.mu.Unlock()
	}
	// A line longer than the scanner's buffer ends the scan; drain the
	// rest so the process never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

// reason returns the line in which Go said why the process ended, or "".
func (t *stderrReader) reason() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.why
}
