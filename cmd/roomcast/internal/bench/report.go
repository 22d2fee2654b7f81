package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
)

// metric is one figure of a result.
type metric struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit,omitempty"`
	Higher bool    `json:"higherIsBetter,omitempty"`
}

// result is what one mode measured on one target.
type result struct {
	Target        string       `json:"target"`
	Mode          string       `json:"mode"`
	Connected     int          `json:"connected"`
	ConnectFailed int          `json:"connectFailed"`
	Metrics       []metric     `json:"metrics"`
	Steps         []stepResult `json:"steps,omitempty"` // fan-out: every step run
	Notes         []string     `json:"notes,omitempty"`
}

func fmtValue(m metric) string {
	var v string
	switch {
	case m.Value == 0:
		v = "0"
	case m.Value >= 1000 || m.Value == float64(int64(m.Value)):
		v = fmt.Sprintf("%.0f", m.Value)
	case m.Value >= 10:
		v = fmt.Sprintf("%.1f", m.Value)
	default:
		v = fmt.Sprintf("%.3g", m.Value)
	}
	if m.Unit == "" {
		return v
	}
	return v + " " + m.Unit
}

// roomcastFirst puts roomcast's result first, the peers after in the order
// they ran, so that every ratio reads roomcast/peer.
func roomcastFirst(rs []result) []result {
	out := make([]result, 0, len(rs))
	for _, r := range rs {
		if r.Target == targetRoomcast {
			out = append(out, r)
		}
	}
	for _, r := range rs {
		if r.Target != targetRoomcast {
			out = append(out, r)
		}
	}
	return out
}

// ratioHeaders are the ratio columns: the first result over each other one.
func ratioHeaders(rs []result) []string {
	var h []string
	for _, r := range rs[1:] {
		h = append(h, fmt.Sprintf("%s/%s", rs[0].Target, r.Target))
	}
	return h
}

// tableRows are the table's rows: a metric's name, its value in each result
// (n/a where a result lacks it: the peers have no NATS leg), then its ratio
// to each peer.
func tableRows(rs []result) [][]string {
	var rows [][]string
	for i, m := range rs[0].Metrics {
		row := []string{m.Name}
		for _, r := range rs {
			if i < len(r.Metrics) {
				row = append(row, fmtValue(r.Metrics[i]))
			} else {
				row = append(row, "n/a")
			}
		}
		for _, r := range rs[1:] {
			row = append(row, fmtRatio(rs[0], r, i))
		}
		rows = append(rows, row)
	}
	return rows
}

// printResults writes one table: a column per result, and when there are
// several (roomcast first, then the peers) the ratios roomcast/peer.
func printResults(w io.Writer, mode string, rs []result) {
	if len(rs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
	header := []string{mode}
	for _, r := range rs {
		header = append(header, r.Target)
	}
	header = append(header, ratioHeaders(rs)...)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, row := range tableRows(rs) {
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	_ = tw.Flush()
	for _, r := range rs {
		for _, n := range r.Notes {
			fmt.Fprintf(w, "%s: %s\n", r.Target, n)
		}
	}
}

func fmtRatio(a, b result, i int) string {
	if i >= len(a.Metrics) || i >= len(b.Metrics) || b.Metrics[i].Value == 0 || a.Metrics[i].Unit == "%" {
		return ""
	}
	return fmt.Sprintf("%.2f×", a.Metrics[i].Value/b.Metrics[i].Value)
}

// printSteps writes a ramp's steps, one line each.
func printSteps(w io.Writer, r result) {
	if len(r.Steps) < 2 {
		return
	}
	fmt.Fprintf(w, "%s ramp:\n", r.Target)
	for i, s := range r.Steps {
		fmt.Fprintf(w, "  step %d: %s\n", i+1, s.line())
	}
}

// printMarkdown writes the results as a markdown section: the command, the
// machine, the table with the ratio, the ramp steps and the notes, ready for
// docs/performance.md.
func printMarkdown(w io.Writer, mode string, args []string, rs []result) {
	fmt.Fprintf(w, "### %s\n\n`roomcast bench %s`\n\n", mode, strings.Join(args, " "))
	fmt.Fprintf(w, "Machine: %s.\n\n", machine())
	if len(rs) == 0 {
		return
	}
	var header []string
	for _, r := range rs {
		header = append(header, r.Target)
	}
	header = append(header, ratioHeaders(rs)...)
	fmt.Fprintf(w, "| | %s |\n", strings.Join(header, " | "))
	fmt.Fprintf(w, "|---|%s\n", strings.Repeat("---|", len(header)))
	for _, row := range tableRows(rs) {
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	fmt.Fprintln(w)
	for _, r := range rs {
		if len(r.Steps) > 1 {
			fmt.Fprintf(w, "%s ramp:\n\n", r.Target)
			for i, s := range r.Steps {
				fmt.Fprintf(w, "- step %d: %s\n", i+1, s.line())
			}
			fmt.Fprintln(w)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "%s: %s\n\n", r.Target, n)
		}
	}
}

// machine describes where the figures were taken: cores, load, kernel.
func machine() string {
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d cores, load average %s at the end, Linux %s, %s", runtime.NumCPU(), load, kernel, runtime.Version())
}

func writeJSON(w io.Writer, rs []result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rs)
}
