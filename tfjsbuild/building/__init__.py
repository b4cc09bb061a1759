"""Carrying out a plan: workers, staging, outputs, the cache and the state the parent writes."""
