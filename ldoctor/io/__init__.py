"""Readers of the file formats every dataset family shares: CT volumes, radiographs, CSV tables."""
