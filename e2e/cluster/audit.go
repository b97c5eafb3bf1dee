package cluster

import "os"

// auditPolicy logs, at level Metadata (who, what, when, the answer; no
// bodies), the requests that remove or change a pod: deletes, evictions
// (create on pods/eviction) and patches; and the writes of Leases outside
// kube-system and kube-node-lease (a test's leader election). Everything else is dropped to keep
// the log small; the stage RequestReceived too, since ResponseComplete
// carries both the time the request was received and the response code.
// e2e/invariants attributes removals from it.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["delete", "deletecollection"]
  resources:
  - group: ""
    resources: ["pods"]
- level: Metadata
  verbs: ["create"]
  resources:
  - group: ""
    resources: ["pods/eviction"]
- level: Metadata
  verbs: ["patch"]
  resources:
  - group: ""
    resources: ["pods"]
- level: None
  resources:
  - group: "coordination.k8s.io"
    resources: ["leases"]
  namespaces: ["kube-system", "kube-node-lease"]
- level: Metadata
  verbs: ["create", "update", "patch"]
  resources:
  - group: "coordination.k8s.io"
    resources: ["leases"]
- level: None
`

// auditArgs writes the audit policy and returns the kube-apiserver flags that
// write the audit log to AuditLog, synchronously (mode blocking: an event is
// in the file before its response is sent), never rotated.
func (c *Cluster) auditArgs() ([]string, error) {
	policy := c.path("audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	c.AuditLog = c.path("logs", "audit.log")
	return []string{
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + c.AuditLog,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxsize=0",
	}, nil
}
