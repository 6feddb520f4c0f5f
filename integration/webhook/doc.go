// Package webhook builds and sends GitHub push webhooks shaped like GitHub's
// documented push payload, signed with HMAC SHA-256, for tests and the demo.
package webhook
