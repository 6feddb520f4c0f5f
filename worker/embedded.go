package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Embedded is a NATS server with JetStream running inside the ferry process.
type Embedded struct {
	srv *server.Server
}

// EmbeddedOptions configures an embedded NATS server.
type EmbeddedOptions struct {
	// DataDir holds the JetStream file store; it survives restarts.
	DataDir string
	// Listen, when set (host:port), also serves NATS clients on the network.
	// Empty means in-process connections only.
	Listen string
}

// StartEmbedded starts a NATS server with JetStream whose file store lives
// under opts.DataDir, and waits until it takes connections.
func StartEmbedded(ctx context.Context, opts EmbeddedOptions) (*Embedded, error) {
	if opts.DataDir == "" {
		return nil, fmt.Errorf("%w: embedded NATS needs a data directory", ErrInvalidOption)
	}
	dir, err := filepath.Abs(filepath.Join(opts.DataDir, "jetstream"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating NATS data directory: %w", err)
	}
	sopts := &server.Options{
		ServerName: "ferry",
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		DontListen: opts.Listen == "",
		// Bundles are stored in chunks, so the default 1 MiB payload suffices.
		MaxPayload: 1 << 20,
	}
	if opts.Listen != "" {
		host, port, err := splitHostPort(opts.Listen)
		if err != nil {
			return nil, err
		}
		sopts.Host, sopts.Port = host, port
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go srv.Start()
	deadline := 30 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !srv.ReadyForConnections(deadline) {
		srv.Shutdown()
		return nil, errors.New("embedded NATS did not become ready")
	}
	return &Embedded{srv: srv}, nil
}

// Connect opens a client connection to the embedded server, in-process.
func (e *Embedded) Connect(name string) (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(e.srv), nats.Name(name), nats.MaxReconnects(-1))
}

// Shutdown stops the server and waits for it to finish.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// ClientURL is the server's client URL when it listens on the network.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }
