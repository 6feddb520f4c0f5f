package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// MonitorOptions tunes a Monitor.
type MonitorOptions struct {
	// InventoryNamespace is ferry's namespace, where the inventories are.
	InventoryNamespace string
	// ResyncPeriod is how often every app is assessed again and its
	// status delivered even when nothing changed: the safety net for a
	// lost notification.
	ResyncPeriod time.Duration
	// DriftGrace is how long a drift must last before it is reported.
	// Object and inventory changes arrive on separate watches, so for a
	// moment an object ferry just applied can look drifted before the
	// sync's inventory update arrives.
	DriftGrace time.Duration
	// OnStatus receives an app's status whenever its health, drift,
	// syncing or PostSync state changes, and at every resync. It is
	// called from one goroutine, one app at a time, so it should hand
	// work off (publish a job) rather than do it.
	OnStatus func(context.Context, AppStatus)
}

// DefaultMonitorOptions returns the settings of `ferry serve`.
func DefaultMonitorOptions() MonitorOptions {
	return MonitorOptions{InventoryNamespace: DefaultOptions().InventoryNamespace, ResyncPeriod: 10 * time.Minute, DriftGrace: 3 * time.Second}
}

// AppStatus is what the Monitor observed of one app.
type AppStatus struct {
	App    string
	Health AppHealth
	// Drift lists the objects that no longer match what ferry applied;
	// non-empty means the app is OutOfSync.
	Drift []Drift
	// Syncing says a sync is writing the app's objects; drift is not
	// assessed meanwhile.
	Syncing bool
	// PostSyncPending says the last sync left PostSync hooks to run: the
	// caller runs RunPostSync when Health is Healthy.
	PostSyncPending bool
	// Resync marks a delivery by the periodic resync.
	Resync bool
}

// OutOfSync reports whether objects drifted.
func (s AppStatus) OutOfSync() bool { return len(s.Drift) > 0 }

// Monitor tracks the health and drift of every app that has an inventory,
// from watches: one filtered informer per kind that any app manages
// (v1alpha1.LabelManaged=true), plus one on the inventories. It never holds a sync
// worker: a sync returns after applying, and the Monitor tells the caller
// when the app turns Healthy or drifts.
type Monitor struct {
	dyn  dynamic.Interface
	opts MonitorOptions
	log  *slog.Logger

	queue workqueue.TypedDelayingInterface[string]

	mu      sync.Mutex
	ctx     context.Context
	inv     cache.SharedIndexInformer
	apps    map[string]*monitoredApp
	index   map[objID]map[string]bool // object -> apps listing it
	watches map[schema.GroupVersionResource]*kindWatch
}

type monitoredApp struct {
	inv    *Inventory
	last   *AppStatus
	resync bool
	// driftSince is when each drift (by Drift.String) was first seen.
	driftSince map[string]time.Time
}

type objID struct {
	gvr             schema.GroupVersionResource
	namespace, name string
}

type kindWatch struct {
	informer cache.SharedIndexInformer
	cancel   context.CancelFunc
	refs     int
}

// NewMonitor returns a Monitor for the cluster of cfg. Zero options take
// their DefaultMonitorOptions value.
func NewMonitor(cfg *rest.Config, opts MonitorOptions, log *slog.Logger) (*Monitor, error) {
	d := DefaultMonitorOptions()
	if opts.ResyncPeriod < 0 || opts.DriftGrace < 0 {
		return nil, fmt.Errorf("%w: ResyncPeriod and DriftGrace must not be negative", ErrInvalidOption)
	}
	if opts.DriftGrace == 0 {
		opts.DriftGrace = d.DriftGrace
	}
	if opts.InventoryNamespace == "" {
		opts.InventoryNamespace = d.InventoryNamespace
	}
	if opts.ResyncPeriod == 0 {
		opts.ResyncPeriod = d.ResyncPeriod
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Monitor{
		dyn: dyn, opts: opts, log: log,
		queue:   workqueue.NewTypedDelayingQueue[string](),
		apps:    map[string]*monitoredApp{},
		index:   map[objID]map[string]bool{},
		watches: map[schema.GroupVersionResource]*kindWatch{},
	}, nil
}

// Start runs the Monitor until ctx is done.
func (m *Monitor) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.ctx != nil {
		m.mu.Unlock()
		return errors.New("monitor already started")
	}
	m.ctx = ctx
	m.inv = dynamicinformer.NewFilteredDynamicInformer(m.dyn, configMaps, m.opts.InventoryNamespace, 0, cache.Indexers{},
		func(o *metav1.ListOptions) { o.LabelSelector = v1alpha1.LabelInventory + "=true" }).Informer()
	m.mu.Unlock()

	_, err := m.inv.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.onInventory(obj, false) },
		UpdateFunc: func(_, obj any) { m.onInventory(obj, false) },
		DeleteFunc: func(obj any) { m.onInventory(obj, true) },
	})
	if err != nil {
		return err
	}
	_ = m.inv.SetWatchErrorHandlerWithContext(m.watchError("inventory"))

	var wg sync.WaitGroup
	wg.Go(func() { m.inv.RunWithContext(ctx) })
	wg.Go(m.work)

	tick := time.NewTicker(m.opts.ResyncPeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			m.queue.ShutDown()
			wg.Wait()
			return nil
		case <-tick.C:
			m.mu.Lock()
			for app, st := range m.apps {
				st.resync = true
				m.queue.Add(app)
			}
			m.mu.Unlock()
		}
	}
}

