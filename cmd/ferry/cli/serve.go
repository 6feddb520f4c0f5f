package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/render"
	"github.com/ferrycd/ferry/worker"
)

// ServeOptions configures `ferry serve`.
type ServeOptions struct {
	Listen    string
	DataDir   string
	Namespace string
	// Kubeconfig is a kubeconfig path; empty follows the standard rules
	// (KUBECONFIG, then in-cluster, then ~/.kube/config).
	Kubeconfig string
	// RestConfig, when set, is used instead of any kubeconfig.
	RestConfig *rest.Config

	GitHubWebhookSecretFile   string
	GiteaWebhookSecretFile    string
	GitLabWebhookSecretFile   string
	InsecureSkipWebhookVerify bool
	MaxWebhookBodyBytes       int64
	// DedupWindow is how long a delivery ID is remembered.
	DedupWindow time.Duration
	// PollInterval is the period of the ls-remote fallback; 0 disables it.
	PollInterval time.Duration
	// GitHubAPIURL and GitHubTokenFile configure the Compare API used for
	// pushes whose payload does not list their files.
	GitHubAPIURL    string
	GitHubTokenFile string
	// APITokenFile holds the bearer token of mutating API calls.
	APITokenFile string
	// GitHubTokenSecret names a Secret (namespace/name, key "token")
	// holding the GitHub token, as an alternative to GitHubTokenFile.
	GitHubTokenSecret string
	// CommitStatusAPIURL is where commit statuses go: GitHub (default: the
	// GitHub API URL) or a Gitea API root. Statuses are posted only when a
	// token is configured.
	CommitStatusAPIURL string
	// ExternalURL is ferry's dashboard URL, linked from commit statuses.
	ExternalURL string
	// ResyncPeriod is the period of the full drift and health resync that
	// backs up the watches.
	ResyncPeriod time.Duration
	// JaegerURL, when set, turns trace IDs into links to Jaeger's UI.
	JaegerURL        string
	LogLevel         string
	RenderTimeout    time.Duration
	ApplyParallelism int

	// TracerProvider, when set, replaces the SDK set up from OTEL_* variables.
	TracerProvider trace.TracerProvider
	// OnReady, when set, is called once ferry listens and its workers run.
	OnReady func(ServeInfo)
	// Stderr receives logs; default os.Stderr.
	Stderr io.Writer
}

// ServeInfo describes a running ferry to the caller of Serve.
type ServeInfo struct {
	// HTTPAddr is the address the webhook and API server listens on.
	HTTPAddr string
	// NATS is a connection to the embedded NATS server.
	NATS *nats.Conn
}

// DefaultServeOptions returns the defaults of `ferry serve`.
func DefaultServeOptions() ServeOptions {
	return ServeOptions{
		Listen:              ":8080",
		DataDir:             "./.ferry",
		Namespace:           "ferry",
		MaxWebhookBodyBytes: ingest.DefaultMaxBodyBytes,
		DedupWindow:         worker.DefaultConfig().DuplicateWindow,
		PollInterval:        3 * time.Minute,
		ResyncPeriod:        10 * time.Minute,
		LogLevel:            "info",
		RenderTimeout:       render.DefaultOptions().Timeout,
		ApplyParallelism:    apply.DefaultOptions().Parallelism,
	}
}

