"""The command line: parse arguments, call the API, map errors to exit codes. No logic here."""
