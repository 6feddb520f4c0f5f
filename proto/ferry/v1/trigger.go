package ferryv1

// Name is the trigger's short name, as the history and logs show it:
// push, poll, manual, drift, rollback, app-changed or retry.
func (t Trigger) Name() string {
	switch t {
	case Trigger_TRIGGER_PUSH:
		return "push"
	case Trigger_TRIGGER_POLL:
		return "poll"
	case Trigger_TRIGGER_MANUAL:
		return "manual"
	case Trigger_TRIGGER_DRIFT:
		return "drift"
	case Trigger_TRIGGER_ROLLBACK:
		return "rollback"
	case Trigger_TRIGGER_APP_CHANGED:
		return "app-changed"
	case Trigger_TRIGGER_RETRY:
		return "retry"
	}
	return "unknown"
}