func newServeCmd(stderr io.Writer) *cobra.Command {
	o := DefaultServeOptions()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run ferry: webhook receiver, embedded NATS, render and apply workers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Stderr = stderr
			return Serve(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Listen, "listen", o.Listen, "HTTP address for webhooks, API and probes")
	f.StringVar(&o.DataDir, "data-dir", o.DataDir, "directory for the embedded NATS store and the git cache")
	f.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace holding ferry's Applications")
	f.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig file (default: KUBECONFIG, in-cluster, ~/.kube/config)")
	f.StringVar(&o.GitHubWebhookSecretFile, "github-webhook-secret-file", "", "file holding the GitHub webhook secret (or set FERRY_GITHUB_WEBHOOK_SECRET)")
	f.BoolVar(&o.InsecureSkipWebhookVerify, "insecure-skip-webhook-verify", false, "accept unsigned webhooks (local demos only)")
	f.StringVar(&o.GiteaWebhookSecretFile, "gitea-webhook-secret-file", "", "file holding the Gitea webhook secret (or FERRY_GITEA_WEBHOOK_SECRET; default: the GitHub secret)")
	f.StringVar(&o.GitLabWebhookSecretFile, "gitlab-webhook-secret-file", "", "file holding the GitLab webhook token (or FERRY_GITLAB_WEBHOOK_SECRET; default: the GitHub secret)")
	f.Int64Var(&o.MaxWebhookBodyBytes, "max-webhook-body-bytes", o.MaxWebhookBodyBytes, "largest webhook body accepted")
	f.DurationVar(&o.DedupWindow, "dedup-window", o.DedupWindow, "how long a webhook delivery ID is remembered for deduplication")
	f.DurationVar(&o.PollInterval, "poll-interval", o.PollInterval, "period of the git ls-remote fallback for missed webhooks (0 disables)")
	f.StringVar(&o.GitHubAPIURL, "github-api-url", "", "GitHub API root for the Compare API, e.g. https://ghe.example.com/api/v3/ (default https://api.github.com/)")
	f.StringVar(&o.GitHubTokenFile, "github-token-file", "", "file holding a GitHub token for the Compare API")
	f.StringVar(&o.GitHubTokenSecret, "github-token-secret", "", "Secret namespace/name whose key \"token\" holds the GitHub token (alternative to --github-token-file)")
	f.StringVar(&o.CommitStatusAPIURL, "commit-status-api-url", "", "API root for commit statuses: GitHub (default --github-api-url) or Gitea, e.g. https://gitea.example.com/api/v1/")
	f.StringVar(&o.ExternalURL, "external-url", "", "ferry's dashboard URL, linked from commit statuses")
	f.DurationVar(&o.ResyncPeriod, "resync-period", o.ResyncPeriod, "period of the full drift and health resync behind the watches")
	f.StringVar(&o.JaegerURL, "jaeger-url", "", "Jaeger UI base URL; trace IDs in the history become links")
	f.StringVar(&o.APITokenFile, "api-token-file", "", "file holding the bearer token for mutating API calls (without it they are disabled)")
	f.StringVar(&o.LogLevel, "log-level", o.LogLevel, "debug, info, warn or error")
	f.DurationVar(&o.RenderTimeout, "render-timeout", o.RenderTimeout, "time limit of one app's render")
	f.IntVar(&o.ApplyParallelism, "apply-parallelism", o.ApplyParallelism, "objects applied at once within a stage")
	return cmd
}

// readSecret returns the trimmed content of file, else of the environment
// variable env, else nil.
func readSecret(flag, file, env string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("reading --%s: %w", flag, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return nil, fmt.Errorf("--%s %s is empty", flag, file)
		}
		return []byte(s), nil
	}
	if s := strings.TrimSpace(os.Getenv(env)); s != "" {
		return []byte(s), nil
	}
	return nil, nil
}

// webhookSecrets returns the GitHub, Gitea and GitLab secrets; the latter
// two default to the GitHub one.
func (o *ServeOptions) webhookSecrets() (gh, gitea, gitlab []byte, err error) {
	if gh, err = readSecret("github-webhook-secret-file", o.GitHubWebhookSecretFile, "FERRY_GITHUB_WEBHOOK_SECRET"); err != nil {
		return nil, nil, nil, err
	}
	if gitea, err = readSecret("gitea-webhook-secret-file", o.GiteaWebhookSecretFile, "FERRY_GITEA_WEBHOOK_SECRET"); err != nil {
		return nil, nil, nil, err
	}
	if gitlab, err = readSecret("gitlab-webhook-secret-file", o.GitLabWebhookSecretFile, "FERRY_GITLAB_WEBHOOK_SECRET"); err != nil {
		return nil, nil, nil, err
	}
	if gitea == nil {
		gitea = gh
	}
	if gitlab == nil {
		gitlab = gh
	}
	if gh == nil && !o.InsecureSkipWebhookVerify {
		return nil, nil, nil, errors.New("no webhook secret: set --github-webhook-secret-file or FERRY_GITHUB_WEBHOOK_SECRET, or pass --insecure-skip-webhook-verify for a local demo")
	}
	return gh, gitea, gitlab, nil
}

