"""Performance measurements (ratios, call counts, profiles); never part of the tests' pass/fail."""
