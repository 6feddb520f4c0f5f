package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
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
	InsecureSkipWebhookVerify bool
	MaxWebhookBodyBytes       int64
	LogLevel                  string
	RenderTimeout             time.Duration
	ApplyParallelism          int

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
	f.Int64Var(&o.MaxWebhookBodyBytes, "max-webhook-body-bytes", o.MaxWebhookBodyBytes, "largest webhook body accepted")
	f.StringVar(&o.LogLevel, "log-level", o.LogLevel, "debug, info, warn or error")
	f.DurationVar(&o.RenderTimeout, "render-timeout", o.RenderTimeout, "time limit of one app's render")
	f.IntVar(&o.ApplyParallelism, "apply-parallelism", o.ApplyParallelism, "objects applied at once within a stage")
	return cmd
}

func (o *ServeOptions) webhookSecret() ([]byte, error) {
	if o.GitHubWebhookSecretFile != "" {
		b, err := os.ReadFile(o.GitHubWebhookSecretFile)
		if err != nil {
			return nil, fmt.Errorf("reading --github-webhook-secret-file: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return nil, fmt.Errorf("--github-webhook-secret-file %s is empty", o.GitHubWebhookSecretFile)
		}
		return []byte(s), nil
	}
	if s := os.Getenv("FERRY_GITHUB_WEBHOOK_SECRET"); s != "" {
		return []byte(s), nil
	}
	if o.InsecureSkipWebhookVerify {
		return nil, nil
	}
	return nil, errors.New("no webhook secret: set --github-webhook-secret-file or FERRY_GITHUB_WEBHOOK_SECRET, or pass --insecure-skip-webhook-verify for a local demo")
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

// Serve runs ferry until ctx is done.
func Serve(ctx context.Context, o ServeOptions) error {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	log, err := newLogger(o.Stderr, o.LogLevel)
	if err != nil {
		return err
	}
	secret, err := o.webhookSecret()
	if err != nil {
		return err
	}
	if len(secret) == 0 {
		log.Warn("webhook signatures are NOT verified (--insecure-skip-webhook-verify)")
	}
	cfg, err := o.restConfig()
	if err != nil {
		return err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "ferry/" + version()
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 200, 400
	}

	shutdownTracing, err := setupTracing(ctx, o.TracerProvider)
	if err != nil {
		return err
	}
	defer shutdownTracing()

	// Kubernetes first: without the CRD and namespace nothing else matters.
	applier, err := apply.New(cfg, apply.Options{Parallelism: o.ApplyParallelism}, log)
	if err != nil {
		return err
	}
	if err := installCRD(ctx, applier, o.Namespace); err != nil {
		return err
	}
	apps := newAppStore(applier.Dynamic(), o.Namespace)

	emb, err := worker.StartEmbedded(ctx, worker.EmbeddedOptions{DataDir: o.DataDir})
	if err != nil {
		return err
	}
	defer emb.Shutdown()
	nc, err := emb.Connect("ferry")
	if err != nil {
		return fmt.Errorf("connecting to embedded NATS: %w", err)
	}
	defer nc.Close()
	queue, err := worker.New(ctx, nc, worker.DefaultConfig(), log)
	if err != nil {
		return err
	}

	gitCache, err := render.NewGitCache(o.DataDir + "/git")
	if err != nil {
		return err
	}
	renderer := render.New(gitCache, render.Options{Timeout: o.RenderTimeout}, log)
	gh, err := ingest.NewGitHub(queue, ingest.GitHubOptions{
		Secret:             secret,
		InsecureSkipVerify: len(secret) == 0,
		MaxBodyBytes:       o.MaxWebhookBodyBytes,
	}, log)
	if err != nil {
		return err
	}
	dispatcher := ingest.NewDispatcher(apps, queue, log)
	roles := &roles{apps: apps, renderer: renderer, applier: applier, log: log}

	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /webhooks/github", gh)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !nc.IsConnected() || !apps.synced() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return apps.run(ctx) })
	if err := apps.waitSynced(ctx); err != nil {
		return err
	}
	g.Go(func() error { return queue.ConsumeEvents(ctx, dispatcher.Dispatch) })
	g.Go(func() error { return queue.RunRender(ctx, roles) })
	g.Go(func() error { return queue.RunApply(ctx, roles) })
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
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
