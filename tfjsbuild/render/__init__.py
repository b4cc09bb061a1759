"""Results in, text out: the console, JSON and HTML forms of plans, builds and reports."""