func (o *ServeOptions) restConfig() (*rest.Config, error) {
	if o.RestConfig != nil {
		return o.RestConfig, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.Kubeconfig != "" {
		rules.ExplicitPath = o.Kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	return cfg, nil
}

// Serve runs ferry until ctx is done: every role in one process, around
// an embedded NATS.
func Serve(ctx context.Context, o ServeOptions) error {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	log, err := newLogger(o.Stderr, o.LogLevel)
	if err != nil {
		return err
	}
	sec, err := o.secrets(log)
	if err != nil {
		return err
	}
	shutdownTracing, err := setupTracing(ctx, o.TracerProvider)
	if err != nil {
		return err
	}
	defer shutdownTracing()

	kc, err := o.kubeClients(ctx, log)
	if err != nil {
		return err
	}
	emb, nc, queue, err := o.embeddedQueue(ctx, log)
	if err != nil {
		return err
	}
	defer emb.Shutdown()
	defer nc.Close()
	r, err := o.roles(ctx, kc, queue, sec, log)
	if err != nil {
		return err
	}
	mux, err := o.routes(kc, queue, r, sec, nc, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.Listen, err)
	}
	return o.run(ctx, kc, queue, r, ln, mux, nc, log)
}

// serveSecrets are the secrets `ferry serve` reads at start.
type serveSecrets struct {
	webhook     map[string][]byte // by provider
	apiToken    []byte
	githubToken []byte
}

func (o *ServeOptions) secrets(log *slog.Logger) (serveSecrets, error) {
	gh, gitea, gitlab, err := o.webhookSecrets()
	if err != nil {
		return serveSecrets{}, err
	}
	if len(gh) == 0 {
		log.Warn("webhook signatures are NOT verified (--insecure-skip-webhook-verify)")
	}
	s := serveSecrets{webhook: map[string][]byte{"github": gh, "gitea": gitea, "gitlab": gitlab}}
	if s.apiToken, err = readSecret("api-token-file", o.APITokenFile, "FERRY_API_TOKEN"); err != nil {
		return serveSecrets{}, err
	}
	if s.githubToken, err = readSecret("github-token-file", o.GitHubTokenFile, "FERRY_GITHUB_TOKEN"); err != nil {
		return serveSecrets{}, err
	}
	return s, nil
}

// kube holds the Kubernetes side: clients, the applier, and the store of
// Applications.
type kube struct {
	cfg     *rest.Config
	clients kubernetes.Interface
	applier *apply.Applier
	apps    *ingest.AppStore
}

// kubeClients connects to the cluster and installs the Application CRD and
// ferry's namespace: without them nothing else matters.
func (o *ServeOptions) kubeClients(ctx context.Context, log *slog.Logger) (*kube, error) {
	cfg, err := o.restConfig()
	if err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "ferry/" + version()
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 200, 400
	}
	applier, err := apply.New(cfg, apply.Options{Parallelism: o.ApplyParallelism, InventoryNamespace: o.Namespace}, log)
	if err != nil {
		return nil, err
	}
	if err := installCRD(ctx, applier, o.Namespace); err != nil {
		return nil, err
	}
	clients, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &kube{cfg: cfg, clients: clients, applier: applier, apps: ingest.NewAppStore(applier.Dynamic(), o.Namespace)}, nil
}

// embeddedQueue starts the embedded NATS server and declares ferry's
// streams on it.
func (o *ServeOptions) embeddedQueue(ctx context.Context, log *slog.Logger) (*worker.Embedded, *nats.Conn, *worker.Queue, error) {
	emb, err := worker.StartEmbedded(ctx, worker.EmbeddedOptions{DataDir: o.DataDir})
	if err != nil {
		return nil, nil, nil, err
	}
	nc, err := emb.Connect("ferry")
	if err != nil {
		emb.Shutdown()
		return nil, nil, nil, fmt.Errorf("connecting to embedded NATS: %w", err)
	}
	wcfg := worker.DefaultConfig()
	wcfg.DuplicateWindow = o.DedupWindow
	queue, err := worker.New(ctx, nc, wcfg, log)
	if err != nil {
		nc.Close()
		emb.Shutdown()
		return nil, nil, nil, err
	}
	return emb, nc, queue, nil
}

