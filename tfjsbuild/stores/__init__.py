"""What builds leave behind for later builds: the per-manifest state and its lock, the
content-addressed cache, and the owner of an asset index. Planning reads them; only building
writes them.
"""
