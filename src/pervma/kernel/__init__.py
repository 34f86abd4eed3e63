"""The kernel model: one file per kernel concern (see ARCHITECTURE.md)."""
