"""Data that is not one tensor in memory: image folders and parquet tables, read row by row through a DataLoader.

`rows.Rows` is what the engine indexes: a tensor, or a `LazyRows` that loads only the rows asked for.
"""
