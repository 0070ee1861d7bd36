"""Scenario tests: the whole stack, several processes or a real browser, end to end."""
