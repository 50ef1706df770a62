"""Reports published from Gold: the weekly executive summary."""
