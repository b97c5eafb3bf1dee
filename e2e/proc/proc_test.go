package proc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// state is the state letter of pid in /proc ("" if there is no such process).
func state(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 || i+2 >= len(data) {
		return ""
	}
	return string(data[i+2])
}

// alive reports whether pid runs; a zombie (dead, not yet reaped by whoever
// inherited it) counts as dead.
func alive(pid int) bool {
	s := state(pid)
	return s != "" && s != "Z" && s != "X"
}

func waitDead(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still alive after %s", pid, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func spawn(t *testing.T, name string, args ...string) *Process {
	t.Helper()
	p, err := Spawn(name, exec.Command(name, args...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(0) })
	return p
}

func startSleep(t *testing.T) *Process {
	t.Helper()
	return spawn(t, "/bin/sleep", "300")
}

// TestChildSurvivesRetiredThread: Pdeathsig fires when the forking thread
// dies. A goroutine that locks its thread and returns makes the runtime end
// that thread (unless it is the main thread, which is parked instead); a
// child started from it must live on, because the spawner forks every child
// from one thread that never exits.
func TestChildSurvivesRetiredThread(t *testing.T) {
	retired := 0
	for range 10 {
		type started struct {
			p   *Process
			tid int
		}
		done := make(chan started)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			done <- started{startSleep(t), syscall.Gettid()}
		}()
		s := <-done
		time.Sleep(300 * time.Millisecond)
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", s.tid)); err == nil {
			continue // the main thread: parked, not ended; try again
		}
		retired++
		if exited, err := s.p.Exited(); exited || !alive(s.p.Pid()) {
			t.Fatalf("child died with the thread of the goroutine that started it (%v)", err)
		}
		if retired == 3 {
			return
		}
	}
	if retired == 0 {
		t.Fatal("no thread was retired; the test proves nothing")
	}
}

// TestChildDiesWithTestBinary: when the process that started a child is
// killed outright (no chance to clean up), the child dies too.
func TestChildDiesWithTestBinary(t *testing.T) {
	if os.Getenv("STSROLLER_PDEATHSIG_HELPER") != "" {
		p := startSleep(t)
		fmt.Printf("child %d\n", p.Pid())
		time.Sleep(time.Minute) // killed by the parent test
		return
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestChildDiesWithTestBinary$", "-test.v")
	helper.Env = append(os.Environ(), "STSROLLER_PDEATHSIG_HELPER="+t.TempDir())
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer helper.Process.Kill()
	var child int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "child "); ok {
			child, _ = strconv.Atoi(n)
			break
		}
	}
	if child == 0 {
		t.Fatal("helper did not report its child")
	}
	if !alive(child) {
		t.Fatalf("child %d is not running", child)
	}
	_ = helper.Process.Signal(syscall.SIGKILL)
	_ = helper.Wait()
	waitDead(t, child, 5*time.Second)
}

// TestStopKillsGroupAfterGrace: a process group that ignores SIGTERM is
// killed, grandchildren included, once grace has passed.
func TestStopKillsGroupAfterGrace(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "sleep.pid")
	p := spawn(t, "/bin/sh", "-c", `trap "" TERM; /bin/sleep 300 & echo $! >"$0.tmp" && mv "$0.tmp" "$0"; wait`, pidFile)
	var grandchild int
	for deadline := time.Now().Add(5 * time.Second); grandchild == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the shell did not report its child")
		}
		data, _ := os.ReadFile(pidFile)
		grandchild, _ = strconv.Atoi(strings.TrimSpace(string(data)))
	}

	start := time.Now()
	if err := p.Stop(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("Stop returned after %s, before the grace of 300ms had passed", took)
	}
	if exited, err := p.Exited(); !exited || !killedBy(err, syscall.SIGKILL) {
		t.Errorf("Exited() = %t, %v; want killed by SIGKILL", exited, err)
	}
	waitDead(t, grandchild, 5*time.Second)
}

// TestStopWakesPausedProcess: Stop ends a process paused with SIGSTOP by
// SIGTERM, without waiting out the grace.
func TestStopWakesPausedProcess(t *testing.T) {
	p := startSleep(t)
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); state(p.Pid()) != "T"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not stop (state %q)", p.Pid(), state(p.Pid()))
		}
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); !killedBy(err, syscall.SIGTERM) {
		t.Errorf("Wait() = %v; want killed by SIGTERM", err)
	}
}

// TestExited: a clean exit counts as an exit with an error, and a process
// that has exited takes no signal.
func TestExited(t *testing.T) {
	p := spawn(t, "/bin/true")
	<-p.Done()
	if err := p.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil", err)
	}
	if exited, err := p.Exited(); !exited || err == nil || err.Error() != "exited with status 0" {
		t.Errorf("Exited() = %t, %v; want true, exited with status 0", exited, err)
	}
	if err := p.Signal(syscall.SIGTERM); err == nil || !strings.HasPrefix(err.Error(), "/bin/true has exited: ") {
		t.Errorf("Signal() = %v, want an error saying it has exited", err)
	}
	if _, err := Spawn("nothing", exec.Command(filepath.Join(t.TempDir(), "nothing"))); err == nil || !strings.HasPrefix(err.Error(), "starting nothing: ") {
		t.Errorf("Spawn of a missing binary: %v", err)
	}
}

func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("a\nb\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lines int
		want  string
	}{
		{1, "c"},
		{2, "b\nc"},
		{5, "a\nb\nc"},
	} {
		if got := LogTail(path, tc.lines); got != tc.want {
			t.Errorf("LogTail(%d) = %q, want %q", tc.lines, got, tc.want)
		}
	}
	if got := LogTail(filepath.Join(t.TempDir(), "missing"), 5); got != "" {
		t.Errorf("LogTail of a missing file = %q, want \"\"", got)
	}
}

func killedBy(err error, sig syscall.Signal) bool {
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return false
	}
	ws, ok := exitErr.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
