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
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/render"
	"github.com/ferrycd/ferry/worker"
)

// ServeOptions configures `ferry serve`.
type ServeOptions struct {
	// Listen is the address of webhooks and probes: the listener that
	// faces the Git host.
	Listen string
	// APIListen is the address of the API and /metrics: the internal,
	// token-gated listener.
	APIListen string
	DataDir   string
	Namespace string
	// Kubeconfig is a kubeconfig path; empty follows the standard rules
	// (KUBECONFIG, then in-cluster, then ~/.kube/config).
	Kubeconfig string
	// RestConfig, when set, is used instead of any kubeconfig.
	RestConfig *rest.Config

	GitHubWebhookSecretFile   string
	GiteaWebhookSecretFile    string
	GitLabTokenFile           string
	InsecureSkipWebhookVerify bool
	MaxWebhookBodyBytes       int64
	// MaxWebhookBytesInFlight caps the webhook body bytes held at once
	// across every provider and request.
	MaxWebhookBytesInFlight int64
	// DedupWindow is how long a delivery ID is remembered.
	DedupWindow time.Duration
	// PollInterval is the period of the ls-remote fallback; 0 disables it.
	PollInterval time.Duration
	// GitHubAPIURL and GitHubTokenFile configure the Compare API used for
	// pushes whose payload does not list their files.
	GitHubAPIURL    string
	GitHubTokenFile string
	// APITokenFile holds the admin bearer token: it may read and mutate.
	APITokenFile string
	// APIReadTokenFile holds the read-only bearer token.
	APIReadTokenFile string
	// AnonymousRead lets API reads and /metrics go without a token.
	AnonymousRead bool
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
	JaegerURL     string
	LogLevel      string
	RenderTimeout time.Duration
	// RenderMemoryLimit is the memory one render process may use, as a
	// Kubernetes quantity ("512Mi").
	RenderMemoryLimit string
	// RenderProcesses bounds the render processes running at once; 0
	// renders inside ferry's own process, without isolation.
	RenderProcesses int
	// SOPSAgeKeyFile holds age identities that decrypt SOPS documents,
	// besides those of the ferry-sops Secret.
	SOPSAgeKeyFile string
	// AllowedHosts are globs of the git and chart hosts renders may fetch
	// from; empty allows any.
	AllowedHosts []string
	// BundleTTL and BundleMaxBytes bound the rendered bundles kept in the
	// object store.
	BundleTTL      time.Duration
	BundleMaxBytes int64
	// MaxDeliveries is how often a job is tried before it becomes a dead
	// letter.
	MaxDeliveries    int
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
	// HTTPAddr is the address of the webhook and probe listener.
	HTTPAddr string
	// APIAddr is the address of the API and metrics listener.
	APIAddr string
	// NATS is a connection to the embedded NATS server.
	NATS *nats.Conn
}

