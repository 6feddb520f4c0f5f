package v1alpha1

import (
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SetCondition sets the condition of type typ to message at now, or clears
// it when message is empty. A condition whose message is unchanged keeps
// its transition time. It reports whether st changed.
func (st *ApplicationStatus) SetCondition(typ, message string, now time.Time) bool {
	i := slices.IndexFunc(st.Conditions, func(c Condition) bool { return c.Type == typ })
	switch {
	case i < 0 && message == "":
		return false
	case i < 0:
		t := metav1.NewTime(now)
		st.Conditions = append(st.Conditions, Condition{Type: typ, Message: message, LastTransitionTime: &t})
	case message == "":
		st.Conditions = slices.Delete(st.Conditions, i, i+1)
	case st.Conditions[i].Message == message:
		return false
	default:
		t := metav1.NewTime(now)
		st.Conditions[i].Message, st.Conditions[i].LastTransitionTime = message, &t
	}
	return true
}

// HasCondition reports whether st has a condition of type typ with message
// (an empty message asks whether there is none).
func (st *ApplicationStatus) HasCondition(typ, message string) bool {
	i := slices.IndexFunc(st.Conditions, func(c Condition) bool { return c.Type == typ })
	if i < 0 {
		return message == ""
	}
	return st.Conditions[i].Message == message
}