// Status returns the last status the Monitor computed for app.
func (m *Monitor) Status(app string) (AppStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.apps[app]
	if !ok || st.last == nil {
		return AppStatus{}, false
	}
	return *st.last, true
}

// HasSynced reports whether the inventories and every watched kind have
// been listed.
func (m *Monitor) HasSynced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inv == nil || !m.inv.HasSynced() {
		return false
	}
	for _, w := range m.watches {
		if !w.informer.HasSynced() {
			return false
		}
	}
	return true
}

func (m *Monitor) watchError(what string) cache.WatchErrorHandlerWithContext {
	return func(_ context.Context, _ *cache.Reflector, err error) {
		m.log.Debug("watch failed; retrying", "watch", what, "error", err)
	}
}

func (m *Monitor) onInventory(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	inv, err := decodeInventory(u)
	if err != nil {
		m.log.Warn("ignoring unreadable inventory", "inventory", u.GetName(), "error", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.apps[inv.App]
	if st != nil {
		m.unindex(inv.App, st.inv)
	}
	if deleted {
		delete(m.apps, inv.App)
		return
	}
	if st == nil {
		st = &monitoredApp{}
		m.apps[inv.App] = st
	}
	st.inv = inv
	m.indexApp(inv.App, inv)
	m.queue.Add(inv.App)
}

func entryID(e InventoryEntry) objID {
	return objID{gvr: e.GVR(), namespace: e.Namespace, name: e.Name}
}

// indexApp records the app's objects and starts watches for new kinds.
// m.mu is held.
func (m *Monitor) indexApp(app string, inv *Inventory) {
	for _, e := range inv.Entries {
		if e.Orphan || e.Resource == "" {
			continue
		}
		id := entryID(e)
		if m.index[id] == nil {
			m.index[id] = map[string]bool{}
		}
		m.index[id][app] = true
		m.acquire(id.gvr)
	}
}

// unindex forgets the app's objects and stops watches no app needs.
// m.mu is held.
func (m *Monitor) unindex(app string, inv *Inventory) {
	for _, e := range inv.Entries {
		if e.Orphan || e.Resource == "" {
			continue
		}
		id := entryID(e)
		delete(m.index[id], app)
		if len(m.index[id]) == 0 {
			delete(m.index, id)
		}
		m.release(id.gvr)
	}
}

func (m *Monitor) acquire(gvr schema.GroupVersionResource) {
	if w, ok := m.watches[gvr]; ok {
		w.refs++
		return
	}
	ctx, cancel := context.WithCancel(m.ctx)
	inf := dynamicinformer.NewFilteredDynamicInformer(m.dyn, gvr, metav1.NamespaceAll, 0, cache.Indexers{},
		func(o *metav1.ListOptions) { o.LabelSelector = v1alpha1.LabelManaged + "=true" }).Informer()
	if err := inf.SetTransform(slimManagedFields); err != nil {
		m.log.Warn("informer transform not set", "resource", gvr.String(), "error", err)
	}
	handler := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		m.enqueueObject(objID{gvr: gvr, namespace: u.GetNamespace(), name: u.GetName()})
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handler,
		UpdateFunc: func(_, obj any) { handler(obj) },
		DeleteFunc: handler,
	})
	_ = inf.SetWatchErrorHandlerWithContext(m.watchError(gvr.String()))
	m.watches[gvr] = &kindWatch{informer: inf, cancel: cancel, refs: 1}
	go inf.RunWithContext(ctx)
	go func() {
		// An empty list sends no events: assess the kind's apps once the
		// list is in.
		if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for id, apps := range m.index {
				if id.gvr == gvr {
					for app := range apps {
						m.queue.Add(app)
					}
				}
			}
		}
	}()
}

