"""pervma.sim."""