// DefaultServeOptions returns the defaults of `ferry serve`.
func DefaultServeOptions() ServeOptions {
	return ServeOptions{
		Listen:                  ":8080",
		APIListen:               ":8081",
		DataDir:                 "./.ferry",
		Namespace:               "ferry",
		MaxWebhookBodyBytes:     ingest.DefaultMaxBodyBytes,
		MaxWebhookBytesInFlight: ingest.DefaultMaxBytesInFlight,
		DedupWindow:             worker.DefaultConfig().DuplicateWindow,
		PollInterval:            3 * time.Minute,
		ResyncPeriod:            10 * time.Minute,
		LogLevel:                "info",
		RenderTimeout:           render.DefaultOptions().Timeout,
		RenderMemoryLimit:       "512Mi",
		RenderProcesses:         max(2, runtime.NumCPU()),
		ApplyParallelism:        apply.DefaultOptions().Parallelism,
		BundleTTL:               worker.DefaultConfig().BundleTTL,
		BundleMaxBytes:          worker.DefaultConfig().BundleMaxBytes,
		MaxDeliveries:           worker.DefaultConfig().MaxDeliver,
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
	f.StringVar(&o.Listen, "listen", o.Listen, "HTTP address for webhooks and probes (faces the Git host)")
	f.StringVar(&o.APIListen, "api-listen", o.APIListen, "HTTP address for the API and /metrics (internal, token-gated)")
	f.StringVar(&o.DataDir, "data-dir", o.DataDir, "directory for the embedded NATS store and the git cache")
	f.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace holding ferry's Applications")
	f.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig file (default: KUBECONFIG, in-cluster, ~/.kube/config)")
	f.StringVar(&o.GitHubWebhookSecretFile, "github-webhook-secret-file", "", "file holding the GitHub webhook secret (or set FERRY_GITHUB_WEBHOOK_SECRET)")
	f.BoolVar(&o.InsecureSkipWebhookVerify, "insecure-skip-webhook-verify", false, "accept unsigned webhooks (local demos only)")
	f.StringVar(&o.GiteaWebhookSecretFile, "gitea-webhook-secret-file", "", "file holding the Gitea webhook secret (or FERRY_GITEA_WEBHOOK_SECRET); without it /webhooks/gitea is not served")
	f.StringVar(&o.GitLabTokenFile, "gitlab-token-file", "", "file holding the GitLab webhook token (or FERRY_GITLAB_TOKEN); without it /webhooks/gitlab is not served")
	f.StringVar(&o.GitLabTokenFile, "gitlab-webhook-secret-file", "", "old name of --gitlab-token-file")
	_ = f.MarkDeprecated("gitlab-webhook-secret-file", "use --gitlab-token-file")
	f.Int64Var(&o.MaxWebhookBodyBytes, "max-webhook-body-bytes", o.MaxWebhookBodyBytes, "largest webhook body accepted")
	f.Int64Var(&o.MaxWebhookBytesInFlight, "max-webhook-bytes-in-flight", o.MaxWebhookBytesInFlight, "webhook body bytes held at once across all requests; past it a delivery gets 503 with Retry-After")
	f.DurationVar(&o.DedupWindow, "dedup-window", o.DedupWindow, "how long a webhook delivery ID is remembered for deduplication")
	f.DurationVar(&o.PollInterval, "poll-interval", o.PollInterval, "period of the git ls-remote fallback for missed webhooks (0 disables)")
	f.StringVar(&o.GitHubAPIURL, "github-api-url", "", "GitHub API root for the Compare API, e.g. https://ghe.example.com/api/v3/ (default https://api.github.com/)")
	f.StringVar(&o.GitHubTokenFile, "github-token-file", "", "file holding a GitHub token for the Compare API")
	f.StringVar(&o.GitHubTokenSecret, "github-token-secret", "", "Secret namespace/name whose key \"token\" holds the GitHub token (alternative to --github-token-file)")
	f.StringVar(&o.CommitStatusAPIURL, "commit-status-api-url", "", "API root for commit statuses: GitHub (default --github-api-url) or Gitea, e.g. https://gitea.example.com/api/v1/")
	f.StringVar(&o.ExternalURL, "external-url", "", "ferry's dashboard URL, linked from commit statuses")
	f.DurationVar(&o.ResyncPeriod, "resync-period", o.ResyncPeriod, "period of the full drift and health resync behind the watches")
	f.StringVar(&o.JaegerURL, "jaeger-url", "", "Jaeger UI base URL; trace IDs in the history become links")
	f.StringVar(&o.APITokenFile, "api-token-file", "", "file holding the admin bearer token, which may read and mutate (or FERRY_API_TOKEN; without it mutating calls are disabled)")
	f.StringVar(&o.APIReadTokenFile, "api-read-token-file", "", "file holding the read-only bearer token (or FERRY_API_READ_TOKEN)")
	f.BoolVar(&o.AnonymousRead, "anonymous-read", false, "serve API reads and /metrics without a token")
	f.StringVar(&o.LogLevel, "log-level", o.LogLevel, "debug, info, warn or error")
	f.DurationVar(&o.RenderTimeout, "render-timeout", o.RenderTimeout, "time limit of one app's render; past it its render process is stopped")
	f.StringVar(&o.RenderMemoryLimit, "render-memory-limit", o.RenderMemoryLimit, "memory one render process may use; past it the process is stopped and that app's render fails")
	f.StringVar(&o.SOPSAgeKeyFile, "sops-age-key-file", "", "file of age identities that decrypt SOPS documents, besides the keys ending in .agekey of the Secret "+apply.DefaultSOPSSecret+" in --namespace")
	f.IntVar(&o.RenderProcesses, "render-processes", o.RenderProcesses, "render processes running at once (renders that miss the cache run in them); 0 renders inside ferry's own process, without isolation")
	f.StringSliceVar(&o.AllowedHosts, "allowed-hosts", nil, "git and chart hosts ferry may fetch from, as globs (github.com, *.example.com, 127.0.0.1:*); empty allows any")
	f.DurationVar(&o.BundleTTL, "bundle-ttl", o.BundleTTL, "how long a rendered bundle is kept in the object store unless an app still uses it")
	f.Int64Var(&o.BundleMaxBytes, "bundle-max-bytes", o.BundleMaxBytes, "size budget of the rendered bundles in the object store")
	f.IntVar(&o.MaxDeliveries, "max-deliveries", o.MaxDeliveries, "tries of a job that keeps failing before it becomes a dead letter")
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

// webhookSecrets returns each provider's own secret, by provider; a
// provider without one is absent. No secret is shared between providers: a
// GitLab token travels in clear in a header and must never be the GitHub
// HMAC key.
func (o *ServeOptions) webhookSecrets() (map[string][]byte, error) {
	sources := []struct{ provider, flag, file, env string }{
		{"github", "github-webhook-secret-file", o.GitHubWebhookSecretFile, "FERRY_GITHUB_WEBHOOK_SECRET"},
		{"gitea", "gitea-webhook-secret-file", o.GiteaWebhookSecretFile, "FERRY_GITEA_WEBHOOK_SECRET"},
		{"gitlab", "gitlab-token-file", o.GitLabTokenFile, "FERRY_GITLAB_TOKEN"},
	}
	secrets := map[string][]byte{}
	for _, src := range sources {
		s, err := readSecret(src.flag, src.file, src.env)
		if err != nil {
			return nil, err
		}
		if s != nil {
			secrets[src.provider] = s
		}
	}
	if len(secrets) == 0 && !o.InsecureSkipWebhookVerify {
		return nil, errors.New("no webhook secret: set --github-webhook-secret-file (FERRY_GITHUB_WEBHOOK_SECRET), --gitea-webhook-secret-file or --gitlab-token-file, or pass --insecure-skip-webhook-verify for a local demo")
	}
	return secrets, nil
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
	defer r.renderer.Close()
	hooks, err := o.webhookRoutes(kc, queue, r, sec, nc, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.Listen, err)
	}
	apiLn, err := net.Listen("tcp", o.APIListen)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("--api-listen %s: %w", o.APIListen, err)
	}
	servers := []listener{
		{"webhooks", ln, o.webhookServer(hooks)},
		{"api", apiLn, o.apiServer(o.apiRoutes(kc, queue, r, sec, log))},
	}
	return o.run(ctx, kc, queue, r, servers, nc, log)
}

