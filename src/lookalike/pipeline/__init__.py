"""The one write path: folders, uploads, Ray and Parquet imports into a store, through one
writer thread per collection."""
