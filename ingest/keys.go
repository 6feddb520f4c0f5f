package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// KeyTrigger syncs again the apps that decrypt with a SOPS key Secret when
// that Secret changes: the apps whose last sync decrypted with it, and
// those whose last sync could not decrypt while naming it. It watches
// Secrets' metadata only: no Secret data is held in memory.
type KeyTrigger struct {
	apps          AppLister
	pub           SyncPublisher
	defaultSecret string
	log           *slog.Logger
}

// NewKeyTrigger returns a KeyTrigger; defaultSecret is the key Secret of
// apps that name none.
func NewKeyTrigger(apps AppLister, pub SyncPublisher, defaultSecret string, log *slog.Logger) *KeyTrigger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &KeyTrigger{apps: apps, pub: pub, defaultSecret: defaultSecret, log: log}
}

// SecretChanged enqueues a sync of every automated app that uses the key
// Secret name.
func (k *KeyTrigger) SecretChanged(ctx context.Context, name string) {
	apps, err := k.apps.ListApplications(ctx)
	if err != nil {
		k.log.WarnContext(ctx, "could not list apps after a key Secret changed", "secret", name, "error", err)
		return
	}
	for _, app := range apps {
		if !k.uses(app, name) || app.DeletionTimestamp != nil || app.Spec.Suspend || !app.Spec.IsAutomated() {
			continue
		}
		if err := k.pub.PublishSync(ctx, appChangedRequest(app)); err != nil {
			k.log.WarnContext(ctx, "could not enqueue a sync after its key Secret changed", "app", app.Namespace+"/"+app.Name, "error", err)
			continue
		}
		k.log.InfoContext(ctx, "key Secret changed; sync enqueued", "app", app.Namespace+"/"+app.Name, "secret", name)
	}
}

// uses reports whether app decrypts with the key Secret name.
func (k *KeyTrigger) uses(app *v1alpha1.Application, name string) bool {
	secret := app.Spec.DecryptionSecret()
	if secret == "" {
		secret = k.defaultSecret
	}
	if secret != name {
		return false
	}
	return app.Status.Sync.DecryptedWith == name || strings.Contains(app.Status.LastError, v1alpha1.DecryptFailed)
}

var secretsResource = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// Watch watches the Secrets of namespace, by their metadata, and calls
// SecretChanged for each one added, changed or deleted after the first
// list, until ctx ends.
func (k *KeyTrigger) Watch(ctx context.Context, md metadata.Interface, namespace string) error {
	f := metadatainformer.NewFilteredSharedInformerFactory(md, 0, namespace, nil)
	inf := f.ForResource(secretsResource).Informer()
	changed := func(obj any) {
		m, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			if tomb, isTomb := obj.(cache.DeletedFinalStateUnknown); isTomb {
				m, ok = tomb.Obj.(*metav1.PartialObjectMetadata)
			}
		}
		if ok {
			k.SecretChanged(ctx, m.Name)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			if !initial {
				changed(obj)
			}
		},
		UpdateFunc: func(old, obj any) {
			o, _ := old.(*metav1.PartialObjectMetadata)
			n, _ := obj.(*metav1.PartialObjectMetadata)
			if o != nil && n != nil && o.ResourceVersion == n.ResourceVersion {
				return // a resync
			}
			changed(obj)
		},
		DeleteFunc: changed,
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("watching the Secrets of %s: %w", namespace, ctx.Err())
	}
	<-ctx.Done()
	return nil
}
