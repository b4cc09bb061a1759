"""One module per command: its `add_parser(subparsers)` and its handler, one call into the API."""
