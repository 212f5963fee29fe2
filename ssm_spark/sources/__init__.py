"""Sources of feature stacks: the built-in simulator, GeoTIFF stacks on disk, Earth Engine."""