// serveSecrets are the secrets `ferry serve` reads at start.
type serveSecrets struct {
	webhook      map[string][]byte // by provider; absent: not served
	apiToken     []byte
	apiReadToken []byte
	githubToken  []byte
}

func (o *ServeOptions) secrets(log *slog.Logger) (serveSecrets, error) {
	webhook, err := o.webhookSecrets()
	if err != nil {
		return serveSecrets{}, err
	}
	if o.InsecureSkipWebhookVerify {
		log.Warn("webhook signatures are NOT verified (--insecure-skip-webhook-verify)")
	}
	s := serveSecrets{webhook: webhook}
	if s.apiToken, err = readSecret("api-token-file", o.APITokenFile, "FERRY_API_TOKEN"); err != nil {
		return serveSecrets{}, err
	}
	if s.apiReadToken, err = readSecret("api-read-token-file", o.APIReadTokenFile, "FERRY_API_READ_TOKEN"); err != nil {
		return serveSecrets{}, err
	}
	if len(s.apiToken) == 0 && len(s.apiReadToken) == 0 && !o.AnonymousRead {
		log.Warn("no API token: every API call and /metrics scrape will be refused (set --api-token-file, --api-read-token-file or --anonymous-read)")
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
	// projects is the store of Projects every sync is checked against.
	projects *ingest.ProjectStore
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
	if err := apply.Install(ctx, applier, o.Namespace); err != nil {
		return nil, err
	}
	clients, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &kube{cfg: cfg, clients: clients, applier: applier, apps: ingest.NewAppStore(applier.Dynamic(), o.Namespace),
		projects: ingest.NewProjectStore(applier.Dynamic(), o.Namespace)}, nil
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
	if o.BundleTTL > 0 {
		wcfg.BundleTTL = o.BundleTTL
	}
	if o.BundleMaxBytes > 0 {
		wcfg.BundleMaxBytes = o.BundleMaxBytes
	}
	if o.MaxDeliveries > 0 {
		wcfg.MaxDeliver = o.MaxDeliveries
	}
	queue, err := worker.New(ctx, nc, wcfg, log)
	if err != nil {
		nc.Close()
		emb.Shutdown()
		return nil, nil, nil, err
	}
	return emb, nc, queue, nil
}

// renderProcesses reads the render isolation flags; nil renders in process.
func (o *ServeOptions) renderProcesses() (*render.ProcessOptions, error) {
	if o.RenderProcesses < 0 {
		return nil, fmt.Errorf("--render-processes %d: must be 0 or more", o.RenderProcesses)
	}
	if o.RenderProcesses == 0 {
		return nil, nil
	}
	q, err := resource.ParseQuantity(o.RenderMemoryLimit)
	if err != nil {
		return nil, fmt.Errorf("--render-memory-limit %q: %w", o.RenderMemoryLimit, err)
	}
	return &render.ProcessOptions{MemoryLimit: q.Value(), Processes: o.RenderProcesses}, nil
}

// roleSet is every role of ferry, built and wired but not yet running.
type roleSet struct {
	git        *render.GitCache
	renderer   *render.Renderer
	render     *render.Role
	apply      *apply.Role
	dispatcher *ingest.Dispatcher
	specs      *ingest.SpecTrigger
	keys       *ingest.KeyTrigger
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
	if r.git, err = render.NewGitCache(filepath.Join(o.DataDir, "git"), render.WithCredentials(creds), render.WithAllowedHosts(o.AllowedHosts...)); err != nil {
		return nil, err
	}
	processes, err := o.renderProcesses()
	if err != nil {
		return nil, err
	}
	if r.renderer, err = render.New(r.git, render.Options{
		Timeout: o.RenderTimeout, ChartCacheDir: filepath.Join(o.DataDir, "charts"),
		Credentials: creds, Capabilities: caps, ApplicationNamespace: o.Namespace, AllowedHosts: o.AllowedHosts,
		Processes: processes,
	}, log); err != nil {
		return nil, err
	}
	r.metrics = newMetrics(ctx, queue, r.renderer)
	r.ingestM = ingest.NewMetrics(r.metrics.reg)
	r.apply = apply.NewRole(kc.applier, kc.apps, kc.projects, r.metrics, log)
	var keyFiles []string
	if o.SOPSAgeKeyFile != "" {
		keyFiles = append(keyFiles, o.SOPSAgeKeyFile)
	}
	r.apply.DecryptWith(apply.NewSecretSOPSKeys(kc.applier.Dynamic(), o.Namespace, keyFiles...))
	r.render = render.NewRole(r.renderer, r.git, kc.apps, r.apply, r.metrics.ObserveStage, log)
	r.finalizer = apply.NewFinalizer(kc.applier, log)
	r.specs = ingest.NewSpecTrigger(queue, log)
	r.keys = ingest.NewKeyTrigger(kc.apps, queue, apply.DefaultSOPSSecret, log)
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

// webhookRoutes builds the handler of the listener that faces the Git
// host: the webhooks of each provider that has a secret, and the probes.
// Nothing else is served there.
func (o *ServeOptions) webhookRoutes(kc *kube, queue *worker.Queue, r *roleSet, sec serveSecrets, nc *nats.Conn, log *slog.Logger) (http.Handler, error) {
	receivers := []struct {
		name string
		new  func(ingest.EventPublisher, ingest.ReceiverOptions, *slog.Logger) (*ingest.Receiver, error)
	}{{"github", ingest.NewGitHub}, {"gitea", ingest.NewGitea}, {"gitlab", ingest.NewGitLab}}
	// One budget for every provider: the cap is on what ferry holds, not
	// on what one endpoint holds.
	budget := ingest.NewByteBudget(o.MaxWebhookBytesInFlight)
	mux := http.NewServeMux()
	var enabled, unverified []string
	for _, rc := range receivers {
		secret := sec.webhook[rc.name]
		if len(secret) == 0 && !o.InsecureSkipWebhookVerify {
			continue // not mounted: the provider answers 404
		}
		h, err := rc.new(queue, ingest.ReceiverOptions{
			Secret:             secret,
			InsecureSkipVerify: len(secret) == 0,
			MaxBodyBytes:       o.MaxWebhookBodyBytes,
			Budget:             budget,
			Metrics:            r.ingestM,
		}, log)
		if err != nil {
			return nil, err
		}
		mux.Handle("POST /webhooks/"+rc.name, h)
		enabled = append(enabled, rc.name)
		if len(secret) == 0 {
			unverified = append(unverified, rc.name)
		}
	}
	log.Info("webhook providers enabled", "providers", enabled, "unverified", unverified)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !nc.IsConnected() || !kc.apps.Synced() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return traced(mux), nil
}

// apiRoutes builds the handler of the internal listener: the read API, the
// mutating calls and /metrics, all behind one Authorizer.
func (o *ServeOptions) apiRoutes(kc *kube, queue *worker.Queue, r *roleSet, sec serveSecrets, log *slog.Logger) http.Handler {
	auth := ingest.NewAuthorizer(sec.apiToken, sec.apiReadToken, o.AnonymousRead)
	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/apps/{namespace}/{name}/sync", ingest.NewManualSync(kc.apps, queue, auth, log))
	mux.Handle("POST /api/v1/apps/{namespace}/{name}/rollback", ingest.NewRollback(kc.apps, queue, auth, log))
	mux.Handle("GET /metrics", auth.RequireRead(promhttp.HandlerFor(r.metrics.reg, promhttp.HandlerOpts{})))
	(&api{apps: kc.apps, renderer: r.renderer, differ: r.apply, jaegerURL: o.JaegerURL, auth: auth}).register(mux)
	return traced(mux)
}

// traced wraps h in a server span per request. Neither listener takes a
// trace context from the client: a webhook is verified only inside the
// handler, and an API call only after its token is checked, so an incoming
// traceparent would let anyone graft ferry's spans onto a trace of theirs.
// Every request starts a new root; from there ferry's own trace context
// travels in NATS headers as before.
func traced(h http.Handler) http.Handler {
	return otelhttp.NewHandler(h, "ferry.http",
		otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator()),
		otelhttp.WithFilter(func(r *http.Request) bool {
			// Probes and scrapes would drown the traces that matter.
			return r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && r.URL.Path != "/metrics"
		}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + routeOf(r.URL.Path) }))
}