// roleSet is every role of ferry, built and wired but not yet running.
type roleSet struct {
	git        *render.GitCache
	renderer   *render.Renderer
	render     *render.Role
	apply      *apply.Role
	dispatcher *ingest.Dispatcher
	specs      *ingest.SpecTrigger
	drift      *ingest.DriftTrigger
	finalizer  *apply.Finalizer
	statuses   *ingest.CommitStatus // nil without a token
	metrics    *metrics
	ingestM    *ingest.Metrics
}

func (o *ServeOptions) roles(ctx context.Context, kc *kube, queue *worker.Queue, sec serveSecrets, log *slog.Logger) (*roleSet, error) {
	creds, err := newSecretCredentials(ctx, kc.clients, o.Namespace, log)
	if err != nil {
		return nil, err
	}
	caps, err := discoveryCapabilities(kc.cfg)
	if err != nil {
		return nil, err
	}
	r := &roleSet{}
	if r.git, err = render.NewGitCache(filepath.Join(o.DataDir, "git"), render.WithCredentials(creds)); err != nil {
		return nil, err
	}
	r.renderer = render.New(r.git, render.Options{
		Timeout: o.RenderTimeout, ChartCacheDir: filepath.Join(o.DataDir, "charts"),
		Credentials: creds, Capabilities: caps, ApplicationNamespace: o.Namespace,
	}, log)
	r.metrics = newMetrics(ctx, queue, r.renderer)
	r.ingestM = ingest.NewMetrics(r.metrics.reg)
	r.apply = apply.NewRole(kc.applier, kc.apps, r.metrics, log)
	r.render = render.NewRole(r.renderer, r.git, kc.apps, r.apply, r.metrics.ObserveStage, log)
	r.finalizer = apply.NewFinalizer(kc.applier, log)
	r.specs = ingest.NewSpecTrigger(queue, log)
	r.drift = ingest.NewDriftTrigger(kc.apps, queue, r.ingestM, log)

	githubToken := sec.githubToken
	if len(githubToken) == 0 && o.GitHubTokenSecret != "" {
		if githubToken, err = readTokenSecret(ctx, kc.applier.Dynamic(), o.GitHubTokenSecret); err != nil {
			return nil, err
		}
	}
	if len(githubToken) > 0 {
		apiURL := o.CommitStatusAPIURL
		if apiURL == "" {
			apiURL = o.GitHubAPIURL
		}
		if r.statuses, err = ingest.NewCommitStatus(ingest.CommitStatusOptions{
			APIURL: apiURL, Token: string(githubToken), ExternalURL: o.ExternalURL, Log: log,
		}); err != nil {
			return nil, err
		}
	}
	comparer, err := ingest.NewGitHubCompare(o.GitHubAPIURL, string(githubToken), githubHost(o.GitHubAPIURL), nil)
	if err != nil {
		return nil, err
	}
	dopts := ingest.DispatchOptions{Heads: queue.Heads(), Comparer: comparer, Warner: apply.NewStatusWriter(kc.applier.Dynamic()), Log: log}
	if r.statuses != nil {
		dopts.Statuses = r.statuses
	}
	r.dispatcher = ingest.NewDispatcher(kc.apps, queue, dopts)
	return r, nil
}

