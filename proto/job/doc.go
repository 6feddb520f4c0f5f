// Package job is the contract between ferry's queue runtime (worker) and the
// roles it runs (render, apply, ingest): how a handler says that a job
// failed for good, should come back after a delay, or was skipped on
// purpose; which delivery of its job a handler is on; and the one backoff
// every retry in ferry uses.
//
// It imports nothing but the standard library, so every floor can use it
// without knowing NATS.
package job
