"""pervma.host."""
