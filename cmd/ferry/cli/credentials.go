package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"helm.sh/helm/v3/pkg/action"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	"github.com/ferrycd/ferry/render"
)

// secretCredentials finds repository credentials in the Secrets of ferry's
// namespace labelled ferry.dev/secret-type=repository, with Argo CD's keys.
type secretCredentials struct {
	lister corev1listers.SecretNamespaceLister
	log    *slog.Logger
}

var _ render.Credentials = (*secretCredentials)(nil)

func newSecretCredentials(ctx context.Context, kube kubernetes.Interface, namespace string, log *slog.Logger) (*secretCredentials, error) {
	f := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = v1alpha1.LabelSecretType + "=" + v1alpha1.SecretTypeRepository
		}))
	lister := f.Core().V1().Secrets().Lister()
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("syncing the %v informer: %w", typ, ctx.Err())
		}
	}
	return &secretCredentials{lister: lister.Secrets(namespace), log: log}, nil
}

// Lookup returns the credentials whose url matches repoURL best.
func (s *secretCredentials) Lookup(ctx context.Context, repoURL string) (*render.RepoCredentials, error) {
	secrets, err := s.lister.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	creds := make([]*render.RepoCredentials, 0, len(secrets))
	for _, sec := range secrets {
		c, err := render.ParseRepositorySecret(sec.Data)
		if err != nil {
			s.log.WarnContext(ctx, "ignoring a repository secret", "secret", sec.Namespace+"/"+sec.Name, "error", err)
			continue
		}
		creds = append(creds, c)
	}
	return render.NewStaticCredentials(creds...).Lookup(ctx, repoURL)
}

// discoveryCapabilities gives Helm the cluster's version and APIs, from
// discovery, cached for five minutes.
func discoveryCapabilities(cfg *rest.Config) (render.CapabilitiesSource, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return render.NewCachedCapabilities(render.CapabilitiesFunc(func(ctx context.Context, _ v1alpha1.Destination) (*render.Capabilities, error) {
		v, err := dc.ServerVersion()
		if err != nil {
			return nil, fmt.Errorf("reading the server version: %w", err)
		}
		vs, err := action.GetVersionSet(dc)
		if err != nil {
			return nil, fmt.Errorf("reading the server's APIs: %w", err)
		}
		return &render.Capabilities{KubeVersion: v.GitVersion, APIVersions: vs}, nil
	}), 5*time.Minute), nil
}
