"""pervma.report."""
