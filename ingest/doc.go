// Package ingest turns the outside world into per-app sync jobs.
//
// The webhook receivers verify a provider's push, normalise it into a
// ferryv1.PushEvent and answer only once JetStream has stored it. What the
// headers can refuse (no signature, a wrong GitLab token, a declared size
// over the cap or over the in-flight ByteBudget) is refused before the body
// is read; the body is read once and its HMAC checked before any JSON parser
// sees it. Authorizer holds the API's token rules, for the read API in cmd
// and the mutating handlers here alike.
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
