"""Template filters and tags of the operator dashboard."""
