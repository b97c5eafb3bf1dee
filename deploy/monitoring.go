package deploy

import (
	"embed"
	"encoding/json"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// The Grafana dashboard and the alerts, in deploy/monitoring.
//
//go:embed monitoring/dashboard.json monitoring/prometheusrule.yaml
var monitoring embed.FS

// Query is one PromQL query of a dashboard panel.
type Query struct {
	Panel, RefID, Expr string
}

// Dashboard returns the dashboard JSON as shipped.
func Dashboard() ([]byte, error) { return monitoring.ReadFile("monitoring/dashboard.json") }

// DashboardQueries lists every query of every panel, in order.
func DashboardQueries() ([]Query, error) {
	b, err := Dashboard()
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("dashboard.json: %w", err)
	}
	var out []Query
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			out = append(out, Query{Panel: p.Title, RefID: t.RefID, Expr: t.Expr})
		}
	}
	return out, nil
}

// RuleGroup and Rule are a Prometheus rule file's groups (the
// PrometheusRule's spec.groups).
type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

type Rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// PrometheusRule returns the PrometheusRule YAML as shipped.
func PrometheusRule() ([]byte, error) { return monitoring.ReadFile("monitoring/prometheusrule.yaml") }

// RuleGroups decodes the PrometheusRule's spec.groups, rejecting unknown
// fields.
func RuleGroups() ([]RuleGroup, error) {
	b, err := PrometheusRule()
	if err != nil {
		return nil, err
	}
	var pr struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       struct {
			Groups []RuleGroup `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(b, &pr); err != nil {
		return nil, fmt.Errorf("prometheusrule.yaml: %w", err)
	}
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		return nil, fmt.Errorf("prometheusrule.yaml is a %s %s, want a monitoring.coreos.com/v1 PrometheusRule", pr.APIVersion, pr.Kind)
	}
	return pr.Spec.Groups, nil
}

// RuleFile renders the alerts as a plain Prometheus rule file. forOverride,
// when not empty, replaces every rule's "for:" (tests shorten the waits;
// nothing else changes).
func RuleFile(forOverride string) ([]byte, error) {
	groups, err := RuleGroups()
	if err != nil {
		return nil, err
	}
	if forOverride != "" {
		for i := range groups {
			for j := range groups[i].Rules {
				groups[i].Rules[j].For = forOverride
			}
		}
	}
	return yaml.Marshal(map[string]any{"groups": groups})
}

// DashboardExpr makes a dashboard query runnable outside Grafana: Grafana's
// $__rate_interval becomes window.
func DashboardExpr(expr, window string) string {
	return strings.NewReplacer("$__rate_interval", window, "${__rate_interval}", window).Replace(expr)
}
