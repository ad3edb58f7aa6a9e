"""Rate limits and budgets: shared across instances through Redis, exact per scope."""
