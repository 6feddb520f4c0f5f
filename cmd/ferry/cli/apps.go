package cli

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// appStore is an informer-backed view of the Applications in ferry's
// namespace: dispatch and the workers read it without API calls.
type appStore struct {
	informer cache.SharedIndexInformer
	factory  dynamicinformer.DynamicSharedInformerFactory
	ok       atomic.Bool
}

func newAppStore(dyn dynamic.Interface, namespace string) *appStore {
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 10*time.Minute, namespace, nil)
	inf := f.ForResource(apply.ApplicationsResource).Informer()
	// ferry never reads an Application's managed fields; dropping them
	// keeps the cache small.
	_ = inf.SetTransform(func(obj any) (any, error) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			u.SetManagedFields(nil)
		}
		return obj, nil
	})
	return &appStore{factory: f, informer: inf}
}

func (s *appStore) run(ctx context.Context) error {
	s.informer.Run(ctx.Done())
	return nil
}

func (s *appStore) waitSynced(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		return fmt.Errorf("application informer did not sync: %w", context.Cause(ctx))
	}
	s.ok.Store(true)
	return nil
}

func (s *appStore) synced() bool { return s.ok.Load() }

// ListApplications returns every Application; ones that do not decode are
// skipped (the API server's schema makes that rare).
func (s *appStore) ListApplications(context.Context) ([]*v1alpha1.Application, error) {
	items := s.informer.GetStore().List()
	out := make([]*v1alpha1.Application, 0, len(items))
	for _, it := range items {
		if app, err := s.decode(it); err == nil {
			out = append(out, app)
		}
	}
	return out, nil
}

// Get returns one Application, or a NotFound error.
func (s *appStore) Get(namespace, name string) (*v1alpha1.Application, error) {
	it, ok, err := s.informer.GetStore().GetByKey(namespace + "/" + name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierrors.NewNotFound(apply.ApplicationsResource.GroupResource(), name)
	}
	return s.decode(it)
}

// decode converts an informer object, which may be a deletion tombstone.
func (s *appStore) decode(obj any) (*v1alpha1.Application, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	return decodeApp(obj)
}

func decodeApp(obj any) (*v1alpha1.Application, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected %T in application store", obj)
	}
	app := &v1alpha1.Application{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, app); err != nil {
		return nil, fmt.Errorf("application %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return app, nil
}

// GetApplication returns one Application from the informer's cache.
func (s *appStore) GetApplication(_ context.Context, namespace, name string) (*v1alpha1.Application, error) {
	app, err := s.Get(namespace, name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%s/%s: %w", namespace, name, ingest.ErrAppNotFound)
	}
	return app, err
}
