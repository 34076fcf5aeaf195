package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
)

// Exit codes scripts can rely on (documented in the root command's help).
const (
	exitFailure    = 1 // anything else
	exitUsage      = 2 // bad flags or arguments
	exitNotRunning = 3 // no daemon on the control socket
	exitNotAllowed = 4 // the daemon refused the caller (peer credentials) or the user/PIN refused
	exitNotFound   = 5 // no such passkey, or an ambiguous ID prefix
)

// call runs one operation on a fresh connection and maps failures to
// exit codes.
func call(ctx context.Context, g *globalOptions, op string, args, result any) error {
	cl, err := g.connect()
	if err != nil {
		return err
	}
	defer cl.Close()
	return callError(cl.CallContext(ctx, op, args, result))
}

// callError maps a failed operation to an exit code.
func callError(err error) error {
	var ce *control.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, control.ErrNotAllowed):
		return &exitError{code: exitNotAllowed, err: err}
	case errors.As(err, &ce) && strings.Contains(ce.Message, "refused"):
		return &exitError{code: exitNotAllowed, err: errors.New(ce.Message)}
	case errors.As(err, &ce):
		return errors.New(ce.Message)
	}
	return err
}

// terminalIO reads answers from the terminal (or stdin with --stdin).
type terminalIO struct {
	in  io.Reader
	out io.Writer
	r   *bufio.Reader
}

func newTerminalIO(cmd *cobra.Command, fromStdin bool) (*terminalIO, func(), error) {
	if fromStdin {
		return &terminalIO{in: cmd.InOrStdin(), out: cmd.ErrOrStderr()}, func() {}, nil
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("no terminal to ask on (use --stdin to read from standard input): %w", err)
	}
	return &terminalIO{in: tty, out: tty}, func() { tty.Close() }, nil
}

func (t *terminalIO) secret(question string) (string, error) {
	return prompt.ReadSecret(t.in, t.out, question)
}

func (t *terminalIO) confirm(question string) (bool, error) {
	fmt.Fprint(t.out, question+" [y/N] ")
	if t.r == nil {
		t.r = bufio.NewReader(t.in)
	}
	line, err := t.r.ReadString('\n')
	if err != nil && line == "" {
		return false, err
	}
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}

// listStream runs a credential stream (mgmtapi.OpList, OpExport): it
// calls export with the Export that opens OpExport's stream and each
// with every credential as it arrives, and checks that the stream ended
// complete. Only what the callbacks keep stays in memory.
func listStream(ctx context.Context, g *globalOptions, op string, args any, export func(mgmtapi.Export), each func(mgmtapi.Credential)) error {
	cl, err := g.connect()
	if err != nil {
		return err
	}
	defer cl.Close()
	st, err := cl.Stream(op, args)
	if err != nil {
		return callError(err)
	}
	defer context.AfterFunc(ctx, func() { st.Close() })()
	for n := 0; ; {
		var m mgmtapi.ListMessage
		if err := st.Recv(&m); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("passkeyd ended the list after %d passkeys without saying it was complete", n)
			}
			return err
		}
		switch {
		case m.Error != "":
			return fmt.Errorf("passkeyd stopped the list after %d passkeys: %s", n, m.Error)
		case m.Export != nil:
			if export != nil {
				export(*m.Export)
			}
		case m.Credential != nil:
			n++
			each(*m.Credential)
		case m.End:
			if m.Count != n {
				return fmt.Errorf("passkeyd sent %d passkeys but says it listed %d", n, m.Count)
			}
			return nil
		}
	}
}

func getInfo(ctx context.Context, g *globalOptions) (mgmtapi.Info, error) {
	var in mgmtapi.Info
	return in, call(ctx, g, mgmtapi.OpInfo, nil, &in)
}

// parseUser turns --user NAME or NAME:UID (an account no longer in the
// user database) into the operation's arguments.
func parseUser(s string) (mgmtapi.UserArgs, error) {
	a := mgmtapi.UserArgs{User: s}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		uid, err := strconv.ParseUint(s[i+1:], 10, 32)
		if err != nil || i == 0 {
			return a, &exitError{code: exitUsage, err: fmt.Errorf("--user %q: want NAME or NAME:UID", s)}
		}
		u := uint32(uid)
		a.User, a.UID = s[:i], &u
	}
	return a, nil
}

