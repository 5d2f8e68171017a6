"""sim layer of stxcat (see DESIGN.md)."""
