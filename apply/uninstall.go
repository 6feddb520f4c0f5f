package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	"github.com/ferrycd/ferry/proto/job"
)

// Uninstall prunes every object of app's inventory, with the same safety
// rules as Sync's prune, and deletes the inventory once it is empty. It is
// for an Application that was deleted.
func (a *Applier) Uninstall(ctx context.Context, app string) (*Result, error) {
	opts := SyncOptions{App: app, Prune: true, AllowEmpty: true, SkipHooks: true}
	res, err := a.Sync(ctx, opts, nil)
	if err != nil || res.Err != nil {
		return res, err
	}
	inv, _, err := a.readInventory(ctx, app)
	if err != nil {
		return res, err
	}
	for _, e := range inv.Entries {
		if !e.Orphan {
			return res, nil
		}
	}
	err = a.dyn.Resource(configMaps).Namespace(a.opts.InventoryNamespace).Delete(ctx, InventoryName(app), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return res, fmt.Errorf("deleting inventory of %s: %w", app, err)
	}
	return res, nil
}

// ForgetInventory deletes app's inventory and nothing else: the objects
// stay in the cluster, and ferry no longer watches or prunes them as app's.
// It is for an Application deleted without the resources finalizer.
func (a *Applier) ForgetInventory(ctx context.Context, app string) error {
	err := a.dyn.Resource(configMaps).Namespace(a.opts.InventoryNamespace).Delete(ctx, InventoryName(app), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting inventory of %s: %w", app, err)
	}
	return nil
}

// uninstallBackoff spaces the tries of an uninstall that failed.
var uninstallBackoff = job.Backoff{First: time.Second, Factor: 2, Max: time.Minute}

// Finalizer carries out the deletion of Applications: one deleted with the
// resources finalizer has everything it applied deleted first, retried
// until that succeeds, and then the finalizer removed; one deleted without
// it leaves its resources, and only its inventory goes.
type Finalizer struct {
	applier *Applier
	log     *slog.Logger

	mu      sync.Mutex
	running map[string]bool
}

// NewFinalizer returns a Finalizer uninstalling through a.
func NewFinalizer(a *Applier, log *slog.Logger) *Finalizer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Finalizer{applier: a, log: log, running: map[string]bool{}}
}

// HasResourcesFinalizer reports whether deleting app deletes its resources.
func HasResourcesFinalizer(app *v1alpha1.Application) bool {
	return slices.Contains(app.Finalizers, v1alpha1.ResourcesFinalizer) || slices.Contains(app.Finalizers, v1alpha1.ArgoResourcesFinalizer)
}

// AppChanged starts the uninstall of an app being deleted with the
// resources finalizer, unless one is running already. It returns at once.
func (f *Finalizer) AppChanged(ctx context.Context, app *v1alpha1.Application) {
	if app.DeletionTimestamp == nil || !HasResourcesFinalizer(app) {
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

// AppDeleted forgets the inventory of an app that is gone. With the
// finalizer its resources were deleted before; without it they stay.
func (f *Finalizer) AppDeleted(ctx context.Context, app *v1alpha1.Application) {
	if err := f.applier.ForgetInventory(ctx, app.Namespace+"/"+app.Name); err != nil {
		f.log.WarnContext(ctx, "could not remove the inventory of a deleted app", "app", app.Namespace+"/"+app.Name, "error", err)
	}
}

// finalize prunes everything the app applied, retrying until it succeeds,
// then removes the finalizer.
func (f *Finalizer) finalize(ctx context.Context, app *v1alpha1.Application) {
	key := app.Namespace + "/" + app.Name
	for attempt := 1; ; attempt++ {
		res, err := f.applier.Uninstall(ctx, key)
		if err == nil && (res == nil || res.Err == nil) {
			n := 0
			if res != nil {
				n = res.Count(ActionPruned)
			}
			f.log.InfoContext(ctx, "deleted the resources of a deleted app", "app", key, "pruned", n)
			break
		}
		if err == nil {
			err = res.Err
		}
		delay := uninstallBackoff.Delay(attempt)
		f.log.WarnContext(ctx, "could not delete the resources of a deleted app; retrying", "app", key, "retry_in", delay, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	// The app changes while its resources go (the Monitor records their
	// health): remove the finalizer from the newest copy, again after a
	// conflict, so that the deletion always finishes.
	ri := f.applier.Dynamic().Resource(v1alpha1.ApplicationsResource).Namespace(app.Namespace)
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		live, err := ri.Get(ctx, app.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		fins := slices.DeleteFunc(live.GetFinalizers(), func(s string) bool {
			return s == v1alpha1.ResourcesFinalizer || s == v1alpha1.ArgoResourcesFinalizer
		})
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": fins, "resourceVersion": live.GetResourceVersion()}})
		_, err = ri.Patch(ctx, app.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		f.log.WarnContext(ctx, "could not remove the resources finalizer", "app", key, "error", err)
	}
}