func (m *Monitor) release(gvr schema.GroupVersionResource) {
	w, ok := m.watches[gvr]
	if !ok {
		return
	}
	w.refs--
	if w.refs <= 0 {
		w.cancel()
		delete(m.watches, gvr)
	}
}

func (m *Monitor) enqueueObject(id objID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for app := range m.index[id] {
		m.queue.Add(app)
	}
}

func (m *Monitor) work() {
	for {
		app, shutdown := m.queue.Get()
		if shutdown {
			return
		}
		if st, deliver := m.assess(app); deliver && m.opts.OnStatus != nil {
			m.opts.OnStatus(m.ctx, st)
		}
		m.queue.Done(app)
	}
}

// assess computes the app's status from the watch caches and says whether
// to deliver it.
func (m *Monitor) assess(app string) (AppStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.apps[app]
	if st == nil {
		return AppStatus{}, false
	}
	inv := st.inv
	syncing := inv.State == InventoryApplying && time.Since(inv.UpdatedAt) < m.opts.ResyncPeriod
	var resources []ResourceHealth
	var drift []Drift
	for _, e := range inv.Entries {
		if e.Orphan {
			continue
		}
		w := m.watches[e.GVR()]
		if e.Resource == "" || w == nil || !w.informer.HasSynced() {
			resources = append(resources, ResourceHealth{Ref: e.Ref(), Status: HealthUnknown, Message: "not watched yet"})
			continue
		}
		key := e.Name
		if e.Namespace != "" {
			key = e.Namespace + "/" + e.Name
		}
		var live *unstructured.Unstructured
		if obj, ok, _ := w.informer.GetStore().GetByKey(key); ok {
			live, _ = obj.(*unstructured.Unstructured)
		}
		resources = append(resources, objectHealth(e.Ref(), live))
		if !syncing {
			if d := driftOf(e, live); d != nil {
				drift = append(drift, *d)
			}
		}
	}
	drift = m.settled(app, st, drift)
	status := AppStatus{
		App: app, Health: appHealth(resources), Drift: drift, Syncing: syncing,
		PostSyncPending: inv.PostSync != "" && inv.State != InventoryApplying, Resync: st.resync,
	}
	deliver := st.resync || st.last == nil || !sameStatus(*st.last, status)
	st.resync = false
	if deliver {
		st.last = &status
	}
	return status, deliver
}

func sameStatus(a, b AppStatus) bool {
	return a.Health.Status == b.Health.Status && a.Health.Message == b.Health.Message &&
		a.Syncing == b.Syncing && a.PostSyncPending == b.PostSyncPending &&
		slices.EqualFunc(a.Drift, b.Drift, func(x, y Drift) bool { return x.String() == y.String() })
}

// settled returns the drifts that have lasted DriftGrace, and schedules
// another assessment for those that have not yet. m.mu is held.
func (m *Monitor) settled(app string, st *monitoredApp, drift []Drift) []Drift {
	now := time.Now()
	seen := map[string]time.Time{}
	var out []Drift
	var wait time.Duration
	for _, d := range drift {
		k := d.String()
		since, ok := st.driftSince[k]
		if !ok {
			since = now
		}
		seen[k] = since
		if left := m.opts.DriftGrace - now.Sub(since); left > 0 {
			if wait == 0 || left < wait {
				wait = left
			}
			continue
		}
		out = append(out, d)
	}
	st.driftSince = seen
	if wait > 0 {
		m.queue.AddAfter(app, wait)
	}
	return out
}

// slimManagedFields drops the field sets of every manager but ferry's apply
// from objects the Monitor caches. Drift needs ferry's set (hashed) and the
// other managers' names and times, never their fields; the sets are most
// of an object's size, and the cache holds every object ferry manages.
func slimManagedFields(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	mfs := u.GetManagedFields()
	if len(mfs) == 0 {
		return obj, nil
	}
	for i := range mfs {
		if mfs[i].Manager == FieldManager && mfs[i].Operation == metav1.ManagedFieldsOperationApply && mfs[i].Subresource == "" {
			continue
		}
		mfs[i].FieldsV1 = nil
	}
	u.SetManagedFields(mfs)
	return u, nil
}