// userFlag is --user of list, export and reset.
const userFlagHelp = "as root: the Linux user whose passkeys (NAME, or NAME:UID for a removed account)"

func newListCommand(g *globalOptions) *cobra.Command {
	var (
		filter, rp, sortBy, forUser string
		asJSON                      bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List your passkeys stored on this machine (as root: --user)",
		Example: `  passkeyctl list
  passkeyctl list --filter github
  passkeyctl list --rp example.com --sort used
  passkeyctl list --json | jq -r '.[].rpId'
  passkeyctl list --json --sort none > passkeys.json
  sudo passkeyctl list --user alice`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var args any // nothing: the caller's own passkeys, as before namespaces
			if forUser != "" {
				a, err := parseUser(forUser)
				if err != nil {
					return err
				}
				args = a
			}
			if err := sortCreds(nil, sortBy); err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if asJSON && sortBy == "none" {
				return streamJSON(cmd.Context(), g, args, cmd.OutOrStdout(), filter, rp)
			}
			// Filtered as they arrive: only the matches are kept, to sort.
			creds := []mgmtapi.Credential{}
			err := listStream(cmd.Context(), g, mgmtapi.OpList, args, nil, func(c mgmtapi.Credential) {
				if matchCred(c, filter, rp) {
					creds = append(creds, c)
				}
			})
			if err != nil {
				return err
			}
			if err := sortCreds(creds, sortBy); err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(creds)
			}
			printTable(cmd.OutOrStdout(), creds)
			return nil
		},
	}
	cmd.Flags().StringVar(&filter, "filter", "", "show passkeys whose site or user contains TEXT (case-insensitive)")
	cmd.Flags().StringVar(&rp, "rp", "", "show only passkeys of this site (relying party ID)")
	cmd.Flags().StringVar(&sortBy, "sort", "created", "sort by: rp, user, created, used (newest first for times), or none (the daemon's order; with --json printed as they arrive, nothing kept)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	cmd.Flags().StringVar(&forUser, "user", "", userFlagHelp+" to list")
	return cmd
}

func newExportCommand(g *globalOptions) *cobra.Command {
	var forUser string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Print the metadata of a passkey namespace as JSON (never a key)",
		Long: `export prints, as JSON, what a passkey namespace holds: every passkey's
metadata as list --json shows it, whether a PIN is set, its retries, the
minimum PIN length and alwaysUv. No key, credBlob, largeBlobKey or PIN
object leaves the daemon. Without --user it is your own namespace.`,
		Example: `  passkeyctl export > passkeys.json
  sudo passkeyctl export --user alice`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var args any
			if forUser != "" {
				a, err := parseUser(forUser)
				if err != nil {
					return err
				}
				args = a
			}
			out, err := exportNamespace(cmd.Context(), g, args)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	}
	cmd.Flags().StringVar(&forUser, "user", "", userFlagHelp+" to export")
	return cmd
}

// streamJSON is list --json --sort none: the matching credentials as one
// JSON array (as list --json prints it), each element written as it
// arrives, so that neither the daemon nor passkeyctl holds the whole set.
// A stream that fails midway leaves the array unfinished and fails.
func streamJSON(ctx context.Context, g *globalOptions, args any, out io.Writer, filter, rp string) error {
	w := bufio.NewWriter(out)
	w.WriteString("[")
	n := 0
	var encErr error
	err := listStream(ctx, g, mgmtapi.OpList, args, nil, func(c mgmtapi.Credential) {
		if !matchCred(c, filter, rp) || encErr != nil {
			return
		}
		b, err := json.MarshalIndent(c, "  ", "  ")
		if err != nil {
			encErr = err
			return
		}
		if n > 0 {
			w.WriteString(",")
		}
		w.WriteString("\n  ")
		w.Write(b)
		n++
	})
	if err == nil {
		err = encErr
	}
	if err != nil {
		w.Flush()
		return err
	}
	if n > 0 {
		w.WriteString("\n")
	}
	w.WriteString("]\n")
	return w.Flush()
}

