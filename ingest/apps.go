package ingest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// AppHandler is told of every change to an Application in the store, with
// the store's context.
type AppHandler interface {
	// AppChanged is called when an app is added or changes.
	AppChanged(ctx context.Context, app *v1alpha1.Application)
	// AppDeleted is called once an app is gone.
	AppDeleted(ctx context.Context, app *v1alpha1.Application)
}

// AppStore is an informer-backed view of the Applications in ferry's
// namespace: dispatch, the triggers and the workers read it without API
// calls, and handlers hear of every create, change and delete.
type AppStore struct {
	informer cache.SharedIndexInformer
	ok       atomic.Bool

	mu  sync.Mutex
	ctx context.Context
}

var (
	_ AppLister = (*AppStore)(nil)
	_ AppGetter = (*AppStore)(nil)
)

// NewAppStore returns a store of the Applications in namespace; Start
// fills it.
func NewAppStore(dyn dynamic.Interface, namespace string) *AppStore {
	return &AppStore{informer: slimInformer(dyn, v1alpha1.ApplicationsResource, namespace)}
}

// slimInformer returns an informer over gvr in namespace whose cache keeps
// no managed fields: ferry never reads them, and dropping them keeps the
// cache small.
func slimInformer(dyn dynamic.Interface, gvr schema.GroupVersionResource, namespace string) cache.SharedIndexInformer {
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 10*time.Minute, namespace, nil)
	inf := f.ForResource(gvr).Informer()
	_ = inf.SetTransform(func(obj any) (any, error) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			u.SetManagedFields(nil)
		}
		return obj, nil
	})
	return inf
}

// Handle makes h hear of every create, change and delete from now on,
// starting with an add for each app already in the store. Each handler
// runs in its own goroutine, so a slow one does not hold up the others.
func (s *AppStore) Handle(h AppHandler) error {
	on := func(obj any, deleted bool) {
		app, err := s.decode(obj)
		if err != nil {
			return
		}
		s.mu.Lock()
		ctx := s.ctx
		s.mu.Unlock()
		if deleted {
			h.AppDeleted(ctx, app)
		} else {
			h.AppChanged(ctx, app)
		}
	}
	_, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { on(obj, false) },
		UpdateFunc: func(_, obj any) { on(obj, false) },
		DeleteFunc: func(obj any) { on(obj, true) },
	})
	return err
}

// Start runs the informer until ctx is done. Handlers are called with ctx.
func (s *AppStore) Start(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	s.informer.Run(ctx.Done())
	return nil
}

// WaitSynced waits until the store holds every Application.
func (s *AppStore) WaitSynced(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		return fmt.Errorf("application informer did not sync: %w", context.Cause(ctx))
	}
	s.ok.Store(true)
	return nil
}

// Synced reports whether WaitSynced has returned successfully.
func (s *AppStore) Synced() bool { return s.ok.Load() }

// ListApplications returns every Application; ones that do not decode are
// skipped (the API server's schema makes that rare).
func (s *AppStore) ListApplications(context.Context) ([]*v1alpha1.Application, error) {
	items := s.informer.GetStore().List()
	out := make([]*v1alpha1.Application, 0, len(items))
	for _, it := range items {
		if app, err := s.decode(it); err == nil {
			out = append(out, app)
		}
	}
	return out, nil
}

// Get returns one Application, or an error apierrors.IsNotFound knows.
func (s *AppStore) Get(namespace, name string) (*v1alpha1.Application, error) {
	it, ok, err := s.informer.GetStore().GetByKey(namespace + "/" + name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierrors.NewNotFound(v1alpha1.ApplicationsResource.GroupResource(), name)
	}
	return s.decode(it)
}

// GetApplication returns one Application, or an error wrapping
// ErrAppNotFound.
func (s *AppStore) GetApplication(_ context.Context, namespace, name string) (*v1alpha1.Application, error) {
	app, err := s.Get(namespace, name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%s/%s: %w", namespace, name, ErrAppNotFound)
	}
	return app, err
}

// decode converts an informer object, which may be a deletion tombstone.
func (s *AppStore) decode(obj any) (*v1alpha1.Application, error) {
	return decodeObject[v1alpha1.Application](obj)
}

// decodeObject converts an informer object, which may be a deletion
// tombstone, into a T.
func decodeObject[T any](obj any) (*T, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected %T in an informer", obj)
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return out, nil
}
