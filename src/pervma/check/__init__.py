"""pervma.check."""
