package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// Options configures a demo run.
type Options struct {
	// Listen is ferry's HTTP address.
	Listen string
	// Stay keeps everything running after the bump until ctx is done.
	Stay bool
	// Out receives the demo's report; Log receives ferry's logs.
	Out, Log io.Writer
}

// Result is what the demo observed.
type Result struct {
	FromImage, ToImage string
	Revision           string
	PushToApplied      time.Duration
	TraceID            string
}

const (
	appName   = "blog"
	appNS     = "blog"
	oldImage  = "ghcr.io/example/blog:1.0.0"
	newImage  = "ghcr.io/example/blog:1.1.0"
	repoName  = "platform/gitops"
	namespace = "ferry"
)

func deploymentYAML(image string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: blog
  labels: {app: blog}
spec:
  replicas: 0
  selector:
    matchLabels: {app: blog}
  template:
    metadata:
      labels: {app: blog}
    spec:
      containers:
        - name: blog
          image: ` + image + `
          ports:
            - containerPort: 8080
`
}

const serviceYAML = `apiVersion: v1
kind: Service
metadata:
  name: blog
spec:
  selector: {app: blog}
  ports:
    - port: 80
      targetPort: 8080
`

const namespaceYAML = `apiVersion: v1
kind: Namespace
metadata:
  name: blog
`

// Run performs the demo and returns what it saw.
func Run(ctx context.Context, o Options) (*Result, error) {
	out := o.Out
	if out == nil {
		out = os.Stdout
	}
	step := func(format string, a ...any) { fmt.Fprintf(out, "==> "+format+"\n", a...) }

	step("control plane: etcd, kube-apiserver, kube-controller-manager (built from source on first run)")
	if _, err := testenv.EnsureBinaries(ctx, out); err != nil {
		return nil, err
	}
	cp, err := testenv.Start(ctx, testenv.DefaultOptions())
	if err != nil {
		return nil, err
	}
	defer cp.Stop()
	fmt.Fprintf(out, "    kubeconfig: %s\n", cp.AdminKubeconfig)

	work, err := os.MkdirTemp("", "ferry-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	git, err := gitserver.NewServer(filepath.Join(work, "git"))
	if err != nil {
		return nil, err
	}
	defer git.Close()
	repo, err := git.CreateRepo(ctx, repoName)
	if err != nil {
		return nil, err
	}
	files := map[string]string{
		"components/blog/namespace.yaml":  namespaceYAML,
		"components/blog/deployment.yaml": deploymentYAML(oldImage),
		"components/blog/service.yaml":    serviceYAML,
	}
	for p, c := range files {
		if err := repo.SetFile(p, c); err != nil {
			return nil, err
		}
	}
	first, err := repo.CommitAndPush(ctx, "blog: first release")
	if err != nil {
		return nil, err
	}
	step("git repository %s at %.12s (components/blog: Deployment %s)", repo.URL(), first, oldImage)

	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	secretHex := hex.EncodeToString(secret)
	secretFile := filepath.Join(work, "webhook-secret")
	if err := os.WriteFile(secretFile, []byte(secretHex), 0o600); err != nil {
		return nil, err
	}

	so := cli.DefaultServeOptions()
	if o.Listen != "" {
		so.Listen = o.Listen
	}
	so.DataDir = filepath.Join(work, "ferry")
	so.RestConfig = cp.Config
	so.GitHubWebhookSecretFile = secretFile
	so.Stderr = o.Log
	so.LogLevel = "warn"
	ready := make(chan cli.ServeInfo, 1)
	so.OnReady = func(i cli.ServeInfo) { ready <- i }
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- cli.Serve(sctx, so) }()
	var info cli.ServeInfo
	select {
	case info = <-ready:
	case err := <-served:
		return nil, fmt.Errorf("ferry serve: %w", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	step("ferry serve listening on http://%s (embedded NATS, data in %s)", info.HTTPAddr, so.DataDir)

	dyn := dynamic.NewForConfigOrDie(cp.Config)
	app := &v1alpha1.Application{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: appName, Namespace: namespace},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), TargetRevision: "HEAD", Path: "components/blog"},
			Destination: v1alpha1.Destination{Server: "https://kubernetes.default.svc", Namespace: appNS},
			SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{Prune: true, SelfHeal: true}},
		},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(app)
	if err != nil {
		return nil, err
	}
	delete(obj, "status")
	if _, err := dyn.Resource(apply.ApplicationsResource).Namespace(namespace).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating Application %s: %w", appName, err)
	}
	step("Application %s/%s created (path components/blog, automated)", namespace, appName)
	// Let ferry's informer see the new Application before the first push.
	time.Sleep(300 * time.Millisecond)

	send := func(delivery, before, after string, modified []string) (time.Time, error) {
		body := webhook.Push{
			CloneURL: repo.URL(), FullName: repoName, DefaultBranch: gitserver.Branch,
			Ref: "refs/heads/" + gitserver.Branch, Before: before, After: after,
			Commits: []webhook.Commit{{ID: after, Message: "deploy", Modified: modified}},
		}.Payload()
		sent := time.Now()
		resp, err := webhook.Send(ctx, "http://"+info.HTTPAddr+"/webhooks/github", "push", delivery, []byte(secretHex), body)
		if err != nil {
			return sent, err
		}
		if resp.Status != 202 {
			return sent, fmt.Errorf("webhook answered %d: %s", resp.Status, resp.Body)
		}
		return sent, nil
	}
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	waitImage := func(revision, image string) (*v1alpha1.Application, error) {
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			d, err := kube.AppsV1().Deployments(appNS).Get(ctx, "blog", metav1.GetOptions{})
			if err == nil && d.Spec.Template.Spec.Containers[0].Image == image {
				u, err := dyn.Resource(apply.ApplicationsResource).Namespace(namespace).Get(ctx, appName, metav1.GetOptions{})
				if err == nil {
					var got v1alpha1.Application
					if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &got) == nil && got.Status.Sync.Revision == revision {
						return &got, nil
					}
				}
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		return nil, fmt.Errorf("image %s at %.12s did not reach the cluster within a minute", image, revision)
	}

	if _, err := send("demo-1", strings.Repeat("0", 40), first, []string{"components/blog/deployment.yaml"}); err != nil {
		return nil, err
	}
	if _, err := waitImage(first, oldImage); err != nil {
		return nil, err
	}
	step("first sync applied %s", oldImage)

	if err := repo.SetFile("components/blog/deployment.yaml", deploymentYAML(newImage)); err != nil {
		return nil, err
	}
	second, err := repo.CommitAndPush(ctx, "ci: bump blog to 1.1.0")
	if err != nil {
		return nil, err
	}
	step("CI commit %.12s bumps the image tag to 1.1.0; sending the signed push webhook", second)
	sent, err := send("demo-2", first, second, []string{"components/blog/deployment.yaml"})
	if err != nil {
		return nil, err
	}
	got, err := waitImage(second, newImage)
	if err != nil {
		return nil, err
	}
	res := &Result{FromImage: oldImage, ToImage: newImage, Revision: second, PushToApplied: time.Since(sent)}
	if n := len(got.Status.History); n > 0 {
		res.TraceID = got.Status.History[n-1].TraceID
	}
	step("synced %s/%s at %.12s in %s (push to applied), trace %s", namespace, appName, second, res.PushToApplied.Round(time.Millisecond), res.TraceID)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "    KIND\tNAMESPACE\tNAME\tRESULT")
	for _, r := range got.Status.Resources {
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", r.Kind, r.Namespace, r.Name, r.Status)
	}
	_ = tw.Flush()
	d, err := kube.AppsV1().Deployments(appNS).Get(ctx, "blog", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "    deployment/blog image in the cluster: %s\n", d.Spec.Template.Spec.Containers[0].Image)

	if o.Stay {
		step("still running: webhooks at http://%s/webhooks/github, kubectl --kubeconfig %s get applications -n %s. Ctrl-C stops everything.", info.HTTPAddr, cp.AdminKubeconfig, namespace)
		<-ctx.Done()
	}
	stop()
	if err := <-served; err != nil {
		return res, fmt.Errorf("ferry serve: %w", err)
	}
	step("stopped cleanly")
	return res, nil
}