// exportNamespace collects OpExport's stream into one Export, its
// credentials newest first.
func exportNamespace(ctx context.Context, g *globalOptions, args any) (mgmtapi.Export, error) {
	var out mgmtapi.Export
	creds := []mgmtapi.Credential{}
	err := listStream(ctx, g, mgmtapi.OpExport, args, func(e mgmtapi.Export) { out = e },
		func(c mgmtapi.Credential) { creds = append(creds, c) })
	if err != nil {
		return out, err
	}
	if err := sortCreds(creds, "created"); err != nil {
		return out, err
	}
	out.Credentials = creds
	return out, nil
}

// matchCred is list's --filter (case-insensitive, in the site and the
// user's names) and --rp (exact).
func matchCred(c mgmtapi.Credential, filter, rp string) bool {
	if rp != "" && c.RPID != rp {
		return false
	}
	f := strings.ToLower(filter)
	return f == "" || strings.Contains(strings.ToLower(c.RPID+"\x00"+c.RPName+"\x00"+c.UserName+"\x00"+c.UserDisplayName), f)
}

func sortCreds(creds []mgmtapi.Credential, by string) error {
	used := func(c mgmtapi.Credential) time.Time {
		if c.LastUsedAt == nil {
			return time.Time{}
		}
		return *c.LastUsedAt
	}
	var less func(a, b mgmtapi.Credential) bool
	switch by {
	case "rp":
		less = func(a, b mgmtapi.Credential) bool { return a.RPID+"\x00"+a.UserName < b.RPID+"\x00"+b.UserName }
	case "user":
		less = func(a, b mgmtapi.Credential) bool { return a.UserName+"\x00"+a.RPID < b.UserName+"\x00"+b.RPID }
	case "created":
		less = func(a, b mgmtapi.Credential) bool { return a.CreatedAt.After(b.CreatedAt) }
	case "used":
		less = func(a, b mgmtapi.Credential) bool { return used(a).After(used(b)) }
	case "none":
		return nil
	default:
		return fmt.Errorf("--sort %q: want rp, user, created, used or none", by)
	}
	sort.SliceStable(creds, func(i, j int) bool { return less(creds[i], creds[j]) })
	return nil
}

// shortID is how the table shows a credential ID: enough to be a unique
// prefix for delete in practice.
func shortID(id string) string { return id[:min(len(id), 12)] }

