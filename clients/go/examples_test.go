package optd

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"testing"
)

// examples/diloco against `optd serve` on the embedded store: every round closes and
// the global parameters' loss falls, exact (float32) and compressed (int8 + bfloat16).
func TestExampleDiLoCo(t *testing.T) {
	url := serverFor(t, "memory")
	bin := filepath.Join(t.TempDir(), "diloco")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(goTool, "build", "-o", bin, "./examples/diloco").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, wire := range []string{"float32", "int8"} {
		out, err := exec.Command(bin, "-url", url, "-workers", "3", "-rounds", "12", "-wire", wire).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", wire, err, out)
		}
		m := regexp.MustCompile(`rounds (\d+) \(stale (\d+)\), loss (\S+) -> (\S+),`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("%s: unexpected output: %s", wire, out)
		}
		rounds, _ := strconv.Atoi(string(m[1]))
		first, _ := strconv.ParseFloat(string(m[3]), 64)
		last, _ := strconv.ParseFloat(string(m[4]), 64)
		if rounds < 12 || !(last < first/1000) {
			t.Fatalf("%s: rounds did not close or the loss did not fall: %s", wire, out)
		}
	}
}
