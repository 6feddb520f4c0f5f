package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func newAppCmd() *cobra.Command {
	flags := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "app",
		Short: "Inspect and operate Applications through a ferry's API ($FERRY_SERVER, $FERRY_TOKEN)",
	}
	flags.register(cmd)
	cmd.AddCommand(
		newAppListCmd(flags), newAppGetCmd(flags), newAppSyncCmd(flags), newAppDiffCmd(flags),
		newAppHistoryCmd(flags), newAppRollbackCmd(flags),
	)
	return cmd
}

func appPath(ns, name string) string {
	return "/api/v1/apps/" + url.PathEscape(ns) + "/" + url.PathEscape(name)
}

// print writes v as JSON or YAML when asked, else calls table.
func (f *clientFlags) print(w io.Writer, v any, table func(*tabwriter.Writer)) error {
	switch f.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "table", "":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	return fmt.Errorf("unknown output format %q: use table, json or yaml", f.output)
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

func age(t *time.Time) string {
	if t == nil {
		return "-"
	}
	d := time.Since(*t).Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func newAppListCmd(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the Applications, their sync status, health and revision",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp struct {
				Items []AppSummary `json:"items"`
			}
			if err := flags.client().do(cmd.Context(), "GET", "/api/v1/apps", nil, &resp); err != nil {
				return err
			}
			return flags.print(cmd.OutOrStdout(), resp, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NAMESPACE\tNAME\tSYNC\tHEALTH\tREVISION\tLAST SYNC\tSOURCE")
				for _, a := range resp.Items {
					src := a.Path
					if a.Chart != "" {
						src = a.Chart
					}
					sync := a.Sync
					if a.Suspended {
						sync += " (suspended)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Namespace, a.Name, sync, a.Health, short(a.Revision), age(a.LastSyncedAt), src)
				}
			})
		},
	}
}

func newAppGetCmd(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show an Application: its source, status, resources and their health",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var app v1alpha1.Application
			if err := flags.client().do(cmd.Context(), "GET", appPath(flags.namespace, args[0]), nil, &app); err != nil {
				return err
			}
			return flags.print(cmd.OutOrStdout(), app, func(tw *tabwriter.Writer) {
				s := summarize(&app)
				fmt.Fprintf(tw, "Name:\t%s/%s\n", app.Namespace, app.Name)
				fmt.Fprintf(tw, "Source:\t%s %s @ %s\n", s.RepoURL, s.Path+s.Chart, s.TargetRevision)
				fmt.Fprintf(tw, "Destination:\t%s\n", app.Spec.Destination.Namespace)
				policy := "manual"
				if s.Automated {
					policy = "automated"
				}
				if s.Suspended {
					policy += ", suspended"
				}
				fmt.Fprintf(tw, "Sync policy:\t%s\n", policy)
				fmt.Fprintf(tw, "Sync status:\t%s at %s\n", s.Sync, short(s.Revision))
				fmt.Fprintf(tw, "Health:\t%s %s\n", s.Health, app.Status.Health.Message)
				if op := app.Status.OperationState; op != nil {
					fmt.Fprintf(tw, "Last sync:\t%s (%s) %s\n", op.Phase, op.Trigger, op.Message)
				}
				if s.LastError != "" {
					fmt.Fprintf(tw, "Last error:\t%s\n", s.LastError)
				}
				for _, c := range app.Status.Conditions {
					fmt.Fprintf(tw, "Condition:\t%s: %s\n", c.Type, c.Message)
				}
				fmt.Fprintln(tw)
				fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tSTATUS\tMESSAGE")
				for _, r := range app.Status.Resources {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Kind, r.Namespace, r.Name, r.Status, r.Message)
				}
			})
		},
	}
}

// lastHistoryID is the ID of the newest history entry, -1 for none.
func lastHistoryID(app *v1alpha1.Application) int64 {
	if n := len(app.Status.History); n > 0 {
		return app.Status.History[n-1].ID
	}
	return -1
}

func newAppSyncCmd(flags *clientFlags) *cobra.Command {
	var (
		revision string
		wait     bool
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sync NAME",
		Short: "Enqueue a sync of the app (trigger manual); --wait follows it to the end",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return postAndWait(cmd, flags, args[0], "sync", revision, wait, timeout)
		},
	}
	cmd.Flags().StringVar(&revision, "revision", "", "sync this commit instead of the app's targetRevision")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the sync ends and report how")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long --wait waits")
	return cmd
}

