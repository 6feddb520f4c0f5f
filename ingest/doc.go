// Package ingest turns the outside world into per-app sync jobs.
//
// The webhook receivers verify a provider's push (HMAC, size cap), normalise
// it into a ferryv1.PushEvent and answer only once JetStream has stored it.
// Dispatch consumes those events and decides which Applications a push
// touches: by repository URL, ref, and the paths the push changed.
//
// The other triggers live here too: the poller (ls-remote, for missed
// webhooks), manual sync and rollback, SpecTrigger (an Application created
// or changed), and DriftTrigger (drift and pending PostSync hooks that the
// apply Monitor reports, which become re-apply jobs). CommitStatus sets
// pending at dispatch and the final state from each sync's result.
//
// ingest publishes and consumes through small interfaces that package worker
// satisfies; it renders and applies nothing itself.
package ingest
