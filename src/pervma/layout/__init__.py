"""pervma.layout."""
