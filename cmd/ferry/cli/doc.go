// Package cli is ferry's command line: `ferry serve`, which wires ingest,
// worker, render and apply together around an embedded NATS server, and the
// client verbs. It is also where the OpenTelemetry SDK is set up; every other
// package uses the OpenTelemetry API alone.
package cli
