"""train layer of stxcat (see DESIGN.md)."""
