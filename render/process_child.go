package render

import (
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// RunRenderProcess serves renders for the ferry process that started this
// one, when this process was started as a render process, and then exits.
// Otherwise it returns at once. ferry's main calls it first thing; a test
// binary whose renders run in processes calls it from TestMain.
func RunRenderProcess() {
	if os.Getenv(processEnv) == "" {
		return
	}
	if err := limitAddressSpace(os.Getenv(processASLimitEnv)); err != nil {
		fmt.Fprintf(os.Stderr, "render process: %v\n", err)
		os.Exit(2)
	}
	in := os.NewFile(processRequestFD, "requests")
	out := os.NewFile(processReplyFD, "replies")
	if in == nil || out == nil {
		fmt.Fprintln(os.Stderr, "render process: started without its pipes")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := serveRenders(context.Background(), in, out, log); err != nil {
		fmt.Fprintf(os.Stderr, "render process: %v\n", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// limitAddressSpace sets RLIMIT_AS to the address space the process has
// mapped so far plus the memory limit and a margin: the kernel's backstop
// behind the parent's watchdog, for an allocation burst between two of its
// looks. Go maps far more address space than it touches, which is why the
// limit counts from what is mapped at start.
func limitAddressSpace(v string) error {
	if v == "" {
		return nil
	}
	limit, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return fmt.Errorf("bad %s %q: %v", processASLimitEnv, v, err)
	}
	mapped, err := procStatusBytes("/proc/self/status", "VmSize:")
	if err != nil {
		return err
	}
	n := uint64(mapped) + limit + asMargin
	return syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: n, Max: n})
}

// asMargin is what the address-space limit allows past the memory limit,
// for the arenas and stacks the runtime maps ahead of use.
const asMargin = 512 << 20

// procStatusBytes reads a "kB" field of a /proc status file.
func procStatusBytes(path, field string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s %s: %v", path, field, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s has no %s", path, field)
}

// processServer is the render process's side of the pipes.
type processServer struct {
	enc     *gob.Encoder
	encMu   sync.Mutex
	answers chan toProcess
	// askMu keeps one question to the parent open at a time, so answers
	// come back in order.
	askMu sync.Mutex
	// abandoned is set when a question was given up: its answer may
	// still come, so the process ends after the render instead of reading
	// it as the answer to the next question.
	abandoned bool
}

// serveRenders reads the configuration, then renders one request at a time
// until the parent closes the request pipe.
func serveRenders(ctx context.Context, in io.Reader, out io.Writer, log *slog.Logger) error {
	dec := gob.NewDecoder(in)
	var first toProcess
	if err := dec.Decode(&first); err != nil {
		return fmt.Errorf("reading the configuration: %w", err)
	}
	cfg := first.Config
	if cfg == nil {
		return errors.New("the first message is not the configuration")
	}
	s := &processServer{enc: gob.NewEncoder(out), answers: make(chan toProcess)}
	git, err := NewGitCache(cfg.GitDir)
	if err != nil {
		return err
	}
	git.offline = true
	opts := Options{
		Timeout: cfg.Timeout, MaxInputBytes: cfg.MaxInputBytes, MaxOutputBytes: cfg.MaxOutputBytes,
		MaxObjects: cfg.MaxObjects, ChartCacheDir: cfg.ChartCacheDir, ChartIndexTTL: cfg.ChartIndexTTL,
		KustomizeRemoteBases: cfg.KustomizeRemoteBases, AllowedHosts: cfg.AllowedHosts,
		ApplicationNamespace: cfg.ApplicationNamespace,
	}
	if cfg.HasCredentials {
		opts.Credentials = s
	}
	if cfg.HasCapabilities {
		opts.Capabilities = CapabilitiesFunc(s.capabilities)
	}
	r, err := New(git, opts, log)
	if err != nil {
		return err
	}
	spans := installSpanCollector()

	renders := make(chan *processRender)
	readErr := make(chan error, 1)
	go func() {
		defer close(renders)
		for {
			var m toProcess
			if err := dec.Decode(&m); err != nil {
				if !errors.Is(err, io.EOF) {
					readErr <- err
				}
				return
			}
			switch {
			case m.Render != nil:
				renders <- m.Render
			case m.Creds != nil || m.Caps != nil:
				s.answers <- m
			}
		}
	}()
	for req := range renders {
		rctx, root := ctx, [8]byte{}
		if req.Trace {
			rctx, root = tracedContext(ctx)
		}
		res := r.serveRender(rctx, req)
		res.Done = true
		res.Spans, res.TraceRoot = spans.drain(), root
		if err := s.send(fromProcess{Result: res}); err != nil {
			return err
		}
		s.askMu.Lock()
		abandoned := s.abandoned
		s.askMu.Unlock()
		if abandoned {
			return nil
		}
	}
	select {
	case err := <-readErr:
		return fmt.Errorf("reading a request: %w", err)
	default:
		return nil
	}
}

func (s *processServer) send(m fromProcess) error {
	s.encMu.Lock()
	defer s.encMu.Unlock()
	return s.enc.Encode(m)
}

// ask sends a question to the parent and waits for its answer.
func (s *processServer) ask(ctx context.Context, q fromProcess) (toProcess, error) {
	s.askMu.Lock()
	defer s.askMu.Unlock()
	if err := s.send(q); err != nil {
		return toProcess{}, err
	}
	select {
	case a := <-s.answers:
		return a, nil
	case <-ctx.Done():
		s.abandoned = true
		return toProcess{}, ctx.Err()
	}
}

// Lookup asks the parent for repoURL's credentials: they never rest in a
// render process beyond the render that needs them.
func (s *processServer) Lookup(ctx context.Context, repoURL string) (*RepoCredentials, error) {
	a, err := s.ask(ctx, fromProcess{NeedCreds: repoURL})
	if err != nil {
		return nil, err
	}
	if a.Creds == nil {
		return nil, errors.New("the parent answered another question")
	}
	if a.Creds.Err != nil {
		return nil, a.Creds.Err.err()
	}
	return a.Creds.Creds, nil
}

func (s *processServer) capabilities(ctx context.Context, dest v1alpha1.Destination) (*Capabilities, error) {
	a, err := s.ask(ctx, fromProcess{NeedCaps: true, Dest: dest})
	if err != nil {
		return nil, err
	}
	if a.Caps == nil {
		return nil, errors.New("the parent answered another question")
	}
	if a.Caps.Err != nil {
		return nil, a.Caps.Err.err()
	}
	return a.Caps.Caps, nil
}

// serveRender renders one request in the render process.
func (r *Renderer) serveRender(ctx context.Context, req *processRender) *processResult {
	var app v1alpha1.Application
	if err := json.Unmarshal(req.App, &app); err != nil {
		return &processResult{Err: newProcessError(fmt.Errorf("decoding the app to render: %w", err))}
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	sources := app.Spec.AllSources()
	if len(req.Commits) != len(sources) {
		return &processResult{Err: newProcessError(fmt.Errorf("%d commits for %d sources", len(req.Commits), len(sources)))}
	}
	fail := r.sourceFailure(ctx, &app)
	trees := make([]*snapshotTrees, len(sources))
	refs := map[string]int{}
	for i, src := range sources {
		if src.Ref != "" {
			refs[src.Ref] = i
		}
		if req.Commits[i] == "" {
			continue
		}
		snap, err := r.git.Resolve(ctx, src.RepoURL, req.Commits[i])
		if err != nil {
			return &processResult{Err: newProcessError(fail(i, err))}
		}
		trees[i] = newSnapshotTrees(snap)
	}
	out, err := r.renderResolved(ctx, &app, trees, refs, fail)
	if err != nil {
		return &processResult{Err: newProcessError(err)}
	}
	res := &processResult{Objects: out.objects, ChartVersion: out.chartVersion}
	out.in.toProcess(res)
	return res
}