// listener is one of ferry's HTTP servers and where it listens.
type listener struct {
	name string
	ln   net.Listener
	srv  *http.Server
}

// maxHeaderBytes is far above what a Git host or the CLI sends.
const maxHeaderBytes = 64 << 10

// webhookServer serves the Git host. A delivery is one POST of at most
// --max-webhook-body-bytes, answered once JetStream stored it (at most the
// receiver's publish timeout); a sender slower than these timeouts is not
// a Git host, which gives up after 10 s anyway.
func (o *ServeOptions) webhookServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      90 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// apiServer serves the API. Its WriteTimeout is generous: GET .../diff
// fetches, renders and dry-runs the app before it writes a byte, so it may
// take the whole render timeout plus the git fetch and the dry-run around
// it. A tighter timeout would cut off a diff that is merely slow.
func (o *ServeOptions) apiServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      o.RenderTimeout + 3*time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// run starts every role and the HTTP server, and waits until ctx is done
// or one of them fails.
func (o *ServeOptions) run(ctx context.Context, kc *kube, queue *worker.Queue, r *roleSet, servers []listener, nc *nats.Conn, log *slog.Logger) error {
	monitor, err := apply.NewMonitor(kc.cfg, apply.MonitorOptions{
		InventoryNamespace: o.Namespace, ResyncPeriod: o.ResyncPeriod,
		OnStatus: func(ctx context.Context, s apply.AppStatus) {
			r.apply.RecordMonitorStatus(ctx, s)
			r.drift.OnStatus(ctx, driftReport(s))
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
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return kc.apps.Start(ctx) })
	g.Go(func() error { return kc.projects.Start(ctx) })
	g.Go(func() error {
		md, err := metadata.NewForConfig(kc.cfg)
		if err != nil {
			return err
		}
		return r.keys.Watch(ctx, md, o.Namespace)
	})
	g.Go(func() error { return apply.EnsureDefaultProject(ctx, kc.applier, o.Namespace, log) })
	if err := kc.projects.WaitSynced(ctx); err != nil {
		return err
	}
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
	bundleGC := ingest.NewBundleGC(kc.apps, queue, ingest.BundleGCOptions{Log: log})
	g.Go(func() error { return bundleGC.Start(ctx) })
	if o.PollInterval > 0 {
		poller := ingest.NewPoller(kc.apps, r.git, queue.Heads(), queue, ingest.PollerOptions{Interval: o.PollInterval, Log: log})
		g.Go(func() error { return poller.Start(ctx) })
	}
	for _, l := range servers {
		g.Go(func() error {
			if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s listener: %w", l.name, err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			// The run's context is done: shutting down gets a few seconds
			// of its own to finish the requests in flight.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return l.srv.Shutdown(sctx)
		})
	}
	info := ServeInfo{HTTPAddr: servers[0].ln.Addr().String(), APIAddr: servers[1].ln.Addr().String(), NATS: nc}
	log.Info("ferry serving", "listen", info.HTTPAddr, "api_listen", info.APIAddr, "namespace", o.Namespace, "data_dir", o.DataDir, "version", version())
	if o.OnReady != nil {
		o.OnReady(info)
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

// driftReport is what the drift trigger needs of a Monitor report.
func driftReport(s apply.AppStatus) ingest.DriftReport {
	r := ingest.DriftReport{
		App: s.App, Drifted: len(s.Drift), Syncing: s.Syncing,
		PostSyncPending: s.PostSyncPending, Healthy: s.Health.Status == apply.HealthHealthy,
	}
	if len(s.Drift) > 0 {
		r.FirstDrift = s.Drift[0].String()
	}
	return r
}
