"""``wsml bench``: grids of methods x seeds, their feature data sets and their tables."""
