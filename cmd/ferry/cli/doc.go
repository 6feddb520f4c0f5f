// Package cli is ferry's command line: `ferry serve`, which wires ingest,
// worker, render and apply together around an embedded NATS server, the
// read API, and the client verbs. It is also where the OpenTelemetry SDK
// and the Prometheus registry are set up; every other package uses the
// OpenTelemetry API alone.
//
// cli makes no decision about an app: when to sync, retry, heal or
// uninstall one lives in the role that owns it (ingest, render, apply).
package cli
