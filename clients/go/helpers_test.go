package optd

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The repository root and its shared wire vectors (tests run in clients/go).
var (
	root = filepath.Join("..", "..")
	wire = filepath.Join(root, "testdata", "wire")
)

func readWire(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(wire, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readWireJSON(t *testing.T, rel string, out any) {
	t.Helper()
	if err := json.Unmarshal(readWire(t, rel), out); err != nil {
		t.Fatal(err)
	}
}

// python is $OPTD_PYTHON, else the repository's .venv, else python3.
func python() string {
	if p := os.Getenv("OPTD_PYTHON"); p != "" {
		return p
	}
	venv, _ := filepath.Abs(filepath.Join(root, ".venv", "bin", "python"))
	if _, err := os.Stat(venv); err == nil {
		return venv
	}
	return "python3"
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(name string, env []string, dir string, args ...string) (*proc, error) {
	f, err := os.CreateTemp("", "optd-go-"+name+"-*.log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = env, dir, f, f
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd, f.Name(), make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) waitFor(what string, ready func() bool) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.done:
			log, _ := os.ReadFile(p.log)
			return fmt.Errorf("%s exited: %s", what, log)
		default:
		}
		if ready() {
			return nil
		}
	}
	return fmt.Errorf("%s did not become ready in 30 s (log: %s)", what, p.log)
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

type server struct {
	url   string
	procs []*proc
	err   error
}

var (
	servers   = map[string]*server{}
	serversMu sync.Mutex
)

// serverFor starts `optd serve` (on a private redis-server for "redis") once per run.
func serverFor(t *testing.T, store string) string {
	t.Helper()
	serversMu.Lock()
	defer serversMu.Unlock()
	if s, ok := servers[store]; ok {
		if s.err != nil {
			t.Fatal(s.err)
		}
		return s.url
	}
	s := &server{}
	servers[store] = s
	s.err = s.start(store)
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.url
}

func (s *server) start(store string) error {
	env := []string{"OPTD_LOG_LEVEL=warning"}
	for _, kv := range os.Environ() {
		if len(kv) < 15 || kv[:15] != "OPTD_REDIS_URL=" {
			env = append(env, kv)
		}
	}
	if store == "redis" {
		rport, err := freePort()
		if err != nil {
			return err
		}
		r, err := start("redis", os.Environ(), "", "redis-server", "--port", fmt.Sprint(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if err != nil {
			return err
		}
		s.procs = append(s.procs, r)
		addr := fmt.Sprintf("127.0.0.1:%d", rport)
		if err := r.waitFor("redis-server", func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		}); err != nil {
			return err
		}
		env = append(env, "OPTD_REDIS_URL=redis://"+addr+"/0")
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	s.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	p, err := start("optd", env, root, python(), "-m", "app.cli", "serve", "--port", fmt.Sprint(port))
	if err != nil {
		return err
	}
	s.procs = append([]*proc{p}, s.procs...)
	return p.waitFor("optd serve", func() bool {
		res, err := http.Get(s.url + "/readyz")
		if err == nil {
			res.Body.Close()
		}
		return err == nil && res.StatusCode == 200
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, s := range servers {
		for _, p := range s.procs {
			p.stop()
		}
	}
	os.Exit(code)
}
