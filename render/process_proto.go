package render

import (
	"errors"
	"time"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// The messages between ferry and its render processes, gob-encoded on two
// pipes. ferry sends one processConfig, then renders one at a time; while a
// render runs, the process may ask for a repository's credentials or the
// cluster's capabilities, which ferry answers before anything else.

// processEnv marks a render process: a binary that calls
// RunRenderProcess serves renders when it is set.
const processEnv = "FERRY_RENDER_PROCESS"

// processASLimitEnv carries the address-space limit (RLIMIT_AS) the render
// process sets on itself, in bytes.
const processASLimitEnv = "FERRY_RENDER_AS_LIMIT"

// The render process reads requests from fd 3 and writes answers to fd 4,
// so that whatever a library prints on stdout cannot corrupt them.
const (
	processRequestFD = 3
	processReplyFD   = 4
)

type toProcess struct {
	Config *processConfig
	Render *processRender
	Creds  *credsAnswer
	Caps   *capsAnswer
}

// processConfig is the part of Options a render process needs.
type processConfig struct {
	GitDir               string
	ChartCacheDir        string
	Timeout              time.Duration
	MaxInputBytes        int64
	MaxOutputBytes       int64
	MaxObjects           int
	ChartIndexTTL        time.Duration
	KustomizeRemoteBases bool
	AllowedHosts         []string
	ApplicationNamespace string
	HasCredentials       bool
	HasCapabilities      bool
}

// processRender asks for the render of App (as JSON), each git source at
// the commit in Commits ("" for a chart source).
type processRender struct {
	App     []byte
	Commits []string
	// Trace asks for the render's spans back.
	Trace bool
}

// Every message sets a field that is never zero (Asked, Done): gob leaves
// out a struct whose fields are all zero, and the pointer to it with it.

type credsAnswer struct {
	Asked bool
	Creds *RepoCredentials
	Err   *processError
}

type capsAnswer struct {
	Asked bool
	Caps  *Capabilities
	Err   *processError
}

type fromProcess struct {
	NeedCreds string
	NeedCaps  bool
	Dest      v1alpha1.Destination
	Result    *processResult
}

type processResult struct {
	Done         bool
	Objects      []Object
	ChartVersion string
	Facts        []processFact
	Extra        map[string]string
	Shallow      []int
	Uncacheable  bool
	Err          *processError
	// Spans are the render's spans when it was traced, below the stand-in
	// parent TraceRoot.
	Spans     []processSpan
	TraceRoot [8]byte
}

type processFact struct {
	Src   int
	Path  string
	Kind  factKind
	Value string
}

// processError carries a render error across the pipe: its message, the
// app and source it names, and what errors.Is and IsTransient would have
// said of it.
type processError struct {
	Msg       string
	Source    bool
	Transient bool
	// Sentinels names the exported errors it wraps (processSentinels).
	Sentinels []string
	// App, SourceIndex and Where are the AppError's, when it was one; Msg
	// is then its inner error's message.
	App         string
	SourceIndex int
	Where       string
}

// processSentinels are the errors errors.Is recognises in a render error
// from a render process.
var processSentinels = map[string]error{
	"limit": ErrLimitExceeded, "outside": ErrOutsideRepository, "empty": ErrEmptyRender,
	"outside-chart": ErrOutsideChart, "remote-base": ErrRemoteBase, "host": ErrHostNotAllowed,
	"plain-http": ErrPlainHTTPCredentials, "url-credentials": ErrCredentialsInURL,
	"secret": ErrInvalidSecret, "not-on-ref": ErrNotOnRef,
}

func newProcessError(err error) *processError {
	var se *SourceError
	pe := &processError{Msg: err.Error(), Source: errors.As(err, &se), Transient: IsTransient(err)}
	for name, s := range processSentinels {
		if errors.Is(err, s) {
			pe.Sentinels = append(pe.Sentinels, name)
		}
	}
	var ae *AppError
	if errors.As(err, &ae) {
		pe.App, pe.SourceIndex, pe.Where, pe.Msg = ae.App, ae.Source, ae.Where, ae.Err.Error()
	}
	return pe
}

// remoteError is a render error that happened in a render process.
type remoteError struct{ e *processError }

func (r *remoteError) Error() string { return r.e.Msg }

func (r *remoteError) Is(target error) bool {
	for _, name := range r.e.Sentinels {
		if processSentinels[name] == target {
			return true
		}
	}
	return false
}

// err rebuilds the error: an AppError and a SourceError when it was one,
// so that errors.As and IsTransient answer as they did in the process.
func (e *processError) err() error {
	var err error = &remoteError{e: e}
	if e.Source {
		err = &SourceError{Err: err, Transient: e.Transient}
	}
	if e.App != "" {
		err = &AppError{App: e.App, Source: e.SourceIndex, Where: e.Where, Err: err}
	}
	return err
}

func (in *inputs) toProcess(res *processResult) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, v := range in.facts {
		res.Facts = append(res.Facts, processFact{Src: k.src, Path: k.path, Kind: k.kind, Value: v})
	}
	res.Extra = in.extra
	for i := range in.shallow {
		res.Shallow = append(res.Shallow, i)
	}
	res.Uncacheable = in.uncacheable
}

func inputsFromProcess(res *processResult, maxBytes int64) *inputs {
	in := newInputs(maxBytes)
	for _, f := range res.Facts {
		in.facts[factKey{src: f.Src, path: f.Path, kind: f.Kind}] = f.Value
	}
	for k, v := range res.Extra {
		in.extra[k] = v
	}
	for _, i := range res.Shallow {
		in.shallow[i] = true
	}
	in.uncacheable = res.Uncacheable
	return in
}
