"""pervma.kernel."""
