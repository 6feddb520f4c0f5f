package cli

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// finalizer deletes the resources of an Application deleted with the
// resources finalizer, then lets the deletion finish; an Application
// deleted without it leaves its resources, and ferry forgets its inventory.
type finalizer struct {
	applier   *apply.Applier
	namespace string
	log       *slog.Logger

	mu      sync.Mutex
	running map[string]bool
}

func hasResourcesFinalizer(app *v1alpha1.Application) bool {
	return slices.Contains(app.Finalizers, v1alpha1.ResourcesFinalizer) || slices.Contains(app.Finalizers, v1alpha1.ArgoResourcesFinalizer)
}

func (f *finalizer) register(ctx context.Context, s *appStore) error {
	check := func(obj any) {
		app, err := s.decode(obj)
		if err != nil || app.DeletionTimestamp == nil || !hasResourcesFinalizer(app) {
			return
		}
		key := app.Namespace + "/" + app.Name
		f.mu.Lock()
		if f.running[key] {
			f.mu.Unlock()
			return
		}
		f.running[key] = true
		f.mu.Unlock()
		go func() {
			defer func() {
				f.mu.Lock()
				delete(f.running, key)
				f.mu.Unlock()
			}()
			f.finalize(ctx, app)
		}()
	}
	_, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    check,
		UpdateFunc: func(_, obj any) { check(obj) },
		DeleteFunc: func(obj any) {
			app, err := s.decode(obj)
			if err != nil {
				return
			}
			// Without the finalizer the resources stay; only the inventory
			// goes, so nothing watches or prunes them as this app's.
			name := apply.InventoryName(app.Namespace + "/" + app.Name)
			err = f.applier.Dynamic().Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).
				Namespace(f.namespace).Delete(ctx, name, metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				f.log.Warn("could not remove the inventory of a deleted app", "app", app.Namespace+"/"+app.Name, "error", err)
			}
		},
	})
	return err
}

// finalize prunes everything the app applied, retrying until it succeeds,
// then removes the finalizer.
func (f *finalizer) finalize(ctx context.Context, app *v1alpha1.Application) {
	key := app.Namespace + "/" + app.Name
	for delay := time.Second; ; delay = min(delay*2, time.Minute) {
		res, err := f.applier.Uninstall(ctx, key)
		if err == nil && (res == nil || res.Err == nil) {
			n := 0
			if res != nil {
				n = res.Count(apply.ActionPruned)
			}
			f.log.Info("deleted the resources of a deleted app", "app", key, "pruned", n)
			break
		}
		if err == nil {
			err = res.Err
		}
		f.log.Warn("could not delete the resources of a deleted app; retrying", "app", key, "retry_in", delay, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	fins := slices.DeleteFunc(slices.Clone(app.Finalizers), func(s string) bool {
		return s == v1alpha1.ResourcesFinalizer || s == v1alpha1.ArgoResourcesFinalizer
	})
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": fins, "resourceVersion": app.ResourceVersion}})
	_, err := f.applier.Dynamic().Resource(apply.ApplicationsResource).Namespace(app.Namespace).
		Patch(ctx, app.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		f.log.Warn("could not remove the resources finalizer", "app", key, "error", err)
	}
}
