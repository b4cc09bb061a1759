"""One module per command: its `add_parser(subparsers)` and its handler.

A handler reads its arguments, makes one call into `tfjsbuild.api` (`watch`: into
`tfjsbuild.watch`) and prints what comes back; it decides nothing about what to build and
writes no file of the build. Errors it raises are worded and mapped to exit codes by `main`.
"""
