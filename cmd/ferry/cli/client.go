package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// client talks to a ferry's HTTP API.
type client struct {
	server string
	token  string
	http   *http.Client
}

// clientFlags are the flags every API verb shares.
type clientFlags struct {
	server    string
	namespace string
	output    string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.server, "server", "", "ferry API URL (default $FERRY_SERVER, else http://127.0.0.1:8081)")
	cmd.PersistentFlags().StringVarP(&f.namespace, "namespace", "n", "ferry", "namespace of the Applications")
	cmd.PersistentFlags().StringVarP(&f.output, "output", "o", "table", "output format: table, json or yaml")
}

func (f *clientFlags) client() *client {
	server := f.server
	if server == "" {
		server = os.Getenv("FERRY_SERVER")
	}
	if server == "" {
		server = "http://127.0.0.1:8081"
	}
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	return &client{server: strings.TrimSuffix(server, "/"), token: os.Getenv("FERRY_TOKEN"), http: &http.Client{Timeout: 30 * time.Second}}
}

// apiError is an error answer of the API.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("ferry API answered %d", e.Status)
	}
	return fmt.Sprintf("%s (%s)", e.Message, e.Code)
}

// do sends a request and decodes a JSON answer into out.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach ferry at %s: %w", c.server, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode}
		_ = json.Unmarshal(data, e)
		return e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decoding the answer of %s %s: %w", method, path, err)
		}
	}
	return nil
}
