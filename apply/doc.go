// Package apply brings the cluster to a rendered set of objects with
// server-side apply, under the field manager "ferry", and records the
// outcome in the Application's status.
//
// Objects are applied in stages (Namespaces and CRDs first, then other
// cluster-scoped objects, then namespaced ones), in parallel within a stage
// up to a bound. Every applied object carries the tracking annotation
// ferry.dev/app naming the app that owns it.
//
// apply is a library: it talks to the API server through client-go and
// knows nothing of NATS or git.
package apply
