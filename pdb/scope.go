package pdb

import (
	"slices"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// scope is what a budget's selector selects of a set of pods that all match
// another selector (one StatefulSet's pods, kept by its selector), decided
// from the two selectors' requirements alone.
type scope int

const (
	// selectsSome: the requirements do not decide; each pod is asked.
	selectsSome scope = iota
	// selectsNone: a requirement of the budget contradicts one that every
	// pod meets (app=db against app=web).
	selectsNone
	// selectsAll: each requirement of the budget follows from one that
	// every pod meets (the budget's app=db within the StatefulSet's app=db,
	// tier=data).
	selectsAll
)

// within decides what budget selects of pods that all match of. It is
// sound, not complete: selectsSome whenever a pair of requirements is not
// plainly decided (numeric comparisons, several requirements on one key that
// only together decide).
func within(budget, of labels.Selector) scope {
	want, ok := budget.Requirements()
	if !ok {
		return selectsNone // labels.Nothing
	}
	have, ok := of.Requirements()
	if !ok {
		return selectsSome // no pod matches of; nothing to save
	}
	all := true
	for i := range want {
		implied := false
		for j := range have {
			if have[j].Key() != want[i].Key() {
				continue
			}
			switch pair(&have[j], &want[i]) {
			case selectsNone:
				return selectsNone
			case selectsAll:
				implied = true
			}
		}
		all = all && implied
	}
	if all {
		return selectsAll
	}
	return selectsSome
}

// pair decides requirement w over labels that meet requirement h, both on
// one key: selectsAll when h implies w, selectsNone when they contradict.
func pair(h, w *labels.Requirement) scope {
	if h.Equal(*w) {
		return selectsAll
	}
	hv, wv := h.ValuesUnsorted(), w.ValuesUnsorted()
	switch op := h.Operator(); {
	case positive(op):
		// The label is there, its value one of hv.
		switch wop := w.Operator(); {
		case wop == selection.Exists:
			return selectsAll
		case wop == selection.DoesNotExist:
			return selectsNone
		case positive(wop) && subset(hv, wv):
			return selectsAll
		case positive(wop) && disjoint(hv, wv):
			return selectsNone
		case negative(wop) && disjoint(hv, wv):
			return selectsAll
		case negative(wop) && subset(hv, wv):
			return selectsNone
		}
	case op == selection.Exists || op == selection.GreaterThan || op == selection.LessThan:
		// The label is there (Gt and Lt match only a label that is).
		switch w.Operator() {
		case selection.Exists:
			return selectsAll
		case selection.DoesNotExist:
			return selectsNone
		}
	case op == selection.DoesNotExist:
		switch wop := w.Operator(); {
		case wop == selection.DoesNotExist || negative(wop):
			return selectsAll
		default: // every other operator needs the label
			return selectsNone
		}
	case negative(op):
		// The label is absent, or its value none of hv.
		switch wop := w.Operator(); {
		case negative(wop) && subset(wv, hv):
			return selectsAll
		}
	}
	return selectsSome
}

func positive(op selection.Operator) bool {
	return op == selection.In || op == selection.Equals || op == selection.DoubleEquals
}

func negative(op selection.Operator) bool {
	return op == selection.NotIn || op == selection.NotEquals
}

// subset says whether every value of a is in b (a requirement's values are
// few: a scan is cheaper than a set).
func subset(a, b []string) bool {
	for _, v := range a {
		if !slices.Contains(b, v) {
			return false
		}
	}
	return true
}

// disjoint says whether no value of a is in b.
func disjoint(a, b []string) bool {
	for _, v := range a {
		if slices.Contains(b, v) {
			return false
		}
	}
	return true
}