// routes builds the HTTP handler: webhooks, the API, metrics and probes.
func (o *ServeOptions) routes(kc *kube, queue *worker.Queue, r *roleSet, sec serveSecrets, nc *nats.Conn, log *slog.Logger) (http.Handler, error) {
	receivers := map[string]func(ingest.EventPublisher, ingest.ReceiverOptions, *slog.Logger) (*ingest.Receiver, error){
		"github": ingest.NewGitHub, "gitea": ingest.NewGitea, "gitlab": ingest.NewGitLab,
	}
	mux := http.NewServeMux()
	for name, newReceiver := range receivers {
		rc, err := newReceiver(queue, ingest.ReceiverOptions{
			Secret:             sec.webhook[name],
			InsecureSkipVerify: len(sec.webhook[name]) == 0,
			MaxBodyBytes:       o.MaxWebhookBodyBytes,
			Metrics:            r.ingestM,
		}, log)
		if err != nil {
			return nil, err
		}
		mux.Handle("POST /webhooks/"+name, rc)
	}
	mux.Handle("POST /api/v1/apps/{namespace}/{name}/sync", ingest.NewManualSync(kc.apps, queue, sec.apiToken, log))
	mux.Handle("POST /api/v1/apps/{namespace}/{name}/rollback", ingest.NewRollback(kc.apps, queue, sec.apiToken, log))
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.metrics.reg, promhttp.HandlerOpts{}))
	(&api{apps: kc.apps, renderer: r.renderer, applier: kc.applier, jaegerURL: o.JaegerURL}).register(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !nc.IsConnected() || !kc.apps.Synced() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return otelhttp.NewHandler(mux, "ferry.http",
		otelhttp.WithFilter(func(r *http.Request) bool {
			// Probes and scrapes would drown the traces that matter.
			return r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && r.URL.Path != "/metrics"
		}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + routeOf(r.URL.Path) })), nil
}

// run starts every role and the HTTP server, and waits until ctx is done
// or one of them fails.
func (o *ServeOptions) run(ctx context.Context, kc *kube, queue *worker.Queue, r *roleSet, ln net.Listener, h http.Handler, nc *nats.Conn, log *slog.Logger) error {
	monitor, err := apply.NewMonitor(kc.cfg, apply.MonitorOptions{
		InventoryNamespace: o.Namespace, ResyncPeriod: o.ResyncPeriod,
		OnStatus: func(ctx context.Context, s apply.AppStatus) {
			r.apply.RecordMonitorStatus(ctx, s)
			r.drift.OnStatus(ctx, s)
		},
	}, log)
	if err != nil {
		return err
	}
	if err := kc.apps.Handle(r.specs); err != nil {
		return err
	}
	if err := kc.apps.Handle(r.finalizer); err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return kc.apps.Start(ctx) })
	if err := kc.apps.WaitSynced(ctx); err != nil {
		return err
	}
	g.Go(func() error { return queue.ConsumeEvents(ctx, r.dispatcher.Dispatch) })
	g.Go(func() error { return queue.RunRender(ctx, r.render) })
	g.Go(func() error { return queue.RunApply(ctx, r.apply) })
	g.Go(func() error { return monitor.Start(ctx) })
	if r.statuses != nil {
		g.Go(func() error { return r.statuses.Start(ctx) })
		g.Go(func() error { return queue.WatchResults(ctx, r.statuses.ReportResult) })
	}
	if o.PollInterval > 0 {
		poller := ingest.NewPoller(kc.apps, r.git, queue.Heads(), queue, ingest.PollerOptions{Interval: o.PollInterval, Log: log})
		g.Go(func() error { return poller.Start(ctx) })
	}
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		// The run's context is done: shutting down gets a few seconds of
		// its own to finish the requests in flight.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	log.Info("ferry serving", "listen", ln.Addr().String(), "namespace", o.Namespace, "data_dir", o.DataDir, "version", version())
	if o.OnReady != nil {
		o.OnReady(ServeInfo{HTTPAddr: ln.Addr().String(), NATS: nc})
	}
	err = g.Wait()
	log.Info("ferry stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// githubHost is the git host served by the GitHub API at apiURL.
func githubHost(apiURL string) string {
	if apiURL == "" {
		return "github.com"
	}
	u, err := url.Parse(apiURL)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// routeOf names a request path by its route, keeping span names few.
func routeOf(path string) string {
	switch {
	case strings.HasPrefix(path, "/webhooks/"):
		return path
	case strings.HasPrefix(path, "/api/v1/apps/"):
		parts := strings.Split(strings.Trim(path, "/"), "/")
		if len(parts) == 6 {
			return "/api/v1/apps/{namespace}/{name}/" + parts[5]
		}
		return "/api/v1/apps/{namespace}/{name}"
	}
	return path
}
