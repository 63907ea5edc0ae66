"""Run directories -> tidy frame -> statistics -> figures and reports (built in a later issue)."""
