package invariants

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strings"
	"time"
)

// AuditEvent is the part of an audit.k8s.io/v1 Event the checker reads: who
// asked what of which pod, when, and what the API server answered.
type AuditEvent struct {
	AuditID string `json:"auditID"`
	Stage   string `json:"stage"`
	Verb    string `json:"verb"`
	User    struct {
		Username string `json:"username"`
	} `json:"user"`
	UserAgent      string     `json:"userAgent"`
	ObjectRef      *ObjectRef `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
	StageTimestamp           time.Time `json:"stageTimestamp"`
}

// ObjectRef is the object an audit event's request was for.
type ObjectRef struct {
	APIGroup    string `json:"apiGroup"`
	Resource    string `json:"resource"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	Subresource string `json:"subresource"`
}

// Identity names the actor whose requests are stsroller's: every field that
// is set must match. The zero value matches nothing.
type Identity struct {
	// Username is user.username (a client certificate's common name,
	// system:serviceaccount:NS:NAME).
	Username string
	// UserAgent is the whole User-Agent header; cmd/stsroller sets
	// "stsroller".
	UserAgent string
}

// DefaultIdentity is stsroller by its user agent, whatever credentials it
// runs with (a fault proxy forwards with its own).
var DefaultIdentity = Identity{UserAgent: "stsroller"}

func (id Identity) matches(e *AuditEvent) bool {
	if id.Username == "" && id.UserAgent == "" {
		return false
	}
	return (id.Username == "" || id.Username == e.User.Username) && (id.UserAgent == "" || id.UserAgent == e.UserAgent)
}

func (id Identity) String() string {
	var parts []string
	if id.Username != "" {
		parts = append(parts, "user "+id.Username)
	}
	if id.UserAgent != "" {
		parts = append(parts, "user agent "+id.UserAgent)
	}
	return strings.Join(parts, ", ")
}

// The kinds of request the checker judges.
const (
	kindDelete   = "delete"
	kindEvict    = "evict"
	kindPatch    = "patch"
	kindDeleteCo = "deletecollection"
	// kindLease is a write of a coordination.k8s.io Lease: leader election's.
	kindLease = "lease"
)

// kind says what an event asks of a pod, "" for anything else.
func (e *AuditEvent) kind() string {
	r := e.ObjectRef
	if r == nil || e.Stage != "ResponseComplete" {
		return ""
	}
	if r.Resource == "leases" && r.APIGroup == "coordination.k8s.io" && r.Subresource == "" &&
		(e.Verb == "create" || e.Verb == "update" || e.Verb == "patch") {
		return kindLease
	}
	if r.Resource != "pods" {
		return ""
	}
	switch {
	case e.Verb == "delete" && r.Subresource == "":
		return kindDelete
	case e.Verb == "deletecollection" && r.Subresource == "":
		return kindDeleteCo
	case e.Verb == "create" && r.Subresource == "eviction":
		return kindEvict
	case e.Verb == "patch" && r.Subresource == "":
		return kindPatch
	}
	return ""
}

func (e *AuditEvent) code() int {
	if e.ResponseStatus == nil {
		return 0
	}
	return e.ResponseStatus.Code
}

func (e *AuditEvent) succeeded() bool { c := e.code(); return c >= 200 && c < 300 }

// auditTail reads the lines an audit log gains.
type auditTail struct {
	f       *os.File
	partial []byte
}

// openAuditTail opens path at its end: what was logged before is another
// test's.
func openAuditTail(path string) (*auditTail, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, err
	}
	return &auditTail{f: f}, nil
}

// read returns the events of namespace ns completed since the last read.
func (t *auditTail) read(ns string) []*AuditEvent {
	data, _ := io.ReadAll(t.f)
	if len(data) == 0 {
		return nil
	}
	data = append(t.partial, data...)
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		t.partial = data
		return nil
	}
	t.partial = append([]byte(nil), data[end+1:]...)
	var out []*AuditEvent
	sc := bufio.NewScanner(bytes.NewReader(data[:end+1]))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"namespace":"`+ns+`"`)) {
			continue
		}
		var e AuditEvent
		if json.Unmarshal(line, &e) != nil || e.ObjectRef == nil || e.ObjectRef.Namespace != ns || e.kind() == "" {
			continue
		}
		out = append(out, &e)
	}
	return out
}

func (t *auditTail) close() { t.f.Close() }
