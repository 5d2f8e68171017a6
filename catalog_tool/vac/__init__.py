"""vac layer of stxcat (see DESIGN.md)."""
