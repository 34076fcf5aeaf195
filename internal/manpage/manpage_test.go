package manpage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestCommandWritesPages(t *testing.T) {
	root := &cobra.Command{Use: "tool", Short: "A tool"}
	root.AddCommand(&cobra.Command{Use: "list", Short: "List things", Run: func(*cobra.Command, []string) {}})
	root.AddCommand(Command())
	dir := t.TempDir()
	root.SetArgs([]string{"man", dir})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tool.1", "tool-list.1"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), ".TH \"TOOL\" \"1\"") {
			t.Errorf("%s: no .TH header:\n%s", name, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "tool-man.1")); err == nil {
		t.Error("the hidden man command got a page of its own")
	}
}
