package cli

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/ferrycd/ferry/ingest"
)

func newAppCmd() *cobra.Command {
	flags := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "app",
		Short: "Inspect and operate Applications through a ferry's API ($FERRY_SERVER, $FERRY_TOKEN)",
	}
	flags.register(cmd)
	cmd.AddCommand(newAppSyncCmd(flags))
	return cmd
}

func appPath(ns, name string) string {
	return "/api/v1/apps/" + url.PathEscape(ns) + "/" + url.PathEscape(name)
}

func newAppSyncCmd(flags *clientFlags) *cobra.Command {
	var revision string
	cmd := &cobra.Command{
		Use:   "sync NAME",
		Short: "Enqueue a sync of the app (trigger manual)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := flags.client()
			var resp ingest.SyncResponse
			body := map[string]string{}
			if revision != "" {
				body["revision"] = revision
			}
			if err := c.do(cmd.Context(), "POST", appPath(flags.namespace, args[0])+"/sync", body, &resp); err != nil {
				return fmt.Errorf("sync %s/%s: %w", flags.namespace, args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sync of %s queued (request %s)\n", resp.App, resp.RequestID)
			return nil
		},
	}
	cmd.Flags().StringVar(&revision, "revision", "", "sync this commit instead of the app's targetRevision")
	return cmd
}
