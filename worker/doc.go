// Package worker is ferry's only NATS layer. It runs the embedded NATS server,
// declares the JetStream streams, consumers and object store that carry a
// sync from push to apply, and runs the render and apply roles behind pull
// consumers.
//
// Work arrives and leaves as proto messages; the roles themselves sit behind
// the small Renderer and Applier interfaces declared here, so render and
// apply never see NATS. W3C trace context travels in message headers, so one
// sync is one trace across every hop.
//
// worker knows nothing of Kubernetes or git.
package worker
