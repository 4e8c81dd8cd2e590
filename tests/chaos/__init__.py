"""The chaos suite: real processes, injected faults, one verdict (see `__main__.py`)."""
