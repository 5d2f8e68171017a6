"""report layer of stxcat (see DESIGN.md)."""
