"""pipeline layer of stxcat (see DESIGN.md)."""
