"""Files this tool writes atomically, and data it reads back without trusting it."""
