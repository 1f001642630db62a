"""Shared plumbing below every layer: the user-facing error type and atomic file writes."""
