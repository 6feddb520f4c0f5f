// Package main is the ferry binary. Its logic lives in package cli so that
// tests can run it through cli.Run.
package main
