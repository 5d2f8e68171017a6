"""preprocess layer of stxcat (see DESIGN.md)."""
