package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// Options configures a demo run.
type Options struct {
	// Listen is ferry's webhook address, APIListen its API address.
	Listen    string
	APIListen string
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
	// SecretKeys are the keys of the Secret the seed keeps encrypted in
	// Git, as found decrypted in the cluster.
	SecretKeys []string
}

const (
	repoName  = "platform/gitops"
	namespace = "ferry"
	oldTag    = "1.0.0"
	newTag    = "1.1.0"
	oldImage  = "ghcr.io/example/blog:" + oldTag
	newImage  = "ghcr.io/example/blog:" + newTag
	blogFile  = "components/apps/blog/values.yaml"
)

// seedDir finds integration/testdata/seed, the example repository laid out
// like the seed's: a root app over components/ with Helm, Kustomize and
// plain-manifest child apps.
func seedDir() (string, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "integration", "testdata", "seed"), nil
}

// commitSeed copies the example repository into repo, with its URL filled
// in, and commits it.
func commitSeed(ctx context.Context, repo *gitserver.Repo, dir string) (string, error) {
	err := filepath.WalkDir(filepath.Join(dir, "components"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		return repo.SetFile(filepath.ToSlash(rel), strings.ReplaceAll(string(b), "{{REPO_URL}}", repo.URL()))
	})
	if err != nil {
		return "", err
	}
	return repo.CommitAndPush(ctx, "the platform: blog (Helm), ingress (Kustomize), certs (manifests)")
}

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
	seed, err := seedDir()
	if err != nil {
		return nil, err
	}
	first, err := commitSeed(ctx, repo, seed)
	if err != nil {
		return nil, err
	}
	step("git repository %s at %.12s, laid out like the seed: components/ with blog (Helm, image %s), ingress (Kustomize), certs (plain manifests)", repo.URL(), first, oldImage)

	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	secretHex := hex.EncodeToString(secret)
	secretFile := filepath.Join(work, "webhook-secret")
	if err := os.WriteFile(secretFile, []byte(secretHex), 0o600); err != nil {
		return nil, err
	}

	// A read-only API token, so that the client verbs can look around.
	readToken := make([]byte, 16)
	_, _ = rand.Read(readToken)
	readTokenHex := hex.EncodeToString(readToken)
	readTokenFile := filepath.Join(work, "api-read-token")
	if err := os.WriteFile(readTokenFile, []byte(readTokenHex), 0o600); err != nil {
		return nil, err
	}

	so := cli.DefaultServeOptions()
	if o.Listen != "" {
		so.Listen = o.Listen
	}
	if o.APIListen != "" {
		so.APIListen = o.APIListen
	}
	so.APIReadTokenFile = readTokenFile
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
	step("ferry serve listening on http://%s for webhooks and http://%s for the API (embedded NATS, data in %s)", info.HTTPAddr, info.APIAddr, so.DataDir)

	kube := kubernetes.NewForConfigOrDie(cp.Config)
	ageKey, err := os.ReadFile(filepath.Join(filepath.Dir(seed), "seed-key", "demo.agekey"))
	if err != nil {
		return nil, err
	}
	if _, err := kube.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "ferry-sops", Namespace: namespace},
		Data:       map[string][]byte{"demo.agekey": ageKey},
	}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating the SOPS key Secret: %w", err)
	}
	step("SOPS key Secret %s/ferry-sops created from the demo's throwaway age key; ferry decrypts the seed's encrypted Secret with it at apply", namespace)

	dyn := dynamic.NewForConfigOrDie(cp.Config)
	rootYAML, err := os.ReadFile(filepath.Join(seed, "root.yaml"))
	if err != nil {
		return nil, err
	}
	root := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(strings.ReplaceAll(string(rootYAML), "{{REPO_URL}}", repo.URL())), &root.Object); err != nil {
		return nil, err
	}
	if _, err := dyn.Resource(v1alpha1.ApplicationsResource).Namespace(namespace).Create(ctx, root, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating the root Application: %w", err)
	}
	step("root Application %s/root created: it syncs components/ and the child apps it declares", namespace)

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
	waitImage := func(revision, image string) (*v1alpha1.Application, error) {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			d, err := kube.AppsV1().Deployments("blog").Get(ctx, "blog", metav1.GetOptions{})
			if err == nil && d.Spec.Template.Spec.Containers[0].Image == image {
				u, err := dyn.Resource(v1alpha1.ApplicationsResource).Namespace(namespace).Get(ctx, "blog", metav1.GetOptions{})
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
		return nil, fmt.Errorf("image %s at %.12s did not reach the cluster within two minutes", image, revision)
	}

	if _, err := waitImage(first, oldImage); err != nil {
		return nil, err
	}
	apps, err := dyn.Resource(v1alpha1.ApplicationsResource).Namespace(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, a := range apps.Items {
		names = append(names, a.GetName())
	}
	step("first sync done: Applications %s; blog runs %s", strings.Join(names, ", "), oldImage)
	var sealed *corev1.Secret
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if sealed, err = kube.CoreV1().Secrets("ingress").Get(ctx, "edge-basic-auth", metav1.GetOptions{}); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("the seed's SOPS Secret did not reach the cluster: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var secretKeys []string
	for k, v := range sealed.Data {
		secretKeys = append(secretKeys, fmt.Sprintf("%s (%d bytes)", k, len(v)))
	}
	sort.Strings(secretKeys)
	step("secret ingress/edge-basic-auth, encrypted in Git (KSOPS), is decrypted in the cluster: %s; username=%s", strings.Join(secretKeys, ", "), sealed.Data["username"])

	values, err := os.ReadFile(filepath.Join(seed, blogFile))
	if err != nil {
		return nil, err
	}
	if err := repo.SetFile(blogFile, strings.Replace(string(values), `tag: "`+oldTag+`"`, `tag: "`+newTag+`"`, 1)); err != nil {
		return nil, err
	}
	second, err := repo.CommitAndPush(ctx, "ci: bump blog to "+newTag)
	if err != nil {
		return nil, err
	}
	step("CI commit %.12s bumps the blog's image tag to %s in %s; sending the signed push webhook", second, newTag, blogFile)
	sent, err := send("demo-2", first, second, []string{blogFile})
	if err != nil {
		return nil, err
	}
	got, err := waitImage(second, newImage)
	if err != nil {
		return nil, err
	}
	res := &Result{FromImage: oldImage, ToImage: newImage, Revision: second, PushToApplied: time.Since(sent), SecretKeys: secretKeys}
	if n := len(got.Status.History); n > 0 {
		res.TraceID = got.Status.History[n-1].TraceID
	}
	step("synced %s/blog at %.12s in %s (push to applied), trace %s", namespace, second, res.PushToApplied.Round(time.Millisecond), res.TraceID)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "    KIND\tNAMESPACE\tNAME\tRESULT")
	for _, r := range got.Status.Resources {
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", r.Kind, r.Namespace, r.Name, r.Status)
	}
	_ = tw.Flush()
	d, err := kube.AppsV1().Deployments("blog").Get(ctx, "blog", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "    deployment/blog image in the cluster: %s\n", d.Spec.Template.Spec.Containers[0].Image)

	if o.Stay {
		step("still running. Try: FERRY_TOKEN=%s go run ./cmd/ferry app list --server http://%s (or app get blog, app history blog); kubeconfig %s. Ctrl-C stops everything.", readTokenHex, info.APIAddr, cp.AdminKubeconfig)
		<-ctx.Done()
	}
	stop()
	if err := <-served; err != nil {
		return res, fmt.Errorf("ferry serve: %w", err)
	}
	step("stopped cleanly")
	return res, nil
}
