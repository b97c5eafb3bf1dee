package healthgate

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/stsroller/stsroller/policy"
)

// Bounds of the texts the gate hands the planner.
const (
	maxValue = 120
	maxErr   = 200
)

// Results of an evaluation, for Options.OnEvaluation.
const (
	resultHealthy   = "healthy"
	resultUnhealthy = "unhealthy"
	resultError     = "error"
)

// outcome is what one evaluation found.
type outcome struct {
	healthy bool
	value   string // a short rendering of the result; "" on error
	err     string // why there is no result; "" when Prometheus answered
}

func (o outcome) result() string {
	switch {
	case o.err != "":
		return resultError
	case o.healthy:
		return resultHealthy
	}
	return resultUnhealthy
}

// judge reads one answer of Prometheus: healthy when it is at least one
// sample and every sample is non-zero. Anything else it cannot read is an
// error, never healthy.
func judge(v model.Value, err error) outcome {
	if err != nil {
		return outcome{err: errText(err)}
	}
	switch v := v.(type) {
	case model.Vector:
		return judgeVector(v)
	case *model.Scalar:
		return outcome{healthy: nonZero(v.Value), value: number(v.Value)}
	case nil:
		return outcome{err: "Prometheus answered without a result"}
	}
	return outcome{err: fmt.Sprintf("result type %s, want a vector or scalar", v.Type())}
}

func judgeVector(vec model.Vector) outcome {
	if len(vec) == 0 {
		return outcome{value: "no samples"}
	}
	var bad *model.Sample // the first failing sample in label order
	for _, s := range vec {
		if s.Histogram != nil {
			return outcome{err: policy.Truncate(fmt.Sprintf("the sample %s is a native histogram, want a number", s.Metric), maxErr)}
		}
		if !nonZero(s.Value) && (bad == nil || s.Metric.Before(bad.Metric)) {
			bad = s
		}
	}
	return outcome{healthy: bad == nil, value: renderVector(vec, bad)}
}

// nonZero: NaN counts as zero, so as unhealthy.
func nonZero(v model.SampleValue) bool {
	return v != 0 && !math.IsNaN(float64(v))
}

// renderVector renders one sample as its number, several as their range,
// with the first failing sample when there is one.
func renderVector(vec model.Vector, bad *model.Sample) string {
	if len(vec) == 1 {
		return number(vec[0].Value)
	}
	lo, hi, nan := math.Inf(1), math.Inf(-1), 0
	for _, s := range vec {
		f := float64(s.Value)
		if math.IsNaN(f) {
			nan++
			continue
		}
		lo, hi = math.Min(lo, f), math.Max(hi, f)
	}
	var b strings.Builder
	if nan == len(vec) {
		fmt.Fprintf(&b, "NaN over %d samples", len(vec))
	} else {
		fmt.Fprintf(&b, "min %s, max %s over %d samples", number(model.SampleValue(lo)), number(model.SampleValue(hi)), len(vec))
		if nan > 0 {
			fmt.Fprintf(&b, ", %d NaN", nan)
		}
	}
	if bad != nil {
		fmt.Fprintf(&b, "; %s at %s", number(bad.Value), bad.Metric)
	}
	return policy.Truncate(b.String(), maxValue)
}

// number renders a sample value: integers in full, others to six digits.
func number(v model.SampleValue) string {
	f := float64(v)
	switch {
	case f == 0:
		return "0" // and not "-0"
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case f == math.Trunc(f) && math.Abs(f) < 1e15:
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', 6, 64)
}

// errText is the error for the status: one line, short. For an answer with
// a status code the client does not read (a 5xx), it adds what the body says.
func errText(err error) string {
	msg := err.Error()
	var apiErr *v1.Error
	if errors.As(err, &apiErr) && apiErr.Detail != "" {
		if d := detail(apiErr.Detail); d != "" {
			msg += ": " + d
		}
	}
	return policy.Truncate(oneLine(msg), maxErr)
}

// detail is the error message in a response body: Prometheus's JSON error
// answer's "error", or else the body's first line.
func detail(body string) string {
	var answer struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(body), &answer) == nil && answer.Error != "" {
		return answer.Error
	}
	line, _, _ := strings.Cut(strings.TrimSpace(body), "\n")
	return strings.TrimSpace(line)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
