// Package ingest turns the outside world into per-app sync jobs.
//
// The webhook receivers verify a provider's push (HMAC, size cap), normalise
// it into a ferryv1.PushEvent and answer only once JetStream has stored it.
// Dispatch consumes those events and decides which Applications a push
// touches: by repository URL, ref, and the paths the push changed.
//
// ingest publishes and consumes through small interfaces that package worker
// satisfies; it renders and applies nothing itself.
package ingest
