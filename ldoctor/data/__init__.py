"""Format-independent data code: transforms, 2.5D views, caching, synthetic and demo data writers."""
