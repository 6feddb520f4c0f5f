// Package apply brings a cluster to a rendered bundle of objects and keeps
// watching that it stays there.
//
// Sync server-side-applies an app's objects under the field manager
// "ferry", forcing ownership of every field Git declares, so Git wins over
// kubectl edits and other managers. It applies in steps: by sync wave
// (ferry.dev/sync-wave or argocd.argoproj.io/sync-wave), then by stage
// (Namespaces and CRDs, waiting until each CRD is Established; other
// cluster-scoped kinds; namespaced kinds, started in Helm's kind order),
// each step in parallel up to Options.Parallelism. A step with failures
// reports all of them and ends the sync. Every object gets the annotation
// ferry.dev/app=<namespace>/<name> and the label ferry.dev/managed=true,
// which lets watches filter on the server.
//
// Hooks follow Argo CD's model (ferry.dev/hook, argocd.argoproj.io/hook,
// and Helm's pre/post install and upgrade hooks): PreSync hooks run first
// and a Job or Pod hook must finish; a failed PreSync hook ends the sync
// with nothing else applied and nothing pruned, and SyncFail hooks run.
// PostSync hooks need a Healthy app, and waiting for health must not hold a
// worker: Sync returns with Result.PostSyncPending, the Monitor reports
// when the app turns Healthy, and the caller then calls RunPostSync.
//
// The inventory of each app (the objects it applied, with a hash of each
// as applied and of the fields ferry owns on it) is a ConfigMap in ferry's
// namespace. It is written before a sync creates anything, so nothing ferry
// creates is ever untracked, and again afterwards. It lets a sync that
// finds everything unchanged make no write request at all, and lets prune
// delete only what the app applied and Git no longer has: never an object
// another app owns or declares, one with pruning disabled, or a Namespace
// holding another app's objects.
//
// Monitor watches the kinds the inventories list and assesses health with
// kstatus (the worst object wins) and drift: an object deleted, or changed
// by another manager on fields ferry owns. Fields ferry does not own, such
// as replicas an autoscaler sets, are not drift. Re-applying on drift
// (self-heal) is the caller's decision: Sync with SkipHooks and the last
// bundle.
//
// Diff shows a server-side dry-run diff of a bundle against the cluster,
// with Secret values masked.
//
// Role is the apply side of an app's lifecycle, run by the queue behind
// worker.Applier: it applies bundles, records every sync in the app's
// status and history, keeps its conditions, and decides whether a failed
// sync is tried again (syncPolicy.retry, or a wait for the API server);
// the render role hands it its failures too. Finalizer uninstalls apps
// deleted with the resources finalizer.
//
// apply is a library: it talks to the API server through client-go and
// knows nothing of NATS, git or rendering. It retries nothing itself: it
// answers with job.RetryAfter or job.Terminal, and IsTransient sorts the
// failures.
package apply