func printTable(w io.Writer, creds []mgmtapi.Credential) {
	if len(creds) == 0 {
		fmt.Fprintln(w, "No passkeys.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SITE\tUSER\tDISPLAY NAME\tCREATED\tLAST USED\tID")
	for _, c := range creds {
		last := "never"
		if c.LastUsedAt != nil {
			last = c.LastUsedAt.Local().Format("2006-01-02 15:04")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", prompt.Display(c.RPID, 40), prompt.Display(c.UserName, 32),
			prompt.Display(c.UserDisplayName, 32), c.CreatedAt.Local().Format("2006-01-02 15:04"), last, shortID(c.CredentialID))
	}
	tw.Flush()
}

// deleteMatches reports whether c is one a delete names: by an ID
// prefix, or by --rp and --user together.
func deleteMatches(c mgmtapi.Credential, prefix, rp, user string) bool {
	if prefix != "" {
		return strings.HasPrefix(c.CredentialID, prefix)
	}
	return c.RPID == rp && (user == "" || c.UserName == user)
}

// notStoredHelp says why a delete can find nothing that a site or a
// program still accepts, and what revokes it. passkeyd stores only
// discoverable credentials; a non-discoverable one's ID is its key,
// wrapped by the TPM (the README's "Keys and secrets"), so there is no
// record to list or delete.
const notStoredHelp = `passkeyctl lists and deletes the passkeys stored on this machine, which are the discoverable credentials. ` +
	`A non-discoverable credential (the default of pam-u2f's pamu2fcfg and of ssh-keygen -t ecdsa-sk, and of sites that do not ask for a passkey) ` +
	`is not stored: its ID carries its key, sealed by this machine's TPM, so there is nothing here to delete. ` +
	`Revoke it where it is registered: remove it from the site's security settings, ` +
	`its line from ~/.ssh/authorized_keys (and the key file from ~/.ssh), or its line from the pam-u2f mapping file (~/.config/Yubico/u2f_keys by default); ` +
	`or make every credential of this machine unusable with passkeyctl reset, which deletes every passkey too.`

// resolve checks the passkeys a delete found.
func resolve(found []mgmtapi.Credential, prefix, rp, user string) ([]mgmtapi.Credential, error) {
	if len(found) == 0 {
		what := fmt.Sprintf("ID prefix %q", prefix)
		if prefix == "" {
			what = fmt.Sprintf("site %q", rp)
			if user != "" {
				what += fmt.Sprintf(" and user %q", user)
			}
		}
		return nil, &exitError{code: exitNotFound, err: fmt.Errorf("no passkey matches %s. %s", what, notStoredHelp)}
	}
	if prefix != "" && len(found) > 1 {
		return nil, &exitError{code: exitNotFound, err: fmt.Errorf("ID prefix %q matches %d passkeys: give more of it", prefix, len(found))}
	}
	return found, nil
}

func newDeleteCommand(g *globalOptions) *cobra.Command {
	var (
		rp, user       string
		yes, fromStdin bool
	)
	cmd := &cobra.Command{
		Use:   "delete [ID-PREFIX]",
		Short: "Delete passkeys (asks for confirmation, presence and the PIN)",
		Example: `  passkeyctl delete 0101000a3F9c
  passkeyctl delete --rp example.com --user alice
  passkeyctl delete --rp old.example --yes`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			if (prefix == "") == (rp == "") || (prefix != "" && user != "") {
				return &exitError{code: exitUsage, err: errors.New("name the passkey by an ID prefix, or by --rp (and --user)")}
			}
			var found []mgmtapi.Credential
			err := listStream(cmd.Context(), g, mgmtapi.OpList, nil, nil, func(c mgmtapi.Credential) {
				if deleteMatches(c, prefix, rp, user) {
					found = append(found, c)
				}
			})
			if err != nil {
				return err
			}
			victims, err := resolve(found, prefix, rp, user)
			if err != nil {
				return err
			}
			info, err := getInfo(cmd.Context(), g)
			if err != nil {
				return err
			}
			var term *terminalIO
			if !yes || info.PINSet {
				t, done, err := newTerminalIO(cmd, fromStdin)
				if err != nil {
					return err
				}
				defer done()
				term = t
			}
			if !yes {
				printTable(term.out, victims)
				ok, err := term.confirm(fmt.Sprintf("Delete %d passkey(s)?", len(victims)))
				if err != nil || !ok {
					return &exitError{code: exitNotAllowed, err: errors.New("not deleted")}
				}
			}
			a := mgmtapi.DeleteArgs{}
			for _, v := range victims {
				a.IDs = append(a.IDs, v.CredentialID)
			}
			if info.PINSet {
				if a.PIN, err = term.secret("PIN: "); err != nil {
					return err
				}
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "Confirm at the passkeyd prompt ...")
			if err := call(cmd.Context(), g, mgmtapi.OpDelete, a, nil); err != nil {
				return err
			}
			for _, v := range victims {
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted the passkey for %s on %s (%s)\n", prompt.Display(v.UserName, 64), prompt.Display(v.RPID, 64), shortID(v.CredentialID))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&rp, "rp", "", "delete the passkeys of this site")
	cmd.Flags().StringVar(&user, "user", "", "with --rp: only this user's passkey")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&fromStdin, "stdin", false, "read answers (the PIN) from standard input instead of the terminal")
	return cmd
}

func newInfoCommand(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Show the authenticator: TPM, PIN, capacity, algorithms",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := getInfo(cmd.Context(), g)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(in)
			}
			pin := "not set"
			if in.PINSet {
				pin = fmt.Sprintf("set (%d tries left, minimum length %d)", in.PINRetries, in.MinPINLength)
			}
			rows := [][2]string{
				{"Version", in.Version},
				{"AAGUID", in.AAGUID},
				{"TPM", fmt.Sprintf("%s (manufacturer %q, firmware %s)", in.TPM.Kind, strings.TrimSpace(in.TPM.Manufacturer), in.TPM.Firmware)},
				{"TPM storage key (SRK)", in.TPM.SRK},
				{"PIN", pin},
				{"Always require UV", yesNo(in.AlwaysUV)},
				{"Built-in UV (the prompt verifies: device PIN or polkit)", yesNo(in.BuiltInUV)},
				{"Passkeys", fmt.Sprintf("%d of %d", in.Credentials, in.Capacity)},
				{"Algorithms", strings.Join(in.Algorithms, ", ")},
				{"Attestation", in.Attestation},
				{"State dir", in.StateDir},
				{"Transport", in.Transport},
				{"Prompt", in.Prompt},
			}
			switch in.Mode {
			case mgmtapi.ModeSeat:
				now := "nobody: the key is unplugged"
				if in.Serving != "" {
					now = in.Serving
				}
				rows = append(rows, [2]string{"Users", "seat: the key serves the active user at seat0 (now " + now + "); these are your passkeys"})
			case mgmtapi.ModeOwner:
				rows = append(rows, [2]string{"Users", "owner: one set of passkeys, the owner's"})
			}
			if in.TPMLockout != nil { // after the PIN: it says why the PIN cannot be checked
				rows = slices.Insert(rows, 5, [2]string{"TPM lockout", lockoutLine(in.TPMLockout, time.Now())})
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			for _, row := range rows {
				fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if in.TPM.Software {
				// Its own line, after the table, so it is not lost in it.
				fmt.Fprintln(w, mgmtapi.SoftwareTPMWarning)
			}
			if len(in.Settings) > 0 {
				fmt.Fprintln(w, "\nSettings (passkeyd.conf key, value, where it came from):")
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				for _, st := range in.Settings {
					fmt.Fprintf(tw, "  %s\t%s\t%s\n", st.Key, orNone(st.Value), st.Source)
				}
				return tw.Flush()
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return cmd
}

// orNone shows an empty setting.
func orNone(v string) string {
	if v == "" {
		return `""`
	}
	return v
}

// lockoutLine describes the TPM's dictionary-attack state for info.
func lockoutLine(l *mgmtapi.Lockout, now time.Time) string {
	interval := time.Duration(l.RecoveryIntervalSeconds) * time.Second
	if !l.InLockout {
		return fmt.Sprintf("no (%d of %d failed tries, TPM-wide; one forgiven per %v)", l.FailedTries, l.MaxTries, interval)
	}
	line := fmt.Sprintf("YES: the TPM is in dictionary-attack lockout (%d of %d failed tries, TPM-wide) and checks no PIN; ",
		l.FailedTries, l.MaxTries)
	if l.RecoversWithinSeconds > 0 {
		within := time.Duration(l.RecoversWithinSeconds) * time.Second
		line += fmt.Sprintf("it recovers within %v (by about %s) or at once with tpm2_dictionarylockout --clear-lockout",
			within, now.Add(within).Format("15:04"))
	} else {
		line += "only its lockout authority ends it (tpm2_dictionarylockout --clear-lockout)"
	}
	return line + ". No PIN retry is used meanwhile."
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func newPINCommand(g *globalOptions) *cobra.Command {
	var fromStdin bool
	pin := &cobra.Command{Use: "pin", Short: "Set or change the PIN"}
	run := func(change bool) func(cmd *cobra.Command, _ []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			// Check who serves the socket before asking for PINs that
			// would go to it (call checks again on its connection).
			cl, err := g.connect()
			if err != nil {
				return err
			}
			cl.Close()
			term, done, err := newTerminalIO(cmd, fromStdin)
			if err != nil {
				return err
			}
			defer done()
			var a mgmtapi.SetPINArgs
			if change {
				if a.Old, err = term.secret("Current PIN: "); err != nil {
					return err
				}
			}
			if a.New, err = term.secret("New PIN: "); err != nil {
				return err
			}
			again, err := term.secret("New PIN again: ")
			if err != nil {
				return err
			}
			if again != a.New {
				return &exitError{code: exitUsage, err: errors.New("the two new PINs differ")}
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "Confirm at the passkeyd prompt ...")
			if err := call(cmd.Context(), g, mgmtapi.OpSetPIN, a, nil); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "PIN set.")
			return nil
		}
	}
	pin.AddCommand(&cobra.Command{Use: "set", Short: "Set the first PIN", Args: cobra.NoArgs, RunE: run(false)},
		&cobra.Command{Use: "change", Short: "Change the PIN", Args: cobra.NoArgs, RunE: run(true)})
	pin.PersistentFlags().BoolVar(&fromStdin, "stdin", false, "read the PINs from standard input, one per line, instead of the terminal")
	return pin
}

func newResetCommand(g *globalOptions) *cobra.Command {
	var (
		yes, fromStdin bool
		forUser        string
	)
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Delete every passkey and the PIN (asks for confirmation, presence and the PIN)",
		Long: `reset deletes every passkey, the PIN and the settings of your passkey
namespace, after confirmation here, presence at the prompt and the PIN.

As root, --user NAME removes that user's namespace instead (its directory
under the state dir, with every passkey, the PIN and the settings), after
confirmation here only: root needs neither the user's PIN nor their
presence. Do it before removing the account, or name a removed account as
NAME:UID. The owner's passkeys are the device's own: reset them as the
owner.`,
		Example: `  passkeyctl reset
  sudo passkeyctl reset --user alice
  sudo passkeyctl reset --user olduser:1007 --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if forUser != "" {
				return removeNamespace(cmd, g, forUser, yes, fromStdin)
			}
			info, err := getInfo(cmd.Context(), g)
			if err != nil {
				return err
			}
			var term *terminalIO
			if !yes || (info.PINSet && info.PINRetries > 0) {
				t, done, err := newTerminalIO(cmd, fromStdin)
				if err != nil {
					return err
				}
				defer done()
				term = t
			}
			if !yes {
				ok, err := term.confirm(fmt.Sprintf("Delete all %d passkeys and the PIN? This cannot be undone.", info.Credentials))
				if err != nil || !ok {
					return &exitError{code: exitNotAllowed, err: errors.New("not reset")}
				}
			}
			var a mgmtapi.ResetArgs
			if info.PINSet && info.PINRetries > 0 {
				if a.PIN, err = term.secret("PIN: "); err != nil {
					return err
				}
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "Confirm at the passkeyd prompt ...")
			if err := call(cmd.Context(), g, mgmtapi.OpReset, a, nil); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Reset: every passkey and the PIN are gone.")
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&fromStdin, "stdin", false, "read answers (the PIN) from standard input instead of the terminal")
	cmd.Flags().StringVar(&forUser, "user", "", userFlagHelp+" to remove, with their namespace")
	return cmd
}

// removeNamespace is reset --user: root removes a user's namespace.
func removeNamespace(cmd *cobra.Command, g *globalOptions, forUser string, yes, fromStdin bool) error {
	a, err := parseUser(forUser)
	if err != nil {
		return err
	}
	ns, err := exportNamespace(cmd.Context(), g, a)
	if err != nil {
		return err
	}
	if !ns.Exists {
		return &exitError{code: exitNotFound, err: fmt.Errorf("user %q has no passkey namespace", a.User)}
	}
	if !yes {
		term, done, err := newTerminalIO(cmd, fromStdin)
		if err != nil {
			return err
		}
		defer done()
		ok, err := term.confirm(fmt.Sprintf("Remove the passkey namespace of %s: all %d passkeys, the PIN and the settings? This cannot be undone.",
			prompt.Display(a.User, 64), len(ns.Credentials)))
		if err != nil || !ok {
			return &exitError{code: exitNotAllowed, err: errors.New("not removed")}
		}
	}
	if err := call(cmd.Context(), g, mgmtapi.OpRemoveNamespace, a, nil); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Removed the passkey namespace of %s.\n", prompt.Display(a.User, 64))
	return nil
}
