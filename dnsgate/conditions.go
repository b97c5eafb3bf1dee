package dnsgate

import (
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/stsroller/stsroller/policy"
)

// FromConditions is the DNS gate's view as the pods themselves show it, for
// readers without a gate of their own (`kubectl stsroller plan`): a pod is
// Propagated when its stsroller.io/dns-propagated condition is True and
// vouches for exactly its current IPs. Terminating pods are left out, as the
// gate leaves them out. It never reports Unreachable: only a live check knows.
func FromConditions(pods []*corev1.Pod) map[string]policy.DNSState {
	states := make(map[string]policy.DNSState, len(pods))
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil {
			continue
		}
		want := PodIPs(pod)
		if len(want) == 0 {
			states[pod.Name] = policy.DNSState{Message: "no pod IP yet"}
			continue
		}
		c := condition(pod)
		switch {
		case c == nil:
			states[pod.Name] = policy.DNSState{Message: "no " + string(policy.ConditionDNSPropagated) + " condition yet"}
		case c.Status != corev1.ConditionTrue:
			msg := string(policy.ConditionDNSPropagated) + " is " + string(c.Status)
			if c.Message != "" {
				msg += ": " + c.Message
			}
			states[pod.Name] = policy.DNSState{Message: msg}
		case !slices.Equal(vouchedIPs(pod), want):
			states[pod.Name] = policy.DNSState{Message: string(policy.ConditionDNSPropagated) +
				" vouches for other IPs than the pod's " + joinAddrs(want)}
		default:
			states[pod.Name] = policy.DNSState{Propagated: true}
		}
	}
	return states
}
