"""models layer of stxcat (see DESIGN.md)."""