func newAppRollbackCmd(flags *clientFlags) *cobra.Command {
	var (
		wait    bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rollback NAME [REVISION]",
		Short: "Re-apply a revision from the app's history (only while automated sync is off)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rev := ""
			if len(args) == 2 {
				rev = args[1]
			}
			return postAndWait(cmd, flags, args[0], "rollback", rev, wait, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until the rollback ends and report how")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long --wait waits")
	return cmd
}

// postAndWait runs a sync or rollback and, with wait, polls the app until a
// new history entry records its end, printing progress.
func postAndWait(cmd *cobra.Command, flags *clientFlags, name, verb, revision string, wait bool, timeout time.Duration) error {
	c := flags.client()
	ctx := cmd.Context()
	path := appPath(flags.namespace, name)
	var before v1alpha1.Application
	if wait {
		if err := c.do(ctx, "GET", path, nil, &before); err != nil {
			return fmt.Errorf("%s %s/%s: %w", verb, flags.namespace, name, err)
		}
	}
	body := map[string]string{}
	if revision != "" {
		body["revision"] = revision
	}
	var resp ingest.SyncResponse
	if err := c.do(ctx, "POST", path+"/"+verb, body, &resp); err != nil {
		return fmt.Errorf("%s %s/%s: %w", verb, flags.namespace, name, err)
	}
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
	target := resp.Revision
	if target == "" {
		target = "the target revision"
	}
	fmt.Fprintf(out, "%s of %s to %s queued (request %s)\n", verb, resp.App, short(target), resp.RequestID)
	if !wait {
		return nil
	}
	deadline := time.Now().Add(timeout)
	last := lastHistoryID(&before)
	lastPhase := ""
	for start := time.Now(); ; {
		var app v1alpha1.Application
		if err := c.do(ctx, "GET", path, nil, &app); err != nil {
			return err
		}
		if h := app.Status.History; len(h) > 0 && h[len(h)-1].ID > last && h[len(h)-1].Phase == v1alpha1.PhaseRunning {
			// Applied; its PostSync hooks wait until the app is Healthy and
			// end in an entry of their own.
			last = h[len(h)-1].ID
			fmt.Fprintf(errw, "waiting for %s/%s: %s\n", flags.namespace, name, h[len(h)-1].Message)
		} else if len(h) > 0 && h[len(h)-1].ID > last {
			e := h[len(h)-1]
			fmt.Fprintf(out, "%s %s at %s after %s: %s\n", verb, strings.ToLower(e.Phase), short(e.Revision), time.Since(start).Round(100*time.Millisecond), e.Message)
			if e.TraceID != "" {
				fmt.Fprintf(out, "trace %s\n", e.TraceID)
			}
			if e.Phase != v1alpha1.PhaseSucceeded {
				return fmt.Errorf("%s of %s/%s failed: %s", verb, flags.namespace, name, e.Message)
			}
			return nil
		}
		phase := "queued"
		if op := app.Status.OperationState; op != nil && op.Phase == v1alpha1.PhaseRunning {
			phase = "running: " + op.Message
		}
		if phase != lastPhase {
			fmt.Fprintf(errw, "waiting for %s/%s: %s\n", flags.namespace, name, phase)
			lastPhase = phase
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s of %s/%s did not finish within %s", verb, flags.namespace, name, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func newAppHistoryCmd(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "history NAME",
		Short: "Show the app's last syncs, newest first, with their trace IDs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp HistoryResponse
			if err := flags.client().do(cmd.Context(), "GET", appPath(flags.namespace, args[0])+"/history", nil, &resp); err != nil {
				return err
			}
			return flags.print(cmd.OutOrStdout(), resp, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tDEPLOYED\tREVISION\tTRIGGER\tRESULT\tTRACE")
				for _, e := range resp.Items {
					trace := e.TraceID
					if e.TraceURL != "" {
						trace = e.TraceURL
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.DeployedAt.UTC().Format(time.RFC3339), short(e.Revision), e.Trigger, e.Phase, trace)
				}
			})
		},
	}
}

func newAppDiffCmd(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "diff NAME",
		Short: "Show what a sync would change: Git at the target revision against the cluster (Secret data masked)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp DiffResponse
			if err := flags.client().do(cmd.Context(), "GET", appPath(flags.namespace, args[0])+"/diff", nil, &resp); err != nil {
				return err
			}
			if flags.output == "json" || flags.output == "yaml" {
				return flags.print(cmd.OutOrStdout(), resp, nil)
			}
			if resp.Diff == "" {
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%s is in sync with %s\n", flags.namespace, args[0], short(resp.Revision))
				return nil
			}
			_, err := io.WriteString(cmd.OutOrStdout(), resp.Diff)
			return err
		},
	}
}
