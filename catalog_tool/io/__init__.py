"""io layer of stxcat (see DESIGN.md)."""
