"""Reports for people: plots (SVG, no plotting dependency)."""
